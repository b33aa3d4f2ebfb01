"""Slurm for real: a cluster on this machine (workflow/scripts/local-slurm.sh: Debian's slurm-wlm,
fake GPUs in gres.conf, one or two slurmd) runs part of the DAG through the Slurm profile as sbatch
jobs, with accounting (sacct records) and without (squeue records); a failed job names its log and
a re-run resumes; SFT trains across a 2-node allocation, one accelerate launcher per node."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_end_to_end import tiny_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "workflow/scripts/local-slurm.sh"
ACCOUNT = "flame"
# a light CPU rule, the training rule and a GPU rule: build_data -> train_sft (SFT) -> classify
DAG_TARGET = "results/classified/report.json"


def start_cluster(accounting: bool, nodes: int = 1) -> None:
    """The local cluster in the wanted mode (installs the packages on first use; idempotent)."""
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests start a local cluster and need root (as CI has)")
    args = [str(SCRIPT), "start", "--gpus", "2", "--nodes", str(nodes)]
    if accounting:
        args.append("--accounting")
    subprocess.run(args, check=True, timeout=600)


def scaled_profile() -> dict:
    """workflow/profiles/slurm scaled to the local cluster: the same partitions, GPU rules and
    runtimes, but one (fake) GPU per job, the rules' own memory and threads, and our account."""
    prof = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    prof["default-resources"].update(slurm_account=ACCOUNT, mem_mb=1000)
    prof["default-resources"].pop("cpus_per_task", None)
    prof.pop("set-threads")
    for res in prof["set-resources"].values():
        res.pop("mem_mb", None)
        if res.get("gpu"):
            res["gpu"] = 1
        if res.get("gres"):
            res["gres"] = "gpu:1"
    prof.update(jobs=2, retries=0, **{"latency-wait": 5})
    prof["slurm-init-seconds-before-status-checks"] = 5  # the plugin's default: 40
    return prof


def test_local_profile_is_the_slurm_profile_scaled():
    """workflow/profiles/slurm-local, which the tests submit with, follows the Slurm profile."""
    local = yaml.safe_load((ROOT / "workflow/profiles/slurm-local/config.yaml").read_text())
    assert local == scaled_profile()


def submit(wd: Path, accounting: bool, *targets: str, timeout: int = 900):
    status = [] if accounting else ["--slurm-status-command", "squeue"]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--workflow-profile",
            "workflow/profiles/slurm-local",
            "--slurm-init-seconds-before-status-checks",
            "2",
            *status,
            *targets,
        ],
        cwd=wd,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def job_ids(log: str) -> dict[str, list[str]]:
    """rule -> Slurm job ids, from Snakemake's log ("Job N has been submitted with SLURM jobid")."""
    rule_of, out = {}, {}
    for m in re.finditer(r"rule (\w+):.*?\n\s+jobid: (\d+)", log, flags=re.S):
        rule_of[m.group(2)] = m.group(1)
    for m in re.finditer(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log):
        out.setdefault(rule_of[m.group(1)], []).append(m.group(2))
    return out


def scontrol(jobid: str) -> dict[str, str]:
    text = subprocess.run(
        ["scontrol", "-o", "show", "job", jobid], capture_output=True, text=True, check=True
    ).stdout
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


def sacct(jobid: str) -> dict[str, str]:
    fields = "JobID,JobName,Partition,State,ExitCode,Timelimit,ReqMem,ReqTRES,AllocTRES"
    line = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", jobid, f"--format={fields}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return dict(zip(fields.split(","), line.split("|"), strict=True))


@pytest.fixture
def slurm_wd(workflow_dir, tiny_model):
    wd = workflow_dir
    model = shutil.copytree(tiny_model, wd / "model")  # a job can break it (see below)
    (wd / "config.yaml").write_text(yaml.safe_dump(tiny_config(model)))
    return wd


def expected_resources(rule: str) -> dict:
    """What the profile plus the rule declare for a job."""
    prof = scaled_profile()
    res = {**prof["default-resources"], **prof["set-resources"].get(rule, {})}
    declared_mem = {"build_data": 2000, "classify": 4000, "train_sft": 8000}
    return {
        "partition": res["slurm_partition"],
        # GPUs per job (--gpus, the generation rules) or per node (--gres, training)
        "gpu_request": ("TresPerJob" if res.get("gpu") else "TresPerNode")
        if res.get("gpu") or res.get("gres")
        else None,
        "mem_mb": declared_mem.get(rule, 1000),  # the scaled profile's default: 1000
        "minutes": res["runtime"],
        "cpus": 2 if rule == "train_sft" else 1,  # the SFT baseline takes 2 threads
    }


def check_job(rule: str, rec: dict[str, str]) -> None:
    exp = expected_resources(rule)
    assert rec["Partition"] == exp["partition"], (rule, rec)
    hours, minutes = divmod(exp["minutes"], 60)
    assert rec["TimeLimit"] == f"{hours:02d}:{minutes:02d}:00", (rule, rec)
    assert rec["NumCPUs"] == str(exp["cpus"]), (rule, rec["NumCPUs"])
    assert rec["MinMemoryNode"] == f"{exp['mem_mb']}M", (rule, rec["MinMemoryNode"])
    # one fake GPU (the scaled profile's gpu: 1 or gres: gpu:1), or none
    requests = {k: rec.get(k) for k in ("TresPerJob", "TresPerNode")}
    if exp["gpu_request"]:
        assert requests[exp["gpu_request"]] == "gres:gpu:1", (rule, requests)
    else:
        assert requests == {"TresPerJob": None, "TresPerNode": None}, (rule, requests)


