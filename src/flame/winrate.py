"""Pairwise win rates against a baseline model (FLAME's AlpacaEval protocol).

For every instruction the judge (flame.judge, --mode prompt | logprob | reverse) compares the
model's response with the baseline's and gives a verdict: 1 if the model's is better, 0 if the
baseline's, 0.5 for a tie or an unreadable judgment (a missing response is an empty one). In
prompt mode the verdict is the mean of the two orders (position swap). The win rate is 100 x the
mean verdict over instructions (so the baseline against itself is 50 by construction);
``win_rate_ci`` gives n (instructions) and a 95 % bootstrap interval over instructions.
``judge_stats`` holds the judge's statistics for that comparison: tie rate, unreadable rate,
position-swap agreement (flame.judge.judge_stats). Table 2 compares with SFT, Table 3 with SFT+DPO.

Example:
    python -m flame.winrate --judge results/models/base/smollm2 \
        --baseline SFT=results/eval/SFT/alpaca.jsonl \
        --models SFT_fact=results/eval/SFT_fact/alpaca.jsonl --mode reverse \
        --out results/eval/winrate_table2.json
"""

from __future__ import annotations

import argparse
import logging

from flame.cli import run
from flame.io import SAMPLES, json_arg, read_jsonl, setup_logging, write_json
from flame.judge import MODES, judge, judge_stats, points
from flame.lm import load_lm
from flame.stats import interval

log = logging.getLogger("flame.winrate")


def named_path(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def first_response(rec: dict) -> str:
    return rec["responses"][0] if rec.get("responses") else ""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--judge", required=True, type=json_arg, help="judge model spec")
    ap.add_argument("--baseline", required=True, type=named_path, help="NAME=generations.jsonl")
    ap.add_argument(
        "--models", nargs="+", required=True, type=named_path, help="NAME=generations.jsonl"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", choices=MODES, default="prompt", help="judge mode (flame.judge)")
    ap.add_argument("--response-chars", type=int, default=4000)
    ap.add_argument("--cache")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    setup_logging()
    base_name, base_path = args.baseline
    base = {r["id"]: r for r in read_jsonl(base_path, SAMPLES)}
    lm = load_lm(args.judge, cache=args.cache, threads=args.threads)
    cut = args.response_chars
    result = {"baseline": base_name, "judge": lm.fingerprint, "mode": args.mode, "models": {}}
    for name, path in args.models:
        gens = read_jsonl(path, SAMPLES)
        missing = [g["id"] for g in gens if g["id"] not in base]
        if missing:
            raise SystemExit(f"{path}: ids not in the baseline {base_path}: {missing[:5]}")
        items = [
            (g["instruction"], first_response(g)[:cut], first_response(base[g["id"]])[:cut])
            for g in gens
        ]
        judgments = judge(lm, items, args.mode)
        verdicts = points(judgments)
        n = len(verdicts)
        result["models"][name] = {
            "win_rate": 100.0 * sum(verdicts) / n if n else float("nan"),
            "win_rate_ci": interval(verdicts, scale=100.0),
            "n_instructions": n,
            "wins": sum(v == 1.0 for v in verdicts),
            "losses": sum(v == 0.0 for v in verdicts),
            "ties_or_unreadable": sum(0.0 < v < 1.0 for v in verdicts),
            "judge_stats": judge_stats(judgments),
        }
        log.info("%s vs %s: %s", name, base_name, result["models"][name])
    write_json(args.out, result)


if __name__ == "__main__":
    run(main)
