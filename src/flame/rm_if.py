"""RM_IF, the instruction-following reward (FLAME section 3.3).

The SFT model judges each of its own responses with the additive 5-point rubric of
Self-Rewarding LMs, r times (sampled), and the readable scores are averaged (paper: r=3).
A judgment with no readable score in 0..5 is left out of the mean and counted; a response
with no readable judgment at all gets score null and takes part in no IF pair.

With --prefix "Score:" the judge's turn is prefilled so a small model answers with the number
directly; leave it empty for large judges that write a justification first.

--mode expected (instead of the paper's `sample`) reads the judge's next-token probabilities of
the scores 0..5 after the prefill "Score:" and takes their expectation: one forward pass per
response, deterministic, and fewer ties; `judgments` then holds the score distribution.

Output records: {id, scores: [mean per response or null], judgments: [[r ints or null]]}.

Example:
    python -m flame.rm_if --judge results/models/sft/SFT --samples dpo/SFT/samples.jsonl \
        --out dpo/SFT/rm_if.jsonl --r 3
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics

from flame.cli import run
from flame.io import EXTRAS, SAMPLES, json_arg, read_jsonl, setup_logging, write_jsonl
from flame.lm import Sampling, load_lm
from flame.prompts import parse_score, rubric_prompt

log = logging.getLogger("flame.rm_if")


SCORES = ["0", "1", "2", "3", "4", "5"]


def score_distribution(scores: list[float] | None) -> list[float] | None:
    """Probabilities of the scores 0..5, renormalised over those six tokens."""
    if scores is None or all(math.isinf(s) for s in scores):
        return None
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def expected_score(dist: list[float] | None) -> float | None:
    return None if dist is None else sum(p * v for v, p in enumerate(dist))


def mean_or_none(values: list[int | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--judge", required=True, type=json_arg, help="judge model spec")
    ap.add_argument("--samples", required=True, help="JSONL {id, instruction, responses}")
    ap.add_argument("--out", required=True)
    ap.add_argument("--r", type=int, default=3, help="judgments per response")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--prefix", default="", help='assistant prefill, e.g. "Score:"')
    ap.add_argument("--mode", choices=("sample", "expected"), default="sample")
    ap.add_argument("--response-chars", type=int, default=4000, help="truncate long responses")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    setup_logging()
    samples = read_jsonl(args.samples, SAMPLES, optional=EXTRAS)
    flat = [(i, j) for i, s in enumerate(samples) for j in range(len(s["responses"]))]
    prefix = "Score:" if args.mode == "expected" else args.prefix
    cut = args.response_chars
    prompts = [
        rubric_prompt(samples[i]["instruction"], samples[i]["responses"][j][:cut], prefix=prefix)
        for i, j in flat
    ]
    lm = load_lm(args.judge, cache=args.cache, threads=args.threads)
    records = [{"id": s["id"], "scores": [], "judgments": []} for s in samples]
    if args.mode == "expected":
        dists = [score_distribution(s) for s in lm.choose(prompts, SCORES)]
        for (i, _), dist in zip(flat, dists, strict=True):
            records[i]["scores"].append(expected_score(dist))
            records[i]["judgments"].append(dist)
        unreadable = sum(d is None for d in dists)
    else:
        sampling = Sampling(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            n=args.r,
            seed=args.seed,
        )
        for (i, _), texts in zip(flat, lm.generate(prompts, sampling), strict=True):
            judged = [parse_score(t, prefixed=bool(prefix)) for t in texts]
            records[i]["scores"].append(mean_or_none(judged))
            records[i]["judgments"].append(judged)
        unreadable = sum(v is None for r in records for js in r["judgments"] for v in js)
    write_jsonl(args.out, records)
    no_score = sum(x is None for r in records for x in r["scores"])
    log.info(
        "%s mode: %d unreadable judgments; %d responses without any score",
        args.mode,
        unreadable,
        no_score,
    )


if __name__ == "__main__":
    run(main)
