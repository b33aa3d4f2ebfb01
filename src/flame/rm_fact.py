"""RM_fact, the factuality reward (FLAME section 3.3), for fact-based prompts only.

Each response is split into sentences, decomposed into atomic facts, and each fact is verified
against passages retrieved with the instruction as the query (FLAME: 10 passages); the reward is
the share of supported facts, with no length penalty. A response with no facts (empty or
abstaining) gets reward null and takes part in no fact pair. The FActScore engine does the work.

With --retrieval topic (the pilot's Bio bios), a prompt whose topic is not a page of the knowledge
source is never checked against other pages: its responses get reward null and the record says
``unknown_topic: true`` (--unknown-topic skip), or the step stops with an error naming its file
and line (--unknown-topic fail).

Output: {id, scores: [reward per response or null], n_facts: [...], unknown_topic: bool} per
fact-based prompt, and the per-fact records in --facts.

Example:
    python -m flame.rm_fact --samples dpo/SFT/samples.jsonl --knowledge results/knowledge/embedded \
        --decomposer results/models/base/smollm2 --verifier results/models/base/smollm2 \
        --out dpo/SFT/rm_fact.jsonl --facts dpo/SFT/rm_fact_facts.jsonl --k 10
"""

from __future__ import annotations

import argparse
import logging

from flame.cli import run
from flame.factscore.options import add_scorer_args, build_scorer, load_models
from flame.io import EXTRAS, SAMPLES, read_jsonl, record_lines, setup_logging, write_jsonl

log = logging.getLogger("flame.rm_fact")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--samples", required=True, help="JSONL {id, instruction, responses, fact_based}"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--facts", required=True, help="per-fact records (JSONL)")
    add_scorer_args(ap, retrieval="open", k=10)
    args = ap.parse_args(argv)
    setup_logging()
    from flame.knowledge import KnowledgeBase

    records = read_jsonl(args.samples, SAMPLES, optional=EXTRAS)
    lines = record_lines(args.samples)
    samples = [(s, n) for s, n in zip(records, lines, strict=True) if s.get("fact_based")]
    items = [
        {"id": f"{s['id']}#{j}", "prompt": s["instruction"], "topic": s.get("topic"),
         "response": x, "where": f"{args.samples}:{n}"}
        for s, n in samples
        for j, x in enumerate(s["responses"])
    ]  # fmt: skip
    samples = [s for s, _ in samples]
    log.info("%d fact-based prompts, %d responses to score", len(samples), len(items))
    results = []
    if items:
        decomposer, verifier = load_models(args)
        scorer = build_scorer(args, decomposer, verifier, KnowledgeBase.load(args.knowledge))
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
                "unknown_topic": any(r.get("unknown_topic") for r in per),
            }
        )
    write_jsonl(args.out, records)
    write_jsonl(args.facts, ({"id": r["id"], **f} for r in results for f in r["facts"]))
    n_none = sum(x is None for r in records for x in r["scores"])
    n_out = sum(bool(r.get("unknown_topic")) for r in results)
    log.info("%d responses scored, %d without facts (reward null), %d of them left out: topic "
             "not in the knowledge source", len(items), n_none, n_out)  # fmt: skip


if __name__ == "__main__":
    run(main)
