"""Config strings reach the steps intact: every job's real command line, from Snakemake's dry run
(`-n -p --forceall`), parsed by the step's own argparse parser.

Configs (the embedded default with its overlays, the paper config with F-DPO on the Slurm profile,
the vLLM config) get an overlay in which every string the rules forward is odd: empty where the
step allows it (rm_if.prefix, the paper's own value that once broke `--prefix`), nulls, spaces,
single and double quotes, a leading dash, and local files and folders whose paths have them
(real ones, in the test's folder). Each job's command is split as the shell would split it, each
`-m flame.X` part is handed to flame.X's main() with argparse patched to stop right after parsing
(no step does any work), and the parsed values are compared with the config's.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import yaml

from flame import training

ODD = 'a b it\'s "q"'  # spaces, a single and a double quote
REVISION = f"rev {ODD}"  # rides in every configured model's JSON spec
DENSE = f"dense model {ODD}"
RERANK_FACT = f"reranker fact {ODD}"
RERANK_EVAL = f"reranker eval {ODD}"
ERRORS = f"two or 'three' \"{ODD}\""
PREFIX = f"-Score {ODD}:"  # a leading dash too: `--prefix=-...` still reads as the value
MODULES = {"data": "flame.data.build"}  # `-m flame.data` runs flame.data.build's main
OPERATORS = {">", ">>", "2>&1", "&&", "||", ";", "|"}


class Parsed(Exception):
    def __init__(self, namespace, extras):
        super().__init__("parsed")
        self.namespace, self.extras = namespace, extras


def parse_step(step: str, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """(namespace, unrecognised args) of flame.<step>.main(argv), stopped right after its
    outermost parse; argparse's own errors fail the test with its message."""
    module = importlib.import_module(MODULES.get(step, f"flame.{step}"))
    original = argparse.ArgumentParser.parse_known_args
    depth = 0

    def capture(self, args=None, namespace=None):
        nonlocal depth
        depth += 1
        try:
            result = original(self, args, namespace)
        finally:
            depth -= 1
        if depth == 0:  # subcommands parse inside the outer call
            raise Parsed(*result)
        return result

    err = io.StringIO()
    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", capture):
        try:
            with contextlib.redirect_stderr(err):
                module.main(argv)
        except Parsed as done:
            return done.namespace, done.extras
        except SystemExit:
            pytest.fail(f"flame.{step} rejects {shlex.join(argv)}:\n{err.getvalue()}")
    pytest.fail(f"flame.{step} did not parse its arguments")


def parse_job(rule: str, command: str) -> tuple[list[str], dict[str, argparse.Namespace]]:
    """(shell words, {step: namespace}) of one job: each `-m flame.X` part of its command."""
    words = shlex.split(command)
    cut = next((i for i, w in enumerate(words) if w in OPERATORS), len(words))
    words = words[:cut]
    starts = [
        i for i, w in enumerate(words[:-1]) if w == "-m" and words[i + 1].startswith("flame.")
    ]
    assert starts, f"{rule}: no flame step in {command}"
    parsed = {}
    for i, end in zip(starts, [*starts[1:], len(words)], strict=True):
        step, argv = words[i + 1].removeprefix("flame."), words[i + 2 : end]
        ns, extras = parse_step(step, argv)
        if step == "train_fdpo":  # its own options, then flame.train_dpo's, as its main does
            rest = [*extras, *(f"--set={s}" for s in ns.set), "--pairs", ns.pairs, "--out", ns.out]
            dpo, extras = parse_step("train_dpo", rest)
            ns = argparse.Namespace(**{**vars(dpo), **vars(ns)})
        assert not extras, f"{rule}: flame.{step} does not know {extras} ({command})"
        parsed[step] = ns
    return words, parsed


