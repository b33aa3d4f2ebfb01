"""The workflow's shape: config validation, dry runs, lint, CLIs, environments."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
STEPS = [
    "models",
    "data",
    "knowledge",
    "classify",
    "fewshot",
    "sft_data",
    "generate",
    "rm_if",
    "rm_fact",
    "pairs",
    "train_sft",
    "train_dpo",
    "evaluate",
    "winrate",
    "judge_quality",
    "tables",
    "factscore",
    "truthfulqa",
    "tables_extra",
    "figure",
    "alignment_tax",
]


OPENAI_API = {"backend": "openai", "base_url": "https://api.openai.com/v1", "model": "gpt-4-turbo"}


def snakemake(*args, cwd=ROOT, timeout=120):
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def test_dry_run_plans_every_stage(workflow_dir):
    wd = workflow_dir
    res = snakemake("-n", "--cores", "2", cwd=wd)
    assert res.returncode == 0, res.stderr
    for rule in [
        "prepare_model",
        "build_data",
        "build_knowledge",
        "classify",
        "fewshot_pt",
        "sft_data",
        "train_sft",
        "sample_responses",
        "rm_if",
        "rm_fact",
        "pairs",
        "train_dpo",
        "eval_generate",
        "eval_generate_pt",
        "eval_factuality",
        "winrate",
        "judge_quality",
        "table_judge",
        "tables",
        "truthfulqa",
        "table5",
        "figure1",
    ]:
        assert re.search(rf"^{rule}\s+\d+", res.stdout, flags=re.M), rule
    assert re.search(r"^train_dpo\s+5$", res.stdout, flags=re.M)
    assert re.search(r"^train_sft\s+3$", res.stdout, flags=re.M)


@pytest.mark.parametrize("threads, baseline", [(1, 2), (3, 3)])
def test_training_chain_threads_and_priorities(workflow_dir, threads, baseline):
    """training.threads sets the training jobs' threads (the SFT baseline takes at least 2) and
    the training chain outranks evaluation."""
    cfg = yaml.safe_load((workflow_dir / "config.yaml").read_text())
    cfg["training"]["threads"] = threads
    (workflow_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--cores", "8", cwd=workflow_dir)
    assert res.returncode == 0, res.stderr
    jobs = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", res.stdout):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m:
            continue
        wc = re.search(r"wildcards: (.*)", block)
        n = re.search(r"threads: (\d+)", block)
        prio = re.search(r"priority: (\d+)", block)
        jobs[(m.group(1), wc.group(1) if wc else "")] = (
            int(n.group(1)) if n else 1,
            int(prio.group(1)) if prio else 0,
        )
    assert jobs[("train_sft", "sft=SFT")][0] == baseline
    assert jobs[("train_sft", "sft=SFT_FLAME")][0] == threads
    assert jobs[("train_dpo", "policy=SFT, dpo=DPO")][0] == threads
    eval_prio = jobs[("eval_factuality", "model=SFT")][1]
    for rule in ["train_sft", "classify", "fewshot_pt", "rm_fact", "pairs", "train_dpo"]:
        assert min(p for (r, _), (_, p) in jobs.items() if r == rule) > eval_prio, rule


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["sft"].update(max_stepz=3), "max_stepz"),
        (lambda c: c["sampling"].update(m="four"), "four"),
        (lambda c: c["roles"].update(verifier="smollm2"), "verifier"),
        (lambda c: c["roles"].update(fact_verifier="nonexistent"), "roles.fact_verifier"),
        (
            lambda c: (c["roles"].update(fact_verifier="verifier"), c["verifier"].update(init="x")),
            "verifier.init",
        ),
        (lambda c: c["models"]["smollm2"].update(backend="tgi"), "tgi"),
        (lambda c: c["rm_fact"].update(unit="paragraph"), "paragraph"),
        (lambda c: c["training"].update(nodes=2), "training.nodes"),
        (lambda c: c["trained_models"].update(backend="vllm"), "classify.mode: probe"),
        (lambda c: c["evaluation"].update(np_threshold=2), "np_threshold"),
        (
            lambda c: c["training"].update(nodes=2, launcher="accelerate", num_processes=3),
            "multiple of training.nodes",
        ),
        # values a step would reject that the types alone let through
        (lambda c: c["models"].update({"my model": c["models"]["smollm2"]}), "'my model' does not"),
        (lambda c: c["models"]["smollm2"].pop("source"), "'source' is a required property"),
        (lambda c: c["truthfulqa"].update(data="nowhere/mc_task.json"), "truthfulqa.data: no file"),
        (lambda c: c.update(truthfulqa={"baseline": "SFT_fact"}), "truthfulqa.baseline"),
        (
            lambda c: (
                c.update(tables=["table9_alignment_tax"]),
                c.update(alignment_tax={"mmlu": "nowhere"}),
            ),
            "alignment_tax.mmlu: no folder",
        ),
        (
            lambda c: (
                c.update(tables=["table1_bio_pilot"]),
                c.update(pilot={"entities": "nowhere.txt"}),
            ),
            "pilot.entities: no file",
        ),
        (
            lambda c: c["training"].update(launcher="accelerate", accelerate_config="nowhere.yaml"),
            "training.accelerate_config: no file",
        ),
        (
            lambda c: c["rm_fact"].update(mode="reward_model", reward_model="nowhere"),
            "rm_fact.reward_model: no folder",
        ),
        # a role whose backend lacks what its step needs
        (
            lambda c: (
                c["trained_models"].update(backend="openai", model="x"),
                c["classify"].update(mode="prompt"),
            ),
            "trained_models.backend",
        ),
        (
            lambda c: (c["models"].update(gpt4=OPENAI_API), c["roles"].update(eval_judge="gpt4")),
            "winrate.mode: reverse",
        ),
        (
            lambda c: (
                c["models"].update(gpt4=OPENAI_API),
                c["roles"].update(chat_baseline="gpt4"),
                c.update(truthfulqa={"models": ["SFT+DPO", "Chat"]}),
            ),
            "truthfulqa.models: 'Chat' is served by the OpenAI API",
        ),
        (
            lambda c: (
                c["models"].update(served={**OPENAI_API, "base_url": "http://h:8000/v1"}),
                c["roles"].update(chat_baseline="served"),
                c.update(tables=["table9_alignment_tax"]),
                c.update(alignment_tax={"models": ["SFT+DPO", "Chat"]}),
            ),
            "alignment_tax.models: 'Chat' is served by backend openai",
        ),
        (
            lambda c: (
                c["models"].update(gpt4=OPENAI_API),
                c["roles"].update(fact_verifier="verifier"),
                c["verifier"].update(init="gpt4"),
            ),
            "verifier.init: an HTTP-served model cannot be trained",
        ),
        # dense retrieval in rules run by a vLLM python that cannot import faiss (/bin/false)
        (
            lambda c: (
                c["models"]["smollm2"].update(backend="vllm"),
                c.update(vllm_python="/bin/false"),
                c["knowledge"].update(retriever="dense"),
            ),
            "config knowledge.retriever: rules eval_factuality, rm_fact run under the vLLM python",
        ),
        # several Slurm nodes per training job without the Slurm profile's per-node GPUs
        (
            lambda c: c["training"].update(nodes=2, launcher="accelerate", num_processes=2),
            "training.nodes: 2 nodes per training job need Slurm",
        ),
    ],
)
def test_bad_config_fails_before_any_job(workflow_dir, edit, message):
    wd = workflow_dir
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    edit(cfg)
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--cores", "1", cwd=wd, timeout=60)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr
    assert not (wd / "results").exists()


def test_paper_config_and_slurm_profile_plan_every_job(workflow_dir):
    wd = workflow_dir
    res = snakemake(
        "-n",
        "--configfile",
        "workflow/configs/paper.yaml",
        "--executor",
        "slurm",
        "--workflow-profile",
        "workflow/profiles/slurm",
        cwd=wd,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"^train_dpo\s+5$", res.stdout, flags=re.M)
    assert "prepare_model" not in res.stdout  # hub models need no conversion
    # the paper's scale: training on 8 nodes x 8 GPUs, one accelerate launcher per node;
    # generation/judging on one 8-GPU node; light rules on the CPU partition
    jobs = planned_jobs(res.stdout)
    for rule, runtime in [("train_sft", 720), ("train_dpo", 1440)]:
        for res_, shell in jobs[rule]:
            want = {
                "nodes": "8",
                "tasks": "8",
                "mpi": "srun",
                "gres": "gpu:8",
                "gpu": "0",
                "mem_mb": "900000",
                "slurm_partition": "gpu",
                "runtime": str(runtime),
            }
            assert {k: res_.get(k) for k in want} == want, (rule, res_)
            assert shell.startswith("srun --nodes 8 --ntasks-per-node 1 --kill-on-bad-exit=1 ")
            assert " -m flame.launch --config_file workflow/accelerate/deepspeed_zero3.yaml" in (
                shell
            )
            assert f"--num_processes 64 -- -m flame.{rule} " in shell
    for rule in ["classify", "rm_fact", "eval_factuality"]:
        for res_, _ in jobs[rule]:
            assert (res_["gpu"], res_["mem_mb"], res_["slurm_partition"]) == ("8", "400000", "gpu")
            assert "nodes" not in res_ and "gres" not in res_
    for rule in ["build_data", "build_knowledge", "sft_data", "pairs", "tables", "winrate"]:
        for res_, _ in jobs[rule]:
            assert (res_["slurm_partition"], res_["gpu"]) == ("cpu", "0"), (rule, res_)


def planned_jobs(dry_run: str) -> dict[str, list[tuple[dict, str]]]:
    """rule -> [(resources, shell command)] of a `snakemake -n -p` plan."""
    jobs: dict[str, list] = {}
    for block in re.split(r"\n(?=rule \w+:|localrule \w+:)", dry_run):
        m = re.match(r"(?:local)?rule (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        if not m or not res:
            continue
        shell = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        pairs = dict(kv.split("=", 1) for kv in res.group(1).split(", "))
        jobs.setdefault(m.group(1), []).append((pairs, shell.group(1) if shell else ""))
    return jobs


def test_lint_is_clean(workflow_dir):
    wd = workflow_dir
    res = snakemake("--lint", cwd=wd)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Lints for" not in res.stdout


def test_snakefmt_is_clean():
    snakefmt = Path(sys.executable).parent / "snakefmt"
    res = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "workflow/rules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("step", STEPS)
def test_every_step_has_a_cli(step):
    res = subprocess.run(
        [sys.executable, "-m", f"flame.{step}", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout


def pins(requirements):
    out = {}
    for req in requirements:
        if isinstance(req, str) and not req.startswith("-"):
            name = re.split(r"[=<>!~ ]", req, maxsplit=1)[0].lower()
            out[name] = req[len(name) :].strip()
    return out


def test_conda_envs_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = pins(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared.update(pins(extra))
    for env_file in sorted((ROOT / "envs").glob("*.yaml")):
        env = yaml.safe_load(env_file.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        assert any(p.startswith("-e ") for p in pip), f"{env_file.name} must install the package"
        for name, spec in pins(pip).items():
            if name == "vllm":
                continue  # vLLM lives only in envs/vllm.yaml (its own transformers pin)
            if name == "transformers":  # a range in pyproject.toml: tests/test_envs.py
                continue
            assert name in declared, f"{env_file.name}: {name} is not declared in pyproject.toml"
            assert spec == declared[name], f"{env_file.name}: {name}{spec} != {declared[name]}"


@pytest.mark.parametrize(
    "overlays",
    [
        ["workflow/configs/vllm.yaml"],
        ["workflow/configs/vllm.yaml", "workflow/configs/ablations.yaml"],
        ["workflow/configs/vllm.yaml", "workflow/configs/fdpo.yaml"],
    ],
    ids=["vllm", "vllm+ablations", "vllm+fdpo"],
)
def test_vllm_config_serves_every_inference_role_with_the_vllm_python(workflow_dir, overlays):
    """workflow/configs/vllm.yaml: every job that runs a model (base or trained) uses backend
    vllm and the vLLM environment's python; data, training and tables keep the main one. The
    rule: a job runs with the vLLM python exactly when one of its model specs says vllm (the
    ablation and F-DPO rules included)."""
    vllm_py = str(ROOT / ".venv-vllm/bin/python")
    configs = ["config.yaml", *overlays]
    res = snakemake(
        "-n", "-p", "--cores", "2", "--configfile", *configs,
        "--config", f"vllm_python={vllm_py}", cwd=workflow_dir,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    commands = [c for c in re.findall(r"Shell command: (.*)", res.stdout) if " -m flame." in c]
    seen = set()
    for cmd in commands:
        step = re.search(r" -m flame\.(\w+)", cmd).group(1)
        specs = re.findall(r"'(\{[^']*\"backend\"[^']*)'", cmd)
        assert all('"backend": "vllm"' in s for s in specs), cmd
        assert cmd.startswith(vllm_py) == bool(specs), cmd
        if specs:
            seen.add(step)
    lm_steps = {"classify", "fewshot", "generate", "rm_if", "rm_fact", "evaluate", "winrate"}
    assert seen >= lm_steps | {"truthfulqa"}
    if "ablations" in overlays[-1]:
        assert "alignment_tax" in seen
    # trained checkpoints too: the SFT models sample, judge and are evaluated with vLLM
    assert re.search(r'"backend": "vllm".*"source": "results/models/sft/SFT_FLAME"', res.stdout)
    assert re.search(r'"source": "results/models/dpo/SFT\+DPO"', res.stdout)


def test_laptop_config_plans_the_replication(workflow_dir):
    """workflow/configs/laptop.yaml (issue 15's laptop replication) validates and plans every
    stage with FActScore's NP check on; its full run is a benchmark (benchmarks/dag.py), not a
    test."""
    res = snakemake(
        "-n", "-p", "--cores", "2", "--configfile", "config.yaml", "workflow/configs/laptop.yaml",
        cwd=workflow_dir,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = planned_jobs(res.stdout)
    assert {"train_dpo", "eval_factuality", "rm_fact", "winrate", "tables"} <= set(jobs)
    assert "train_verifier" not in jobs  # the prompted verifier + NP, no training
    assert re.search(r"n.eval.bio.40", res.stdout), "40 Bio people to evaluate"
    assert re.search(r"--np-threshold 0.5", res.stdout), "the NP check reaches FActScore"
