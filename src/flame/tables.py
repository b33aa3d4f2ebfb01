"""The paper's tables from the workflow's results, our numbers beside the paper's.

Writes table2_sft.{csv,md} (SFT variants; win rate vs SFT), table3_dpo.{csv,md} (DPO variants;
win rate vs SFT+DPO), table8_length.{csv,md} (mean response length in characters),
table11_pairs.{csv,md} (DPO pair counts) and table_paired.{csv,md} (per set, each model's
FActScore minus its table's baseline's on the same prompts, with a paired bootstrap interval).
FActScore columns are percentages (FLAME: no length penalty); C/E are the mean numbers of
correct / erroneous facts per response. A cell that does not apply (the PT row outside Bio, a
baseline's win rate against itself is 50) follows the paper.

A set the data stage left out (--data-manifest's info.missing_sets) gets a note under the
tables.

Left out: a FActScore cell built without some responses, because topic retrieval found no page
of their topic in the knowledge source (factuality.json's n_unknown_topic / unknown_topics), is
marked † in Markdown with a note under the table ("† Bio FS, SFT: 3 of 4 bios left out: topic
not in the knowledge source (...)"); the CSV's SET_left_out columns give the count (0: none, ""
where the set was not evaluated). ``left_out``, ``mark`` and ``left_out_notes`` do this for
every table (flame.tables_extra, flame.table_fdpo).

Untrained rows: with --models-dir, each trained row (an SFT or DPO model of ours) reads its
checkpoint's train_summary.json. A run that had nothing to train on (flame.train_dpo.copy_unchanged:
zero preference pairs, or for SFT zero examples) wrote its init model unchanged, so its numbers
are the init model's: its Markdown row reads "NAME (untrained: zero preference pairs)" with a
note under the table, and the CSV's `trained` column says false (true for a trained row; empty
for a model no step of ours trains, PT and Chat, or with no summary). ``train_status``,
``trained_cell``, ``untrained_label`` and ``untrained_note`` do this for every table
(flame.table_fdpo too); flame.figure marks such rows in Figure 1.

Error bars: every win-rate and FActScore cell carries n and a 95 % bootstrap interval (CSV
columns METRIC_n, METRIC_lo, METRIC_hi after the paper's columns; ± half its width in Markdown).
The last column, vs_baseline, says whether a row can be told apart from the table's baseline
row: "not distinguishable" when each of its intervals overlaps the baseline's (a baseline's win
rate against itself is exactly 50), else the metrics that differ.

The paired table answers "does this row differ from the baseline?" more sharply than the
overlap test: both models answered the same prompts, so the prompt-to-prompt spread cancels.
It says "higher" / "lower" where the interval of the difference excludes 0.

Reads, under --eval-dir: MODEL/factuality.json, MODEL/facts/SET.jsonl, MODEL/alpaca.jsonl,
winrate_table2.json, winrate_table3.json; under --dpo-dir: SFT_MODEL/pair_counts.json; under
--models-dir: sft/MODEL/train_summary.json and dpo/MODEL/train_summary.json (MODEL with a "+").

Example:
    python -m flame.tables --eval-dir results/eval --dpo-dir results/dpo --out-dir results/tables \
        --models-dir results/models --table2-rows PT SFT SFT_fact SFT_FLAME \
        --table3-rows SFT SFT+DPO SFT_FLAME+DPO_FLAME
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import math
import statistics
from pathlib import Path

from flame.cli import run
from flame.io import FACTS, read_json, read_jsonl, write_text
from flame.stats import half_width, overlaps, paired_difference, verdict

SETS = {"bio": "bio", "af": "alpaca_fact", "fava": "fava"}
METRICS = ("win", *(f"{s}_{m}" for s in SETS for m in ("fs", "correct", "error")))
HEADERS = {
    "win": "Win",
    "bio_fs": "Bio FS",
    "bio_correct": "Bio C",
    "bio_error": "Bio E",
    "af_fs": "AF FS",
    "af_correct": "AF C",
    "af_error": "AF E",
    "fava_fs": "FAVA FS",
    "fava_correct": "FAVA C",
    "fava_error": "FAVA E",
}
CI_METRICS = ("win", *(f"{s}_fs" for s in SETS))  # cells with n and a bootstrap interval
LEFT_OUT_MARK = "†"
LEFT_OUT_WHY = "topic not in the knowledge source"
UNTRAINED_MARK = "untrained"


def left_out(summary: dict | None, noun: str = "responses") -> dict | None:
    """{n, of, topics, noun} of the responses a set's FActScore left out (topic retrieval, no page
    of their topic: flame.factscore.aggregate's n_unknown_topic); None when none was."""
    n = (summary or {}).get("n_unknown_topic") or 0
    if not n:
        return None
    return {"n": n, "of": summary.get("n_items"), "topics": list(summary.get("unknown_topics")
            or []), "noun": noun}  # fmt: skip


