"""Where every file of the pipeline lives: one pattern per kind of file, relative to the working directory (the
repository root under Snakemake, DirectRun's root without it). The rules use the patterns as inputs and outputs
(Snakemake fills the {wildcards}); the code that names the same files (config/resolve.py, report/table_rows.py,
runtime/direct_run.py) fills them with `fill`, so a folder is renamed in one place.

Logs and Snakemake benchmark TSVs are named in the rules themselves (only Snakemake writes them), except the two
benchmark files the tables read (FINETUNE_BENCHMARK, SCORE_BENCHMARK: Table 3's T/Ep and per-query time)."""

from __future__ import annotations

import string

RAW = "results/{dataset}/raw"
TEXT = "results/{dataset}/text"
TEXT_ENTITIES = TEXT + "/entities.parquet"  # data/text_tables.py
TEXT_RELATIONS = TEXT + "/relations.parquet"
TEXT_TRIPLES = TEXT + "/triples.parquet"
TEXT_SUMMARY = TEXT + "/summary.json"
TOKENS = "results/{dataset}/tokens/{encoder}"
TOKEN_ENTITIES = TOKENS + "/entities.parquet"  # data/tokens.py
TOKEN_RELATIONS = TOKENS + "/relations.parquet"
TOKENS_MANIFEST = TOKENS + "/manifest.json"

PRETRAIN = "results/{dataset}/pretrain/{variant}"
PRETRAIN_MODEL = PRETRAIN + "/model"
PRETRAIN_LOG = PRETRAIN + "/log.csv"
PRETRAIN_CHECKPOINTS = "checkpoints/{dataset}/pretrain/{variant}"  # resume state: not a rule output

RUN = "results/{dataset}/runs/{run}"
RUN_MODEL = RUN + "/model"
RUN_TRAIN_LOG = RUN + "/train_log.csv"
RUN_RANKS = RUN + "/ranks.parquet"
RUN_METRICS = RUN + "/metrics.json"
RUN_BREAKDOWN = RUN + "/breakdown.{ext}"  # csv | png
RUN_LIST_RANKS = RUN + "/{protocol}/ranks.parquet"  # candidates (BERTRL's lists) | grail50 (GraIL's protocol)
RUN_LIST_METRICS = RUN + "/{protocol}/metrics.json"
RUN_RERANKED_RANKS = RUN + "/rerank/ranks.parquet"  # n-hop re-ranking (rule score_reranked; reported apart)
RUN_RERANKED_METRICS = RUN + "/rerank/metrics.json"
RUN_RERANKED_LIST_RANKS = RUN + "/rerank/{protocol}/ranks.parquet"  # candidates | grail50, re-ranked
RUN_RERANKED_LIST_METRICS = RUN + "/rerank/{protocol}/metrics.json"
RUN_CHECKPOINTS = "checkpoints/{dataset}/runs/{run}"  # resume state: not a rule output

GRAIL_LISTS = "results/{dataset}/lists/grail50/lists.json"  # with ranking_head.txt / ranking_tail.txt beside it
GRAIL_RANKING = "results/{dataset}/lists/grail50/ranking_{side}.txt"  # head | tail
PPR_RANKS = "results/{dataset}/baselines/ppr/{protocol}/ranks.parquet"  # full | candidates | grail50
PPR_METRICS = "results/{dataset}/baselines/ppr/{protocol}/metrics.json"
INDUCTIVE_HOPS = "results/{dataset}/hops.{ext}"  # csv | png: ranks by the answer's hop distance (rule inductive_hops)

TABLE = "results/tables/{table}.{ext}"  # md | csv | tex
FIGURES = "results/figures/{table}"
PROXY_FIGURE = "results/figures/proxy/trajectories.png"
STUDY = "results/study/{dataset}/{name}"  # summary.md | summary.csv | summary.json | study.png

FINETUNE_BENCHMARK = "benchmarks/{dataset}/finetune/{run}.tsv"  # rules finetune and kgbert_train
SCORE_BENCHMARK = "benchmarks/{dataset}/score/{run}.tsv"  # rules score and kgbert_score


class _Keep(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def fill(pattern: str, **wildcards) -> str:
    """`pattern` with the given wildcards filled and the others kept as {wildcards} (for a rule: e.g. the encoder
    fixed by the config, the dataset left to Snakemake)."""
    return string.Formatter().vformat(pattern, (), _Keep({k: str(v) for k, v in wildcards.items()}))
