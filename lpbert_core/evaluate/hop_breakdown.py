"""Metrics by the answer's distance from the query's entity in a graph's observed triples.

An inductive test graph's structure carries much of the answer: Personalized PageRank, which reads nothing else, is
the strongest row without text. This breakdown shows where: each test query's anchor (the head of a tail query, the
tail of a head query) and its gold answer are a number of undirected hops apart in `vN_ind`'s observed triples (the
edges PPR and the n-hop re-ranking walk, lpbert_core.graph.adjacency), and every row's ranks are summarised per
distance, so a text model and the graph walk can be compared where the graph helps and where it cannot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse.csgraph import shortest_path

from lpbert_core.evaluate.breakdown import COLUMNS as BREAKDOWN_COLUMNS
from lpbert_core.evaluate.breakdown import rank_summary
from lpbert_core.errors import InputError
from lpbert_core.graph.adjacency import undirected_adjacency

UNREACHABLE = "unreachable"
MAX_HOPS = 3  # distances 1..3 get a bucket each, farther ones share ">3": GraIL's enclosing subgraphs are 3 hops


def anchor_gold_distances(ranks: pd.DataFrame, edges: list[tuple[str, str, str]], chunk: int = 512) -> np.ndarray:
    """Undirected hop count from each query's anchor to its gold entity over `edges` ((head, relation, tail) ids);
    0 where the answer is the anchor itself, inf where no path exists or either entity is absent from the edges.
    (Undirected: the same count either way; the anchors are the shortest-path sources because queries share them.)"""
    missing = {"direction", "head", "tail"} - set(ranks.columns)
    if missing:
        raise ValueError(f"ranks frame lacks columns {sorted(missing)}")
    index = {e: i for i, e in enumerate(sorted({x for h, _, t in edges for x in (h, t)}))}
    triples = np.array([(index[h], 0, index[t]) for h, _, t in edges], dtype=np.int64).reshape(-1, 3)
    adjacency = undirected_adjacency(triples, len(index))
    tail_query = (ranks["direction"] == "tail").to_numpy()
    anchors = np.where(tail_query, ranks["head"], ranks["tail"])
    golds = np.where(tail_query, ranks["tail"], ranks["head"])
    out = np.full(len(ranks), np.inf)
    out[anchors == golds] = 0.0
    known = np.array([a in index and g in index for a, g in zip(anchors, golds)], dtype=bool)
    if not known.any():
        return out
    source = np.array([index[a] for a in anchors[known]])
    target = np.array([index[g] for g in golds[known]])
    found = np.empty(len(source))
    unique = np.unique(source)
    for start in range(0, len(unique), chunk):  # a [chunk, E] block at a time: memory stays bounded on large graphs
        block = unique[start:start + chunk]
        dist = shortest_path(adjacency, unweighted=True, directed=False, indices=block)
        pick = np.isin(source, block)
        found[pick] = dist[np.searchsorted(block, source[pick]), target[pick]]
    out[known] = found
    return out


def distance_labels(distances: np.ndarray, max_hops: int = MAX_HOPS) -> np.ndarray:
    """'1' .. str(max_hops), f'>{max_hops}' and 'unreachable' (the anchor is its own answer: '0')."""
    labels = np.where(np.isinf(distances), UNREACHABLE, "")
    finite = ~np.isinf(distances)
    hops = distances[finite].astype(int)
    labels[finite] = np.where(hops > max_hops, f">{max_hops}", hops.astype(str))
    return labels


def by_hop_distance(ranks: pd.DataFrame, distances: np.ndarray, max_hops: int = MAX_HOPS) -> pd.DataFrame:
    """One row per distance bucket (nearest first, then 'unreachable') plus 'ALL': query count, share of the
    queries, MRR, MR and Hits@1/3/10 of the realistic ranks."""
    if len(distances) != len(ranks):
        raise ValueError(f"{len(distances)} distances for {len(ranks)} ranked queries")
    labels = distance_labels(np.asarray(distances, dtype=np.float64), max_hops)
    realistic = ranks["realistic"].to_numpy(dtype=np.float64)
    order = [str(k) for k in range(max_hops + 1)] + [f">{max_hops}", UNREACHABLE, "ALL"]
    rows = []
    for label in order:
        sel = np.ones(len(ranks), dtype=bool) if label == "ALL" else labels == label
        if sel.any():
            rows.append({"distance": label, "share": float(sel.mean()), **rank_summary(realistic[sel])})
    metric_columns = [c for c in BREAKDOWN_COLUMNS if c not in ("relation", "direction")]
    return pd.DataFrame(rows, columns=["distance", "share", *metric_columns])


def reverse_in_graph(test: list[tuple[str, str, str]], edges: list[tuple[str, str, str]]) -> float:
    """The share of test triples (h, r, t) whose reverse (t, r, h) is an observed triple: what a symmetric relation
    hands any method that reads the graph."""
    observed = set(edges)
    return float(np.mean([(t, r, h) in observed for h, r, t in test])) if test else 0.0


def hop_figure(frames: dict[str, pd.DataFrame], path, title: str, metric: str = "mrr"):
    """Bars of `metric` per distance bucket, one bar per row (method), the bucket's share of queries under its label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = [b for b in dict.fromkeys(d for f in frames.values() for d in f["distance"]) if b != "ALL"]
    shares = {}
    for frame in frames.values():
        shares.update(dict(zip(frame["distance"], frame["share"])))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(buckets) + 2), 3.8))
    width = 0.8 / max(1, len(frames))
    x = np.arange(len(buckets))
    for k, (name, frame) in enumerate(frames.items()):
        values = frame.set_index("distance")[metric]
        ax.bar(x + (k - (len(frames) - 1) / 2) * width, [values.get(b, np.nan) for b in buckets], width, label=name)
    names = [b if b == UNREACHABLE else f"{b} hop{'' if b == '1' else 's'}" for b in buckets]
    ax.set_xticks(x, [f"{name}\n{shares[b]:.0%} of queries" for name, b in zip(names, buckets)], fontsize=8)
    ax.set_ylabel(metric.upper() if metric == "mrr" else metric)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return path


