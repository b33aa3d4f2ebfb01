"""Fact-based instruction classification (FLAME section 3.2).

The classifier model (the SFT model in the paper) is asked whether answering each instruction
needs factual knowledge and must answer "Answer: Yes" or "Answer: No". Local backends read the
next-token scores of "Yes" and "No" after the prefill "Answer:" (margin = score(Yes) - score(No));
text-only backends are parsed. An unreadable answer counts as not fact-based (the instruction
keeps its human answer), and is counted in the report.

Accuracy is measured on a hand-labelled set. With --calibrate, the decision threshold on the
margin is chosen to maximise accuracy on that set (useful for small models whose Yes/No prior is
skewed); without it the threshold is 0 (argmax, as in the paper).

--mode probe (for models too small to answer the question: SmolLM2-135M is at chance) reads
the same prompt's hidden states instead (``LM.features``: the mean of the last and of the
middle layer) and fits a logistic-regression probe on the hand-labelled set (standardised
features, L2 with strength 1/C, C = --probe-c). Its reported accuracy is cross-validated
(--folds folds; every labelled item is predicted by a probe that never saw it); the probe
that classifies the inputs is then fit on all labels. margin = the probe's logit.

Example:
    python -m flame.classify --model results/models/sft/SFT --labels data/classifier_labels.jsonl \
        --inputs data/seed.jsonl data/eval/alpaca.jsonl \
        --outputs classified/seed.jsonl classified/alpaca.jsonl --report classified/report.json
"""

from __future__ import annotations

import argparse
import logging

from flame.cli import run
from flame.io import PROMPTS, json_arg, read_jsonl, setup_logging, write_json, write_jsonl
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


def fit_probe(x, y, c: float = 0.01, steps: int = 200):
    """Logistic regression (L2, strength 1/c as in scikit-learn's C; features standardised) fit
    with L-BFGS. Returns a function: features -> logits."""
    import torch

    x = torch.as_tensor(x, dtype=torch.float64)
    t = torch.as_tensor(y, dtype=torch.float64)
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, t, reduction="sum")
        loss = c * loss + 0.5 * w.dot(w)
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w.detach(), b.detach()

    def logits(features) -> list[float]:
        f = torch.as_tensor(features, dtype=torch.float64)
        return (((f - mu) / sd) @ w + b).tolist()

    return logits


def cross_validated(x, y, folds: int, c: float) -> list[float]:
    """Each item's logit from a probe fit on the other folds (items dealt round-robin)."""
    if len(set(y)) < 2:
        raise ValueError("the hand-labelled set needs fact-based and other instructions")
    out = [0.0] * len(y)
    for f in range(folds):
        test = [i for i in range(len(y)) if i % folds == f]
        train = [i for i in range(len(y)) if i % folds != f]
        probe = fit_probe([x[i] for i in train], [y[i] for i in train], c)
        for i, v in zip(test, probe([x[i] for i in test]), strict=True):
            out[i] = v
    return out


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
    ap.add_argument(
        "--mode",
        choices=("prompt", "probe"),
        default="prompt",
        help="prompt: the model's Yes/No answer (paper); probe: a linear probe on its hidden"
        " states, fit on --labels",
    )
    ap.add_argument("--probe-c", type=float, default=0.01, help="probe's inverse L2 strength")
    ap.add_argument("--folds", type=int, default=6, help="probe's cross-validation folds")
    ap.add_argument("--cache", help="SQLite cache of model calls")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if len(args.inputs) != len(args.outputs):
        ap.error("--inputs and --outputs must have the same length")
    setup_logging()

    labels = read_jsonl(args.labels, {"instruction": str, "fact_based": bool})
    inputs = [read_jsonl(p, PROMPTS) for p in args.inputs]
    lm = load_lm(args.model, cache=args.cache, threads=args.threads)

    gold = [bool(r["fact_based"]) for r in labels]
    if args.mode == "probe":
        if args.folds < 2 or args.folds > len(labels):
            raise ValueError(f"--folds must be in 2..{len(labels)} (the labelled items)")
        feats = lm.features([classify_prompt(r["instruction"]) for r in labels])
        label_margin = cross_validated(feats, gold, args.folds, args.probe_c)
        probe = fit_probe(feats, gold, args.probe_c)

        def margins_of(instructions: list[str]) -> list[float | None]:
            return probe(lm.features([classify_prompt(i) for i in instructions]))

    else:
        label_margin = margins(lm, [r["instruction"] for r in labels])

        def margins_of(instructions: list[str]) -> list[float | None]:
            return margins(lm, instructions)

    calibrate = args.calibrate and args.mode == "prompt"
    threshold, _ = best_threshold(label_margin, gold) if calibrate else (0.0, None)
    acc = accuracy([decide(m, threshold) for m in label_margin], gold)
    report = {
        "mode": args.mode,
        "threshold": threshold,
        "calibrated": calibrate,
        # probe: every labelled item is predicted by a probe fit on the other folds
        "cross_validated_folds": args.folds if args.mode == "probe" else None,
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
        m = margins_of([r["instruction"] for r in records]) if records else []
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
