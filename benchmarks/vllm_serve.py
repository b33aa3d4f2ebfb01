"""vLLM per job vs one long-lived `vllm serve`: what a workflow job pays to use vLLM.

Each Snakemake job that uses `backend: vllm` starts its own engine (import, weights, KV cache).
The alternative is one `vllm serve` per model, reached through the `openai` backend. This script
measures both, side by side in one run, on the same job: a fresh Python process (as a workflow
job is) that generates greedy bios for --prompts people and scores --prompts True/False
verification prompts. Printed per job: process wall time, and the time of the two calls alone.
The server's own start-up is printed once (it is paid once per model, not per job).

Run with the vLLM environment's python:

    .venv-vllm/bin/python benchmarks/vllm_serve.py --model results/models/base/smollm2 [--jobs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

from flame.cli import run  # noqa: E402

JOB = r"""
import json, sys, time
t0 = time.time()
from flame.data import load_wiki_summaries
from flame.lm import Prompt, Sampling, load_lm
spec, n = json.loads(sys.argv[1]), int(sys.argv[2])
people = sorted(s["title"] for s in load_wiki_summaries() if s.get("topic") == "People")[:n]
lm = load_lm(spec, threads=int(sys.argv[3]))
t1 = time.time()
texts = lm.generate([Prompt.chat(f"Tell me a bio of {p}.") for p in people],
                    Sampling(max_new_tokens=32))
verify = [Prompt(text=f"Answer the question about {p}.\n\nInput: {p} was a person. "
                     "True or False?\nOutput:") for p in people]
scores = lm.choose(verify, ["True", "False"])
t2 = time.time()
print(json.dumps({"setup_s": t1 - t0, "calls_s": t2 - t1, "texts": sum(map(len, texts)),
                  "scored": sum(s is not None for s in scores)}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job(spec: dict, n: int, threads: int) -> dict:
    t0 = time.time()
    res = subprocess.run(
        [sys.executable, "-c", JOB, json.dumps(spec), str(n), str(threads)],
        capture_output=True,
        text=True,
    )
    if res.returncode:
        raise RuntimeError(f"job failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return {"wall_s": time.time() - t0, **out}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="results/models/base/smollm2")
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args(argv)
    print_machine()
    model = str(Path(args.model).resolve())
    in_process = {
        "source": model,
        "backend": "vllm",
        "dtype": args.dtype,
        "enforce_eager": True,
        "kv_cache_gib": 1,
    }
    port = free_port()
    served = {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": model}
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{args.threads - 1}",
    }
    t0 = time.time()
    server = subprocess.Popen(
        # the API server module: `vllm serve` reads the "vllm" distribution's version, and
        # vllm-cpu's distribution is named "vllm-cpu"
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
        + ["--port", str(port), "--dtype", args.dtype, "--enforce-eager"]
        + ["--max-model-len", "2048", "--max-logprobs", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError("vllm serve exited before it was ready") from None
                if time.time() - t0 > 600:
                    raise RuntimeError("vllm serve not ready after 600 s") from None
                time.sleep(1)
        print(f"vllm serve start-up (once per model): {time.time() - t0:.1f} s")
        print(f"{args.jobs} jobs each: {args.prompts} greedy bios + {args.prompts} True/False")
        head = f"{'engine in the job: wall / calls s':>36} {'vllm serve: wall / calls s':>30}"
        print(f"{'job':>4} {head}")
        totals = [0.0, 0.0]
        for i in range(args.jobs):
            a = job(in_process, args.prompts, args.threads)
            b = job(served, args.prompts, args.threads)
            totals[0] += a["wall_s"]
            totals[1] += b["wall_s"]
            print(
                f"{i + 1:>4} {a['wall_s']:27.1f} / {a['calls_s']:5.1f}"
                f" {b['wall_s']:21.1f} / {b['calls_s']:5.1f}"
            )
        print(f"total {totals[0]:26.1f} {totals[1]:29.1f}")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    run(main)
