"""Shrunk runs of the shipped configs in a workflow copy: workflow/configs/shrink.yaml layered last,
then an `engines.yaml` of the test's own that gives every model the test's source (the tiny random
model, or the embedded SmolLM2) and, where asked, another backend. Nothing else changes, so each
config's own flag values reach the steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHRINK = "workflow/configs/shrink.yaml"


def build_shrink_data(out: Path) -> Path:
    """`make shrink-data` into `out` (the DB and the re-ranker shrink.yaml names)."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "workflow/scripts/shrink_data.py"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def link_inputs(wd: Path, shrink_data: Path) -> None:
    """The relative paths shrink.yaml names (tests/fixtures, src/flame/resources, data/shrink)."""
    for name in ("tests", "src"):
        if not (wd / name).exists():
            (wd / name).symlink_to(ROOT / name)
    (wd / "data").mkdir(exist_ok=True)
    if not (wd / "data/shrink").exists():
        (wd / "data/shrink").symlink_to(shrink_data)


def merged_models(wd: Path, overlays: list[str]) -> dict:
    models: dict = {}
    for f in ["config.yaml", *overlays, SHRINK]:
        for name, spec in (yaml.safe_load((wd / f).read_text()).get("models") or {}).items():
            models[name] = {**models.get(name, {}), **spec}
    return models


def configfiles(
    wd: Path,
    overlays: list[str],
    model: Path | str,
    backend: str = "transformers",
    judge_url: str | None = None,
    keep: tuple[str, ...] = (),
) -> list[str]:
    """--configfile arguments: config.yaml, the overlays, shrink.yaml and engines.yaml, which sets
    every model's source to `model` (and its backend to `backend`), but for models behind an
    OpenAI API (pointed at `judge_url` when given) and the models named in `keep` (e.g. the
    re-ranker, whose shrunk source is a cross-encoder)."""
    engines: dict = {"models": {}, "trained_models": {"backend": backend}}
    for name, spec in merged_models(wd, overlays).items():
        if name in keep:
            continue
        if spec.get("backend") == "openai":
            if judge_url:
                engines["models"][name] = {"base_url": judge_url}
            continue
        engines["models"][name] = {"source": str(model), "backend": backend}
    (wd / "engines.yaml").write_text(yaml.safe_dump(engines))
    return ["--configfile", "config.yaml", *overlays, SHRINK, "engines.yaml"]
