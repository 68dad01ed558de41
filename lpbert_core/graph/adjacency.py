"""The undirected entity graph of a set of triples (relation types ignored, self-loops dropped), shared by the
Personalized PageRank baseline (lpbert_core.baselines.ppr) and the n-hop re-ranking
(lpbert_core.ranking.graph_prior)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def undirected_adjacency(triples: np.ndarray, num_entities: int, weighting: str = "binary") -> sp.csr_matrix:
    """Symmetric [E, E] adjacency of the (head, tail) pairs of `triples`; self-loops dropped."""
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    keep = triples[:, 0] != triples[:, 2]
    h, t = triples[keep, 0], triples[keep, 2]
    rows, cols = np.concatenate([h, t]), np.concatenate([t, h])
    adj = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_entities, num_entities)).tocsr()
    adj.sum_duplicates()
    if weighting == "binary":
        adj.data[:] = 1.0
    elif weighting != "count":
        raise ValueError(f"weighting must be 'binary' or 'count', got {weighting!r}")
    return adj