def left_out_count(summary: dict | None) -> str:
    """The CSV cell SET_left_out: how many responses were left out ("" for no summary)."""
    return "" if summary is None else str(summary.get("n_unknown_topic") or 0)


def left_out_column(metric: str) -> str:
    """bio_fs -> bio_left_out (the CSV column of a metric's left-out count)."""
    return f"{metric.removesuffix('_fs')}_left_out"


def mark(text: str, row: dict, metric: str) -> str:
    """A Markdown cell, marked † when it was built with responses left out."""
    return f"{text} {LEFT_OUT_MARK}" if (row.get("left_out") or {}).get(metric) else text


def left_out_notes(rows: dict[str, dict], headers: dict[str, str], labels: dict | None = None):
    """One line per marked cell, for under a table: which row, how many of how many left out,
    and their topics (rows: {name: row}, row["left_out"]: {metric: left_out(...)})."""
    notes = []
    for name, row in rows.items():
        for m, info in (row.get("left_out") or {}).items():
            if not info or m not in headers:
                continue
            topics = info["topics"][:8]
            more = ", ..." if len(info["topics"]) > len(topics) else ""
            names = f" ({', '.join(topics)}{more})" if topics else ""
            of = f" of {info['of']}" if info.get("of") is not None else ""
            label = (labels or {}).get(name, name)
            notes.append(f"{LEFT_OUT_MARK} {headers[m]}, {label}: {info['n']}{of} "
                         f"{info['noun']} left out: {LEFT_OUT_WHY}{names}.")  # fmt: skip
    return notes


def train_status(checkpoint: Path | None) -> dict | None:
    """A checkpoint's training, from its train_summary.json: {"trained": True}, or
    {"trained": False, "why": ...} for one written unchanged from its init because there was
    nothing to train on (flame.train_dpo.copy_unchanged: "zero preference pairs", for SFT "zero
    examples"; global_step 0); None without a summary (a model not trained here: PT, Chat)."""
    path = checkpoint / "train_summary.json" if checkpoint else None
    if path is None or not path.exists():
        return None
    summary = read_json(path)
    if summary.get("skipped") or not summary.get("global_step"):
        return {"trained": False, "why": str(summary.get("skipped") or "no training step")}
    return {"trained": True}


def checkpoint(models_dir: Path | None, model: str) -> Path | None:
    """Where the workflow writes a trained model (as workflow/rules/common.smk's trained_path):
    models/dpo/MODEL for a DPO run (its name has a "+"), else models/sft/MODEL."""
    if models_dir is None:
        return None
    return models_dir / ("dpo" if "+" in model else "sft") / model


def untrained(status: dict | None) -> bool:
    return status is not None and status["trained"] is False


def trained_cell(status: dict | None) -> str:
    """The CSV cell `trained`: "true", "false" (trained on nothing), "" (not trained here)."""
    return "" if status is None else str(status["trained"]).lower()


def untrained_label(label: str, status: dict | None) -> str:
    """A Markdown row's name, marked when its checkpoint is its init model unchanged."""
    return f"{label} ({UNTRAINED_MARK}: {status['why']})" if untrained(status) else label