def planned_commands(dry_run: str) -> list[tuple[str, str]]:
    """(rule, shell command) of every job in a `snakemake -n -p` plan."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m or m[1] == "all":
            continue
        shell = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        assert shell, f"rule {m[1]}: no shell command in the plan"
        jobs.append((m[1], shell[1]))
    return jobs


def odd_file(wd: Path, name: str, folder: bool = False, text: str = "x\n") -> str:
    path = wd / f"odd {ODD}" / f"{name} {ODD}"
    path.parent.mkdir(exist_ok=True)
    if folder:
        path.mkdir()
    else:
        path.write_text(text)
    return str(path)


def fake_python(wd: Path) -> str:
    """An 'interpreter' at an odd path that answers the workflow's parse-time import check."""
    path = odd_file(wd, "python", text="#!/bin/sh\nexit 0\n")
    os.chmod(path, 0o755)
    return path


def dry_run(wd: Path, configs: list[str], overlay: dict, *extra: str) -> str:
    (wd / "odd.yaml").write_text(yaml.safe_dump(overlay))
    env = {k: v for k, v in os.environ.items() if k != "FLAME_VLLM_PYTHON"}
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--cores", "2",
         "--configfile", *configs, "odd.yaml", *extra],
        cwd=wd, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res.stdout


def specs(ns: argparse.Namespace) -> list[dict]:
    return [v for v in vars(ns).values() if isinstance(v, dict) and "backend" in v]


def check_jobs(dry: str, expected: dict[str, dict], vllm_python: str | None = None) -> dict:
    """Every job parses; configured models' specs arrive as JSON objects with the odd revision;
    the values in `expected` ({rule: {attr: value}}) arrive as the config gave them; jobs whose
    models use vLLM run with `vllm_python`. Returns {rule: [(words, {step: namespace})]}."""
    jobs: dict[str, list] = {}
    for rule, command in planned_commands(dry):
        words, parsed = parse_job(rule, command)
        jobs.setdefault(rule, []).append((words, parsed))
        for step, ns in parsed.items():
            for key in ("model", "judge", "decomposer", "verifier", "hallucinator"):
                value = getattr(ns, key, None)
                assert not isinstance(value, str) or not value.startswith("{"), (rule, key)
            for spec in specs(ns):
                if not spec.get("source", "").startswith("results/"):
                    assert spec.get("revision") == REVISION, (rule, step, spec)
            if vllm_python and step != "launch":
                vllm = any(s["backend"] == "vllm" for s in specs(ns))
                assert (words[0] == vllm_python) == vllm, (rule, words[0])
    for rule, attrs in expected.items():
        assert rule in jobs, f"no {rule} job planned"
        for _, parsed in jobs[rule]:
            merged = {k: v for ns in parsed.values() for k, v in vars(ns).items()}
            for attr, value in attrs.items():
                assert merged[attr] == value, (rule, attr, merged[attr], value)
    return jobs


def check_recipe(jobs: dict, rule: str, step: str, section: dict, skip=()) -> None:
    """The `--set key=<JSON>` arguments, read as the trainer reads them, give the config's
    values."""
    trainer = "train_dpo" if step == "train_fdpo" else step  # F-DPO takes DPO's recipe keys
    spec = importlib.import_module(f"flame.{trainer}").RECIPE
    want = {k: v for k, v in section.items() if k not in skip}
    for _, parsed in jobs[rule]:
        recipe = training.load_recipe(spec, None, parsed[step].set)
        assert {k: recipe[k] for k in want} == want, rule


