"""Does the win-rate judge judge? Its accuracy on obvious pairs, and its statistics per comparison.

The pair set (default: flame/resources/judge_pairs.jsonl, 36 project-written items, 6 of each
kind: off_topic, truncated, repetitive, wrong_fact, refusal, empty) holds {id, kind, instruction,
better, worse}, where the better response is obvious. For each --modes (flame.judge) the judge
compares better (as x) with worse: accuracy is the mean verdict (a tie or an unreadable verdict
counts 0.5, so chance is 50 %), with n and a 95 % bootstrap interval, per kind too, and the
judge's tie rate, unreadable rate, swap agreement and first-position rate.

With --winrate (the winrate_*.json files of the workflow) it also lists, per comparison, the
win rate and the judge's statistics there. Writes --out (JSON) and --table (Markdown; CSV beside
it with the same stem); either step alone, or both in one call.

Two steps, so the workflow judges the pairs early, on idle cores, and writes the table last:

    python -m flame.judge_quality --judge results/models/base/smollm2 \\
        --modes prompt logprob reverse --out results/eval/judge_quality.json
    python -m flame.judge_quality --quality results/eval/judge_quality.json --selected reverse \\
        --winrate results/eval/winrate_table2.json --table results/tables/table_judge.md
"""

from __future__ import annotations

import argparse
import importlib.resources
import logging
from pathlib import Path

from flame.cli import run
from flame.io import json_arg, read_json, read_jsonl, setup_logging, write_json, write_text
from flame.judge import MODES, judge, judge_stats, points
from flame.lm import load_lm
from flame.stats import interval

log = logging.getLogger("flame.judge_quality")
# the judged pairs (flame/resources/judge_pairs.jsonl)
JUDGE_PAIRS = {"instruction": str, "better": str, "worse": str}


def default_pairs() -> str:
    return str(importlib.resources.files("flame") / "resources" / "judge_pairs.jsonl")


def accuracy(pairs: list[dict], judgments: list[dict]) -> dict:
    """Accuracy (%) with n and a 95 % interval, per kind too, plus the judge's statistics.
    Every judgment has the better response as x, so its points are the accuracy."""
    pts = points(judgments)
    kinds: dict[str, list[float]] = {}
    for p, v in zip(pairs, pts, strict=True):
        kinds.setdefault(p.get("kind") or "-", []).append(v)
    return {
        "accuracy": interval(pts, scale=100.0),
        "by_kind": {k: 100.0 * sum(v) / len(v) for k, v in sorted(kinds.items())},
        **judge_stats(judgments),
    }


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}"


RATES = ("tie_rate", "unreadable_rate", "swap_agreement", "first_position_rate", "identical_rate")


def cells(values: list, digits: int = 2) -> list[str]:
    return ["" if v is None else f"{v:.{digits}f}" for v in values]


def render(quality: dict, selected: str | None, winrates: dict) -> tuple[str, str]:
    """(csv, md): accuracy per mode on the pair set, then the statistics per comparison. In the
    CSV, `value` is the accuracy (pair rows) or the win rate (comparison rows), rates are %."""
    kinds = sorted({k for q in quality.values() for k in q["by_kind"]})
    cols = ["section", "name", "value", "lo", "hi", "n", *(r.removesuffix("_rate") for r in RATES)]
    csv = [",".join(cols + kinds)]
    md = [
        "Judge quality: accuracy (%) on the obvious pairs (chance 50; a tie counts ½), and the "
        "judge's rates (%)\n",
        "| mode | accuracy | tie | unreadable | swap agreement | first position | "
        + " | ".join(kinds)
        + " |",
        "|---" * (6 + len(kinds)) + "|",
    ]
    for mode, q in quality.items():
        a = q["accuracy"]
        rates = [None if q.get(r) is None else 100 * q[r] for r in RATES]
        by_kind = [q["by_kind"].get(k) for k in kinds]
        csv.append(
            ",".join(
                ["pairs", mode, *cells([a["mean"], a["lo"], a["hi"]]), str(a["n"])]
                + cells(rates)
                + cells(by_kind, 1)
            )
        )
        label = f"**{mode}** (used)" if mode == selected else mode
        md.append(
            f"| {label} | {a['mean']:.1f} [{a['lo']:.1f}, {a['hi']:.1f}] (n {a['n']}) | "
            + " | ".join(pct(q.get(r)) for r in RATES[:4])
            + " | "
            + " | ".join(cells(by_kind, 0))
            + " |"
        )
    if winrates:
        md += [
            "",
            "Per comparison in the tables (win rate %, the judge's rates %)\n",
            "| comparison | mode | win rate | n | tie | unreadable | swap agreement | identical |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for table, w in winrates.items():
        for model, m in w["models"].items():
            s = m.get("judge_stats") or {}
            name = f"{model} vs {w['baseline']}"
            ci = m.get("win_rate_ci") or {}
            csv.append(
                ",".join(
                    [table, name, *cells([m["win_rate"], ci.get("lo"), ci.get("hi")])]
                    + [str(m["n_instructions"])]
                    + cells([None if s.get(r) is None else 100 * s[r] for r in RATES])
                    + [""] * len(kinds)
                )
            )
            shown = ("tie_rate", "unreadable_rate", "swap_agreement", "identical_rate")
            md.append(
                f"| {table}: {name} | {w.get('mode', 'prompt')} | {m['win_rate']:.1f} | "
                f"{m['n_instructions']} | " + " | ".join(pct(s.get(r)) for r in shown) + " |"
            )
    return "\n".join(csv) + "\n", "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--judge", type=json_arg, help="judge model spec: judge the pairs")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--pairs", default=default_pairs(), help="JSONL {instruction, better, worse}")
    ap.add_argument("--out", help="with --judge: JSON with every number")
    ap.add_argument("--quality", type=Path, help="without --judge: a JSON --out wrote before")
    ap.add_argument("--selected", choices=MODES, help="the mode the win rates use (marked)")
    ap.add_argument("--winrate", nargs="*", default=[], type=Path, help="winrate_*.json files")
    ap.add_argument("--table", help="Markdown table (and a CSV with the same stem)")
    ap.add_argument("--response-chars", type=int, default=4000)
    ap.add_argument("--cache")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    setup_logging()
    if (args.judge is None) == (args.quality is None):
        ap.error("give --judge (and --out) to judge the pairs, or --quality to render a table")
    if args.judge is not None:
        if not args.out:
            ap.error("--judge needs --out")
        pairs = read_jsonl(args.pairs, JUDGE_PAIRS)
        cut = args.response_chars
        items = [(p["instruction"], p["better"][:cut], p["worse"][:cut]) for p in pairs]
        lm = load_lm(args.judge, cache=args.cache, threads=args.threads)
        quality = {}
        for mode in args.modes:
            quality[mode] = accuracy(pairs, judge(lm, items, mode))
            log.info("%s: %s", mode, quality[mode])
        write_json(args.out, {"judge": lm.fingerprint, "pairs": args.pairs, "modes": quality})
    else:
        quality = read_json(args.quality)["modes"]
    if args.table:
        winrates = {p.stem.removeprefix("winrate_"): read_json(p) for p in args.winrate}
        csv, md = render(quality, args.selected, winrates)
        table = Path(args.table)
        write_text(table.with_suffix(".csv"), csv)
        write_text(table, md)
        print(md)


if __name__ == "__main__":
    run(main)
