"""Few-shot generation with the pre-trained model (FLAME section 3.2: SFT_fact data).

For each target instruction, the k most similar *other* instructions of the demo pool (BM25 over
instruction text; the paper uses the DRAGON+ dense retriever) and their human answers form a
k-shot raw-text prompt; the pre-trained model samples n responses (paper: k=5, n=10, temperature
0.7, top-p 0.9). Demo answers are cut to --demo-chars characters to bound the prompt length.

Also produces the "PT 5-shot" row of Table 2 (Bio) with --n 1. With --knowledge, the prompt also
holds --passages passages retrieved for the target (Table 1's PT+RAG): the top passages of the
target's own page (its `topic`) for the instruction as query, or of the whole corpus when the
knowledge source has no such page; the output records name them (`context`).

Example:
    python -m flame.fewshot --model results/models/base/smollm2 --demos classified/seed.jsonl \
        --inputs classified/seed.jsonl --only-fact-based --k 5 --n 10 \
        --out sft_data/pt_fewshot.jsonl
"""

from __future__ import annotations

import argparse
import logging

from flame.cli import run
from flame.io import EXTRAS, PROMPTS, json_arg, read_jsonl, setup_logging, write_jsonl
from flame.lm import Sampling, load_lm
from flame.prompts import FEWSHOT_STOP, fewshot_prompt
from flame.retrieval import BM25Index

log = logging.getLogger("flame.fewshot")


def clip(text: str, limit: int) -> str:
    """Cut at the last sentence end before `limit` characters (or hard-cut if there is none)."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind(".\n"))
    return cut[: end + 1] if end > limit // 3 else cut.rstrip() + "..."


def select_demos(pool: list[dict], targets: list[dict], k: int) -> list[list[int]]:
    """For each target, indices of the k most similar pool instructions, never the target itself
    (same id or same text)."""
    index = BM25Index.build([r["instruction"] for r in pool])
    hits = index.search([t["instruction"] for t in targets], k + 2)
    chosen = []
    for target, ranked in zip(targets, hits, strict=True):
        picks = [
            i
            for i, _ in ranked
            if pool[i]["id"] != target["id"] and pool[i]["instruction"] != target["instruction"]
        ][:k]
        if len(picks) < k:  # BM25 found too few overlapping words: fill in pool order
            picks += [
                i
                for i, r in enumerate(pool)
                if i not in picks
                and r["id"] != target["id"]
                and r["instruction"] != target["instruction"]
            ][: k - len(picks)]
        chosen.append(picks)
    return chosen


def retrieve(targets: list[dict], args) -> list[list[dict]]:
    """--passages passages per target: of its topic's page when the knowledge has it (FActScore's
    topic retrieval), else of the whole corpus, with the instruction as the query."""
    from flame.knowledge import KnowledgeBase

    kb = KnowledgeBase.load(args.knowledge)
    out, open_search = [], 0
    for t in targets:
        if kb.has_topic(t.get("topic")):
            out.append(kb.search_topic(t["topic"], [t["instruction"]], args.passages)[0])
        else:
            open_search += 1
            out.append(kb.search(t["instruction"], args.passages))
    log.info("retrieval: %d prompts from their topic's page, %d from the whole corpus",
             len(targets) - open_search, open_search)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, type=json_arg, help="pre-trained model spec")
    ap.add_argument("--demos", required=True, help="JSONL pool {id, instruction, response}")
    ap.add_argument("--inputs", required=True, help="JSONL of target instructions")
    ap.add_argument("--out", required=True, help="JSONL {id, instruction, topic, responses, demos}")
    ap.add_argument("--only-fact-based", action="store_true", help="targets with fact_based=true")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--demo-chars", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--knowledge", help="knowledge folder: retrieval-augmented prompts (PT+RAG)")
    ap.add_argument("--passages", type=int, default=5, help="retrieved passages per prompt")
    ap.add_argument("--passage-chars", type=int, default=1000, help="truncate passages to this")
    ap.add_argument("--cache")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    setup_logging()

    pool = [
        r
        for r in read_jsonl(args.demos, PROMPTS, optional={"response": str | None})
        if r.get("response")
    ]
    targets = read_jsonl(args.inputs, PROMPTS, optional=EXTRAS)
    if args.only_fact_based:
        targets = [t for t in targets if t.get("fact_based")]
    log.info("%d targets, demo pool of %d", len(targets), len(pool))
    if targets and len(pool) < args.k + 1:
        raise SystemExit(
            f"{args.demos}: {len(pool)} demos with responses, need at least k+1={args.k + 1}"
        )
    demos = select_demos(pool, targets, args.k) if targets else []
    contexts = retrieve(targets, args) if args.knowledge and targets else [None] * len(targets)
    prompts = [
        fewshot_prompt(
            t["instruction"],
            [(pool[i]["instruction"], clip(pool[i]["response"], args.demo_chars)) for i in idx],
            None if ctx is None else [clip(p["text"], args.passage_chars) for p in ctx],
        )
        for t, idx, ctx in zip(targets, demos, contexts, strict=True)
    ]
    lm = load_lm(args.model, cache=args.cache, threads=args.threads) if targets else None
    sampling = Sampling(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        n=args.n,
        stop=FEWSHOT_STOP,
        seed=args.seed,
    )
    outs = lm.generate(prompts, sampling) if targets else []
    records = [
        {
            "id": t["id"],
            "instruction": t["instruction"],
            "topic": t.get("topic"),
            "kind": t.get("kind"),
            "fact_based": t.get("fact_based"),
            "responses": responses,
            "demos": [pool[i]["id"] for i in idx],
            **({} if ctx is None else {"context": [p["id"] for p in ctx]}),
        }
        for t, idx, ctx, responses in zip(targets, demos, contexts, outs, strict=True)
    ]
    empty = sum(1 for r in records for x in r["responses"] if not x.strip())
    write_jsonl(args.out, records)
    if lm is not None:
        log.info(
            "%d responses (%d empty); %.1f generated tokens/s",
            len(records) * args.n,
            empty,
            lm.stats.tokens_per_second(),
        )


if __name__ == "__main__":
    run(main)