def test_embedded_config_with_every_overlay(workflow_dir):
    """config.yaml + ablations.yaml + fdpo.yaml: every table, the pilot, F-DPO, the reward
    model and the trained verifier, with odd strings and odd local paths."""
    wd = workflow_dir
    model_dir = odd_file(wd, "model", folder=True)
    kb = odd_file(wd, "kb.jsonl")
    tqa = odd_file(wd, "mc_task.json")
    mmlu, gsm8k = odd_file(wd, "mmlu", folder=True), odd_file(wd, "gsm8k", folder=True)
    entities = odd_file(wd, "entities.txt")
    overlay = {
        "models": {
            "smollm2": {"source": model_dir, "revision": REVISION},
            "pt": {"source": "embedded:smollm2", "backend": "transformers", "revision": REVISION},
        },
        "roles": {"pretrained": "pt", "fact_verifier": "verifier"},
        "knowledge": {"source": f"jsonl:{kb}", "retriever": "dense", "dense_model": DENSE},
        "rm_if": {"prefix": ""},
        "rm_fact": {"reranker": RERANK_FACT},
        "evaluation": {"reranker": RERANK_EVAL},
        "fdpo": {"inversion": {"errors": ERRORS}},
        "truthfulqa": {"data": tqa},
        "alignment_tax": {"mmlu": mmlu, "gsm8k": gsm8k},
        "pilot": {"entities": entities},
        "sft": {"lr_scheduler_type": "cosine"},
    }
    configs = ["config.yaml", "workflow/configs/ablations.yaml", "workflow/configs/fdpo.yaml"]
    dry = dry_run(wd, configs, overlay)
    jobs = check_jobs(
        dry,
        {
            "prepare_model": {"source": "embedded:smollm2"},
            "build_knowledge": {"source": f"jsonl:{kb}", "dense_model": DENSE,
                                "retriever": "dense"},
            "rm_if": {"prefix": ""},
            "rm_fact": {"reranker": RERANK_FACT, "np_threshold": 0.5},
            "invert": {"reranker": RERANK_FACT, "errors": ERRORS},
            "eval_factuality": {"reranker": RERANK_EVAL},
            "pilot_factscore": {"reranker": RERANK_EVAL},
            "truthfulqa": {"data": tqa},
            "alignment_tax": {"mmlu": mmlu, "gsm8k": gsm8k},
            "pilot_prompts": {"entities": entities},
            "train_sft": {"init": model_dir},
            "train_verifier": {"init": model_dir},
            "fdpo_pairs": {"balance": None},
            "table5": {"baseline": "SFT+DPO"},
            "table9": {"baseline": "SFT+DPO", "rows": ["SFT+DPO", "SFT_FLAME+DPO_FLAME"]},
        },
    )  # fmt: skip
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    fdpo = yaml.safe_load((wd / "workflow/configs/fdpo.yaml").read_text())
    check_recipe(jobs, "train_sft", "train_sft", {**cfg["sft"], "lr_scheduler_type": "cosine"})
    check_recipe(jobs, "train_dpo", "train_dpo", cfg["dpo"], skip=("allow_empty_pairs",))
    check_recipe(jobs, "train_fdpo", "train_fdpo", fdpo["fdpo"]["recipe"], ("allow_empty_pairs",))
    check_recipe(jobs, "train_rm", "train_rm", fdpo["reward_model"]["recipe"])
    (_, parsed), *_ = jobs["winrate"]
    assert parsed["winrate"].baseline[0] in ("SFT", "SFT+DPO")


