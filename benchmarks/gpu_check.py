"""`make gpu-check`: on a GPU machine, vLLM generation speed and a few DeepSpeed (ZeRO-3)
training steps of the embedded SmolLM2-135M on every GPU, with tokens/s per GPU and MFU.

    .venv-vllm/bin/python benchmarks/gpu_check.py vllm [--prompts 256] [--max-new-tokens 128]
    .venv/bin/python benchmarks/gpu_check.py train [--steps 3] [--max-length 512]
    .venv/bin/python benchmarks/gpu_check.py qlora [--steps 3]   (needs pip install -e '.[qlora]')

Without a GPU it says so in one line and exits 0. Training is run the way the README runs it
(`accelerate launch --config_file workflow/accelerate/deepspeed_zero3.yaml -m flame.train_sft`);
tokens/s counts the examples' real (unpadded) tokens; MFU = 6 x parameters x tokens/s per GPU
over the GPU's dense bf16 peak. `qlora` trains F-DPO with `--quantize nf4` on one GPU and checks
that train_summary.json records nf4 (what really loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flame.cli import run

ROOT = Path(__file__).resolve().parents[1]
# dense bf16 peak FLOP/s by GPU name (no sparsity)
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def gpus() -> list[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    return [n.strip() for n in out.stdout.splitlines() if n.strip()] if out.returncode == 0 else []


def peak(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def model_dir(tmp: Path) -> Path:
    from flame.models import prepare

    done = ROOT / "results/models/base/smollm2"
    return done if done.exists() else prepare("embedded:smollm2", tmp / "smollm2")


def check_vllm(args, names: list[str], tmp: Path) -> None:
    from flame.data import load_wiki_summaries
    from flame.lm import Prompt, Sampling, load_lm

    titles = [s["title"] for s in load_wiki_summaries()][: args.prompts]
    prompts = [Prompt.chat(f"Tell me a bio of {t}.") for t in titles]
    t0 = time.time()
    lm = load_lm({"source": str(model_dir(tmp)), "backend": "vllm", "dtype": "bfloat16"})
    load = time.time() - t0
    lm.generate(prompts[:4], Sampling(max_new_tokens=8))
    for label, s in (
        ("greedy", Sampling(max_new_tokens=args.max_new_tokens)),
        ("sampled n=4", Sampling(max_new_tokens=args.max_new_tokens, temperature=0.7, n=4)),
    ):
        before, t0 = lm.stats.generated_tokens, time.time()
        lm.generate(prompts, s)
        rate = (lm.stats.generated_tokens - before) / (time.time() - t0)
        print(f"vLLM on {names[0]} (1 GPU, bf16, start-up {load:.0f} s): {label} {rate:,.0f} tok/s")


def check_train(args, names: list[str], tmp: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flame.data import load_wiki_summaries

    model = model_dir(tmp)
    data = tmp / "sft.jsonl"
    rows = [
        {"id": s["title"], "instruction": f"Tell me a bio of {s['title']}.",
         "response": s["extract"]}
        for s in load_wiki_summaries()[:2000]
    ]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    n = len(names)
    batch = args.per_device_batch * n
    cmd = [
        str(Path(sys.executable).parent / "accelerate"), "launch",
        "--config_file", str(ROOT / "workflow/accelerate/deepspeed_zero3.yaml"),
        "--num_processes", str(n), "-m", "flame.train_sft",
        "--init", str(model), "--data", str(data), "--out", str(tmp / "sft"),
        "--set", f"max_steps={args.steps}", "--set", f"global_batch_size={batch}",
        "--set", f"per_device_train_batch_size={args.per_device_batch}",
        "--set", f"max_length={args.max_length}", "--set", "bf16=true",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT)
    summary = json.loads((tmp / "sft/train_summary.json").read_text())
    tok = AutoTokenizer.from_pretrained(model)
    lengths = [
        min(args.max_length, len(tok.apply_chat_template(
            [{"role": "user", "content": r["instruction"]},
             {"role": "assistant", "content": r["response"]}], tokenize=True)))
        for r in rows[: batch * args.steps]
    ]  # fmt: skip
    tokens_per_example = sum(lengths) / len(lengths)
    per_gpu = summary["examples_per_s"] * tokens_per_example / n
    params = sum(x.numel() for x in AutoModelForCausalLM.from_pretrained(model).parameters())
    p = peak(names[0])
    mfu = f"{6 * params * per_gpu / p:.1%}" if p else f"unknown ({names[0]}'s peak not listed)"
    print(
        f"DeepSpeed ZeRO-3 SFT on {n} x {names[0]}: {args.steps} steps of {batch} examples "
        f"(~{tokens_per_example:.0f} tokens each) in {summary['train_wall_s']} s: "
        f"{per_gpu:,.0f} tokens/s per GPU, MFU {mfu}"
    )


def check_qlora(args, names: list[str], tmp: Path) -> None:
    pairs = tmp / "pairs.jsonl"
    rows = [
        {"id": f"q{i}", "prompt": f"Who wrote book {i}?", "chosen": f"Author {i} wrote it.",
         "rejected": f"It was written by nobody {i}.", "delta_h": i % 2}
        for i in range(8 * args.steps)
    ]  # fmt: skip
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp / "fdpo"
    cmd = [
        sys.executable, "-m", "flame.train_fdpo", "--lam", "2", "--quantize", "nf4",
        "--init", str(model_dir(tmp)), "--pairs", str(pairs), "--out", str(out),
        "--set", f"max_steps={args.steps}", "--set", "global_batch_size=8",
        "--set", "per_device_train_batch_size=8", "--set", "bf16=true",
    ]  # fmt: skip
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": "0"})
    summary = json.loads((out / "train_summary.json").read_text())
    ran = summary["fdpo"]["quantize"]
    print(
        f"QLoRA NF4 F-DPO on 1 x {names[0]}: {args.steps} steps of 8 pairs in "
        f"{time.time() - t0:.0f} s (train {summary.get('train_wall_s')} s); summary records "
        f"quantize {ran}"
    )
    if ran != "nf4":
        raise SystemExit(f"error: asked for nf4, the summary records {ran}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("part", choices=["vllm", "train", "qlora"])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--per-device-batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args(argv)
    names = gpus()
    if not names:
        print("gpu-check: no NVIDIA GPU here (nvidia-smi finds none); nothing to check")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        check = {"vllm": check_vllm, "train": check_train, "qlora": check_qlora}[args.part]
        check(args, names, Path(tmp))


if __name__ == "__main__":
    run(main)
