"""RM_IF, the instruction-following reward (FLAME section 3.3).

The SFT model judges each of its own responses with the additive 5-point rubric of
Self-Rewarding LMs, r times (sampled), and the readable scores are averaged (paper: r=3).
A judgment with no readable score in 0..5 is left out of the mean and counted; a response
with no readable judgment at all gets score null and takes part in no IF pair.

With --prefix "Score:" the judge's turn is prefilled so a small model answers with the number
directly; leave it empty for large judges that write a justification first.

Output records: {id, scores: [mean per response or null], judgments: [[r ints or null]]}.

Example:
    python -m flame.rm_if --judge results/models/sft/SFT --samples dpo/SFT/samples.jsonl \
        --out dpo/SFT/rm_if.jsonl --r 3
"""

from __future__ import annotations

import argparse
import logging
import statistics

from flame.io import json_arg, read_jsonl, setup_logging, write_jsonl
from flame.lm import Sampling, load_lm
from flame.prompts import parse_score, rubric_prompt

log = logging.getLogger("flame.rm_if")


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
    ap.add_argument("--response-chars", type=int, default=4000, help="truncate long responses")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    setup_logging()
    samples = read_jsonl(args.samples, required=("id", "instruction", "responses"))
    flat = [(i, j) for i, s in enumerate(samples) for j in range(len(s["responses"]))]
    prompts = [
        rubric_prompt(
            samples[i]["instruction"],
            samples[i]["responses"][j][: args.response_chars],
            prefix=args.prefix,
        )
        for i, j in flat
    ]
    lm = load_lm(args.judge, cache=args.cache, threads=args.threads)
    sampling = Sampling(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        n=args.r,
        seed=args.seed,
    )
    outs = lm.generate(prompts, sampling)
    judgments: list[list[list[int | None]]] = [[[] for _ in s["responses"]] for s in samples]
    for (i, j), texts in zip(flat, outs, strict=True):
        judgments[i][j] = [parse_score(t, prefixed=bool(args.prefix)) for t in texts]
    unreadable = sum(v is None for per in judgments for js in per for v in js)
    records = [
        {"id": s["id"], "scores": [mean_or_none(js) for js in per], "judgments": per}
        for s, per in zip(samples, judgments, strict=True)
    ]
    no_score = sum(x is None for r in records for x in r["scores"])
    write_jsonl(args.out, records)
    log.info(
        "%d judgments, %d unreadable; %d responses without any score",
        len(flat) * args.r,
        unreadable,
        no_score,
    )


if __name__ == "__main__":
    main()
