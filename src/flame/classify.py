"""Fact-based instruction classification (FLAME section 3.2).

The classifier model (the SFT model in the paper) is asked whether answering each instruction
needs factual knowledge and must answer "Answer: Yes" or "Answer: No". Local backends read the
next-token scores of "Yes" and "No" after the prefill "Answer:" (margin = score(Yes) - score(No));
text-only backends are parsed. An unreadable answer counts as not fact-based (the instruction
keeps its human answer), and is counted in the report.

Accuracy is measured on a hand-labelled set. With --calibrate, the decision threshold on the
margin is chosen to maximise accuracy on that set (useful for small models whose Yes/No prior is
skewed); without it the threshold is 0 (argmax, as in the paper).

Example:
    python -m flame.classify --model results/models/sft/SFT --labels data/classifier_labels.jsonl \
        --inputs data/seed.jsonl data/eval/alpaca.jsonl \
        --outputs classified/seed.jsonl classified/alpaca.jsonl --report classified/report.json
"""

from __future__ import annotations

import argparse
import logging

from flame.cli import run
from flame.io import json_arg, read_jsonl, setup_logging, write_json, write_jsonl
from flame.lm import LM, load_lm
from flame.prompts import classify_prompt
from flame.stats import interval

log = logging.getLogger("flame.classify")


def margins(lm: LM, instructions: list[str]) -> list[float | None]:
    """score(Yes) - score(No) per instruction; None when the backend's answer is unreadable."""
    scores = lm.choose([classify_prompt(i) for i in instructions], ["Yes", "No"])
    return [None if s is None else s[0] - s[1] for s in scores]


def best_threshold(margin: list[float | None], gold: list[bool]) -> tuple[float, float]:
    """The threshold on the margin that maximises accuracy on labelled data (ties: closest to 0)."""
    known = sorted({m for m in margin if m is not None})
    candidates = [0.0] + [(a + b) / 2 for a, b in zip(known, known[1:], strict=False)]
    candidates += [known[0] - 1.0, known[-1] + 1.0] if known else []

    def acc(t: float) -> float:
        return accuracy([decide(m, t) for m in margin], gold)

    best = max(candidates, key=lambda t: (acc(t), -abs(t)))
    return best, acc(best)


def decide(margin: float | None, threshold: float = 0.0) -> bool:
    return margin is not None and margin > threshold


def accuracy(pred: list[bool], gold: list[bool]) -> float:
    return (
        sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold) if gold else float("nan")
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, type=json_arg, help="classifier model spec")
    ap.add_argument("--inputs", nargs="+", required=True, help="JSONL files with 'instruction'")
    ap.add_argument("--outputs", nargs="+", required=True, help="one output per input")
    ap.add_argument("--labels", required=True, help="JSONL {instruction, fact_based} hand labels")
    ap.add_argument("--report", required=True, help="JSON report: accuracy, counts, threshold")
    ap.add_argument("--calibrate", action="store_true", help="fit the threshold on --labels")
    ap.add_argument("--cache", help="SQLite cache of model calls")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if len(args.inputs) != len(args.outputs):
        ap.error("--inputs and --outputs must have the same length")
    setup_logging()

    labels = read_jsonl(args.labels, required=("instruction", "fact_based"))
    inputs = [read_jsonl(p, required=("id", "instruction")) for p in args.inputs]
    lm = load_lm(args.model, cache=args.cache, threads=args.threads)

    gold = [bool(r["fact_based"]) for r in labels]
    label_margin = margins(lm, [r["instruction"] for r in labels])
    threshold, cal_acc = best_threshold(label_margin, gold) if args.calibrate else (0.0, None)
    acc = accuracy([decide(m, threshold) for m in label_margin], gold)
    report = {
        "threshold": threshold,
        "calibrated": args.calibrate,
        "labelled": {
            "n": len(labels),
            "accuracy": acc,
            # n and a 95 % bootstrap interval over the labelled items (with --calibrate the
            # threshold is fit on these same items, so the interval is optimistic)
            "accuracy_ci": interval(
                [decide(m, threshold) == g for m, g in zip(label_margin, gold, strict=True)]
            ),
            "accuracy_argmax": accuracy([decide(m) for m in label_margin], gold),
            "unreadable": sum(m is None for m in label_margin),
        },
        "files": {},
    }
    log.info(
        "accuracy on %d labelled instructions: %.3f (threshold %.3f)", len(labels), acc, threshold
    )

    for path, out, records in zip(args.inputs, args.outputs, inputs, strict=True):
        m = margins(lm, [r["instruction"] for r in records])
        for rec, mi in zip(records, m, strict=True):
            rec["fact_based"] = decide(mi, threshold)
            rec["fact_margin"] = mi
        write_jsonl(out, records)
        n_fact = sum(r["fact_based"] for r in records)
        gold_known = [r for r in records if r.get("kind") in ("fact", "nonfact")]
        report["files"][path] = {
            "n": len(records),
            "fact_based": n_fact,
            "share_fact_based": n_fact / len(records) if records else 0.0,
            "unreadable": sum(x is None for x in m),
            "agreement_with_construction": accuracy(
                [r["fact_based"] for r in gold_known], [r["kind"] == "fact" for r in gold_known]
            ),
        }
        log.info("%s: %d/%d fact-based", path, n_fact, len(records))
    write_json(args.report, report)


if __name__ == "__main__":
    run(main)