def untrained_note(statuses: dict[str, dict | None], labels: dict | None = None) -> list[str]:
    """One line per reason, for under a table: which rows were not trained ({name: status})."""
    by_why: dict[str, list[str]] = {}
    for name, status in statuses.items():
        if untrained(status):
            by_why.setdefault(status["why"], []).append((labels or {}).get(name, name))
    return [
        f"Not trained ({why}; the checkpoint is its init model unchanged, so its numbers are the "
        f"init model's): {', '.join(names)}."
        for why, names in by_why.items()
    ]


def paper() -> dict:
    ref = importlib.resources.files("flame") / "resources" / "paper_tables.json"
    return json.loads(ref.read_text(encoding="utf-8"))


def fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def model_row(
    eval_dir: Path,
    model: str,
    win: float | None,
    only_bio: bool = False,
    win_ci: dict | None = None,
) -> dict:
    """A table row: the metrics, plus ``ci``: {metric: {n, lo, hi}} where an interval is known."""
    fact = read_json(eval_dir / model / "factuality.json")
    row = {"win": win, "ci": {"win": win_ci}, "left_out": {}, "left_out_n": {}}
    for short, name in SETS.items():
        s = fact.get(name) if (name == "bio" or not only_bio) else None
        row["left_out"][f"{short}_fs"] = left_out(s, "bios" if short == "bio" else "responses")
        row["left_out_n"][f"{short}_fs"] = left_out_count(s)
        ok = s is not None and s.get("factscore") is not None
        row[f"{short}_fs"] = 100.0 * s["factscore"] if ok else None
        row[f"{short}_correct"] = s["mean_correct"] if ok else None
        row[f"{short}_error"] = s["mean_erroneous"] if ok else None
        ci = (s or {}).get("factscore_ci") if ok else None
        row["ci"][f"{short}_fs"] = (
            {"n": ci["n"], "lo": 100.0 * ci["lo"], "hi": 100.0 * ci["hi"]}
            if ci and ci.get("lo") is not None
            else None
        )
    return row


def win_rates(path: Path, baseline: str) -> dict[str, float]:
    wins = {baseline: 50.0}
    if path.exists():
        wins.update({m: v["win_rate"] for m, v in read_json(path)["models"].items()})
    return wins


def win_intervals(path: Path, baseline: str) -> dict[str, dict]:
    """{model: {n, lo, hi}} of the win rates; the baseline against itself is exactly 50."""
    cis = {baseline: {"n": None, "lo": 50.0, "hi": 50.0}}
    if path.exists():
        for m, v in read_json(path)["models"].items():
            if v.get("win_rate_ci"):
                cis[m] = v["win_rate_ci"]
    return cis


def versus(row: dict, base: dict | None, is_base: bool) -> str:
    """'baseline', 'not distinguishable' (every interval overlaps the baseline's), 'differs:
    ...' (the metrics whose intervals do not), or '' when no interval can be compared."""
    if is_base:
        return "baseline"
    if base is None:
        return ""
    differ, compared = [], 0
    for m in CI_METRICS:
        a, b = row["ci"].get(m), base["ci"].get(m)
        if not a or not b or a.get("lo") is None or b.get("lo") is None:
            continue
        compared += 1
        if not overlaps((a["lo"], a["hi"]), (b["lo"], b["hi"])):
            differ.append(HEADERS[m])
    if not compared:
        return ""
    return f"differs: {'; '.join(differ)}" if differ else "not distinguishable"


def cell(row: dict, m: str) -> str:
    """ours, with ± half the bootstrap interval's width where there is one."""
    ci = row.get("ci", {}).get(m)
    hw = half_width(ci.get("lo"), ci.get("hi")) if ci else None
    return fmt(row[m]) if hw is None or row[m] is None else f"{fmt(row[m])} ± {hw:.1f}"


def ci_fields(row: dict) -> list[str]:
    out = []
    for m in CI_METRICS:
        ci = row["ci"].get(m) or {}
        out += [
            "" if ci.get(k) is None else (str(ci[k]) if k == "n" else f"{ci[k]:.4f}")
            for k in ("n", "lo", "hi")
        ]
    return out


