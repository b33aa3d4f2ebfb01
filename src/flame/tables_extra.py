"""The paper's other tables (FLAME Tables 1, 5, 6, 7 and 9): per-model cells that are means with
n and a 95 % bootstrap interval ({mean, n, lo, hi}), our numbers beside the paper's.

- ``truthfulqa``: Table 5, TruthfulQA MC1/MC2/MC3 (and BLEU/ROUGE-L accuracy of generated
  answers when they were scored), from MODEL/truthfulqa.json (flame.truthfulqa);
- ``alignment-tax``: Table 9, MMLU and GSM8K accuracy, from MODEL/alignment_tax.json
  (flame.alignment_tax);
- ``classifier``: Table 6, SFT_FLAME with and without the classifier: win rate (--winrate, vs
  SFT) and Bio FActScore from MODEL/factuality.json;
- ``pair-selection``: Table 7, SFT + DPO_FLAME with each fact-pair selection: fact pairs
  (--pair-counts), win rate (vs SFT+DPO) and Bio FActScore;
- ``pilot``: Table 1, the Bio pilot study (flame.pilot): Bio FActScore of PT, PT+RAG, SFT on
  each kind of bios and DPO on each kind of pairs, with their training examples / pairs
  (--pilot-counts).

CSV columns: model, METRIC..., paper_METRIC..., METRIC_n, METRIC_lo, METRIC_hi..., bio_left_out
(with a Bio FS column; train_left_out in Table 1), vs_baseline ("baseline", "not
distinguishable" when each interval overlaps the baseline row's, or the metrics that differ).
Markdown: ours ± half the interval (paper). A cell built without the responses whose topic the
knowledge source lacks (Bio FS; Table 1's DPO_FS pairs, ranked by FActScore) is marked † with a
note under the table saying how many were left out (flame.tables.left_out_notes).

Example:
    python -m flame.tables_extra truthfulqa --eval-dir results/eval --baseline SFT+DPO \
        --rows SFT SFT+DPO SFT_FLAME+DPO_FLAME --out results/tables/table5_truthfulqa
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flame.cli import run
from flame.io import read_json, write_text
from flame.stats import half_width, overlaps
from flame.tables import (
    fmt,
    left_out,
    left_out_column,
    left_out_count,
    left_out_notes,
    mark,
    paper,
)

# subcommand -> (title, summary file, paper table key, {metric: header})
TABLES = {
    "truthfulqa": (
        "Table 5: TruthfulQA (%)",
        "truthfulqa.json",
        "table5_truthfulqa",
        {
            "mc1": "MC1",
            "mc2": "MC2",
            "mc3": "MC3",
            "bleu_acc": "BLEU acc",
            "rougeL_acc": "ROUGE-L acc",
        },
    ),  # fmt: skip
    "alignment-tax": (
        "Table 9: alignment tax (accuracy, %)",
        "alignment_tax.json",
        "table9_alignment_tax",
        {"mmlu": "MMLU (5-shot)", "gsm8k": "GSM8K (8-shot EM)"},
    ),
    "classifier": (
        "Table 6: SFT_FLAME with and without the fact-based classifier",
        None,
        "table6_classifier",
        {"win": "Win vs SFT", "bio_fs": "Bio FS"},
    ),
    "pair-selection": (
        "Table 7: fact-pair selection for SFT + DPO_FLAME",
        None,
        "table7_pair_selection",
        {"pairs": "fact pairs", "win": "Win vs SFT+DPO", "bio_fs": "Bio FS"},
    ),
    "pilot": (
        "Table 1: the biography pilot study",
        None,
        "table1_pilot",
        {"train": "training examples / pairs", "bio_fs": "Bio FS"},
    ),
}

COUNTS = {"pairs", "train"}  # cells that are counts, not means: shown as integers
LEFT_OUT_METRICS = ("bio_fs", "train")  # cells FActScore's left-out responses can touch
# the paper's model where it is not Llama-2 70B
PAPER_MODEL = {"table1_pilot": "Llama-2 7B"}
# Table 1's rows -> the pilot's training set each was trained on (flame.pilot's counts)
PILOT_SETS = {"SFT_PT": "SFT_PT", "SFT_RAG": "SFT_RAG", "SFT_PT+DPO_FS": "DPO_FS",
              "SFT_PT+DPO_RAG": "DPO_RAG"}  # fmt: skip


def win_and_bio(eval_dir: Path, model: str, winrate: dict | None) -> dict:
    """{win, bio_fs} cells of a model: its judged win rate and its Bio FActScore (%)."""
    row = {}
    w = winrate["models"].get(model) if winrate else None
    if winrate and model == winrate.get("baseline"):
        row["win"] = {"mean": 50.0, "n": None, "lo": 50.0, "hi": 50.0}
    elif w:
        row["win"] = w.get("win_rate_ci") or {"mean": w["win_rate"]}
    path = eval_dir / model / "factuality.json"
    if not path.exists():
        raise SystemExit(f"error: {path}: no such file (evaluate {model} first)")
    summary = read_json(path).get("bio")
    row["left_out"] = {"bio_fs": left_out(summary, "bios")}
    row["left_out_n"] = {"bio_fs": left_out_count(summary)}
    bio = summary or {}
    ci = bio.get("factscore_ci") or {}
    if bio.get("factscore") is not None:
        row["bio_fs"] = {
            "mean": 100.0 * bio["factscore"],
            "n": ci.get("n"),
            "lo": None if ci.get("lo") is None else 100.0 * ci["lo"],
            "hi": None if ci.get("hi") is None else 100.0 * ci["hi"],
        }
    return row


def fact_pair_counts(paths: list[Path]) -> dict[str, int]:
    """{model: fact pairs} from pair_counts*.json: the DPO_FLAME* sets of each SFT model."""
    out = {}
    for path in paths:
        sft = path.parent.name
        for name, c in read_json(path)["sets"].items():
            if name.startswith("DPO_FLAME"):
                out[f"{sft}+{name}"] = c["fact"]
    return out


def versus(row: dict, base: dict | None, headers: dict) -> str:
    if base is None or row is base:
        return "baseline" if row is base else ""
    differ, compared = [], 0
    for m in headers:
        a, b = row.get(m), base.get(m)
        if not a or not b or a.get("lo") is None or b.get("lo") is None:
            continue
        compared += 1
        if not overlaps((a["lo"], a["hi"]), (b["lo"], b["hi"])):
            differ.append(headers[m])
    if not compared:
        return ""
    return f"differs: {'; '.join(differ)}" if differ else "not distinguishable"


def render(
    title: str,
    rows: dict[str, dict],
    headers: dict[str, str],
    ref: dict,
    labels: dict,
    baseline: str | None,
    paper_model: str = "Llama-2 70B",
) -> tuple[str, str]:
    """CSV and Markdown of rows {model: {metric: {mean, n, lo, hi}}}; metrics no row has are
    left out."""
    metrics = [m for m in headers if any(r.get(m) for r in rows.values())]
    ci_cols = [f"{m}_{k}" for m in metrics for k in ("n", "lo", "hi")]
    lo_metrics = [m for m in LEFT_OUT_METRICS if m in metrics]
    lo_cols = [left_out_column(m) for m in lo_metrics]
    csv = [",".join(["model", *metrics, *(f"paper_{m}" for m in metrics), *ci_cols, *lo_cols,
                     "vs_baseline"])]  # fmt: skip
    md = [
        f"### {title}",
        "",
        f"Each cell: ours ± half its 95 % bootstrap interval (paper, {paper_model}).",
        "",
        "| model | " + " | ".join(headers[m] for m in metrics) + f" | vs {baseline} |",
        "|---" * (len(metrics) + 2) + "|",
    ]
    base = rows.get(baseline) if baseline else None
    shown = {m: headers[m] for m in metrics}
    for name, row in rows.items():
        p = ref.get(name, {})
        vs = versus(row, base, shown)
        cells = {m: row.get(m) or {} for m in metrics}

        def num(x, digits=4):
            return "" if x is None else f"{x:.{digits}f}"

        csv.append(
            ",".join(
                [
                    name,
                    *(
                        str(cells[m].get("mean", "")) if m in COUNTS else num(cells[m].get("mean"))
                        for m in metrics
                    ),
                    *("" if p.get(m) is None else str(p[m]) for m in metrics),
                    *(
                        str(cells[m][k]) if k == "n" and cells[m].get(k) is not None
                        else num(cells[m].get(k))
                        for m in metrics for k in ("n", "lo", "hi")
                    ),
                    *(str((row.get("left_out_n") or {}).get(m, "")) for m in lo_metrics),
                    vs,
                ]
            )
        )  # fmt: skip
        md_cells = []
        for m in metrics:
            c = cells[m]
            hw = half_width(c.get("lo"), c.get("hi"))
            mean = c.get("mean")
            ours = str(mean) if m in COUNTS and mean is not None else fmt(mean)
            ours += "" if hw is None else f" ± {hw:.1f}"
            theirs = p.get(m)
            ours = mark(ours, row, m)
            md_cells.append(f"{ours} ({theirs if m in COUNTS and theirs else fmt(theirs)})")
        md.append(f"| {labels.get(name, name)} | " + " | ".join(md_cells) + f" | {vs} |")
    notes = left_out_notes(rows, {m: headers[m] for m in metrics}, labels)
    return "\n".join(csv) + "\n", "\n".join([*md, *([""] + notes if notes else [])]) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("table", choices=sorted(TABLES))
    ap.add_argument("--eval-dir", required=True, type=Path)
    ap.add_argument("--rows", nargs="+", required=True, help="models, in table order")
    ap.add_argument("--baseline", help="the row others are compared with")
    ap.add_argument("--winrate", type=Path, help="winrate_tableN.json (classifier, pair-selection)")
    ap.add_argument("--pair-counts", nargs="*", type=Path, default=[], help="pair_counts*.json")
    ap.add_argument("--pilot-counts", type=Path, help="the pilot's counts.json (pilot)")
    ap.add_argument("--out", required=True, help="output path without extension (.csv, .md)")
    args = ap.parse_args(argv)
    title, filename, key, headers = TABLES[args.table]
    ref = paper()
    rows = {}
    if args.table == "pilot":
        counts = read_json(args.pilot_counts) if args.pilot_counts else {}
        sets = counts.get("sets", {})
        for m in args.rows:
            rows[m] = win_and_bio(args.eval_dir, m, None)
            if PILOT_SETS.get(m) in sets:
                rows[m]["train"] = {"mean": sets[PILOT_SETS[m]]}
                if PILOT_SETS[m] == "DPO_FS":  # PT's bios ranked by FActScore
                    fs = counts.get("factscore")
                    rows[m]["left_out"]["train"] = left_out(fs, "PT bios")
                    rows[m]["left_out_n"]["train"] = left_out_count(fs)
    elif filename is None:  # assembled from win rates, factuality and pair counts
        if args.winrate is None:
            raise SystemExit(f"error: {args.table} needs --winrate")
        winrate = read_json(args.winrate)
        counts = fact_pair_counts(args.pair_counts)
        for m in args.rows:
            rows[m] = win_and_bio(args.eval_dir, m, winrate)
            if m in counts:
                rows[m]["pairs"] = {"mean": counts[m]}
    for m in args.rows if filename else ():
        path = args.eval_dir / m / filename
        if not path.exists():
            raise SystemExit(f"error: {path}: no such file (run the {args.table} step first)")
        rows[m] = read_json(path)
    labels = {**ref["row_labels"], **ref.get(f"{key}_labels", {})}
    csv, md = render(
        title, rows, headers, ref[key], labels, args.baseline, PAPER_MODEL.get(key, "Llama-2 70B")
    )
    write_text(f"{args.out}.csv", csv)
    write_text(f"{args.out}.md", md)
    print(md)


if __name__ == "__main__":
    run(main)
