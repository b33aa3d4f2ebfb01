"""FActScore speed on the embedded default: verified facts per second batched (with and without
shared-prefix KV reuse) vs one at a time, and a cold run vs a cached re-run of the whole scorer.

    .venv/bin/python benchmarks/factscore_speed.py [--model results/models/base/smollm2]
        [--knowledge results/knowledge/index] [--n 12] [--k 3] [--passage-chars 400]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import knowledge_base, people_responses  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="results/models/base/smollm2")
    ap.add_argument("--knowledge", type=Path, default=None)
    ap.add_argument("--n", type=int, default=12, help="responses (3 sentences each)")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--passage-chars", type=int, default=400)
    ap.add_argument("--retrieval", default="open", choices=["open", "topic"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    from flame.factscore import FactScorer
    from flame.factscore.verify import build_verify_prompt
    from flame.lm import Prompt, load_lm

    kb = knowledge_base(args.knowledge)
    items = people_responses(kb, args.n)
    # verification workload: each sentence is a fact, passages retrieved as the scorer would
    prompts = []
    for it in items:
        hits = (
            kb.search(it["prompt"], args.k)
            if args.retrieval == "open"
            else kb.search_topic(it["topic"], [it["topic"]], args.k)[0]
        )
        prompts += [
            Prompt(text=build_verify_prompt(it["topic"], s, hits, args.passage_chars))
            for s in it["sentences"]
        ]
    print(
        f"{len(prompts)} facts, {args.retrieval} retrieval, k={args.k}, "
        f"passages cut to {args.passage_chars} chars, threads {args.threads}"
    )
    rows = [
        ("batched, shared prefix", args.batch_size, 48),
        ("batched, no prefix sharing", args.batch_size, 10**9),
        ("one at a time", 1, 10**9),
    ]
    for label, batch, share in rows:
        lm = load_lm(
            {"source": args.model, "batch_size": batch, "min_shared_prefix": share},
            threads=args.threads,
        )
        todo = prompts if batch > 1 else prompts[: max(8, len(prompts) // 4)]
        t0 = time.time()
        lm.choose(todo, ["True", "False"])
        dt = time.time() - t0
        print(
            f"  verification {label:28s} {len(todo) / dt:6.2f} facts/s ({len(todo)} in {dt:.1f} s)"
        )

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache.sqlite"
        times = []
        for run in ("cold", "cached"):
            lm = load_lm(
                {"source": args.model, "batch_size": args.batch_size},
                cache=cache,
                threads=args.threads,
            )
            scorer = FactScorer(
                lm,
                lm,
                kb,
                unit="atomic",
                retrieval=args.retrieval,
                k=args.k,
                n_fixed=2,
                n_bm25=1,
                passage_chars=args.passage_chars,
                max_fact_tokens=40,
            )
            t0 = time.time()
            results = scorer.score(
                [{k: v for k, v in it.items() if k != "sentences"} for it in items]
            )
            times.append(time.time() - t0)
            n_facts = sum(r["n_facts"] for r in results)
            print(
                f"  whole scorer, {run:6s}: {times[-1]:7.2f} s for {n_facts} atomic facts "
                f"({lm.stats.calls} model calls)"
            )
        print(f"  cached re-run is {times[0] / times[1]:.0f}x faster than cold")


if __name__ == "__main__":
    main()