def render(
    title: str, rows: dict[str, dict], ref: dict, labels: dict, baseline: str | None = None
) -> tuple[str, str]:
    ci_cols = [f"{m}_{k}" for m in CI_METRICS for k in ("n", "lo", "hi")]
    fs = [f"{s}_fs" for s in SETS]
    cols = ["model", *METRICS, *(f"paper_{m}" for m in METRICS), *ci_cols,
            *map(left_out_column, fs), "trained", "vs_baseline"]  # fmt: skip
    csv = [",".join(cols)]
    md = [
        f"### {title}",
        "",
        "Each cell: ours ± half its 95 % bootstrap interval (paper, Llama-2 70B).",
        "",
        "| model | " + " | ".join(HEADERS[m] for m in METRICS) + f" | vs {baseline} |",
        "|---" * (len(METRICS) + 2) + "|",
    ]
    base = rows.get(baseline) if baseline else None
    for name, row in rows.items():
        p = ref.get(name, {})
        vs = versus(row, base, name == baseline)
        csv.append(
            ",".join(
                [
                    name,
                    *("" if row[m] is None else f"{row[m]:.4f}" for m in METRICS),
                    *("" if p.get(m) is None else str(p[m]) for m in METRICS),
                    *ci_fields(row),
                    *(row.get("left_out_n", {}).get(m, "") for m in fs),
                    trained_cell(row.get("train")),
                    vs,
                ]
            )
        )
        cells = [f"{mark(cell(row, m), row, m)} ({fmt(p.get(m))})" for m in METRICS]
        label = untrained_label(labels.get(name, name), row.get("train"))
        md.append(f"| {label} | " + " | ".join(cells) + f" | {vs} |")
    notes = [
        *untrained_note({n: r.get("train") for n, r in rows.items()}, labels),
        *left_out_notes(rows, HEADERS, labels),
    ]
    return "\n".join(csv) + "\n", "\n".join([*md, *([""] + notes if notes else [])]) + "\n"


def lengths(
    eval_dir: Path, models: list[str], ref: dict, train: dict[str, dict | None] | None = None
) -> tuple[str, str]:
    """Mean response lengths; train: {model: train_status} (the `trained` column and marks)."""
    train = {m: (train or {}).get(m) for m in models}
    csv = ["model,alpaca,bio,af,fava,paper_alpaca,paper_bio,paper_af,paper_fava,trained"]
    md = [
        "### Table 8: mean response length (characters)",
        "",
        "Each cell: ours (paper).",
        "",
        "| model | Alpaca | Bio | Alpaca Fact | FAVA |",
        "|---|---|---|---|---|",
    ]
    for m in models:
        fact = read_json(eval_dir / m / "factuality.json")
        alpaca_path = eval_dir / m / "alpaca.jsonl"
        alpaca = (
            [len(r["responses"][0]) for r in read_jsonl(alpaca_path, {"responses": list[str]})]
            if alpaca_path.exists()
            else []
        )
        ours = [
            statistics.fmean(alpaca) if alpaca else None,
            *((fact.get(n) or {}).get("mean_length_chars") for n in SETS.values()),
        ]
        p = ref.get(m, {})
        theirs = [p.get(k) for k in ("alpaca", "bio", "af", "fava")]
        cells = ["" if x is None else f"{x:.1f}" for x in ours + theirs]
        csv.append(",".join([m, *cells, trained_cell(train[m])]))
        md.append(
            f"| {untrained_label(m, train[m])} | "
            + " | ".join(f"{fmt(a)} ({fmt(b)})" for a, b in zip(ours, theirs, strict=True))
            + " |"
        )
    notes = untrained_note(train)
    return "\n".join(csv) + "\n", "\n".join([*md, *([""] + notes if notes else [])]) + "\n"


