"""Synthetic hallucination inversion (F-DPO, Chaduvula et al., arXiv 2601.03027).

The `hallucinator` model rewrites clean responses (h = 0 under flame.fdpo's label rule) so that
they carry 2-3 factual errors. RM_fact (the same FActScore engine and settings as flame.rm_fact)
scores every rewrite, and a rewrite is kept only when it is less factual than its original; the
others are discarded and counted by reason (empty or unchanged text, no facts, not less
factual). A kept rewrite makes the pair (chosen = the hallucinated rewrite, rejected = the clean
original), bucket 10, which flame.fdpo then flips like any other.

Output: pairs {id, prompt, chosen, rejected, kind: "inversion", rm_fact: [rewrite, original]}
and --counts {clean_responses, rewrites, kept, discarded: {reason: n}}.

Example:
    python -m flame.invert --samples dpo/SFT/samples.jsonl --rm-fact dpo/SFT/rm_fact.jsonl \
        --hallucinator results/models/base/smollm2 --knowledge results/knowledge/embedded \
        --decomposer results/models/base/smollm2 --verifier results/models/base/smollm2 \
        --out fdpo/SFT/inversion.jsonl --counts fdpo/SFT/inversion_counts.json --max-rewrites 8
"""

from __future__ import annotations

import argparse
import logging
import random
from collections import Counter

from flame.cli import run
from flame.factscore.options import add_scorer_args, build_scorer, load_models
from flame.fdpo import label
from flame.io import (
    EXTRAS,
    SAMPLES,
    SCORES,
    json_arg,
    read_jsonl,
    setup_logging,
    write_json,
    write_jsonl,
)

log = logging.getLogger("flame.invert")

PROMPT = (
    "Rewrite the answer below so that it contains {n} factual errors: change names, dates, "
    "places or numbers to wrong ones. Keep the style and length. Reply with the rewritten "
    "answer only.\n\nQuestion: {question}\n\nAnswer: {answer}"
)


def clean_responses(samples, rm_fact, threshold=1.0, limit=None, seed=0) -> list[dict]:
    """Responses labelled h = 0, as {id, prompt, topic, response, score}; at most `limit`."""
    out = []
    for s in samples:
        scores = rm_fact.get(s["id"]) or [None] * len(s["responses"])
        for j, (text, score) in enumerate(zip(s["responses"], scores, strict=True)):
            if label(score, threshold) == 0 and text.strip():
                out.append({"id": f"{s['id']}#{j}", "prompt": s["instruction"],
                            "topic": s.get("topic"), "response": text, "score": score})  # fmt: skip
    if limit is not None and len(out) > limit:
        keep = set(random.Random(seed).sample(range(len(out)), limit))
        out = [c for i, c in enumerate(out) if i in keep]
    return out


def select(
    originals: list[dict],
    rewrites: list[str],
    scores: list[float | None],
    left_out: frozenset[str] | set[str] = frozenset(),
):
    """Keep a rewrite only if RM_fact finds it less factual than its original. Returns
    (pairs, counts) with every discarded rewrite counted by reason; ``left_out``: ids RM_fact
    left out (topic retrieval, topic not in the knowledge source)."""
    pairs, discarded = [], Counter()
    for orig, text, score in zip(originals, rewrites, scores, strict=True):
        if not text.strip():
            discarded["empty"] += 1
        elif text.strip() == orig["response"].strip():
            discarded["unchanged"] += 1
        elif orig["id"] in left_out:
            discarded["unknown_topic"] += 1
        elif score is None:
            discarded["no_facts"] += 1
        elif score >= orig["score"]:
            discarded["not_less_factual"] += 1
        else:
            pairs.append({"id": f"{orig['id']}:inversion", "prompt": orig["prompt"],
                          "chosen": text, "rejected": orig["response"], "kind": "inversion",
                          "rm_fact": [score, orig["score"]], "rm_if": None})  # fmt: skip
    counts = {
        "clean_responses": len(originals),
        "rewrites": len(rewrites),
        "kept": len(pairs),
        "discarded": dict(discarded),
        "discarded_total": sum(discarded.values()),
    }
    return pairs, counts


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--samples", required=True, help="JSONL {id, instruction, responses}")
    ap.add_argument("--rm-fact", required=True, help="JSONL {id, scores} (flame.rm_fact)")
    ap.add_argument("--hallucinator", required=True, type=json_arg, help="model spec")
    ap.add_argument("--out", required=True, help="inversion pairs (JSONL)")
    ap.add_argument("--counts", required=True, help="kept / discarded counts (JSON)")
    ap.add_argument("--threshold", type=float, default=1.0, help="flame.fdpo's label threshold")
    ap.add_argument("--errors", default="2-3", help="how many errors the prompt asks for")
    ap.add_argument("--max-rewrites", type=int, default=None, help="cap on rewritten responses")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    add_scorer_args(ap, retrieval="open", k=10)
    args = ap.parse_args(argv)
    setup_logging()
    from flame.knowledge import KnowledgeBase
    from flame.lm import Prompt, Sampling, load_lm

    samples = read_jsonl(args.samples, SAMPLES, optional=EXTRAS)
    rm_fact = {r["id"]: r["scores"] for r in read_jsonl(args.rm_fact, SCORES)}
    originals = clean_responses(samples, rm_fact, args.threshold, args.max_rewrites, args.seed)
    log.info("%d clean responses to rewrite", len(originals))
    rewrites: list[str] = []
    scores: list[float | None] = []
    left_out: set[str] = set()
    if originals:
        lm = load_lm(args.hallucinator, cache=args.cache, threads=args.threads)
        prompts = [
            Prompt.chat(PROMPT.format(n=args.errors, question=o["prompt"], answer=o["response"]))
            for o in originals
        ]
        sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                            top_p=args.top_p, n=1, seed=args.seed)  # fmt: skip
        rewrites = [outs[0] if outs else "" for outs in lm.generate(prompts, sampling)]
        del lm
        decomposer, verifier = load_models(args)
        scorer = build_scorer(args, decomposer, verifier, KnowledgeBase.load(args.knowledge))
        items = [
            {"id": o["id"], "prompt": o["prompt"], "topic": o["topic"], "response": text}
            for o, text in zip(originals, rewrites, strict=True)
            if text.strip()
        ]
        results = scorer.score(items) if items else []
        by_id = {r["id"]: r["score"] for r in results}
        left_out = {r["id"] for r in results if r.get("unknown_topic")}
        scores = [by_id.get(o["id"]) for o in originals]
    pairs, counts = select(originals, rewrites, scores, left_out)
    write_jsonl(args.out, pairs)
    write_json(args.counts, {**counts, "threshold": args.threshold, "errors": args.errors})
    log.info("inversion: %s", counts)


if __name__ == "__main__":
    run(main)
