"""Use a trained run: top-k entities for (head, relation, ?) or (?, relation, tail), given as ids or text.

Python:
    from lpbert_core.evaluate.predict import LinkPredictor
    lp = LinkPredictor.from_run("results/umls/runs/lpbert")          # text/tokens dirs found from the run
    lp.top_k(head="acquired_abnormality", relation="location_of", k=5)  # tail prediction
    lp.top_k(relation="location_of", tail="cell", k=5)                  # head prediction (inverse relation query)
    frame, metrics = lp.evaluate("test")                               # ranks recomputed from the saved model

Console:
    lpbert-predict results/umls/runs/lpbert --head acquired_abnormality --relation location_of -k 5 [--filter]

An entity or relation is matched by id first, then by its text (case-insensitive exact match, entity name or full
text); an entity text that matches nothing is tokenized and encoded as free text (queries only make sense for the
query side: a free-text head / tail is allowed, free-text candidates are not).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lpbert_core.model.sequences import SequenceBuilder
from lpbert_core.graph.kg import TokenizedKG, load_tokenized_kg
from lpbert_core.ranking.rank_split import encode_entities, encode_queries, encode_sequences, evaluate_split, known_triples
from lpbert_core.config.settings import ScoreSettings
from lpbert_core.model.run_folder import RUN_FILE
from lpbert_core.model.siamese import load_run_model
from lpbert_core.runtime.training import pick_device


class LinkPredictor:
    def __init__(self, model, info: dict, kg: TokenizedKG, tokenizer, device, text_table: pd.DataFrame | None = None,
                 rel_table: pd.DataFrame | None = None):
        self.model, self.info, self.kg, self.tokenizer, self.device = model, info, kg, tokenizer, device
        max_len = int(info["max_length"])
        self.builder = SequenceBuilder(kg, max_len, max_len)
        # sequences per encoder pass: the run's own eval_batch_size (lpbert_run.json; run folders written before
        # 2026-11-26 hold it in their `settings` only)
        self.batch_size = int(info["eval_batch_size"] if "eval_batch_size" in info else info["settings"]["eval_batch_size"])
        self._entity_vecs = None
        self._ent_index = {e: i for i, e in enumerate(kg.entity_ids)}
        self._rel_index = {r: i for i, r in enumerate(kg.relation_ids)}
        self._ent_text = {}
        if text_table is not None:
            for i, row in enumerate(text_table.itertuples(index=False)):
                for key in (getattr(row, "name", None), getattr(row, "text", None)):
                    if isinstance(key, str) and key:
                        self._ent_text.setdefault(key.lower(), i)
        self._rel_text = {}
        if rel_table is not None:
            for i, row in enumerate(rel_table.itertuples(index=False)):
                self._rel_text.setdefault(str(row.text).lower(), i)
        self.entity_texts = list(text_table["text"]) if text_table is not None else list(kg.entity_ids)
        self.score_settings: dict = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_run(cls, run_dir: str | Path, text_dir: str | Path | None = None, tokens_dir: str | Path | None = None,
                 device: str = "auto") -> "LinkPredictor":
        run_dir = Path(run_dir)
        model_dir = run_dir / "model" if (run_dir / "model" / RUN_FILE).exists() else run_dir
        dev = pick_device(device)
        model, info = load_run_model(model_dir, dev)
        results_root = run_dir.parent.parent  # results/{dataset}
        text_dir = Path(text_dir) if text_dir else results_root / "text"
        tokens_dir = Path(tokens_dir) if tokens_dir else results_root / "tokens" / info.get("tokens_encoder", "minilm")
        kg = load_tokenized_kg(text_dir, tokens_dir)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        ent_table = pd.read_parquet(text_dir / "entities.parquet") if (text_dir / "entities.parquet").exists() else None
        rel_table = pd.read_parquet(text_dir / "relations.parquet") if (text_dir / "relations.parquet").exists() else None
        lp = cls(model, info, kg, tokenizer, dev, ent_table, rel_table)
        metrics_file = run_dir / "metrics.json"
        if metrics_file.exists():  # evaluate() replays the score rule's settings exactly
            lp.score_settings = json.loads(metrics_file.read_text()).get("settings", {})
        return lp

    # ------------------------------------------------------------------ lookups
    def head_ranking(self) -> str:
        """How head queries are ranked: as the score rule did (metrics.json), else as the run's dev selection did."""
        ranking = self.score_settings.get("head_ranking") or self.info.get("dev_head_ranking")
        if ranking is None:
            raise ValueError("the run folder records no head ranking (no metrics.json, no dev_head_ranking in "
                             f"{RUN_FILE}): score the run first")
        return ranking

    def entity_vectors(self) -> torch.Tensor:
        if self._entity_vecs is None:
            self._entity_vecs = encode_entities(self.model, self.builder, self.device, self.batch_size)
        return self._entity_vecs

    def _entity(self, value) -> tuple[int | None, list[int] | None]:
        """(index, None) for a known entity, (None, token ids) for free text."""
        if isinstance(value, (int, np.integer)):
            return int(value), None
        if value in self._ent_index:
            return self._ent_index[value], None
        if str(value).lower() in self._ent_text:
            return self._ent_text[str(value).lower()], None
        return None, list(self.tokenizer(str(value), add_special_tokens=False)["input_ids"])

    def _relation(self, value) -> int:
        if isinstance(value, (int, np.integer)):
            return int(value)
        if value in self._rel_index:
            return self._rel_index[value]
        if str(value).lower() in self._rel_text:
            return self._rel_text[str(value).lower()]
        raise KeyError(f"unknown relation {value!r} (give a relation id or its exact text)")

    # ------------------------------------------------------------------ prediction
    def top_k(self, head=None, relation=None, tail=None, k: int = 10, filter_known: bool = False) -> list[dict]:
        """Exactly one of head / tail is given. Returns [{rank, entity, text, score}] best first; score = the run's
        pair score (cosine, or the pair_linear layer's raw output). Head prediction follows the score rule's
        `head_ranking` (metrics.json settings): the inverse query, or every entity encoded with the relation as the
        query and scored against the tail (`relation_candidates`).
        `filter_known` drops the other known answers (train + dev + test) of the query, as in filtered ranking."""
        if (head is None) == (tail is None):
            raise ValueError("give exactly one of head= (tail prediction) or tail= (head prediction)")
        r = self._relation(relation)
        R = self.kg.num_relations
        anchor, free = self._entity(head if head is not None else tail)
        pad = self.kg.special.pad
        if head is None and self.head_ranking() == "relation_candidates":
            if anchor is not None:
                target = self.entity_vectors()[anchor:anchor + 1]
            else:
                s = self.builder.candidate(0, tokens=free)
                target = encode_sequences(self.model, [(s, [0] * len(s))], pad, self.device, 1, tower="entity")
            E = self.kg.num_entities
            cands = encode_queries(self.model, self.builder, range(E), [r] * E, self.device, self.batch_size)
            with torch.inference_mode():
                scores = self.model.score_matrix(cands, target)[:, 0]
        else:
            qrel = r if head is not None else r + R
            ids, types = self.builder.query(anchor if anchor is not None else 0, qrel, head_tokens=free)
            q = encode_sequences(self.model, [(ids, types)], pad, self.device, 1, tower="query")
            with torch.inference_mode():
                scores = self.model.score_matrix(q, self.entity_vectors())[0]
        if filter_known and anchor is not None:
            trip = known_triples(self.kg)
            if head is not None:
                known = trip[(trip[:, 0] == anchor) & (trip[:, 1] == r), 2]
            else:
                known = trip[(trip[:, 2] == anchor) & (trip[:, 1] == r), 0]
            scores = scores.clone()
            scores[torch.as_tensor(known, dtype=torch.long, device=scores.device)] = -float("inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        vals, idx = torch.topk(scores, k)
        return [{"rank": i + 1, "entity": self.kg.entity_ids[j], "text": self.entity_texts[j], "score": float(v)}
                for i, (v, j) in enumerate(zip(vals.tolist(), idx.tolist()))]

    def evaluate(self, split: str = "test", filter_splits=("train", "dev", "test"), **overrides):
        """Filtered ranks (both directions, filtered by `filter_splits`: the score rule's train+dev+test, or train+dev
        for a dev split that must not see test) recomputed from the saved model, with the same code path and the
        settings the score rule recorded in the run's metrics.json; returns (ranks frame, metrics)."""
        s = ScoreSettings.from_mapping(
            {**self.score_settings, **overrides},
            "LinkPredictor.evaluate: the score rule's settings (the run's metrics.json) with the given overrides; a "
            "run without metrics.json needs every one given")
        frame, metrics, _ = evaluate_split(
            self.model, self.kg, self.builder, split, self.device, filter_splits=tuple(filter_splits),
            subsample=s.test_subsample, seed=s.seed,
            batch_size=s.batch_size, chunk_size=s.chunk_size, precision=s.precision, head_ranking=s.head_ranking)
        return frame, metrics


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="lpbert-predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", help="results/{dataset}/runs/{run} (or its model/ folder)")
    ap.add_argument("--head")
    ap.add_argument("--tail")
    ap.add_argument("--relation", required=True)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--filter", action="store_true", help="drop other known answers (train+dev+test)")
    ap.add_argument("--text-dir")
    ap.add_argument("--tokens-dir")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args(argv)
    if (args.head is None) == (args.tail is None):
        ap.error("give exactly one of --head or --tail")
    lp = LinkPredictor.from_run(args.run_dir, args.text_dir, args.tokens_dir, args.device)
    try:
        rows = lp.top_k(head=args.head, relation=args.relation, tail=args.tail, k=args.k, filter_known=args.filter)
    except KeyError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(2) from None
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['rank']:>3}  {row['score']:+.4f}  {row['entity']}\t{row['text']}")


if __name__ == "__main__":
    main()