def pair_counts(
    dpo_dir: Path, ref: dict, train: dict[str, dict | None] | None = None
) -> tuple[str, str]:
    """Pair counts per DPO set; train: {SFT+SET: train_status} of the models trained on them
    (the `trained` column and marks; empty for a set no model of the tables trains on)."""
    shown: dict[str, dict | None] = {}
    csv = ["sft_model,pair_set,if_pairs,fact_pairs,total,paper_if,paper_fact,trained"]
    md = [
        "### Table 11: DPO training pairs",
        "",
        "| model | IF pairs | fact pairs | paper IF | paper fact |",
        "|---|---|---|---|---|",
    ]
    for counts_file in sorted(dpo_dir.glob("*/pair_counts.json")):
        sft = counts_file.parent.name
        for pair_set, c in read_json(counts_file)["sets"].items():
            name = f"{sft}+{pair_set}"
            p = ref.get(name, {})
            status = shown[name] = (train or {}).get(name)
            csv.append(
                f"{sft},{pair_set},{c['if']},{c['fact']},{c['total']},"
                f"{p.get('if', '')},{p.get('fact', '')},{trained_cell(status)}"
            )
            md.append(
                f"| {untrained_label(name, status)} | {c['if']} | {c['fact']} | "
                f"{p.get('if', '-')} | {p.get('fact', '-')} |"
            )
    notes = untrained_note(shown)
    return "\n".join(csv) + "\n", "\n".join([*md, *([""] + notes if notes else [])]) + "\n"


def item_scores(eval_dir: Path, model: str, set_name: str) -> dict[str, float]:
    """{prompt id: FActScore} of a model's responses with at least one fact (from its facts
    file: one row per fact), as FActScore's mean counts them."""
    path = eval_dir / model / "facts" / f"{set_name}.jsonl"
    if not path.exists():
        return {}
    facts: dict[str, list[bool]] = {}
    for row in read_jsonl(path, FACTS):
        facts.setdefault(str(row["id"]), []).append(bool(row["supported"]))
    return {i: sum(v) / len(v) for i, v in facts.items()}


def paired_table(
    eval_dir: Path,
    tables: dict[str, tuple[list[str], str]],
    train: dict[str, dict | None] | None = None,
) -> tuple[str, str]:
    """Each model's FActScore minus its table's baseline's, per set, over the prompts both
    scored, with the paired bootstrap interval (flame.stats.paired_difference); train: {model:
    train_status} (the `trained` / `baseline_trained` columns and marks)."""
    train = train or {}
    shown: dict[str, dict | None] = {}
    csv = ["table,model,baseline,set,n,diff,lo,hi,verdict,left_out,trained,baseline_trained"]
    md = [
        "### Paired FActScore differences against each table's baseline",
        "",
        "Same prompts, both models scored: difference in FActScore points [95 % paired "
        "bootstrap interval], n prompts.",
        "",
        "| table | model | set | difference | n | |",
        "|---|---|---|---|---|---|",
    ]
    seen: dict[str, dict] = {}  # model -> {"left_out": {metric: info}}, for the notes
    for table, (models, baseline) in tables.items():
        for set_short, set_name in SETS.items():
            base = item_scores(eval_dir, baseline, set_name)
            metric = f"{set_short}_fs"
            for m in models:
                if m == baseline or m == "PT" and set_short != "bio":
                    continue
                d = paired_difference(item_scores(eval_dir, m, set_name), base, scale=100.0)
                v = verdict(d)
                f = ["" if d[k] is None else f"{d[k]:.2f}" for k in ("mean", "lo", "hi")]
                # the same prompts and knowledge source leave the same prompts out of both
                pair = {x: set_left_out(eval_dir, x, set_name) for x in (m, baseline)}
                out = max((i["n"] for i in pair.values() if i), default=0)
                ts = [train.get(m), train.get(baseline)]
                shown.update({m: ts[0], baseline: ts[1]})
                tc = ",".join(map(trained_cell, ts))
                csv.append(
                    f"{table},{m},{baseline},{set_short},{d['n']},{','.join(f)},{v},{out},{tc}"
                )
                for x, info in pair.items():
                    if info:
                        seen.setdefault(x, {"left_out": {}})["left_out"][metric] = info
                cell = (
                    "-"
                    if d["mean"] is None
                    else f"{d['mean']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]"
                )
                cell = mark(cell, {"left_out": {metric: out}}, metric)
                name = HEADERS[metric].removesuffix(" FS")
                pair_name = " − ".join(map(untrained_label, (m, baseline), ts))
                md.append(f"| {table} | {pair_name} | {name} | {cell} | {d['n']} | {v} |")
    notes = [*untrained_note(shown), *left_out_notes(seen, HEADERS)]
    return "\n".join(csv) + "\n", "\n".join([*md, *([""] + notes if notes else [])]) + "\n"


