"""Benchmark the whole DAG on the embedded default from an empty results/ folder.

Copies the workflow to a scratch folder, runs `snakemake --cores N` (model conversion included,
installation excluded), then runs it again with nothing changed. Prints wall times, the time and
peak RSS of each rule (from Snakemake's benchmark files), generation speed of every generation
stage (from the step logs) and the peak RSS over all jobs.

    .venv/bin/python benchmarks/dag.py [--cores 2] [--workdir /tmp/flame-bench] [--keep]
        [--configfile OVERLAY] [--compare workflow/configs/vllm.yaml]

With --compare, the DAG runs twice from an empty results/ folder, one run right after the other
(first without, then with the overlay), and the per-rule times are printed side by side.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from flame import cli

ROOT = Path(__file__).resolve().parents[1]


def run(wd: Path, cores: int, extra: list[str]) -> float:
    t0 = time.time()
    # the scratch copy has no .venv-vllm: rules served by vLLM use this checkout's
    env = {"FLAME_VLLM_PYTHON": str(ROOT / ".venv-vllm/bin/python"), **os.environ}
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", str(cores), *extra],
        cwd=wd,
        capture_output=True,
        text=True,
        env=env,
    )
    if res.returncode:
        raise RuntimeError(f"snakemake failed:\n{res.stderr[-3000:]}")
    return time.time() - t0


def bench(wd: Path, cores: int, configfile: str | None) -> dict:
    """One cold run and one no-op run of the whole DAG in ``wd`` (emptied first)."""
    extra = ["--configfile", "config.yaml", configfile] if configfile else []
    wd.mkdir(parents=True, exist_ok=True)
    for name in ["Snakefile", "config.yaml"]:
        shutil.copy(ROOT / name, wd / name)
    for folder in ["workflow", "envs", "profiles"]:
        shutil.rmtree(wd / folder, ignore_errors=True)
        shutil.copytree(ROOT / folder, wd / folder)
    shutil.rmtree(wd / "results", ignore_errors=True)
    load0 = os.getloadavg()[0]
    cold = run(wd, cores, extra)
    load = os.getloadavg()[1]  # 5-minute load average at the end of the cold run
    noop = run(wd, cores, extra)

    per_rule: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for tsv in sorted((wd / "results" / "benchmarks").rglob("*.tsv")):
        rule = tsv.parent.name if tsv.parent.name != "benchmarks" else tsv.stem
        with tsv.open() as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        entry = per_rule[rule]
        entry[0] += float(row["s"])
        entry[1] = max(entry[1], float(row["max_rss"]) if row["max_rss"] != "-" else 0.0)
        entry[2] += 1
    speeds = []
    pattern = re.compile(r"([\d.]+) generated tokens/s(?: \((\d+) tokens\))?")
    for log in sorted((wd / "results" / "logs").rglob("*.log")):
        for m in pattern.finditer(log.read_text(errors="replace")):
            speeds.append(
                (str(log.relative_to(wd / "results" / "logs")), float(m.group(1)), m.group(2))
            )
    return {
        "cold": cold,
        "noop": noop,
        "load": (load0, load),
        "per_rule": dict(per_rule),
        "speeds": speeds,
    }


def report(name: str, res: dict, cores: int) -> None:
    cold, per_rule = res["cold"], res["per_rule"]
    print(f"\n== {name}")
    print(f"whole DAG, cold (empty results/, {cores} cores): {cold:.0f} s ({cold / 60:.1f} min)")
    print(f"second run, nothing changed: {res['noop']:.1f} s")
    start, end = res["load"]
    print(f"load average: {start:.2f} at the start, {end:.2f} (5 min) at the end")
    print(f"peak RSS of any job: {max(v[1] for v in per_rule.values()) / 1024:.2f} GB")
    print("\nper rule (jobs, total s, peak RSS MB):")
    for rule, (secs, rss, n) in sorted(per_rule.items(), key=lambda kv: -kv[1][0]):
        print(f"  {rule:20s} {n:3d} {secs:8.1f} {rss:8.0f}")
    print("\ngeneration speed (generated tokens/s while generating):")
    for log, tps, tokens in res["speeds"]:
        print(f"  {log:40s} {tps:7.1f}" + (f"  ({tokens} tokens)" if tokens else ""))


def compare(names: list[str], results: list[dict]) -> None:
    """Per-rule seconds of every run side by side."""
    rules = sorted({r for res in results for r in res["per_rule"]})
    print("\n== side by side: total seconds per rule (jobs)")
    print(f"  {'rule':20s} " + " ".join(f"{n[-24:]:>26s}" for n in names))
    for rule in sorted(rules, key=lambda r: -results[0]["per_rule"].get(r, [0])[0]):
        cells = []
        for res in results:
            secs, _, n = res["per_rule"].get(rule, (0.0, 0.0, 0))
            cells.append(f"{secs:20.1f} ({n:3d})")
        print(f"  {rule:20s} " + " ".join(cells))
    print(f"  {'whole DAG (wall)':20s} " + " ".join(f"{r['cold']:26.0f}" for r in results))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--configfile", help="a config overlay, e.g. workflow/configs/vllm.yaml")
    ap.add_argument(
        "--compare",
        metavar="OVERLAY",
        help="also run the DAG with this overlay, right after the first run, and compare",
    )
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from common import print_machine

    print_machine()
    wd = args.workdir or Path(tempfile.mkdtemp(prefix="flame-bench-"))
    configs = [args.configfile] + ([args.compare] if args.compare else [])
    names = [c or "config.yaml" for c in configs]
    results = []
    for config in configs:
        results.append(bench(wd, args.cores, config))
        report(names[len(results) - 1], results[-1], args.cores)
    if len(results) > 1:
        compare(names, results)
    print(f"\nworkdir: {wd}")
    if not args.keep and not args.workdir:
        shutil.rmtree(wd)


if __name__ == "__main__":
    cli.run(main)
