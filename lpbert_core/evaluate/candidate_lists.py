"""Ranking against presampled candidate lists (BERTRL's 50-candidate protocol for the inductive benchmarks).

A list file (`ranking_head.txt` / `ranking_tail.txt`, BERTRL's names) holds blocks of `per_query` lines
`head<TAB>relation<TAB>tail`: the first line of a block is the true test triple, the others its corruptions. In a block
either the head is the same on every line (the tails vary: a tail query (h, r, ?)) or the tail is (a head query
(?, r, t)); the direction is read from the block, not from the file name (BERTRL's `ranking_head.txt` varies the
tails). The lists are used exactly as given: duplicate lines and corruptions that are known triples stay (no
filtering), as in the published numbers; metrics.json counts both.

Scores are the run's own (the same query and entity encodings as the full ranking, head queries as the inverse-relation
query (t, r^-1, ?)); the rank of the true line among the block's lines: optimistic 1 + #(score > true), pessimistic
1 + #(score >= true, other lines), realistic their mean.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lpbert_core.errors import InputError
from lpbert_core.sequences import SequenceBuilder
from lpbert_core.kg import TokenizedKG
from lpbert_core.kg_files import read_triples
from lpbert_core.ranking import metrics_from_ranks
from lpbert_core.evaluation import encode_entities, encode_queries

LIST_FILES = ("ranking_head.txt", "ranking_tail.txt")
PER_QUERY = 50  # BERTRL: the true triple + 49 corruptions


@dataclass
class CandidateBlocks:
    """One row per block: the true triple (entity / relation indices), the query direction and the candidate entity
    indices [blocks, per_query] (column 0 = the gold entity)."""

    head: np.ndarray
    relation: np.ndarray
    tail: np.ndarray
    direction: np.ndarray
    candidates: np.ndarray
    source: list[str]  # "file:first line" of each block
    known_corruptions: int = 0
    duplicate_lines: int = 0


def read_candidate_lists(folder: str | Path, kg: TokenizedKG, per_query: int = PER_QUERY) -> CandidateBlocks:
    """Parse every list file in `folder`; ids must be entities / relations of `kg` (errors name file and line)."""
    folder = Path(folder)
    ent = {e: i for i, e in enumerate(kg.entity_ids)}
    rel = {r: i for i, r in enumerate(kg.relation_ids)}
    known = {tuple(t) for split in ("train", "dev", "test") for t in np.asarray(kg.triples[split]).tolist()}
    out = {k: [] for k in ("head", "relation", "tail", "direction", "candidates", "source")}
    known_corruptions = duplicates = 0
    files = [folder / name for name in LIST_FILES if (folder / name).is_file()]
    if not files:
        raise InputError(folder, f"no candidate list ({' or '.join(LIST_FILES)})")
    for path in files:
        lines = read_triples(path)
        if len(lines) % per_query:
            raise InputError(path, f"{len(lines)} lines are not blocks of {per_query} (true triple + corruptions)")
        for start in range(0, len(lines), per_query):
            block = lines[start:start + per_query]
            ids = []
            for h, r, t, line in block:
                for name, table, kind in ((h, ent, "entity"), (t, ent, "entity"), (r, rel, "relation")):
                    if name not in table:
                        raise InputError(path, f"unknown {kind} id {name!r} (not in this graph)", line)
                ids.append((ent[h], rel[r], ent[t]))
            ids = np.asarray(ids, dtype=np.int64)
            first_line = block[0][3]
            if (ids[:, 1] != ids[0, 1]).any():
                raise InputError(path, "the block's lines do not share one relation", first_line)
            if (ids[:, 0] == ids[0, 0]).all():
                direction, cands = "tail", ids[:, 2]
            elif (ids[:, 2] == ids[0, 2]).all():
                direction, cands = "head", ids[:, 0]
            else:
                raise InputError(path, "the block varies both head and tail", first_line)
            known_corruptions += sum(tuple(x) in known for x in ids[1:].tolist())
            duplicates += per_query - len({tuple(x) for x in ids.tolist()})
            for key, value in (("head", ids[0, 0]), ("relation", ids[0, 1]), ("tail", ids[0, 2]),
                               ("direction", direction), ("candidates", cands), ("source", f"{path}:{first_line}")):
                out[key].append(value)
    return CandidateBlocks(np.asarray(out["head"]), np.asarray(out["relation"]), np.asarray(out["tail"]),
                           np.asarray(out["direction"]), np.stack(out["candidates"]), out["source"],
                           known_corruptions, duplicates)


def list_ranks(scores: torch.Tensor) -> dict[str, np.ndarray]:
    """Ranks of column 0 among the columns of `scores` [blocks, per_query] (ties: optimistic / pessimistic /
    realistic)."""
    true = scores[:, :1]
    others = scores[:, 1:]
    optimistic = 1 + (others > true).sum(1)
    pessimistic = 1 + (others >= true).sum(1)
    return {"optimistic": optimistic.cpu().numpy().astype(np.float64),
            "pessimistic": pessimistic.cpu().numpy().astype(np.float64),
            "realistic": ((optimistic + pessimistic).double() / 2).cpu().numpy()}


@torch.inference_mode()
def rank_candidate_lists(model, kg: TokenizedKG, builder: SequenceBuilder, blocks: CandidateBlocks, device,
                         batch_size: int = 256, precision: str = "auto") -> pd.DataFrame:
    """The ranks frame (the columns of evaluation.evaluate_split's) of every block."""
    entity_vecs = encode_entities(model, builder, device, batch_size, precision)
    is_tail = blocks.direction == "tail"
    anchor = np.where(is_tail, blocks.head, blocks.tail)
    query_relation = np.where(is_tail, blocks.relation, blocks.relation + kg.num_relations)
    query_vecs = encode_queries(model, builder, anchor, query_relation, device, batch_size, precision)
    cand = torch.as_tensor(blocks.candidates, device=device)
    per_block = cand.shape[1]
    # the run's own pair scorer (cosine or pair_linear; eval mode) on every (query, listed entity) pair of a block
    scores = model.score_pairs(query_vecs.repeat_interleave(per_block, 0),
                               entity_vecs[cand.reshape(-1)]).reshape(len(cand), per_block)
    return list_frame(kg, blocks, scores)


def list_frame(kg, blocks: CandidateBlocks, scores: torch.Tensor) -> pd.DataFrame:
    """The ranks frame of `blocks` from any model's scores [blocks, per_query] (column 0 = the true line); `kg` needs
    entity_ids / relation_ids only (shared by the LP-BERT, cross-encoder and PPR list scorers)."""
    ranks = list_ranks(torch.as_tensor(scores))
    ent_ids = np.asarray(kg.entity_ids, dtype=object)
    rel_ids = np.asarray(kg.relation_ids, dtype=object)
    gold = np.where(blocks.direction == "tail", blocks.tail, blocks.head)
    return pd.DataFrame({
        "query": np.arange(len(gold), dtype=np.int64),
        "direction": blocks.direction.astype(str),
        "head": ent_ids[blocks.head], "relation": rel_ids[blocks.relation], "tail": ent_ids[blocks.tail],
        "gold": ent_ids[gold],
        **ranks,
        "num_candidates": np.full(len(gold), blocks.candidates.shape[1], dtype=np.int64),
        "list": blocks.source,
    })


def lists_folder(inputs: dict) -> Path:
    """The folder of the lists a scoring job ranks: `lists` (a sampled lists' lists.json, or a folder) where given,
    else BERTRL's lists in the raw folder (`raw`/CANDIDATES_FOLDER)."""
    from lpbert_core.kg_files import CANDIDATES_FOLDER

    if inputs.get("lists"):
        path = Path(inputs["lists"])
        return path.parent if path.is_file() else path
    return Path(inputs["raw"]) / CANDIDATES_FOLDER


def lists_summary(folder: Path, blocks: CandidateBlocks, kg, frame: pd.DataFrame) -> dict:
    """metrics.json's `lists` block: where the lists are and what they hold (same keys for every scorer)."""
    test = {tuple(t) for t in np.asarray(kg.triples["test"]).tolist()}
    not_test = sum((h, r, t) not in test for h, r, t in zip(blocks.head, blocks.relation, blocks.tail))
    return {"folder": str(folder), "blocks": int(len(frame)), "per_query": int(blocks.candidates.shape[1]),
            "true_triples_not_in_test": int(not_test),
            "known_triples_among_corruptions": int(blocks.known_corruptions),
            "duplicate_lines": int(blocks.duplicate_lines)}


def run_score_candidates(*, settings, inputs: dict, outputs: dict, log=print) -> dict:
    """Rules score_candidates and score_grail50: rank candidate lists with a fine-tuned run; ranks.parquet +
    metrics.json.

    settings: as run_score's. inputs: model, triples, manifest, and raw (the test graph's raw folder, which holds
    BERTRL's lists in CANDIDATES_FOLDER) or lists (sampled lists: their lists.json). outputs: ranks, metrics."""
    from lpbert_core.evaluate.sampled_negatives import list_record
    from lpbert_core.atomic import write_json, write_parquet
    from lpbert_core.kg import load_tokenized_kg
    from lpbert_core.settings import ScoreSettings
    from lpbert_core.siamese import load_run_model
    from lpbert_core.training import compute_record, pick_device

    s = ScoreSettings.from_mapping(settings)
    device = pick_device(s.device)
    model, info = load_run_model(inputs["model"], device)
    kg = load_tokenized_kg(Path(inputs["triples"]).parent, Path(inputs["manifest"]).parent)
    lists_dir = lists_folder(inputs)
    spec = list_record(lists_dir)
    builder = SequenceBuilder(kg, int(info["max_length"]), int(info["max_length"]))
    blocks = read_candidate_lists(lists_dir, kg, int(spec["per_query"]))
    t0 = time.perf_counter()
    frame = rank_candidate_lists(model, kg, builder, blocks, device, s.batch_size, s.precision)
    seconds = time.perf_counter() - t0
    metrics = metrics_from_ranks(frame)
    out = {
        "metrics": metrics,
        "rank_type": "realistic (mean of optimistic and pessimistic ranks among the listed lines)",
        "protocol": spec["protocol"],
        "lists": lists_summary(lists_dir, blocks, kg, frame),
        "num_entities": int(kg.num_entities),
        "leaky": bool(info.get("leaky", False)),
        "run": info,
        "settings": s.as_dict(),
        "timings_s": {"total_s": round(seconds, 4)},
        "compute": compute_record(device, s.precision),
    }
    write_parquet(outputs["ranks"], frame)
    write_json(outputs["metrics"], out)
    log(f"candidate lists: {json.dumps(metrics.get('both', {}))}")
    return out