@pytest.mark.slow
def test_dag_through_slurm_profile_with_accounting(slurm_wd):
    wd = slurm_wd
    start_cluster(accounting=True)
    res = submit(wd, True, DAG_TARGET)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-5000:]
    for out in [
        "results/data/seed.jsonl",
        "results/models/sft/SFT",
        "results/classified/seed.jsonl",
        DAG_TARGET,
    ]:
        assert (wd / out).exists(), out
    ids = job_ids(log)
    assert set(ids) == {"build_data", "train_sft", "classify"}, ids
    for rule, [jobid] in ids.items():
        rec = scontrol(jobid)
        assert rec["JobState"] == "COMPLETED", (rule, rec["JobState"])
        check_job(rule, rec)
        acct = sacct(jobid)
        assert acct["State"] == "COMPLETED" and acct["ExitCode"] == "0:0", (rule, acct)
        assert acct["Partition"] == rec["Partition"], (rule, acct)
        assert acct["Timelimit"] == rec["TimeLimit"], (rule, acct)
        # allocated: accounting tracks gres/gpu (AccountingStorageTRES)
        gpu = expected_resources(rule)["gpu_request"]
        assert ("gres/gpu=1" in acct["AllocTRES"]) == bool(gpu), (rule, acct)


SQUEUE_FIELDS = "State:|,Partition:|,tres-per-node:|,MinMemory:|,TimeLimit:|"


def squeue(jobid: str) -> list[str]:
    """State, partition, GPUs per node, memory, time limit (squeue shows finished jobs for
    MinJobAge seconds: the job records of a cluster without accounting)."""
    out = subprocess.run(
        [
            "squeue",
            "-h",
            "-t",
            "all",
            "-j",
            jobid,
            "-O",
            "State:|,Partition:|,tres-per-node:|,MinMemory:|,TimeLimit:|",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [v.strip() for v in out.strip().split("|")[:5]]


# torchrun-based accelerate launcher on CPU hosts: the processes find no GPU and train with
# gloo (accelerate's MULTI_CPU), which is what lets one machine run a multi-node launch for real
CPU_ACCELERATE = {
    "compute_environment": "LOCAL_MACHINE",
    "distributed_type": "MULTI_GPU",
    "mixed_precision": "no",
    "num_machines": 1,
    "num_processes": 2,
    "rdzv_backend": "static",
    "same_network": True,
    "use_cpu": False,
}


@pytest.mark.slow
def test_two_node_training_failure_log_and_resume_without_accounting(slurm_wd):
    """SFT on 2 nodes (two slurmd on this host), one accelerate launcher per node; first with a
    broken checkpoint (the job fails, its log is named), then fixed (only that job re-runs)."""
    wd = slurm_wd
    start_cluster(accounting=False, nodes=2)
    (wd / "cpu.yaml").write_text(yaml.safe_dump(CPU_ACCELERATE))
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["training"].update(
        launcher="accelerate", nodes=2, num_processes=2, accelerate_config="cpu.yaml"
    )
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    config = wd / "model/config.json"
    saved = config.read_bytes()
    config.unlink()  # the training job fails on the cluster: its checkpoint cannot load
    res = submit(wd, False, "results/models/sft/SFT")
    log = res.stdout + res.stderr
    assert res.returncode != 0, log[-3000:]
    ids = job_ids(log)
    assert set(ids) == {"build_data", "train_sft"}, ids
    assert "results/logs/train_sft/SFT.log" in log
    assert re.search(r"\.snakemake/slurm_logs/rule_train_sft/\S+\.log", log), log[-3000:]
    assert "config.json" in (wd / "results/logs/train_sft/SFT.log").read_text()
    state, *_ = squeue(ids["train_sft"][0])
    assert state == "FAILED"
    assert (wd / "results/data/seed.jsonl").exists()
    assert not (wd / "results/models/sft/SFT").exists()
    # fixed: the re-run submits only the failed job
    config.write_bytes(saved)
    res = submit(wd, False, "results/models/sft/SFT")
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-5000:]
    ids = job_ids(log)
    assert list(ids) == ["train_sft"], ids
    assert (wd / "results/models/sft/SFT/config.json").exists()
    [jobid] = ids["train_sft"]
    assert squeue(jobid) == ["COMPLETED", "gpu", "gres:gpu:1", "8000M", "12:00:00"]
    rec = scontrol(jobid)
    assert (rec["NumNodes"], rec["NumTasks"], rec["NodeList"]) == ("2", "2", "node[1-2]"), rec
    assert rec["MinMemoryNode"] == "8000M" and rec["TresPerNode"] == "gres:gpu:1", rec
    # one launcher per node: same world, address and port, its own machine rank
    train_log = (wd / "results/logs/train_sft/SFT.log").read_text()
    launches = sorted(
        re.findall(r"accelerate\.commands\.launch (.*?) -m flame\.train_sft", train_log)
    )
    port = 20000 + int(jobid) % 10000
    assert launches == [
        f"--config_file cpu.yaml --num_machines 2 --machine_rank {rank} --num_processes 2"
        f" --main_process_ip 127.0.0.1 --main_process_port {port} --role node{rank + 1}:"
        " --max_restarts 0 --tee 3"
        for rank in (0, 1)
    ], launches
    assert "x 2 processes" in train_log  # flame.training saw a world of 2
