"""RM_fact by the trained Bradley-Terry reward model (flame.train_rm) instead of FActScore.

Scores every response of the fact-based prompts, as flame.rm_fact does, and writes the same
records ({id, scores, n_facts: null}), so flame.pairs picks fact pairs by the reward model. With
--compare (FActScore's rm_fact.jsonl for the same samples) it also reports the agreement: the
pairwise accuracy over response pairs FActScore orders (ties left out), Kendall's tau-b over all
responses both score, and responses/s of the reward model.

Example:
    python -m flame.rm_bt --model results/models/rm/RM_BT \\
        --samples results/dpo/SFT/samples.jsonl --out results/rm_bt/SFT/rm_fact.jsonl \\
        --compare results/dpo/SFT/rm_fact.jsonl --stats results/rm_bt/SFT/agreement.json
"""

from __future__ import annotations

import argparse
import logging
import time

from flame.cli import run
from flame.io import EXTRAS, SAMPLES, SCORES, read_jsonl, setup_logging, write_json, write_jsonl

log = logging.getLogger("flame.rm_bt")


def kendall_tau_b(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b (ties in either list handled); None with fewer than 2 points."""
    n = len(x)
    conc = disc = tie_x = tie_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tie_x += 1
            elif dy == 0:
                tie_y += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + tie_x) * (conc + disc + tie_y)) ** 0.5
    return (conc - disc) / denom if denom else None


def agreement(ours: dict[str, list], ref: dict[str, list]) -> dict:
    """Pairwise accuracy within each prompt (pairs the reference orders) and pooled tau-b."""
    right = total = 0.0
    xs, ys = [], []
    for sid, ref_scores in ref.items():
        mine = ours.get(sid) or []
        both = [(a, b) for a, b in zip(ref_scores, mine, strict=False) if None not in (a, b)]
        xs += [a for a, _ in both]
        ys += [b for _, b in both]
        for i in range(len(both)):
            for j in range(i + 1, len(both)):
                (ra, ma), (rb, mb) = both[i], both[j]
                if ra == rb:
                    continue
                total += 1
                right += 0.5 if ma == mb else float((ra > rb) == (ma > mb))
    return {"pairwise_accuracy": right / total if total else None, "pairs": int(total),
            "kendall_tau_b": kendall_tau_b(xs, ys), "responses": len(xs)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, help="reward model folder (flame.train_rm)")
    ap.add_argument("--samples", required=True, help="JSONL {id, instruction, responses}")
    ap.add_argument("--out", required=True, help="JSONL {id, scores, n_facts}")
    ap.add_argument("--compare", help="FActScore's rm_fact.jsonl for the same samples")
    ap.add_argument("--stats", help="JSON: speed and agreement with --compare")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--threads", type=int)
    ap.add_argument(
        "--allow-untrained",
        action="store_true",
        help="a reward model left untrained (zero pairs) gives null scores instead of failing",
    )
    args = ap.parse_args(argv)
    setup_logging()
    from flame.train_rm import untrained_reason

    samples = [s for s in read_jsonl(args.samples, SAMPLES, optional=EXTRAS) if s.get("fact_based")]
    why = untrained_reason(args.model)
    if why is not None:
        if not args.allow_untrained:
            raise SystemExit(f"error: {args.model}: the reward model was not trained: {why}")
        log.warning("%s was not trained (%s): every response gets a null score", args.model, why)
        nulls = [{"id": s["id"], "scores": [None] * len(s["responses"]),
                  "n_facts": [None] * len(s["responses"])} for s in samples]  # fmt: skip
        write_jsonl(args.out, nulls)
        if args.stats:
            n = sum(len(s["responses"]) for s in samples)
            write_json(args.stats, {"trained": False, "skipped": why, "responses": n, "scored": 0,
                                    "seconds": None, "responses_per_s": None,
                                    "agreement_with_factscore": None})  # fmt: skip
        return
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from flame.train_rm import score
    from flame.training import set_threads

    set_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model)
    prompts = [s["instruction"] for s in samples for _ in s["responses"]]
    texts = [x for s in samples for x in s["responses"]]
    t0 = time.time()
    flat = score(model, tokenizer, prompts, texts, args.batch_size, args.max_length)
    seconds = time.time() - t0
    records, k = [], 0
    for s in samples:
        n = len(s["responses"])
        chunk = zip(flat[k : k + n], s["responses"], strict=True)
        scores = [v if t.strip() else None for v, t in chunk]
        records.append({"id": s["id"], "scores": scores, "n_facts": [None] * n})
        k += n
    write_jsonl(args.out, records)
    stats = {"trained": True, "responses": len(texts), "scored": len(texts),
             "seconds": round(seconds, 3),
             "responses_per_s": len(texts) / seconds if seconds > 0 else None}  # fmt: skip
    if args.compare:
        ref = {r["id"]: r["scores"] for r in read_jsonl(args.compare, SCORES)}
        stats["agreement_with_factscore"] = agreement({r["id"]: r["scores"] for r in records}, ref)
    if args.stats:
        write_json(args.stats, stats)
    log.info("reward model scored %d responses: %s", len(texts), stats)


if __name__ == "__main__":
    run(main)
