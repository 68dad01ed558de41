"""n-hop re-ranking (beyond the paper; SimKGC's test-time graph prior, issue #25): each candidate within `hops`
undirected hops of the query's entity in the observed graph gets `weight` added to its score before the filtered
ranks are taken. A named switch, reported apart (rule score_reranked, `rerank:` in config.yaml): the plain protocol
never re-ranks.

The observed graph is the scored graph's train split (an inductive test graph's own observed triples: GraIL's
convention, the edges the PPR baseline walks too): relation types ignored, both directions, self-loops dropped. The
anchor is not its own neighbour, so the prior never lifts the query's own entity (a path back to it, h - x - h, does
not count either).
"""

from __future__ import annotations

import numpy as np
import torch

from lpbert_core.graph.adjacency import undirected_adjacency


class NeighbourPrior:
    """`bonus(anchors)`: a float [n, E] tensor, `weight` where the candidate is within `hops` hops of the anchor,
    0 elsewhere (and on the anchor itself)."""

    def __init__(self, triples: np.ndarray, num_entities: int, hops: int, weight: float):
        if hops < 1:
            raise ValueError(f"rerank.hops must be at least 1, got {hops}")
        self.hops, self.weight, self.num_entities = int(hops), float(weight), int(num_entities)
        self.adjacency = undirected_adjacency(triples, self.num_entities, "binary")  # parallel edges merged

    def reach(self, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, entity) pairs of the entities within `hops` hops of each anchor (row = position in `anchors`),
        the anchor itself left out. A breadth-first search over the distinct anchors: each hop expands only the
        entities first reached on the hop before (0/1 entries, no path counts)."""
        anchors = np.asarray(anchors, dtype=np.int64)
        distinct, position = np.unique(anchors, return_inverse=True)
        reached = self.adjacency[distinct]
        frontier = reached
        for _ in range(self.hops - 1):
            step = frontier @ self.adjacency
            step.data[:] = 1.0
            frontier = step - step.multiply(reached)  # only entities not reached before
            frontier.eliminate_zeros()
            if frontier.nnz == 0:
                break
            reached = reached + frontier
        rows, cols = reached[position].nonzero()
        keep = cols != anchors[rows]
        return rows[keep], cols[keep]

    def bonus(self, anchors: torch.Tensor) -> torch.Tensor:
        """Built on the anchors' device: only the (row, entity) pairs travel, not a dense [n, E] block."""
        rows, cols = self.reach(anchors.detach().cpu().numpy())
        out = torch.zeros(len(anchors), self.num_entities, dtype=torch.float32, device=anchors.device)
        out[torch.as_tensor(rows, device=anchors.device), torch.as_tensor(cols, device=anchors.device)] = self.weight
        return out

    def describe(self) -> dict:
        return {"hops": self.hops, "weight": self.weight, "edges": "train split (undirected, relation types ignored)",
                "anchor": "never a neighbour of itself"}

    def protocol_note(self) -> str:
        """Appended to a re-ranked metrics.json's `protocol`: never the protocol, a named switch reported apart."""
        return (f"; RE-RANKED (beyond the paper, SimKGC-style): +{self.weight} on every candidate within {self.hops} "
                "undirected hops of the query's entity in the train split, the entity itself excluded")


def prior_from(rerank, kg, scorer: str) -> NeighbourPrior | None:
    """The prior of `rerank` settings (config `rerank:`) over `kg`'s train split; None without settings (the
    protocol). Only for cosine runs: a pair_linear run's raw scores have no fixed scale, so a weight would mean
    nothing there."""
    from lpbert_core.config.settings import RerankSettings
    from lpbert_core.errors import ConfigError

    if rerank is None:
        return None
    if scorer != "cosine":
        raise ConfigError(f"n-hop re-ranking adds its weight to cosine scores; this run scores with {scorer!r}")
    r = RerankSettings.from_mapping(rerank)
    return NeighbourPrior(kg.triples["train"], kg.num_entities, r.hops, r.weight)
