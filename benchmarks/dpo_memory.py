"""Peak memory per process of full-parameter DPO: one process, and 2 processes under DDP, ZeRO-2
and ZeRO-3, with the reference model kept (TRL shards it like the policy under ZeRO-3) or
replaced by precomputed reference log-probs (recipe key precompute_ref_log_probs).

Runs flame.train_dpo on the embedded SmolLM2-135M (converted once into the scratch folder), the
paper recipe's schedule, a few steps, on this machine's CPU (gloo). Prints one row per set-up:
peak RSS of each process (from train_summary.json), wall time and examples/s.

    .venv/bin/python benchmarks/dpo_memory.py [--steps 3] [--only zero3,zero3_pre] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flame.cli import run

ROOT = Path(__file__).resolve().parents[1]
ACCEL = ROOT / "workflow/accelerate"
SETUPS = {  # name -> (accelerate config or None, precompute reference log-probs)
    "one": (None, False),
    "one_pre": (None, True),
    "ddp": ("multi_gpu.yaml", False),
    "zero2": ("deepspeed_zero2.yaml", False),
    "zero3": ("deepspeed_zero3.yaml", False),
    "zero3_pre": ("deepspeed_zero3.yaml", True),
}


def pairs(path: Path, n: int = 16) -> Path:
    from flame.data import load_wiki_summaries

    people = [s for s in load_wiki_summaries() if s.get("topic") == "People"][:n]
    with path.open("w") as fh:
        for i, s in enumerate(people):
            words = s["extract"].split()
            pair = {
                "id": f"p{i}",
                "prompt": f"Tell me a bio of {s['title']}.",
                "chosen": " ".join(words[:60]),
                "rejected": " ".join(words[60:90]) or "I don't know.",
                "kind": "fact",
            }
            fh.write(json.dumps(pair) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", help="comma-separated set-ups: " + ", ".join(SETUPS))
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args(argv)
    wd = args.workdir or Path(tempfile.mkdtemp(prefix="flame-dpo-mem-"))
    wd.mkdir(parents=True, exist_ok=True)
    model = wd / "smollm2"
    if not (model / "flame_fingerprint.json").exists():
        from flame.models import prepare

        prepare("embedded:smollm2", model)
    data = pairs(wd / "pairs.jsonl")
    chosen = args.only.split(",") if args.only else list(SETUPS)
    print(f"{'set-up':<10} {'procs':>5} {'peak RSS MB per process':>26} {'wall s':>7} {'ex/s':>6}")
    for name in chosen:
        config, pre = SETUPS[name]
        launch = [sys.executable, "-m", "flame.train_dpo"]
        if config:
            launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                      str(ACCEL / config), "--num_processes", "2", "--main_process_port", "0",
                      "-m", "flame.train_dpo"]  # fmt: skip
        out = wd / f"out_{name}"
        recipe = {
            "max_steps": args.steps,
            "global_batch_size": 4,
            "per_device_train_batch_size": 2,
            "max_length": 192,
            "logging_steps": 1,
            "precompute_ref_log_probs": str(pre).lower(),
        }
        cmd = [*launch, "--init", str(model), "--pairs", str(data), "--out", str(out)]
        cmd += ["--threads", "1" if config else "2"]
        for key, value in recipe.items():
            cmd += ["--set", f"{key}={value}"]
        t0 = time.time()
        with (wd / f"{name}.log").open("w") as log:
            res = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
        wall = time.time() - t0
        if res.returncode:
            print(f"{name:<10} failed: see {wd / f'{name}.log'}")
            continue
        s = json.loads((out / "train_summary.json").read_text())
        rss = " + ".join(f"{x:.0f}" for x in s["peak_rss_mb_per_process"])
        print(f"{name:<10} {s['world_size']:>5} {rss:>26} {wall:>7.1f} {s['examples_per_s']:>6.2f}")


if __name__ == "__main__":
    run(main)
