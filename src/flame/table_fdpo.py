"""The F-DPO table (λ sweep) and the reward-model table, our numbers beside the papers'.

table_fdpo.{csv,md}: one row per λ checkpoint, with F-DPO's metrics on our evaluation sets and
FActScore judged per response (scaled 0-10 like F-DPO's judge): factuality = mean score,
halluc_rate = share of responses scoring below --halluc-below (F-DPO: 5), win_rate = wins / non-tied
judgments against --baseline (the smallest λ: plain DPO on the same pairs), count = responses
scored; then FLAME's Bio / Alpaca Fact / FAVA FActScore (%) columns, the pair bucket counts, and
the F-DPO paper's reference figure (Qwen3-8B hallucination rate 0.424 -> 0.084).

table_rm.{csv,md}: SFT + DPO_fact with fact pairs chosen by FActScore vs by the Bradley-Terry
reward model (RM_BT), the RM's held-out pairwise accuracy, its agreement with FActScore on the
policy's samples (pairwise accuracy, Kendall tau-b) and responses/s of both.

A FActScore column built without the responses whose topic the knowledge source lacks (topic
retrieval; factuality.json's n_unknown_topic) is marked † with a note saying how many were left
out (flame.tables.left_out_notes); the CSV's SET_left_out columns give the counts.

With --models-dir, each row's `trained` column reads its checkpoint's train_summary.json
(flame.tables.train_status, the same reading as Tables 2, 3, 8 and 11): "yes",
or "no pairs" for a DPO run that had zero preference pairs (allow_empty_pairs: the checkpoint is
its init model unchanged, so its numbers are the init model's; a note says so). An untrained
reward model (zero RM_fact pairs) is reported as such, with no accuracy or speed.

Example:
    python -m flame.table_fdpo --eval-dir results/eval --rows SFT+FDPO_l0=0 SFT+FDPO_l2=2 \\
        --winrate results/eval/winrate_fdpo.json --counts results/fdpo/SFT/fdpo_counts.json \\
        --out-dir results/tables
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

from flame.cli import run
from flame.io import FACTS, ID, PAIRS, read_json, read_jsonl, write_text
from flame.tables import (
    HEADERS,
    left_out,
    left_out_column,
    left_out_count,
    left_out_notes,
    mark,
    train_status,
    untrained,
    untrained_note,
)

SETS = {"bio": "bio", "af": "alpaca_fact", "fava": "fava"}
PAPER = {"paper: Qwen3-8B (before F-DPO)": 0.424, "paper: Qwen3-8B + F-DPO": 0.084}


def response_scores(eval_dir: Path, model: str) -> list[float]:
    """Per-response FActScore x 10 over every evaluation set (responses with facts only)."""
    out = []
    for name in SETS.values():
        path = eval_dir / model / "facts" / f"{name}.jsonl"
        if not path.exists():
            continue
        facts = defaultdict(list)
        for f in read_jsonl(path, FACTS):
            facts[f["id"]].append(bool(f["supported"]))
        out += [10.0 * sum(v) / len(v) for v in facts.values() if v]
    return out


def fdpo_metrics(eval_dir: Path, model: str, below: float, win: dict | None) -> dict:
    scores = response_scores(eval_dir, model)
    fact = read_json(eval_dir / model / "factuality.json")
    row = {
        "factuality": statistics.fmean(scores) if scores else None,
        "halluc_rate": sum(s < below for s in scores) / len(scores) if scores else None,
        "win_rate": None,
        "count": len(scores),
    }
    if win:
        decided = win["wins"] + win["losses"]
        row["win_rate"] = win["wins"] / decided if decided else None
    row["left_out"], row["left_out_n"] = {}, {}
    for short, name in SETS.items():
        fs = (fact.get(name) or {}).get("factscore")
        row[f"{short}_fs"] = None if fs is None else 100.0 * fs
        noun = "bios" if short == "bio" else "responses"
        row["left_out"][f"{short}_fs"] = left_out(fact.get(name), noun)
        row["left_out_n"][f"{short}_fs"] = left_out_count(fact.get(name))
    return row


def trained(row: dict, models_dir: Path | None, model: str) -> None:
    """Sets row["train"] (flame.tables.train_status of the checkpoint, for the note) and the
    `trained` cell: "yes", "no pairs" for a checkpoint DPO left unchanged (zero pairs), None if
    unknown."""
    row["train"] = train_status(models_dir / model if models_dir else None)
    row["trained"] = (
        None if row["train"] is None else "no pairs" if untrained(row["train"]) else "yes"
    )


def cell(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def render(title: str, rows: dict[str, dict], cols: list[str], notes: list[str]):
    fs = [c for c in cols if c.endswith("_fs")]
    csv_lines = [",".join(["model", *cols, *map(left_out_column, fs)])]
    md = [
        f"### {title}",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name, row in rows.items():
        csv_lines.append(
            ",".join(
                [
                    name,
                    *("" if row.get(c) is None else str(row[c]) for c in cols),
                    *((row.get("left_out_n") or {}).get(c, "") for c in fs),
                ]
            )
        )
        md.append(f"| {name} | " + " | ".join(mark(cell(row.get(c)), row, c) for c in cols) + " |")
    notes = [*notes, *left_out_notes(rows, {c: HEADERS[c] for c in fs})]
    return "\n".join(csv_lines) + "\n", "\n".join([*md, "", *notes]) + "\n"


def bench_seconds(path: Path | None) -> float | None:
    if not path or not path.exists():
        return None
    with path.open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return float(rows[-1]["s"]) if rows else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--eval-dir", required=True, type=Path)
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--rows", nargs="*", default=[], help="F-DPO rows MODEL=LAMBDA")
    ap.add_argument("--baseline", help="the row win rates are measured against")
    ap.add_argument("--winrate", type=Path, help="flame.winrate output for the F-DPO rows")
    ap.add_argument("--counts", type=Path, help="flame.fdpo bucket counts")
    ap.add_argument("--inversion", type=Path, help="flame.invert counts")
    ap.add_argument("--halluc-below", type=float, default=5.0)
    ap.add_argument("--models-dir", type=Path, help="the rows' checkpoints (train_summary.json)")
    ap.add_argument("--rm-rows", nargs="*", default=[], help="MODEL=LABEL rows of table_rm")
    ap.add_argument("--rm-metrics", type=Path, help="flame.train_rm metrics")
    ap.add_argument("--rm-stats", type=Path, help="flame.rm_bt stats")
    ap.add_argument("--rm-samples", type=Path, help="samples FActScore's RM_fact scored")
    ap.add_argument("--factscore-benchmark", type=Path, help="the rm_fact rule's benchmark TSV")
    ap.add_argument(
        "--fact-pairs", nargs="*", type=Path, default=[],
        help="pairs_DPO_fact.jsonl of each --rm-rows row (pair counts and overlap)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    outputs = {}
    if args.rows:
        wins = read_json(args.winrate)["models"] if args.winrate and args.winrate.exists() else {}
        rows = {}
        for item in args.rows:
            model, _, lam = item.partition("=")
            row = fdpo_metrics(args.eval_dir, model, args.halluc_below, wins.get(model))
            trained(row, args.models_dir, model)
            rows[f"F-DPO λ={lam} ({model})"] = {"lambda": float(lam), **row}
        for name, rate in PAPER.items():
            rows[name] = {"halluc_rate": rate}
        below = f"{args.halluc_below:g}"
        notes = [
            f"factuality: FActScore x 10 per response; halluc_rate: share below {below}; "
            f"win_rate: wins / non-tied judgments vs {args.baseline}.",
            *untrained_note({name: row.get("train") for name, row in rows.items()}),
        ]
        if args.counts:
            c = read_json(args.counts)
            notes.append(f"Pair buckets (h_w h_l) before flipping {c['buckets_before_flip']}, "
                         f"after {c['buckets_after_flip']}; {c['pairs']} pairs, "
                         f"{c['unlabelled']} unlabelled left out.")  # fmt: skip
        if args.inversion:
            inv = read_json(args.inversion)
            notes.append(
                f"Hallucination inversion: {inv['rewrites']} rewrites, {inv['kept']} kept, "
                f"{inv['discarded_total']} discarded {inv['discarded']}."
            )
        cols = ["lambda", "trained", "factuality", "halluc_rate", "win_rate", "count",
                "bio_fs", "af_fs", "fava_fs"]  # fmt: skip
        outputs["table_fdpo"] = render("F-DPO: λ sweep", rows, cols, notes)
    if args.rm_rows:
        rows, chosen = {}, []
        for k, item in enumerate(args.rm_rows):
            model, _, label = item.partition("=")
            rows[label] = fdpo_metrics(args.eval_dir, model, args.halluc_below, None)
            trained(rows[label], args.models_dir, model)
            if k < len(args.fact_pairs):
                pairs = read_jsonl(args.fact_pairs[k], {"id": ID, **PAIRS})
                rows[label]["fact_pairs"] = len(pairs)
                chosen.append({p["id"]: (p["chosen"], p["rejected"]) for p in pairs})
        notes = untrained_note({name: row.get("train") for name, row in rows.items()})
        if len(chosen) == 2:
            same = sum(chosen[1].get(i) == cr for i, cr in chosen[0].items())
            notes.append(
                f"Fact pairs: {same} of {len(chosen[0])} FActScore pairs are also chosen (same "
                f"chosen and rejected) by RM_BT, which chose {len(chosen[1])}."
            )
        if args.rm_metrics:
            m = read_json(args.rm_metrics)
            if m.get("trained") is False:
                notes.append(f"RM_BT: not trained: {m.get('skipped')}.")
            else:
                notes.append(f"RM_BT: {m['train_pairs']} training / {m['heldout_pairs']} held-out "
                             f"pairs; pairwise accuracy vs RM_fact {cell(m['train_accuracy'])} "
                             f"(train), {cell(m['heldout_accuracy'])} (held out).")  # fmt: skip
        if args.rm_stats and read_json(args.rm_stats).get("trained") is False:
            notes.append("RM_BT scored no responses (untrained): no speed or agreement to report.")
        elif args.rm_stats:
            s = read_json(args.rm_stats)
            a = s.get("agreement_with_factscore") or {}
            fs_s = bench_seconds(args.factscore_benchmark)
            n = s["responses"]
            fs_rate = n / fs_s if fs_s else None
            notes.append(f"On {n} responses: RM_BT {cell(s['responses_per_s'])} responses/s, "
                         f"FActScore {cell(fs_rate)} responses/s (its rule's wall time, model "
                         f"loading included); agreement: pairwise accuracy "
                         f"{cell(a.get('pairwise_accuracy'))} over {a.get('pairs')} pairs, "
                         f"Kendall tau-b {cell(a.get('kendall_tau_b'))}.")  # fmt: skip
        cols = ["fact_pairs", "trained", "factuality", "halluc_rate", "count",
                "bio_fs", "af_fs", "fava_fs"]  # fmt: skip
        outputs["table_rm"] = render("Fact pairs by FActScore vs by RM_BT", rows, cols, notes)
    for name, (text_csv, text_md) in outputs.items():
        write_text(args.out_dir / f"{name}.csv", text_csv)
        write_text(args.out_dir / f"{name}.md", text_md)
        print(text_md)


if __name__ == "__main__":
    run(main)
