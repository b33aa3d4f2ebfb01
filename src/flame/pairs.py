"""DPO preference pairs (FLAME section 3.3 and Table 11).

- IF pairs (every prompt): the response with the highest RM_IF is chosen, the lowest rejected;
  prompts whose best and worst scores tie (or with fewer than two scored responses) are dropped.
- Fact pairs (fact-based prompts): highest vs lowest RM_fact, ties dropped, and dropped when
  |RM_IF(chosen) - RM_IF(rejected)| > --max-if-gap (paper: 0.5) so that a fact pair does not
  teach worse instruction following; pairs with an unknown RM_IF are dropped too.
- Pair sets: DPO (IF pairs), DPO_fact (fact pairs), DPO_FLAME (both). In DPO_FLAME the two kinds
  are sampled uniformly: with --mix union every pair is equally likely (a seeded shuffle of the
  union); with --mix balanced the smaller kind is up-sampled so each kind is half the set.

Ties among several best (or worst) responses go to the lowest sample index. Counts, including
why prompts were dropped, go to --counts (the paper's Table 11).

Fact-pair selection (Table 7's ablation; --fact-selection, default maxmin as above):
- threshold: every pair (i, j) of a prompt's responses with RM_fact(i) - RM_fact(j) >=
  --min-fact-gap (paper: 0.2), subject to the same RM_IF gap filter;
- combined: highest vs lowest RM_IF + --fact-weight x RM_fact (paper: 5), ties dropped; the
  combined score already weighs instruction following, so no RM_IF gap filter.
With a selection other than maxmin, --suffix names the sets (pairs_DPO_fact{suffix}.jsonl,
pairs_DPO_FLAME{suffix}.jsonl) and the IF-only set is not written.

Example:
    python -m flame.pairs --samples dpo/SFT/samples.jsonl --rm-if dpo/SFT/rm_if.jsonl \
        --rm-fact dpo/SFT/rm_fact.jsonl --out-dir dpo/SFT --counts dpo/SFT/pair_counts.json
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import Counter
from pathlib import Path

from flame.cli import run
from flame.io import EXTRAS, SAMPLES, SCORES, read_jsonl, setup_logging, write_json, write_jsonl

log = logging.getLogger("flame.pairs")

SETS = ("DPO", "DPO_fact", "DPO_FLAME")


def extremes(scores: list[float | None]) -> tuple[int, int] | None:
    """(argmax, argmin) over known scores; None when fewer than two are known or they all tie."""
    known = [(s, i) for i, s in enumerate(scores) if s is not None]
    if len(known) < 2:
        return None
    best = max(known, key=lambda t: (t[0], -t[1]))
    worst = min(known, key=lambda t: (t[0], t[1]))
    return None if best[0] == worst[0] else (best[1], worst[1])


def make_pair(sample: dict, kind: str, c: int, r: int, rm_if: list, rm_fact: list | None) -> dict:
    return {
        "id": f"{sample['id']}:{kind}",
        "prompt": sample["instruction"],
        "chosen": sample["responses"][c],
        "rejected": sample["responses"][r],
        "kind": kind,
        "rm_if": [rm_if[c], rm_if[r]],
        "rm_fact": [rm_fact[c], rm_fact[r]] if rm_fact else None,
    }


def build_pairs(samples, rm_if, rm_fact, max_if_gap: float = 0.5):
    """Returns (if_pairs, fact_pairs, drop counts)."""
    drops: Counter = Counter()
    if_pairs, fact_pairs = [], []
    for s in samples:
        if_scores = rm_if[s["id"]]
        ex = extremes(if_scores)
        if ex is None:
            drops["if_tie_or_unscored"] += 1
        else:
            if_pairs.append(make_pair(s, "if", *ex, if_scores, rm_fact.get(s["id"])))
        if not s.get("fact_based"):
            continue
        fact_scores = rm_fact.get(s["id"])
        ex = extremes(fact_scores) if fact_scores else None
        if ex is None:
            drops["fact_tie_or_unscored"] += 1
            continue
        c, r = ex
        if if_scores[c] is None or if_scores[r] is None:
            drops["fact_unknown_rm_if"] += 1
        elif abs(if_scores[c] - if_scores[r]) > max_if_gap:
            drops["fact_rm_if_gap"] += 1
        else:
            fact_pairs.append(make_pair(s, "fact", c, r, if_scores, fact_scores))
    return if_pairs, fact_pairs, dict(drops)


def select_fact_pairs(
    samples, rm_if, rm_fact, how: str, max_if_gap=0.5, min_fact_gap=0.2, fact_weight=5.0
):
    """Fact pairs by a Table 7 variant (threshold or combined); returns (pairs, drop counts)."""
    drops: Counter = Counter()
    pairs = []
    for s in samples:
        fact, ifs = rm_fact.get(s["id"]), rm_if[s["id"]]
        if not s.get("fact_based"):
            continue
        if not fact:
            drops["fact_unscored"] += 1
            continue
        if how == "combined":
            both = [
                None if f is None or i is None else i + fact_weight * f
                for f, i in zip(fact, ifs, strict=True)
            ]
            ex = extremes(both)
            if ex is None:
                drops["combined_tie_or_unscored"] += 1
            else:
                pairs.append(make_pair(s, "fact", *ex, ifs, fact))
            continue
        if how != "threshold":
            raise ValueError(f"unknown fact-pair selection {how!r} (maxmin, threshold, combined)")
        found = 0
        for c, fc in enumerate(fact):
            for r, fr in enumerate(fact):
                if fc is None or fr is None or fc - fr < min_fact_gap:
                    continue
                if ifs[c] is None or ifs[r] is None or abs(ifs[c] - ifs[r]) > max_if_gap:
                    drops["fact_rm_if_gap_or_unknown"] += 1
                    continue
                pair = make_pair(s, "fact", c, r, ifs, fact)
                pairs.append({**pair, "id": f"{pair['id']}{c}-{r}"})
                found += 1
        if not found:
            drops["no_pair_above_gap"] += 1
    return pairs, dict(drops)


def mix(if_pairs: list[dict], fact_pairs: list[dict], how: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    if how == "balanced" and if_pairs and fact_pairs:
        small, large = sorted((if_pairs, fact_pairs), key=len)
        extra = [
            dict(p, id=f"{p['id']}~{i}")
            for i, p in enumerate(rng.choices(small, k=len(large) - len(small)))
        ]
        pool = large + small + extra
    elif how in ("union", "balanced"):
        pool = if_pairs + fact_pairs
    else:
        raise ValueError(f"unknown mix {how!r} (union or balanced)")
    rng.shuffle(pool)
    return pool


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", required=True)
    ap.add_argument("--rm-if", required=True)
    ap.add_argument("--rm-fact", required=True)
    ap.add_argument("--out-dir", required=True, help="writes pairs_{DPO,DPO_fact,DPO_FLAME}.jsonl")
    ap.add_argument("--counts", required=True, help="JSON pair counts (Table 11)")
    ap.add_argument("--max-if-gap", type=float, default=0.5)
    ap.add_argument("--mix", choices=("union", "balanced"), default="union")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--fact-selection", choices=("maxmin", "threshold", "combined"), default="maxmin"
    )
    ap.add_argument("--min-fact-gap", type=float, default=0.2, help="threshold selection")
    ap.add_argument("--fact-weight", type=float, default=5.0, help="combined selection")
    ap.add_argument("--suffix", default="", help="set-name suffix (selections other than maxmin)")
    args = ap.parse_args(argv)
    setup_logging()
    samples = read_jsonl(args.samples, SAMPLES, optional=EXTRAS)
    rm_if = {r["id"]: r["scores"] for r in read_jsonl(args.rm_if, SCORES)}
    rm_fact = {r["id"]: r["scores"] for r in read_jsonl(args.rm_fact, SCORES)}
    for s in samples:
        if s["id"] not in rm_if or len(rm_if[s["id"]]) != len(s["responses"]):
            raise SystemExit(f"{args.rm_if}: no RM_IF scores for every response of {s['id']!r}")
    if_pairs, fact_pairs, drops = build_pairs(samples, rm_if, rm_fact, args.max_if_gap)
    if args.fact_selection != "maxmin":
        fact_pairs, drops = select_fact_pairs(
            samples, rm_if, rm_fact, args.fact_selection, args.max_if_gap,
            args.min_fact_gap, args.fact_weight,
        )  # fmt: skip
    sets = {
        "DPO": if_pairs,
        "DPO_fact": fact_pairs,
        "DPO_FLAME": mix(if_pairs, fact_pairs, args.mix, args.seed),
    }
    if args.fact_selection != "maxmin":
        sets = {f"{k}{args.suffix}": v for k, v in sets.items() if k != "DPO"}
    for name, pairs in sets.items():
        write_jsonl(Path(args.out_dir) / f"pairs_{name}.jsonl", pairs)
    counts = {
        "prompts": len(samples),
        "fact_based_prompts": sum(bool(s.get("fact_based")) for s in samples),
        "sets": {
            n: {
                "if": sum(p["kind"] == "if" for p in ps),
                "fact": sum(p["kind"] == "fact" for p in ps),
                "total": len(ps),
            }
            for n, ps in sets.items()
        },
        "dropped": drops,
        "max_if_gap": args.max_if_gap,
        "mix": args.mix,
        "fact_selection": args.fact_selection,
    }
    write_json(args.counts, counts)
    log.info("pairs: %s; dropped: %s", counts["sets"], drops)


if __name__ == "__main__":
    run(main)
