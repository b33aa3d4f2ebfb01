"""Generation speed of the LM backends: tokens/s, greedy and sampled (n samples per prompt), for
each backend and dtype, on chat prompts asking for biographies of real people. Greedy texts are
compared with the first configuration's (identical texts = the backends agree).

The transformers backend runs everywhere; vllm needs the vLLM environment, so run the script
with its python to measure both in one run:

    .venv-vllm/bin/python benchmarks/generation_speed.py [--model results/models/base/smollm2]
        [--backends transformers vllm] [--dtypes float32 bfloat16] [--prompts 32]
        [--max-new-tokens 64] [--n 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

from flame.cli import run  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="results/models/base/smollm2")
    ap.add_argument("--backends", nargs="+", default=["transformers", "vllm"])
    ap.add_argument("--dtypes", nargs="+", default=["auto"])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt in the sampled run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32, help="transformers only")
    args = ap.parse_args(argv)

    from flame.data import load_wiki_summaries
    from flame.lm import Prompt, Sampling, load_lm

    print_machine()
    people = sorted(s["title"] for s in load_wiki_summaries() if s.get("topic") == "People")
    people = people[:: max(1, len(people) // args.prompts)][: args.prompts]
    prompts = [Prompt.chat(f"Tell me a bio of {p}.") for p in people]
    greedy = Sampling(max_new_tokens=args.max_new_tokens)
    sampled = Sampling(
        max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.9, n=args.n, seed=0
    )
    print(
        f"{len(prompts)} chat prompts, {args.max_new_tokens} new tokens at most, "
        f"sampled: n={args.n} of {len(prompts) // 2} prompts, threads {args.threads}"
    )
    reference = None
    for backend in args.backends:
        for dtype in args.dtypes:
            spec = {"source": args.model, "backend": backend, "dtype": dtype}
            if backend == "transformers":
                spec["batch_size"] = args.batch_size
            t0 = time.time()
            lm = load_lm(spec, threads=args.threads)
            load = time.time() - t0
            lm.generate(prompts[:2], Sampling(max_new_tokens=4))  # warm-up
            row = f"  {backend:12s} {lm.dtype:8s} load {load:5.1f} s"
            for label, sampling, todo in (
                ("greedy", greedy, prompts),
                ("sampled", sampled, prompts[: len(prompts) // 2]),
            ):
                before = lm.stats.generated_tokens
                t0 = time.time()
                out = lm.generate(todo, sampling)
                dt = time.time() - t0
                row += f" | {label} {(lm.stats.generated_tokens - before) / dt:6.1f} tok/s"
                if label == "greedy":
                    texts = [o[0] for o in out]
                    if reference is None:
                        reference = (f"{backend} {lm.dtype}", texts)
                    else:
                        same = sum(a == b for a, b in zip(texts, reference[1], strict=True))
                        row += f" ({same}/{len(texts)} greedy texts = {reference[0]}'s)"
            print(row, flush=True)
            del lm


if __name__ == "__main__":
    run(main)
