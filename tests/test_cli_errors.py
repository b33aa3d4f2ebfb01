"""The exit-status-2 contract for wrong-typed records: valid JSON with a field of the wrong type or
shape stops a step with one line `error: FILE:LINE: field 'F' must be ...` and status 2, in every
step that reads records and in the benchmarks; a bug (not bad input) keeps its traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flame.io import RecordError, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = {"id": "a", "instruction": "Who was Ada?", "responses": ["x", "y"], "fact_based": True}
SCORES = {"id": "a", "scores": [0.5, 1]}
PAIR = {"id": "p", "prompt": "Who was Ada?", "chosen": "x", "rejected": "y", "kind": "fact"}


def lines(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def python(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "FLAME_DEBUG"}
    env["PYTHONPATH"] = str(ROOT / "src")
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120
    )


def assert_bad_input(res: subprocess.CompletedProcess, message: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.splitlines()[-1].startswith(f"error: {message}"), res.stderr


def test_read_jsonl_checks_shapes(tmp_path):
    schema = {"prompt": str, "rm_fact": float, "scores": list[list[float]]}
    good = {"prompt": "p", "rm_fact": 1, "scores": [[0.5, 1], []]}  # an int is a number
    path = lines(tmp_path / "r.jsonl", good)
    assert read_jsonl(path, schema) == [good]
    cases = [
        ({"rm_fact": "x"}, "field 'rm_fact' must be a number, got \"x\""),
        ({"rm_fact": True}, "field 'rm_fact' must be a number, got true"),  # not a bool
        ({"scores": [0.5]}, "field 'scores' must be a list of lists of numbers, got [0.5]"),
        ({"prompt": ["p"]}, "field 'prompt' must be a string"),
    ]
    for change, message in cases:
        path = lines(tmp_path / "r.jsonl", good, {**good, **change})
        with pytest.raises(RecordError) as err:
            read_jsonl(path, schema)
        assert str(err.value).startswith(f"{path}:2: {message}")
    path = lines(tmp_path / "r.jsonl", {**good, "topic": 3})
    with pytest.raises(RecordError, match=r"r.jsonl:1: field 'topic' must be a string or null"):
        read_jsonl(path, schema, optional={"topic": str | None})
    assert read_jsonl(path, schema, optional={"kind": str})  # an absent optional field is fine


def test_steps_reject_wrong_typed_records(tmp_path):
    samples = lines(tmp_path / "samples.jsonl", SAMPLE)
    rm_if = lines(tmp_path / "rm_if.jsonl", SCORES)
    out = ["--out-dir", str(tmp_path / "o"), "--counts", str(tmp_path / "c.json")]
    bad_scores = lines(tmp_path / "rm_fact.jsonl", SCORES, {"id": "b", "scores": "x"})
    bad_responses = lines(tmp_path / "bad_samples.jsonl", {**SAMPLE, "responses": [["x"]]})
    bad_seed = lines(tmp_path / "seed.jsonl", {"id": "a", "instruction": "i", "response": "r",
                                               "fact_based": "yes"})  # fmt: skip
    bad_pair = lines(tmp_path / "pairs.jsonl", PAIR, {**PAIR, "prompt": 3})
    bad_prompt = lines(tmp_path / "prompts.jsonl", {"id": "a", "instruction": {"t": "x"}})
    bad_gen = lines(tmp_path / "gens.jsonl", {"id": 1, "prompt": 7, "response": "r"})
    bad_delta = lines(tmp_path / "fpairs.jsonl", {**PAIR, "delta_h": "1"})
    cases = [
        (["-m", "flame.pairs", "--samples", samples, "--rm-if", rm_if, "--rm-fact", bad_scores,
          *out], f"{bad_scores}:2: field 'scores' must be a list of numbers or nulls"),
        (["-m", "flame.pairs", "--samples", bad_responses, "--rm-if", rm_if, "--rm-fact", rm_if,
          *out], f"{bad_responses}:1: field 'responses' must be a list of strings"),
        (["-m", "flame.rm_if", "--judge", "x", "--samples", bad_responses, "--out",
          tmp_path / "o.jsonl"], f"{bad_responses}:1: field 'responses' must be a list of"),
        (["-m", "flame.sft_data", "--seed", bad_seed, "--fewshot", samples, "--out-dir",
          tmp_path / "o"], f"{bad_seed}:1: field 'fact_based' must be true or false"),
        (["-m", "flame.fdpo", "--pairs", bad_pair, "--out", tmp_path / "o.jsonl", "--counts",
          tmp_path / "c.json"], f"{bad_pair}:2: field 'prompt' must be a string, got 3"),
        (["-m", "flame.generate", "--model", "x", "--inputs", bad_prompt, "--outs",
          tmp_path / "o.jsonl"], f"{bad_prompt}:1: field 'instruction' must be a string"),
        (["-m", "flame.factscore", "--input", bad_gen, "--verifier", "x", "--knowledge", "kb",
          "--out", tmp_path / "o", "--summary", tmp_path / "s"],
         f"{bad_gen}:1: prompt field 'prompt' must be a string"),
        (["-m", "flame.train_fdpo", "--lam", "1", "--init", "x", "--out", tmp_path / "m",
          "--pairs", bad_delta], f"{bad_delta}:1: field 'delta_h' must be an integer"),
    ]  # fmt: skip
    for args, message in cases:
        assert_bad_input(python(*map(str, args)), message)


def test_benchmark_bad_input_exits_2(tmp_path):
    bad = lines(tmp_path / "judge_pairs.jsonl", {"instruction": "i", "better": 1, "worse": "w"})
    res = python(str(ROOT / "benchmarks/judge_quality.py"), "--pairs", str(bad), "--judge", "x")
    assert_bad_input(res, f"{bad}:1: field 'better' must be a string, got 1")


def test_a_bug_in_hub_loading_is_not_bad_input(monkeypatch):
    import datasets
    from datasets.exceptions import DatasetGenerationError

    from flame.data.hub import load_table

    def load(error):
        def load_dataset(*args, **kwargs):
            raise error

        monkeypatch.setattr(datasets, "load_dataset", load_dataset)

    for error in (ConnectionError("offline"), ValueError('Unknown split "eval"'),
                  DatasetGenerationError("cannot parse")):  # fmt: skip
        load(error)
        with pytest.raises(OSError, match="give a local file instead"):
            load_table("someone/some_set")
    load(AttributeError("'NoneType' object has no attribute 'split'"))  # a bug: kept as it is
    with pytest.raises(AttributeError, match="no attribute 'split'"):
        load_table("someone/some_set")
    load(KeyError("text"))
    with pytest.raises(KeyError):
        load_table("hf://datasets/someone/some_set/data.jsonl")
