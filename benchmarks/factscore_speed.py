"""FActScore speed on the embedded default: verified facts per second, batched (with and without
shared-prefix KV reuse) vs one at a time, and a cold run of the whole scorer vs a cached re-run.

The workload is real: responses made of the first sentences of real Wikipedia summaries of
people, decomposed into atomic facts by the embedded model (the cold run), each fact checked
against the passages open retrieval gives for its instruction, exactly as RM_fact does. The
retrieval and decomposition settings default to the embedded config's rm_fact (k=2, passages
cut to 300 chars, 3 fixed demos), batches of 32.

    .venv/bin/python benchmarks/factscore_speed.py [--model results/models/base/smollm2]
        [--knowledge results/knowledge/index] [--n 12] [--per-prompt 1] [--k 2]
        [--passage-chars 300]
        [--spec '{"quantize": "int8"}'] [--backend vllm]

With --backend vllm (run it with the vLLM environment's python, .venv-vllm/bin/python), one
engine serves every run: vLLM's prefix caching takes the place of the transformers backend's
shared-prefix batching.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import knowledge_base, people_responses, print_machine  # noqa: E402

from flame.cli import run  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="results/models/base/smollm2")
    ap.add_argument("--knowledge", type=Path, default=None)
    ap.add_argument("--n", type=int, default=12, help="responses (3 sentences each)")
    ap.add_argument(
        "--per-prompt", type=int, default=1,
        help="responses per prompt (RM_fact's m: with open retrieval they share passages)",
    )  # fmt: skip
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--passage-chars", type=int, default=300)
    ap.add_argument("--retrieval", default="open", choices=["open", "topic"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--spec", default="{}", help="extra model spec keys (JSON), e.g. quantize")
    ap.add_argument("--backend", default="transformers", choices=["transformers", "vllm"])
    args = ap.parse_args(argv)

    from flame.cache import Cache
    from flame.factscore import FactScorer
    from flame.factscore.verify import build_verify_prompt
    from flame.lm import CachedLM, Prompt, load_lm

    print_machine()

    extra = json.loads(args.spec)
    kb = knowledge_base(args.knowledge)
    items = [
        {k: v for k, v in it.items() if k != "sentences"}
        for it in people_responses(kb, args.n, per_person=args.per_prompt)
    ]
    print(
        f"{len(items)} responses ({args.per_prompt} per prompt), {args.retrieval} retrieval, "
        f"k={args.k}, passages cut to {args.passage_chars} chars, threads {args.threads}, "
        f"backend {args.backend}, spec {extra}"
    )
    vllm = None
    if args.backend == "vllm":  # one engine for every run (each start costs 16-40 s)
        t0 = time.time()
        vllm = load_lm({"source": args.model, "backend": "vllm", **extra}, threads=args.threads)
        print(f"  vLLM engine ({vllm.dtype}) started in {time.time() - t0:.1f} s")

    # 1. the whole scorer: cold (decomposition + retrieval + verification) vs cached re-run
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for run in ("cold", "cached"):
            if vllm is not None:
                lm = CachedLM(vllm, Cache(Path(tmp) / "lm.sqlite", namespace="lm"))
                lm.inner.stats.calls = 0
            else:
                spec = {"source": args.model, "batch_size": args.batch_size, **extra}
                lm = load_lm(spec, cache=Path(tmp) / "lm.sqlite", threads=args.threads)
            scorer = FactScorer(
                lm, lm, kb, unit="atomic", retrieval=args.retrieval, k=args.k, n_fixed=3,
                n_bm25=0, passage_chars=args.passage_chars, max_fact_tokens=32,
                cache=Path(tmp) / "retrieval.sqlite",
            )  # fmt: skip
            t0 = time.time()
            results = scorer.score(items)
            times.append(time.time() - t0)
            n_facts = sum(r["n_facts"] for r in results)
            print(
                f"  whole scorer, {run:6s}: {times[-1]:7.2f} s for {n_facts} atomic facts "
                f"({lm.inner.stats.calls} model calls)"
            )
        print(f"  cached re-run is {times[0] / times[1]:.0f}x faster than cold")

    # 2. verification alone, on the atomic facts of the cold run
    by_id = {p["id"]: p for p in kb.passages}
    topics = {it["id"]: it["topic"] for it in items}
    prompts = [
        Prompt(
            text=build_verify_prompt(
                topics[r["id"]], f["fact"], [by_id[i] for i in f["passages"]], args.passage_chars
            )
        )
        for r in results
        for f in r["facts"]
    ]
    print(f"  verification of {len(prompts)} atomic facts:")
    rows = [
        ("batched, shared prefix", args.batch_size, 48),
        ("batched, no prefix sharing", args.batch_size, 10**9),
        ("one at a time", 1, 10**9),
    ]
    if vllm is not None:
        rows = [("vLLM, prefix caching", None, None)]
    for label, batch, share in rows:
        if vllm is not None:
            lm = vllm
        else:
            spec = {"source": args.model, "batch_size": batch, "min_shared_prefix": share, **extra}
            lm = load_lm(spec, threads=args.threads)
        todo = prompts if batch != 1 else prompts[: max(8, len(prompts) // 4)]
        lm.choose(todo[:2], ["True", "False"])  # warm-up
        if vllm is not None:  # the cold run verified these very prompts: forget their KV blocks
            vllm.llm.reset_prefix_cache()
        t0 = time.time()
        lm.choose(todo, ["True", "False"])
        dt = time.time() - t0
        print(f"    {label:28s} {len(todo) / dt:6.2f} facts/s ({len(todo)} in {dt:.1f} s)")


if __name__ == "__main__":
    run(main)
