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


def test_paper_settings_reach_the_fdpo_jobs(workflow_dir):
    """fdpo_paper.yaml on the paper config and the Slurm profile (its 8-node training needs the
    profile's per-node GPUs): the paper's lambda grid, QLoRA r 32 / alpha 64, lr 1.8e-6, 3
    epochs, beta 0.1 and the bucket shares are what the jobs get."""
    res = snakemake("-n", "-p", "--configfile", "workflow/configs/paper.yaml",
                    "workflow/configs/fdpo_paper.yaml", "--workflow-profile",
                    "workflow/profiles/slurm", cwd=workflow_dir)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = counts(res.stdout)
    assert jobs["train_fdpo"] == 10 and jobs["train_rm"] == 1 and jobs["table_fdpo"] == 1
    lams = sorted(float(m) for m in re.findall(r"flame\.train_fdpo --lam (\S+)", res.stdout))
    assert lams == [0, 2, 4, 6, 8, 10, 20, 30, 50, 100]
    cmd = re.search(r"flame\.train_fdpo --lam 100 .*", res.stdout)[0]
    for arg in [
        "--quantize nf4",
        "--epochs 3",
        "--set lora_r=32",
        "--set lora_alpha=64",
        "--set learning_rate=1.8e-06",
        "--set beta=0.1",
        "--set use_lora=true",
    ]:
        assert arg in cmd, arg
    assert re.search(r"flame\.fdpo .*--threshold 1\.0 .*\"00\": 15", res.stdout)


def test_empty_pairs_flags_reach_the_reward_model_rules(workflow_dir):
    res = snakemake("-n", "-p", "--cores", "2", *FDPO_CONFIG, cwd=workflow_dir)
    assert res.returncode == 0, res.stderr
    assert re.search(r"flame\.train_rm .*--allow-empty", res.stdout)
    assert re.search(r"flame\.rm_bt .*--allow-untrained", res.stdout)
    assert re.search(r"flame\.table_fdpo .*--models-dir results/models/dpo", res.stdout)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"fdpo": {"lambdas": [-1]}}, "minimum"),
        ({"fdpo": {"balance": {"21": 1}}}, "21"),
        ({"roles": {"hallucinator": "nobody"}}, "roles.hallucinator: unknown model"),
        ({"rm_fact": {"mode": "reward_model"}}, "rm_fact.mode"),
        ({"dpo": {"allow_empty_pairs": False}}, "needs dpo.allow_empty_pairs"),
        ({"reward_model": {"init": "nobody"}}, "reward_model.init: unknown model"),
        (
            {
                "models": {"api": {"backend": "openai", "model": "m"}},
                "reward_model": {"init": "api"},
            },
            "reward_model.init: an HTTP-served model cannot be trained",
        ),
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


@pytest.mark.slow
def test_new_rules_run_on_the_tiny_model(workflow_dir, tiny_model):
    """The new rules for real on the tiny model, upstream outputs written by hand and every other
    rule disallowed: inversion, F-DPO pairs, one checkpoint per lambda, the reward model, its
    scores, its pairs and its DPO row."""
    import json
    import shutil

    sys.path.insert(0, str(ROOT / "tests"))
    from test_end_to_end import tiny_config

    wd = workflow_dir
    cfg = tiny_config(tiny_model)
    extra = yaml.safe_load((wd / "workflow/configs/fdpo.yaml").read_text())
    cfg["roles"]["hallucinator"] = "tiny"
    cfg.update({k: v for k, v in extra.items() if k != "roles"})
    cfg["fdpo"]["recipe"].update(max_steps=1, max_length=128)
    cfg["fdpo"]["threshold"] = 0.5  # the hand-made scores 0.0 / 0.6 then fall in bucket 10
    cfg["fdpo"]["inversion"].update(max_new_tokens=8, max_rewrites=2)
    cfg["reward_model"]["recipe"].update(max_steps=1, global_batch_size=2,
                                         per_device_train_batch_size=2, max_length=128)  # fmt: skip
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = wd / "results"
    shutil.copytree(tiny_model, res / "models/sft/SFT")
    kb = ["build", "--source", "embedded", "--out", str(res / "knowledge/index")]
    subprocess.run([sys.executable, "-m", "flame.knowledge", *kb], check=True, capture_output=True)
    for pol in ("SFT", "SFT_FLAME"):
        d = res / "dpo" / pol
        d.mkdir(parents=True)
        samples = [{"id": f"{pol}{i}", "instruction": f"Tell me about Albert Einstein {i}.",
                    "fact_based": i < 3, "responses": ["Einstein was born in Germany in 1879.",
                                                       "He was a cook in Paris.", "He was."]}
                   for i in range(4)]  # fmt: skip
        rows = {
            "samples": samples,
            "rm_fact": [{"id": s["id"], "scores": [1.0, 0.0, 0.6]} for s in samples[:3]],
            "rm_if": [{"id": s["id"], "scores": [3.0, 3.2, 1.0]} for s in samples],
        }
        for name, recs in rows.items():
            (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (d / "rm_fact_facts.jsonl").write_text("")
        subprocess.run([sys.executable, "-m", "flame.pairs", "--samples", str(d / "samples.jsonl"),
                        "--rm-if", str(d / "rm_if.jsonl"), "--rm-fact", str(d / "rm_fact.jsonl"),
                        "--out-dir", str(d), "--counts", str(d / "pair_counts.json")],
                       check=True, capture_output=True)  # fmt: skip
    rules = ["invert", "fdpo_pairs", "train_fdpo", "train_rm", "rm_bt", "pairs_rm_bt",
             "train_dpo_rm_bt"]  # fmt: skip
    targets = ["results/models/dpo/SFT+FDPO_l0", "results/models/dpo/SFT+FDPO_l10",
               "results/models/dpo/SFT+DPO_fact_RMBT"]  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--allowed-rules",
                          *rules, "--", *targets], cwd=wd, capture_output=True, text=True,
                         timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    counts = json.loads((res / "fdpo/SFT/fdpo_counts.json").read_text())
    # DPO_FLAME: 4 IF pairs (1 unlabelled: its prompt is not fact-based) and 3 fact pairs
    assert counts["unlabelled"] == 1 and counts["buckets_after_flip"]["10"] == 0
    assert counts["flipped"] == counts["buckets_before_flip"]["10"] > 0
    inv = json.loads((res / "fdpo/SFT/inversion_counts.json").read_text())
    assert inv["rewrites"] == 2 and inv["kept"] + inv["discarded_total"] == 2
    for lam in ("0", "10"):
        summary = json.loads((res / f"models/dpo/SFT+FDPO_l{lam}/train_summary.json").read_text())
        assert summary["fdpo"]["lambda"] == float(lam) and summary["global_step"] == 1
    stats = json.loads((res / "rm_bt/SFT/rm_bt_stats.json").read_text())
    assert stats["responses"] == 9 and stats["agreement_with_factscore"]["pairs"] == 9
    assert (res / "models/dpo/SFT+DPO_fact_RMBT/train_summary.json").exists()
