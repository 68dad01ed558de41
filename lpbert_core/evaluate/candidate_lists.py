"""Ranking against presampled candidate lists (BERTRL's 50-candidate protocol for the inductive benchmarks, and our
GraIL-protocol sample of lpbert_core.evaluate.sampled_negatives in the same layout, its lists.json naming per_query).

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
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lpbert_core.ranking.candidate_blocks import (LIST_FILES, PER_QUERY, CandidateBlocks, list_frame, list_ranks,  # noqa: F401
                                          list_record, lists_folder, lists_summary, read_candidate_lists)
from lpbert_core.model.sequences import SequenceBuilder
from lpbert_core.graph.kg import TokenizedKG
from lpbert_core.ranking.filtered_ranks import metrics_from_ranks
from lpbert_core.ranking.rank_split import encode_entities, encode_queries
from lpbert_core.ranking.graph_prior import prior_from


@torch.inference_mode()
def rank_candidate_lists(model, kg: TokenizedKG, builder: SequenceBuilder, blocks: CandidateBlocks, device,
                         batch_size: int = 256, precision: str = "auto", prior=None) -> pd.DataFrame:
    """The ranks frame (the columns of evaluation.evaluate_split's) of every block; `prior`: n-hop re-ranking
    (graph_prior.NeighbourPrior: rule score_reranked_lists), its bonus added to each listed line's score."""
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
    if prior is not None:
        scores = scores + prior.bonus(torch.as_tensor(anchor, device=device)).gather(1, cand)
    return list_frame(kg, blocks, scores)


def run_score_candidates(*, settings, inputs: dict, outputs: dict, log=print, rerank: dict | None = None) -> dict:
    """Rules score_candidates and score_grail50 (and score_reranked_lists, with `rerank`: n-hop re-ranking over the
    test graph's train split, reported apart): rank candidate lists with a fine-tuned run; ranks.parquet +
    metrics.json.

    settings: as run_score's. inputs: model, triples, manifest, and raw (the test graph's raw folder, which holds
    BERTRL's lists in CANDIDATES_FOLDER) or lists (sampled lists: their lists.json). outputs: ranks, metrics."""
    from lpbert_core.runtime.atomic import write_json, write_parquet
    from lpbert_core.graph.kg import load_tokenized_kg
    from lpbert_core.config.settings import ScoreSettings
    from lpbert_core.model.siamese import load_run_model
    from lpbert_core.runtime.training import compute_record, pick_device

    s = ScoreSettings.from_mapping(settings)
    device = pick_device(s.device)
    model, info = load_run_model(inputs["model"], device)
    kg = load_tokenized_kg(Path(inputs["triples"]).parent, Path(inputs["manifest"]).parent)
    lists_dir = lists_folder(inputs)
    spec = list_record(lists_dir)
    builder = SequenceBuilder(kg, int(info["max_length"]), int(info["max_length"]))
    blocks = read_candidate_lists(lists_dir, kg, int(spec["per_query"]))
    prior = prior_from(rerank, kg, info.get("scorer", "cosine"))
    t0 = time.perf_counter()
    frame = rank_candidate_lists(model, kg, builder, blocks, device, s.batch_size, s.precision, prior)
    seconds = time.perf_counter() - t0
    metrics = metrics_from_ranks(frame)
    out = {
        "metrics": metrics,
        "rank_type": "realistic (mean of optimistic and pessimistic ranks among the listed lines)",
        "protocol": spec["protocol"] + (prior.protocol_note() if prior else ""),
        "lists": lists_summary(lists_dir, blocks, kg, frame),
        "num_entities": int(kg.num_entities),
        "leaky": bool(info.get("leaky", False)),
        "run": info,
        "settings": s.as_dict(),
        "timings_s": {"total_s": round(seconds, 4)},
        "compute": compute_record(device, s.precision),
    }
    if prior is not None:
        out["rerank"] = prior.describe()
    write_parquet(outputs["ranks"], frame)
    write_json(outputs["metrics"], out)
    log(f"candidate lists: {json.dumps(metrics.get('both', {}))}")
    return out