def test_paper_config_with_fdpo_on_the_slurm_profile(workflow_dir):
    """paper.yaml + fdpo_paper.yaml on workflow/profiles/slurm: the hub files, the knowledge DB,
    the accelerate config and the vLLM python at odd paths; rm_if.prefix is the paper's ""."""
    wd = workflow_dir
    paper = yaml.safe_load((wd / "workflow/configs/paper.yaml").read_text())
    hub = {k: odd_file(wd, k) for k in ("oasst1", "factscore_entities", "fava", "dpo_prompts")}
    db, accelerate = odd_file(wd, "enwiki.db"), odd_file(wd, "zero3.yaml")
    entities, vllm_python = odd_file(wd, "entities.txt"), fake_python(wd)
    overlay = {
        "vllm_python": vllm_python,
        "models": {name: {"revision": REVISION} for name in paper["models"]},
        "data": {"hub": {**hub, "alpaca_eval": None}},
        "knowledge": {"source": f"sqlite:{db}", "dense_model": DENSE},
        "rm_fact": {"reranker": RERANK_FACT},
        "evaluation": {"reranker": RERANK_EVAL},
        "training": {"accelerate_config": accelerate},
        "fdpo": {"inversion": {"errors": ERRORS}},
        "tables": [*paper["tables"], "table1_bio_pilot"],
        "pilot": {"entities": entities},
    }
    configs = ["config.yaml", "workflow/configs/paper.yaml", "workflow/configs/fdpo_paper.yaml"]
    dry = dry_run(wd, configs, overlay, "--workflow-profile", "workflow/profiles/slurm")
    jobs = check_jobs(
        dry,
        {
            "build_data": {**hub, "alpaca_eval": "none", "source": "hub"},
            "build_knowledge": {"source": f"sqlite:{db}", "dense_model": DENSE},
            "rm_if": {"prefix": "", "mode": "sample"},
            "rm_fact": {"reranker": RERANK_FACT, "np_threshold": None},
            "invert": {"reranker": RERANK_FACT, "errors": ERRORS},
            "eval_factuality": {"reranker": RERANK_EVAL},
            "pilot_prompts": {"entities": entities},
            "train_sft": {"config_file": accelerate, "init": "meta-llama/Llama-2-70b-hf"},
            "train_dpo": {"config_file": accelerate},
            "train_fdpo": {"config_file": accelerate, "quantize": "nf4", "epochs": 3.0},
            "train_rm": {"config_file": accelerate},
            "fdpo_pairs": {"balance": {"00": 15, "01": 10, "10": 10, "11": 10}},
            "alignment_tax": {"mmlu": "lm-eval:mmlu"},
            "truthfulqa": {"data": "hf:truthfulqa/truthful_qa:validation"},
        },
        vllm_python=vllm_python,
    )
    fdpo = yaml.safe_load((wd / "workflow/configs/fdpo_paper.yaml").read_text())
    check_recipe(jobs, "train_dpo", "train_dpo", paper["dpo"], skip=("allow_empty_pairs",))
    check_recipe(jobs, "train_fdpo", "train_fdpo", fdpo["fdpo"]["recipe"])
    assert all(words[0] == "srun" for words, _ in jobs["train_sft"])


def test_vllm_config_with_a_reward_model_and_accelerate(workflow_dir):
    """vllm.yaml with rm_fact.mode reward_model and `accelerate launch` on one machine: the
    reward model folder, the accelerate config and the vLLM python at odd paths, a prefix with
    quotes and a leading dash, and nulls (no re-ranker, no dense model) left out."""
    wd = workflow_dir
    rm, accelerate = odd_file(wd, "RM_BT", folder=True), odd_file(wd, "ddp.yaml")
    vllm_python = fake_python(wd)
    overlay = {
        "vllm_python": vllm_python,
        "models": {"smollm2": {"revision": REVISION}},
        "rm_if": {"mode": "sample", "prefix": PREFIX},
        "rm_fact": {"mode": "reward_model", "reward_model": rm},
        "knowledge": {"dense_model": None},
        "training": {"launcher": "accelerate", "accelerate_config": accelerate},
    }
    dry = dry_run(wd, ["config.yaml", "workflow/configs/vllm.yaml"], overlay)
    jobs = check_jobs(
        dry,
        {
            "rm_if": {"prefix": PREFIX},
            "rm_fact_reward_model": {"model": rm},
            "eval_factuality": {"reranker": None, "np_threshold": 0.5},
            "build_knowledge": {"dense_model": None, "retriever": "bm25"},
        },
        vllm_python=vllm_python,
    )
    for rule in ("train_sft", "train_dpo"):
        for words, _ in jobs[rule]:
            assert words[words.index("--config_file") + 1] == accelerate, rule