def set_left_out(eval_dir: Path, model: str, set_name: str) -> dict | None:
    """left_out() of a model's set, from its factuality.json (None when there is none)."""
    path = eval_dir / model / "factuality.json"
    summary = read_json(path).get(set_name) if path.exists() else None
    return left_out(summary, "bios" if set_name == "bio" else "responses")


def missing_note(manifest: Path | None) -> str:
    """A note for under each table: the evaluation sets the data manifest says were left out."""
    if manifest is None or not manifest.exists():
        return ""
    missing = read_json(manifest).get("info", {}).get("missing_sets", {})
    notes = [
        f"Note: {s} was not built, its columns are empty: {why}." for s, why in missing.items()
    ]
    return "".join(f"\n{n}\n" for n in notes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--eval-dir", required=True, type=Path)
    ap.add_argument("--dpo-dir", required=True, type=Path)
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--table2-rows", nargs="+", required=True)
    ap.add_argument("--table3-rows", nargs="+", required=True)
    ap.add_argument("--data-manifest", type=Path, help="the data stage's manifest.json (notes)")
    ap.add_argument(
        "--models-dir", type=Path,
        help="the trained models (sft/MODEL, dpo/MODEL): their train_summary.json marks the rows "
        "trained on nothing",
    )  # fmt: skip
    args = ap.parse_args(argv)
    ref = paper()
    labels = ref["row_labels"]
    w2 = win_rates(args.eval_dir / "winrate_table2.json", "SFT")
    w3 = win_rates(args.eval_dir / "winrate_table3.json", "SFT+DPO")
    c2 = win_intervals(args.eval_dir / "winrate_table2.json", "SFT")
    c3 = win_intervals(args.eval_dir / "winrate_table3.json", "SFT+DPO")
    t2 = {
        m: model_row(args.eval_dir, m, w2.get(m), only_bio=(m == "PT"), win_ci=c2.get(m))
        for m in args.table2_rows
    }
    t3 = {m: model_row(args.eval_dir, m, w3.get(m), win_ci=c3.get(m)) for m in args.table3_rows}
    train = {
        m: train_status(checkpoint(args.models_dir, m))
        for m in dict.fromkeys(args.table2_rows + args.table3_rows)
    }
    for row_set in (t2, t3):
        for m, row in row_set.items():
            row["train"] = train[m]
    outputs = {
        "table2_sft": render(
            "Table 2: SFT variants (win rate vs SFT)", t2, ref["table2"], labels, "SFT"
        ),
        "table3_dpo": render(
            "Table 3: DPO variants (win rate vs SFT+DPO)", t3, ref["table3"], labels, "SFT+DPO"
        ),
        "table8_length": lengths(
            args.eval_dir,
            [m for m in dict.fromkeys(args.table2_rows + args.table3_rows) if m != "PT"],
            ref["table8_length_chars"],
            train,
        ),
        "table11_pairs": pair_counts(args.dpo_dir, ref["table11_pairs"], train),
        "table_paired": paired_table(
            args.eval_dir,
            {"table2": (args.table2_rows, "SFT"), "table3": (args.table3_rows, "SFT+DPO")},
            train,
        ),
    }
    note = missing_note(args.data_manifest)
    outputs = {
        k: (csv, md if k in ("table11_pairs", "table_paired") else md + note)
        for k, (csv, md) in outputs.items()
    }
    for name, (csv, md) in outputs.items():
        write_text(args.out_dir / f"{name}.csv", csv)
        write_text(args.out_dir / f"{name}.md", md)
    print("\n".join(md for _, md in outputs.values()))


if __name__ == "__main__":
    run(main)
