"""Pairwise win rates against a baseline model (FLAME's AlpacaEval protocol).

For every instruction the judge compares the model's response with the baseline's twice, once
in each order (position swap). A judgment the model wins counts 1, a loss 0, and a judgment that
cannot be read (or a response missing on either side) counts as a tie, 0.5. The win rate is
100 x the mean over all judgments (so the baseline against itself is 50 by construction).
``win_rate_ci`` gives n (instructions) and a 95 % bootstrap interval over instructions, each
instruction counting the mean of its two judgments.
Table 2 compares with SFT, Table 3 with SFT+DPO.

Example:
    python -m flame.winrate --judge results/models/base/smollm2 \
        --baseline SFT=results/eval/SFT/alpaca.jsonl \
        --models SFT_fact=results/eval/SFT_fact/alpaca.jsonl --out results/eval/winrate_table2.json
"""

from __future__ import annotations

import argparse
import logging

from flame.cli import run
from flame.io import json_arg, read_jsonl, setup_logging, write_json
from flame.lm import load_lm, pick
from flame.prompts import pairwise_prompt
from flame.stats import interval

log = logging.getLogger("flame.winrate")


def named_path(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def outcome(choice: str | None, model_is: str) -> float:
    """1 if the judge chose the model's side, 0 if the other side, 0.5 if unreadable."""
    if choice is None:
        return 0.5
    return 1.0 if choice == model_is else 0.0


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
    ap.add_argument("--response-chars", type=int, default=4000)
    ap.add_argument("--cache")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    setup_logging()
    base_name, base_path = args.baseline
    base = {r["id"]: r for r in read_jsonl(base_path, required=("id", "instruction", "responses"))}
    lm = load_lm(args.judge, cache=args.cache, threads=args.threads)
    cut = args.response_chars
    result = {"baseline": base_name, "judge": lm.fingerprint, "models": {}}
    for name, path in args.models:
        gens = read_jsonl(path, required=("id", "instruction", "responses"))
        missing = [g["id"] for g in gens if g["id"] not in base]
        if missing:
            raise SystemExit(f"{path}: ids not in the baseline {base_path}: {missing[:5]}")
        prompts, sides = [], []
        for g in gens:
            ours, theirs = first_response(g)[:cut], first_response(base[g["id"]])[:cut]
            prompts += [
                pairwise_prompt(g["instruction"], ours, theirs),
                pairwise_prompt(g["instruction"], theirs, ours),
            ]
            sides += ["A", "B"]
        choices = [pick(s, ["A", "B"]) for s in lm.choose(prompts, ["A", "B"])]
        scores = [outcome(c, side) for c, side in zip(choices, sides, strict=True)]
        n = len(scores)
        per_instruction = [(a + b) / 2 for a, b in zip(scores[::2], scores[1::2], strict=True)]
        result["models"][name] = {
            "win_rate": 100.0 * sum(scores) / n if n else float("nan"),
            "win_rate_ci": interval(per_instruction, scale=100.0),
            "n_instructions": len(gens),
            "n_judgments": n,
            "wins": sum(s == 1.0 for s in scores),
            "losses": sum(s == 0.0 for s in scores),
            "ties_or_unreadable": sum(s == 0.5 for s in scores),
            "judge_prefers_A": sum(c == "A" for c in choices),
        }
        log.info("%s vs %s: %s", name, base_name, result["models"][name])
    write_json(args.out, result)


if __name__ == "__main__":
    run(main)
