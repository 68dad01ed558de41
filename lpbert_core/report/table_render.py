"""Markdown, CSV and LaTeX of the tables: a `Layout` (column groups, lines of cells) drawn both ways, and the notes
(scale, encoders, the Δ rule, seeds, leaky runs, departures) and provenance written under each table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import pandas as pd

from lpbert_core.runtime.atomic import atomic_path
from lpbert_core.report.table_frames import FLAG_ENCODER, PAPER_ENCODER_NAMES, dataset_columns, table_metrics
from lpbert_core.report.table_sources import ACCURACY, FLOOR_LABEL, FLOOR_MARK, OurRow, scale_text

DISPLAY = {"hits@1": "Hits@1", "hits@3": "Hits@3", "hits@10": "Hits@10", "mr": "MR", "mrr": "MRR",
           "t_per_epoch": "T/Ep (h)", "infer": "Infer (h)"}
TITLES = {
    "table1": "Table 1: link prediction on WN18RR, FB15k-237 and UMLS (paper, ours, Δ)",
    "table3": "Table 3: LP-BERT vs a KG-BERT-style cross-encoder on WN18RR, accuracy and speed (paper, ours, Δ)",
    "table4": "Table 4: ablation of LP-BERT on WN18RR (paper, ours, Δ)",
    "reproduction": "Reproduction: the paper's LP-BERT vs our paper-text and authors'-code readings",
}
COMMON_NOTES = (
    "Ranks are filtered (all train/dev/test triples known) over every entity, head and tail queries of each test "
    "triple; we report the realistic rank (mean of optimistic and pessimistic: text encoders produce ties). The paper "
    "breaks ties at random, whose expectation is the realistic rank.",
    "Δ = ours − paper. Hits and MRR are fractions; MR is a rank (lower is better).",
)
# said only where no row of the table is leaky; a leaky row gets LEAKY_NOTE instead
CLEAN_NOTE = "No dev or test triple is used as an in-batch label during training (the authors' code did)."
DEFAULT_NOTES = {
    "table1": (
        "Rows without a row of ours are the paper's numbers (which it took from the original papers); we do not run "
        "those baselines. Params: the paper's column (semantic matching models).",
        "FB15k-237 entity text: StAR's short 'name -- first sentence' descriptions (fb-entity2text-new.txt), not the "
        "authors' long Freebase descriptions, which are not distributable; expect lower FB15k-237 numbers.",
        "UMLS: the paper reports only Hits@10 and MR (the CSV has all our metrics); entity text is the name alone.",
    ),
    "table3": (
        "Speed: the paper's hours were measured on a Tesla P40 without mixed precision; ours on this machine, with "
        "the same encoder and hardware for every one of our rows, so compare the ratio column (Infer ÷ LP-BERT: the "
        "row's inference time over LP-BERT's with the same initial weights), not absolute hours.",
        "T/Ep = wall seconds of the finetune rule (Snakemake benchmark file) / epochs it ran (train_log.csv; a resumed "
        "job counts only its last attempt's steps); Infer = wall seconds of the score rule (benchmark file), "
        "including model loading. Initial weights of a row of ours: the encoder key it starts from.",
        "Our 'KG-BERT' row is a KG-BERT-style cross-encoder (one sequence per candidate triple) on our encoder; StAR is "
        "not reproduced (paper numbers only).",
        "The paper's T/Ep of LP-BERT (RoBERTa-large), '2.2', has no unit; read as hours.",
    ),
    "table4": (
        "'BatchSample = N': the paper does not define the alternative to in-batch negatives; our reading is one "
        "randomly sampled negative tail per positive, scored by the same loss (a config value).",
        "Pre-train = N: fine-tuning starts from the encoder's original weights; the other rows start from our "
        "multi-task pre-training with the tasks named.",
    ),
}
DELTA_RULE = {
    "table3": "**Δ rule:** the rows of Table 3 differ by their initial weights, so a row of ours gets a Δ only where it "
              "starts from its paper row's weights; on another encoder (e.g. MiniLM against RoBERTa-base) its Δ line "
              "says 'none (encoder differs)'.",
    "other": f"**Δ rule:** Δ is printed for every row of ours on the paper's dataset. The paper's LP-BERT is "
             f"BERT-base-sized; a row of ours on another encoder (MiniLM-L6 on CPU) is marked {FLAG_ENCODER}: its Δ "
             f"measures method, encoder and scale together, not the method alone. (Table 3, whose rows differ by "
             f"encoder, prints no Δ across encoders.)",
}
SEEDS_NOTE = (
    "**Seeds:** a row with several seeds shows mean ± sample sd (ddof=1) over its n seeds (CSV: `{metric}`, "
    "`{metric}_sd`, `{metric}_n`); Δ uses the mean. Each further seed is the run instance `{run}.s{seed}`, fine-tuned "
    "and scored with that seed (finetune.seed; kgbert.seed for the cross-encoder). Pre-training is shared by all "
    "seeds, not re-seeded, so the sd leaves out pre-training variance."
)
LEAKY_NOTE = ("**⚠ leaky:** the run's metrics.json says `leaky: true` (its training saw what the test measures): "
              "its numbers are not a clean measurement. Leaky instances: ")
MISSING = "–"
FLOOR_SECTION = "Zero-shot floor (ours; the paper has no such row)"


# ------------------------------------------------------------------------------------------------ cells
def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def fmt(value, metric: str, diff: bool = False) -> str:
    if missing(value):
        return MISSING
    value = float(value)
    if metric in ("t_per_epoch", "infer"):
        return f"{value:+.3g}" if diff else (f"{value:,.0f}" if value >= 1000 else f"{value:.3g}")
    if metric == "infer_vs_lpbert":
        return f"{value:,.0f}×" if value >= 100 else f"{value:.3g}×"
    if metric == "mr":
        return f"{value:+.1f}" if diff else (f"{value:.0f}" if value >= 100 or value.is_integer() else f"{value:.2f}")
    return f"{value:+.3f}" if diff else f"{value:.3f}"


def fmt_ours(mean, sd, metric: str) -> str:
    text = fmt(mean, metric)
    if not missing(mean) and not missing(sd):
        text += " ± " + (f"{float(sd):.2f}" if metric == "mr" else fmt(sd, metric))
    return text


# ------------------------------------------------------------------------------------------------ layout
@dataclass
class Layout:
    lead: list[str]  # leading text columns
    groups: list[tuple[str, list[str]]]  # (group title or "", column titles)
    trailing: list[str] = field(default_factory=list)
    lines: list[tuple[str, list[str]]] = field(default_factory=list)  # (kind: section|paper|ours|diff, cells)

    @property
    def width(self) -> int:
        return len(self.lead) + sum(len(c) for _, c in self.groups) + len(self.trailing)


def md_table(layout: Layout) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    header = list(layout.lead) + [f"{g} {c}".strip() for g, cols in layout.groups for c in cols] + layout.trailing
    out = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for kind, cells in layout.lines:
        if kind == "section":
            cells = [f"*{cells[0]}*"] + [""] * (layout.width - 1)
        out.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return "\n".join(out)


def latex_escape(text: str) -> str:
    text = str(text)
    for a, b in (("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"), ("#", "\\#"), ("$", "\\$"),
                 ("{", "\\{"), ("}", "\\}")):
        text = text.replace(a, b)
    text = text.replace("\\textbackslash\\{\\}", "\\textbackslash{}")
    for a, b in (("Δ", "$\\Delta$"), ("−", "-"), ("–", "--"), ("↳", "$\\hookrightarrow$"), ("±", "$\\pm$"),
                 ("‡", "$\\ddagger$"), ("†", "$\\dagger$"), ("⚠", "(!)"), ("÷", "/"), ("×", "$\\times$"),
                 ("≠", "$\\neq$"), (FLOOR_MARK, "$\\triangledown$"), ("≤", "$\\leq$")):
        text = text.replace(a, b)
    parts = text.split("`")  # `code` -> \texttt{code}
    return "".join(p if i % 2 == 0 else f"\\texttt{{{p}}}" for i, p in enumerate(parts))


def tex_table(layout: Layout, caption: str, label: str) -> str:
    cols = "l" * len(layout.lead) + "".join("r" * len(c) for _, c in layout.groups) + "r" * len(layout.trailing)
    out = ["\\begin{table}", "\\centering", "\\small", f"\\caption{{{latex_escape(caption)}}}", f"\\label{{{label}}}",
           f"\\begin{{tabular}}{{{cols}}}", "\\toprule"]
    if any(g for g, _ in layout.groups):
        cells, rules, col = [""] * len(layout.lead), [], len(layout.lead) + 1
        for g, c in layout.groups:
            cells.append(f"\\multicolumn{{{len(c)}}}{{c}}{{{latex_escape(g)}}}")
            rules.append(f"\\cmidrule(lr){{{col}-{col + len(c) - 1}}}")
            col += len(c)
        out += [" & ".join(cells + [""] * len(layout.trailing)) + " \\\\", " ".join(rules)]
    header = list(layout.lead) + [c for _, cols in layout.groups for c in cols] + layout.trailing
    out += [" & ".join(latex_escape(h) for h in header) + " \\\\", "\\midrule"]
    for kind, cells in layout.lines:
        if kind == "section":
            out.append(f"\\multicolumn{{{layout.width}}}{{l}}{{\\textit{{{latex_escape(cells[0])}}}}} \\\\")
        else:
            out.append(" & ".join(latex_escape(c) for c in cells) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def write_files(paths: dict, title: str, layout: Layout, notes: list[str], provenance: list[str],
                frame: pd.DataFrame, label: str, caption_extra: str = "") -> None:
    """Markdown (title, table, notes, provenance), the frame as CSV, and the LaTeX table; each written atomically."""
    if paths.get("md"):
        text = [f"# {title}", "", md_table(layout), "", "**Notes**", ""] + [f"- {n}" for n in notes]
        text += ["", "**Provenance** (where each of our numbers comes from)", ""]
        text += [f"- {p}" for p in provenance] or ["- (no rows of ours)"]
        with atomic_path(paths["md"]) as tmp:
            tmp.write_text("\n".join(text) + "\n")
    if paths.get("csv"):
        with atomic_path(paths["csv"]) as tmp:
            frame.drop(columns=[c for c in frame.columns if c.startswith("_")]).to_csv(tmp, index=False)
    if paths.get("tex"):
        with atomic_path(paths["tex"]) as tmp:
            tmp.write_text(tex_table(layout, f"{title}. {caption_extra}".strip(), f"tab:{label}"))


# ------------------------------------------------------------------------------------------------ Tables 1, 3, 4
def ours_label(rec: pd.Series, table: str, statuses: Iterable[str]) -> str:
    """`↳ ours (run `x`; seeds 42, 43: mean ± sd, n=2)` plus what is special about the row: skipped, leaky, ‡."""
    parts = [f"run `{rec['run']}`"]
    seeds = str(rec.get("seeds") or "").split()
    if len(seeds) > 1 or (not missing(rec.get("n")) and int(rec["n"]) > 1):
        parts.append(f"seeds {', '.join(seeds)}: mean ± sd, n={int(rec['n'])}")
    if str(rec.get("delta", "")).endswith("other dataset"):
        parts.append(f"on {rec['dataset']}")
    text = (f"↳ ours ({'; '.join(parts)})" if rec["row"] else f"ours, no paper row ({'; '.join(parts)})")
    statuses = list(dict.fromkeys(s for s in statuses if not s.startswith("ours")))
    if statuses:
        text += ": " + "; ".join(statuses)
    if rec.get("leaky") is True:
        text += " ⚠ leaky"
    if str(rec.get("delta", "")) == "shown, encoder differs" and str(rec["status"]).startswith("ours"):
        text += f" {FLAG_ENCODER}"
    return text


def diff_label(rec: pd.Series, table: str) -> str:
    rule = str(rec.get("delta", ""))
    if rule.startswith("shown"):
        return "↳ Δ ours − paper" + (f" {FLAG_ENCODER}" if rule == "shown, encoder differs" else "")
    why = rule.removeprefix("none: ")
    if why == "other dataset":
        why = f"ours on {rec['dataset']}, paper on {rec.get('paper_dataset') or 'other datasets'}"
    elif why == "encoder differs":
        paper = PAPER_ENCODER_NAMES.get(rec.get("paper_encoder"), rec.get("paper_encoder"))
        why = f"encoder differs: {rec.get('encoder') or '?'} ≠ {paper}"
    return f"↳ Δ: none ({why})"


def table_layout(table: str, frame: pd.DataFrame) -> Layout:
    metrics = table_metrics(table)
    if table == "table1":
        layout = Layout(["Method"], [(d, [DISPLAY[m] for m in ms]) for d, ms in dataset_columns(table, frame)],
                        ["Params"])
        columns = [(d, m) for d, ms in dataset_columns(table, frame) for m in ms]
    elif table == "table3":
        layout = Layout(["Method", "Initial weights"], [("", [DISPLAY[m] for m in metrics])], ["Infer ÷ LP-BERT"])
        columns = [(None, m) for m in metrics]
    else:
        layout = Layout(["Pre-train", "BatchSample"], [("", [DISPLAY[m] for m in metrics])])
        columns = [(None, m) for m in metrics]
    genre = None
    for line, recs in frame.groupby("line", sort=True) if not frame.empty else []:
        source = recs.iloc[0]["source"]
        has_numbers = recs["status"].astype(str).str.startswith("ours")
        if source == "diff" and not has_numbers.any():
            continue  # a skipped or unrun row of ours has nothing to compare
        shown = recs[recs["delta"].astype(str).str.startswith("shown")] if "delta" in recs else recs.iloc[:0]
        # the record that speaks for the line: one with numbers (ours) / with a Δ (diff), else the first
        first = (shown.iloc[0] if source == "diff" and len(shown) else
                 recs[has_numbers].iloc[0] if source in ("ours", "floor") and has_numbers.any() else recs.iloc[0])
        if table == "table1" and source == "paper" and first.get("genre") and first["genre"] != genre:
            genre = first["genre"]
            layout.lines.append(("section", [f"{genre} models"]))
        if source == "floor" and genre != FLOOR_SECTION:
            genre = FLOOR_SECTION
            layout.lines.append(("section", [FLOOR_SECTION]))
        by_dataset = {r["dataset"]: r for _, r in recs.iterrows()}

        def rec_for(dataset):
            return first if dataset is None else by_dataset.get(dataset)

        cells = []
        for dataset, m in columns:
            rec = rec_for(dataset)
            if rec is None:
                cells.append(MISSING)
            elif source == "paper":
                cells.append(fmt(rec.get(m), m))
            elif source == "diff":
                cells.append(fmt(rec.get(m), m, diff=True))
            elif not str(rec["status"]).startswith("ours"):  # the label says why when the whole line has none
                partly = has_numbers.any() and str(rec["status"]).startswith("skipped")
                cells.append("skipped" if partly else MISSING)
            else:
                text = fmt_ours(rec.get(m), rec.get(f"{m}_sd"), m)
                text += "†" if m == "infer" and rec.get("infer_note") and text != MISSING else ""
                cells.append(text + (f" {FLOOR_MARK}" if is_below(rec) and m == rec.get("floor_metric") else ""))
        if source == "paper" and table == "table1":
            lead = [first["label"]]
        elif source == "paper" and table == "table3":
            lead = [str(first["row"]).split("|")[0], first["initial_weights"]]
        elif source == "paper":
            lead = [first["pretrain"], first["batch_sample"]]
        elif source in ("ours", "floor"):
            lead = [ours_label(first, table, recs["status"]) if source == "ours" else floor_line_label(first, recs)]
            below = [r["dataset"] for _, r in recs.iterrows() if is_below(r)]
            if below:
                lead[0] += f" {FLOOR_MARK} below the zero-shot floor" + (f" on {', '.join(below)}"
                                                                          if table == "table1" else "")
            lead += [first["encoder"] or MISSING] if table == "table3" else [""] * (len(layout.lead) - 1)
        else:
            lead = [diff_label(first, table)] + [""] * (len(layout.lead) - 1)
        trailing = []
        if table == "table1":
            trailing = [first.get("params") if source == "paper" and not missing(first.get("params")) else MISSING]
        elif table == "table3":
            trailing = [fmt(first.get("infer_vs_lpbert"), "infer_vs_lpbert") if source != "diff" else MISSING]
        layout.lines.append((source, lead + cells + trailing))
    return layout


def is_below(rec) -> bool:
    """A row of ours at or below its zero-shot floor (`below_floor`; missing on other records)."""
    return str(rec.get("below_floor")) == "True"


def floor_line_label(rec: pd.Series, recs: pd.DataFrame) -> str:
    """`zero-shot (no fine-tuning): bare encoder (run `zero-shot`)`, plus why a floor without numbers has none."""
    text = f"{rec['label']} (run `{rec['run']}`)"
    statuses = list(dict.fromkeys(s for s in recs["status"].astype(str) if not s.startswith("ours")))
    return text + (": " + "; ".join(statuses) if statuses else "")


def floor_notes(floors: list[tuple[str, str]], below: list[dict]) -> list[str]:
    """What the floor rows are (`floors`: (run, label)) and which rows of ours are at or below them (`below`: run,
    dataset, metric, value, floor_run, floor_value); nothing when the table has no floor row."""
    if not floors:
        return []
    runs = ", ".join(dict.fromkeys(f"`{run}` ({label.removeprefix(FLOOR_LABEL + ': ')})" for run, label in floors))
    notes = [f"**Zero-shot floor** (ours; the paper has no such row): {runs}: the initial encoder scored exactly like "
             "every run (same test triples, same filtered ranking), without fine-tuning. Each row of ours is compared "
             "with the floor on its encoder and pre-training variant (else its encoder's bare floor) in MRR (UMLS: "
             "Hits@10, the metric the paper reports there)."]
    if below:
        items = "; ".join(f"`{b['run']}` on {b['dataset']} ({DISPLAY[b['metric']]} {fmt(b['value'], b['metric'])} ≤ "
                          f"{fmt(b['floor_value'], b['metric'])} of `{b['floor_run']}`)" for b in below)
        notes.append(f"**{FLOOR_MARK} below the zero-shot floor:** {items}: at or below the untrained encoder, so "
                     "fine-tuning added nothing there.")
    else:
        notes.append("No row of ours is at or below its zero-shot floor.")
    return notes


def encoder_note(ours: list[OurRow]) -> str:
    used: dict[str, list[str]] = {}
    for row in ours:
        used.setdefault(row.encoder or row.spec.encoder or "?", []).append(str(row.spec.run))
    listed = "; ".join(f"{enc} ({', '.join(dict.fromkeys(runs))})" for enc, runs in used.items())
    return (f"**Encoders:** ours: {listed or 'no rows of ours'}. Paper: LP-BERT BERT-base-sized (Tables 1, 4; Table "
            f"3 names each row's initial weights).")


def common_notes(table: str, ours: list[OurRow], scale_note: str | None, scales: list[str]) -> list[str]:
    notes = []
    if scale_note:
        notes.append(f"**Scale:** {scale_note}")
    if len(scales) == 1:
        notes.append(f"**Scale of our rows:** {scales[0]}.")
    elif scales:
        notes.append("**Scale of our rows (differs per row):** " + "; ".join(scales) + ".")
    else:
        notes.append("**Scale of our rows:** no row of ours has results yet.")
    notes.append(encoder_note(ours))
    notes.append(DELTA_RULE["table3" if table == "table3" else "other"])
    if any(row.n > 1 for row in ours):
        notes.append(SEEDS_NOTE)
    leaks = list(dict.fromkeys(leak for row in ours for leak in row.leaks))
    notes.append(LEAKY_NOTE + "; ".join(leaks) + "." if leaks else CLEAN_NOTE)
    return notes


def floor_names(floors: list[OurRow]) -> list[tuple[str, str]]:
    return [(row.spec.run, row.spec.label or FLOOR_LABEL) for row in floors]


def row_name(row: OurRow) -> str:
    """A row's name in the provenance list: its paper row, or the floor's label."""
    return (row.spec.label or FLOOR_LABEL) if row.spec.floor else row.spec.row or "no paper row"


def provenance(ours: list[OurRow], label_of=row_name) -> list[str]:
    lines = []
    for row in ours:
        head = f"{label_of(row)} · {row.spec.dataset}"
        if not row.instances:
            lines.append(f"{head} · run `{row.spec.run or '–'}` · {row.status}: no metrics file")
        for inst in row.instances:
            seed = f" (seed {inst.instance.seed})" if inst.instance.seed is not None else ""
            extra = f"; inference time {inst.infer_label}" if inst.infer_label else ""
            extra += f"; ⚠ leaky ({inst.result.leak or 'see its metrics.json'})" if inst.result.leaky else ""
            lines.append(f"{head} · run `{inst.instance.run}`{seed}: `{inst.instance.metrics}`; "
                         f"{scale_text(inst.result.scale)}{extra}")
    return lines


def write_table(table: str, frame: pd.DataFrame, facts: dict, paths: dict, notes: list[str] | None = None,
                scale_note: str | None = None) -> None:
    ours = facts["ours"]
    all_notes = common_notes(table, ours, scale_note, facts["scales"]) + list(COMMON_NOTES)
    all_notes += floor_notes(floor_names(facts.get("floors", [])), facts.get("below", []))
    all_notes += list(DEFAULT_NOTES.get(table, ())) + list(notes or [])
    if not frame.empty and (frame.get("infer_note") is not None) and frame["infer_note"].fillna("").astype(bool).any():
        all_notes.append("† inference time extrapolated from a sample of test queries (see provenance); the accuracy "
                         "of that row is measured on the same sample.")
    caption = f"Scale: {scale_note}. " if scale_note else ""
    caption += "Δ = ours − paper; notes and provenance in the Markdown version."
    write_files(paths, TITLES[table], table_layout(table, frame), all_notes, provenance(ours), frame, table, caption)


__all__ = ["ACCURACY", "CLEAN_NOTE", "COMMON_NOTES", "DEFAULT_NOTES", "DISPLAY", "FLOOR_SECTION", "Layout", "TITLES",
           "floor_names", "floor_notes", "fmt", "fmt_ours", "is_below", "latex_escape", "md_table", "row_name",
           "table_layout", "tex_table", "write_files", "write_table"]
