"""The win-rate judge on obvious pairs: the paper's prompted judge and the other modes side by side.

Judges the 36 project-written (instruction, better, worse) pairs (flame/resources/judge_pairs.jsonl)
with every mode of flame.judge in one run, the same model for all, and prints per mode: accuracy
(%; a tie counts ½, chance 50) with n and a 95 % bootstrap interval, per kind, the tie and
unreadable rates, the position-swap agreement, the share of verdicts for the response shown
first, and the seconds taken (no cache: every judgment is computed).

    .venv/bin/python benchmarks/judge_quality.py [--judge SPEC] [--modes prompt logprob reverse]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

from flame.cli import run  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    from flame.io import json_arg, read_jsonl
    from flame.judge import MODES, judge
    from flame.judge_quality import JUDGE_PAIRS, accuracy, default_pairs, render
    from flame.lm import load_lm

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--judge", type=json_arg, default="results/models/base/smollm2")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--pairs", default=default_pairs())
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write every number here too")
    args = ap.parse_args(argv)
    print_machine()
    pairs = read_jsonl(args.pairs, JUDGE_PAIRS)
    items = [(p["instruction"], p["better"], p["worse"]) for p in pairs]
    lm = load_lm(args.judge, threads=args.threads)
    print(f"judge {lm.fingerprint}, {len(pairs)} pairs from {args.pairs}")
    quality = {}
    for mode in args.modes:
        t0 = time.time()
        quality[mode] = accuracy(pairs, judge(lm, items, mode))
        quality[mode]["seconds"] = round(time.time() - t0, 1)
        print(f"{mode}: {quality[mode]['seconds']} s")
    print(render(quality, None, {})[1])
    if args.json:
        Path(args.json).write_text(json.dumps(quality, indent=2) + "\n")


if __name__ == "__main__":
    run(main)
