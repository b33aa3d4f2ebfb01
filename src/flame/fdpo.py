"""F-DPO preference pairs (Chaduvula et al., arXiv 2601.03027): hallucination labels, bucket
balancing and flipping.

- Labels. A response with an RM_fact result gets h = 1 (hallucinated) when its share of
  supported atomic facts is below --threshold, else h = 0. The default threshold 1.0 means "any
  unsupported atomic fact"; 0.5 means "most facts unsupported". A response without facts (RM_fact
  null, or a prompt RM_fact did not score) gets no label, and its pair joins no F-DPO set.
- Buckets. Each labelled pair falls in bucket (h_w, h_l): 00, 01, 10 or 11.
- Balancing (optional, --balance '{"00": 15, "01": 10, "10": 10, "11": 10}', F-DPO's counts).
  The buckets are down-sampled (seeded) to the given shares of the largest set they can fill;
  a bucket missing from the mapping is dropped. Applied before flipping, so the 10 bucket (the
  synthetic inversion pairs) has a share of its own.
- Flipping. A pair whose chosen response is hallucinated and whose rejected one is not (10) has
  chosen and rejected swapped, so that delta_h = h_l - h_w is 0 or 1 for every pair.

Input: one or more pair files ({id, prompt, chosen, rejected, kind, rm_fact: [chosen, rejected]}
as flame.pairs and flame.invert write them). Output: the pairs with h_w, h_l, delta_h and
flipped, and --counts with the bucket counts before and after flipping.

Example:
    python -m flame.fdpo --pairs dpo/SFT/pairs_DPO_FLAME.jsonl fdpo/SFT/inversion.jsonl \
        --out fdpo/SFT/pairs_FDPO.jsonl --counts fdpo/SFT/fdpo_counts.json --threshold 1.0
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import Counter

from flame.cli import run
from flame.io import (
    PAIR_EXTRAS,
    PAIRS,
    json_arg,
    read_jsonl,
    setup_logging,
    write_json,
    write_jsonl,
)

log = logging.getLogger("flame.fdpo")

BUCKETS = ("00", "01", "10", "11")


def label(score: float | None, threshold: float = 1.0) -> int | None:
    """1 = hallucinated (supported share below the threshold), 0 = clean, None = no facts."""
    if score is None:
        return None
    return int(score < threshold)


def bucket(pair: dict) -> str:
    return f"{pair['h_w']}{pair['h_l']}"


def labelled(pairs: list[dict], threshold: float) -> tuple[list[dict], int]:
    """Pairs with both labels known (h_w, h_l added), and how many were left out unlabelled."""
    out, unlabelled = [], 0
    for p in pairs:
        scores = p.get("rm_fact") or [None, None]
        h_w, h_l = label(scores[0], threshold), label(scores[1], threshold)
        if h_w is None or h_l is None:
            unlabelled += 1
            continue
        out.append({**p, "h_w": h_w, "h_l": h_l})
    return out, unlabelled


def counts(pairs: list[dict]) -> dict[str, int]:
    c = Counter(bucket(p) for p in pairs)
    return {b: c.get(b, 0) for b in BUCKETS}


def balance(pairs: list[dict], shares: dict[str, float], seed: int = 0) -> list[dict]:
    """Down-sample the buckets to `shares` (relative weights) of the largest total they can
    fill; buckets not in `shares` (or with weight 0) are dropped. Order is kept."""
    bad = sorted(set(shares) - set(BUCKETS))
    if bad:
        raise ValueError(
            f"unknown bucket(s) {bad} in the balance shares (use {', '.join(BUCKETS)})"
        )
    weights = {b: float(w) for b, w in shares.items() if w and float(w) > 0}
    if not weights:
        raise ValueError("balance shares: at least one bucket needs a positive weight")
    total_w = sum(weights.values())
    have = counts(pairs)
    # largest N with round(N * w / total_w) <= have[b] for every weighted bucket
    n = min(have[b] * total_w / w for b, w in weights.items())
    quota = {b: int(n * w / total_w + 1e-9) for b, w in weights.items()}
    rng = random.Random(seed)
    keep: set[int] = set()
    for b, q in quota.items():
        idx = [i for i, p in enumerate(pairs) if bucket(p) == b]
        keep.update(rng.sample(idx, q))
    return [p for i, p in enumerate(pairs) if i in keep]


def flip(pair: dict) -> dict:
    """Swap a (hallucinated chosen, clean rejected) pair; set delta_h = h_l - h_w (0 or 1)."""
    p = dict(pair, flipped=False)
    if p["h_w"] == 1 and p["h_l"] == 0:
        p.update(
            chosen=pair["rejected"],
            rejected=pair["chosen"],
            h_w=0,
            h_l=1,
            flipped=True,
        )
        for key in ("rm_fact", "rm_if"):
            if isinstance(pair.get(key), list):
                p[key] = pair[key][::-1]
    p["delta_h"] = p["h_l"] - p["h_w"]
    return p


def build(pairs, threshold=1.0, shares=None, seed=0) -> tuple[list[dict], dict]:
    """Label, (balance), flip. Returns (F-DPO pairs, counts)."""
    lab, unlabelled = labelled(pairs, threshold)
    before = counts(lab)
    if shares:
        lab = balance(lab, shares, seed)
    out = [flip(p) for p in lab]
    info = {
        "input_pairs": len(pairs),
        "unlabelled": unlabelled,
        "buckets_before_flip": before,
        "buckets_balanced": counts(lab) if shares else None,
        "buckets_after_flip": counts(out),
        "flipped": sum(p["flipped"] for p in out),
        "pairs": len(out),
        "kinds": dict(Counter(str(p.get("kind")) for p in out)),
        "threshold": threshold,
        "balance": shares,
    }
    return out, info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pairs", nargs="+", required=True, help="pair files (JSONL)")
    ap.add_argument("--out", required=True, help="F-DPO pairs (JSONL)")
    ap.add_argument("--counts", required=True, help="bucket counts (JSON)")
    ap.add_argument("--threshold", type=float, default=1.0, help="h = 1 below this share")
    ap.add_argument("--balance", type=json_arg, default=None, help="bucket -> weight (JSON)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    setup_logging()
    pairs = [p for path in args.pairs for p in read_jsonl(path, PAIRS, optional=PAIR_EXTRAS)]
    if args.balance is not None and not isinstance(args.balance, dict):
        raise SystemExit(
            f"error: --balance: expected a JSON mapping bucket -> weight, got {args.balance!r}"
        )
    try:
        out, info = build(pairs, args.threshold, args.balance, args.seed)
    except ValueError as err:
        raise SystemExit(f"error: --balance: {err}") from None
    write_jsonl(args.out, out)
    write_json(args.counts, {**info, "inputs": args.pairs})
    log.info("F-DPO pairs: %s", info)


if __name__ == "__main__":
    run(main)
