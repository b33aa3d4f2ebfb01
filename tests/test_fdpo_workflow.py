"""F-DPO and the reward model in the DAG: dry runs of workflow/configs/fdpo.yaml list the new
rules (one F-DPO checkpoint per lambda), bad configs fail at parse time, every step has a CLI."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FDPO_CONFIG = ["--configfile", "config.yaml", "workflow/configs/fdpo.yaml"]


def snakemake(*args, cwd):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def counts(stdout: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stdout, flags=re.M)}


def test_dry_run_lists_fdpo_and_reward_model_rules(workflow_dir):
    res = snakemake("-n", "--cores", "2", *FDPO_CONFIG, cwd=workflow_dir)
    assert res.returncode == 0, res.stderr
    jobs = counts(res.stdout)
    for rule in ["invert", "fdpo_pairs", "winrate_fdpo", "table_fdpo", "train_rm", "rm_bt",
                 "pairs_rm_bt", "train_dpo_rm_bt", "table_rm"]:  # fmt: skip
        assert jobs.get(rule) == 1, (rule, jobs)
    assert jobs["train_fdpo"] == 2 and jobs["train_dpo"] == 5
    assert "results/models/dpo/SFT+FDPO_l10" in res.stdout
    assert "results/tables/table_fdpo.md" in res.stdout
    # the embedded default alone plans none of them
    plain = counts(snakemake("-n", "--cores", "2", cwd=workflow_dir).stdout)
    assert not {"train_fdpo", "train_rm", "table_fdpo"} & set(plain)


def test_lambda_list_grows_the_rows(workflow_dir):
    cfg = yaml.safe_load((workflow_dir / "workflow/configs/fdpo.yaml").read_text())
    cfg["fdpo"]["lambdas"] = [0, 2, 4, 100]
    cfg["reward_model"]["enabled"] = False
    (workflow_dir / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--cores", "2", "--configfile", "config.yaml", "sweep.yaml",
                    cwd=workflow_dir)  # fmt: skip
    assert res.returncode == 0, res.stderr
    jobs = counts(res.stdout)
    assert jobs["train_fdpo"] == 4 and "train_rm" not in jobs
    assert "--lam 100" in snakemake("-n", "-p", "--cores", "2", "--configfile", "config.yaml",
                                    "sweep.yaml", cwd=workflow_dir).stdout  # fmt: skip


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"fdpo": {"lambdas": [-1]}}, "minimum"),
        ({"fdpo": {"balance": {"21": 1}}}, "21"),
        ({"roles": {"hallucinator": "nobody"}}, "roles.hallucinator: unknown model"),
        ({"rm_fact": {"mode": "reward_model"}}, "rm_fact.mode"),
    ],
)
def test_bad_fdpo_config_fails_before_any_job(workflow_dir, edit, message):
    (workflow_dir / "bad.yaml").write_text(yaml.safe_dump(edit))
    res = snakemake("-n", "--cores", "2", *FDPO_CONFIG, "bad.yaml", cwd=workflow_dir)
    assert res.returncode != 0 and message in res.stdout + res.stderr


def test_rm_fact_mode_reward_model_replaces_factscore(workflow_dir, tmp_path):
    (workflow_dir / "rm.yaml").write_text(
        yaml.safe_dump({"rm_fact": {"mode": "reward_model", "reward_model": str(tmp_path)}})
    )
    res = snakemake("-n", "--cores", "2", "--configfile", "config.yaml", "rm.yaml",
                    cwd=workflow_dir)  # fmt: skip
    assert res.returncode == 0, res.stderr
    jobs = counts(res.stdout)
    assert jobs["rm_fact_reward_model"] == 2 and "rm_fact" not in jobs


@pytest.mark.parametrize("step", ["fdpo", "invert", "train_fdpo", "train_rm", "rm_bt",
                                  "table_fdpo"])  # fmt: skip
def test_new_steps_have_a_cli(step):
    res = subprocess.run([sys.executable, "-m", f"flame.{step}", "--help"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout
