"""RM_fact, the factuality reward (FLAME section 3.3), for fact-based prompts only.

Each response is split into sentences, decomposed into atomic facts, and each fact is verified
against passages retrieved with the instruction as the query (FLAME: 10 passages); the reward is
the share of supported facts, with no length penalty. A response with no facts (empty or
abstaining) gets reward null and takes part in no fact pair. The FActScore engine does the work.

Output: {id, scores: [reward per response or null], n_facts: [...]} per fact-based prompt, and
the per-fact records in --facts.

Example:
    python -m flame.rm_fact --samples dpo/SFT/samples.jsonl --knowledge results/knowledge/embedded \
        --decomposer results/models/base/smollm2 --verifier results/models/base/smollm2 \
        --out dpo/SFT/rm_fact.jsonl --facts dpo/SFT/rm_fact_facts.jsonl --k 10
"""

from __future__ import annotations

import argparse
import logging

from flame.io import json_arg, read_jsonl, setup_logging, write_jsonl

log = logging.getLogger("flame.rm_fact")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--samples", required=True, help="JSONL {id, instruction, responses, fact_based}"
    )
    ap.add_argument("--knowledge", required=True, help="built knowledge folder")
    ap.add_argument("--decomposer", required=True, type=json_arg)
    ap.add_argument("--verifier", required=True, type=json_arg)
    ap.add_argument("--out", required=True)
    ap.add_argument("--facts", required=True, help="per-fact records (JSONL)")
    ap.add_argument("--unit", choices=("atomic", "sentence"), default="atomic")
    ap.add_argument("--retrieval", choices=("open", "topic"), default="open")
    ap.add_argument("--k", type=int, default=10, help="passages per verification")
    ap.add_argument("--passage-chars", type=int, default=1000)
    ap.add_argument("--n-fixed", type=int, default=7)
    ap.add_argument("--n-bm25", type=int, default=1)
    ap.add_argument("--max-fact-tokens", type=int, default=128, help="decomposition length cap")
    ap.add_argument("--reranker", help="cross-encoder folder or hub id that re-ranks passages")
    ap.add_argument("--candidates", type=int, default=20, help="first-stage passages to re-rank")
    ap.add_argument("--cache", help="SQLite cache of LM calls and retrievals")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    setup_logging()
    from flame.factscore import FactScorer
    from flame.knowledge import KnowledgeBase
    from flame.lm import load_lm, parse_spec

    samples = [
        s
        for s in read_jsonl(args.samples, required=("id", "instruction", "responses"))
        if s.get("fact_based")
    ]
    items = [
        {"id": f"{s['id']}#{j}", "prompt": s["instruction"], "topic": s.get("topic"), "response": x}
        for s in samples
        for j, x in enumerate(s["responses"])
    ]
    log.info("%d fact-based prompts, %d responses to score", len(samples), len(items))
    results = []
    if items:
        decomposer = load_lm(args.decomposer, cache=args.cache, threads=args.threads)
        same = parse_spec(args.decomposer) == parse_spec(args.verifier)
        verifier = (
            decomposer if same else load_lm(args.verifier, cache=args.cache, threads=args.threads)
        )
        scorer = FactScorer(
            decomposer,
            verifier,
            KnowledgeBase.load(args.knowledge),
            unit=args.unit,
            retrieval=args.retrieval,
            k=args.k,
            n_fixed=args.n_fixed,
            n_bm25=args.n_bm25,
            passage_chars=args.passage_chars,
            max_fact_tokens=args.max_fact_tokens,
            reranker=args.reranker,
            candidates=args.candidates,
            cache=args.cache,
        )
        results = scorer.score(items)
    by_id = {r["id"]: r for r in results}
    records = []
    for s in samples:
        per = [by_id[f"{s['id']}#{j}"] for j in range(len(s["responses"]))]
        records.append(
            {
                "id": s["id"],
                "scores": [r["score"] for r in per],
                "n_facts": [r["n_facts"] for r in per],
            }
        )
    write_jsonl(args.out, records)
    write_jsonl(args.facts, ({"id": r["id"], **f} for r in results for f in r["facts"]))
    n_none = sum(x is None for r in records for x in r["scores"])
    log.info("%d responses scored, %d without facts (reward null)", len(items), n_none)


if __name__ == "__main__":
    main()