def split_triples(triples: pd.DataFrame, splits) -> list[tuple[str, str, str]]:
    """(head, relation, tail) ids of the `splits` of a text-triples table (text/triples.parquet), inverse rows left
    out."""
    missing = {"split", "head", "relation", "tail", "inverse"} - set(triples.columns)
    if missing:
        raise ValueError(f"triples table lacks columns {sorted(missing)}")
    part = triples[triples["split"].isin(list(splits)) & ~triples["inverse"].astype(bool)]
    return list(zip(part["head"], part["relation"], part["tail"]))


def hop_breakdowns(triples: pd.DataFrame, ranks: dict[str, pd.DataFrame], graph_splits) -> tuple[dict, dict]:
    """Each row's by_hop_distance over the `graph_splits` triples of a test graph's text-triples table, and a summary
    (observed and test triple counts, reverse_in_graph). The rows rank the same queries, so the graph is built and
    its shortest paths walked once for all of them."""
    edges, test = split_triples(triples, graph_splits), split_triples(triples, ["test"])
    together = pd.concat([frame[["direction", "head", "tail"]] for frame in ranks.values()], ignore_index=True)
    distances = anchor_gold_distances(together, edges)
    bounds = np.cumsum([len(frame) for frame in ranks.values()])[:-1]
    frames = {name: by_hop_distance(frame, part)
              for (name, frame), part in zip(ranks.items(), np.split(distances, bounds))}
    summary = {"observed_triples": len(edges), "test_triples": len(test),
               "reverse_in_graph": reverse_in_graph(test, edges)}
    return frames, summary


def run_hop_breakdown(*, settings: dict, inputs: dict, outputs: dict, log=print) -> pd.DataFrame:
    """Rule inductive_hops: inputs.triples (the test graph's text/triples.parquet) and settings.rows (name ->
    ranks.parquet) -> outputs.csv (one row per name x distance bucket) and outputs.png; settings.graph_splits: the
    splits whose triples are the walked edges (inductive_eval.ppr.graph_splits), settings.title."""
    from lpbert_core.runtime.atomic import atomic_path

    if not settings["rows"]:
        raise InputError(inputs["triples"], "no full-ranking row of the inductive table to break down on this graph")
    frames, summary = hop_breakdowns(pd.read_parquet(inputs["triples"]),
                                     {name: pd.read_parquet(path) for name, path in settings["rows"].items()},
                                     settings["graph_splits"])
    reverse = summary["reverse_in_graph"]
    log(f"{summary['observed_triples']} observed triples ({'+'.join(settings['graph_splits'])}); {reverse:.1%} of "
        "the test triples have their reverse among them")
    for name, frame in frames.items():
        log(f"{name}:\n{frame.round(3).to_string(index=False)}")
    table = pd.concat([frame.assign(row=name) for name, frame in frames.items()], ignore_index=True)
    table = table[["row", *[c for c in table.columns if c != "row"]]]
    with atomic_path(outputs["csv"]) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(outputs["png"]) as tmp:
        hop_figure(frames, tmp, f"{settings['title']}\n({reverse:.0%} of the test triples have their reverse observed)")
    return table
