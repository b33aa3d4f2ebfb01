"""flame.launch: the per-node accelerate command lines from a Slurm allocation's environment.
The environment below is what `srun --ntasks-per-node 1 env` printed in a real 2-node allocation
of the test cluster (workflow/scripts/local-slurm.sh start --nodes 2: two slurmd on one host,
node1 and node2, NodeAddr 127.0.0.1); tests/test_slurm.py checks the same against a live one."""

import os
import subprocess
import sys

import pytest

from flame import launch

# `salloc -N 2 --gres=gpu:2 srun --ntasks-per-node 1 env` (job 24), as seen by each task
NODE_ENV = {
    0: {
        "SLURM_JOB_ID": "24",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "2",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURMD_NODENAME": "node1",
    },
    1: {
        "SLURM_JOB_ID": "24",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_NODEID": "1",
        "SLURM_PROCID": "1",
        "SLURM_NTASKS": "2",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_NUM_NODES": "2",
        "SLURMD_NODENAME": "node2",
    },
}

# the same on one node (`salloc -N 1`, job 25)
ONE_NODE_ENV = {
    "SLURM_JOB_ID": "25",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NNODES": "1",
    "SLURM_JOB_NODELIST": "node1",
    "SLURM_NODELIST": "node1",
    "SLURM_NODEID": "0",
    "SLURM_PROCID": "0",
    "SLURM_NTASKS": "1",
    "SLURM_STEP_NUM_TASKS": "1",
    "SLURMD_NODENAME": "node1",
}


@pytest.fixture
def fake_scontrol(monkeypatch):
    """scontrol's answers as on a real cluster (NodeAddr 10.0.0.1); tests/test_slurm.py uses the
    real scontrol of the local cluster (NodeAddr 127.0.0.1)."""
    monkeypatch.setattr(
        launch, "first_host", lambda nodelist: {"node[1-2]": "node1", "node1": "node1"}[nodelist]
    )
    monkeypatch.setattr(launch, "node_address", lambda node: {"node1": "10.0.0.1"}[node])


def test_every_node_gets_the_same_world_and_its_own_rank(fake_scontrol):
    script = ["-m", "flame.train_sft", "--init", "PT", "--out", "OUT"]
    cmds = []
    for env in NODE_ENV.values():
        plan = launch.plan(env, num_processes=16)
        cmds.append(launch.command(plan, "ds.yaml", script, env["SLURMD_NODENAME"]))
    for rank, cmd in enumerate(cmds):
        assert cmd == [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            "ds.yaml",
            "--num_machines",
            "2",
            "--machine_rank",
            str(rank),
            "--num_processes",
            "16",
            "--main_process_ip",
            "10.0.0.1",
            "--main_process_port",
            "20024",
            "--role",
            f"node{rank + 1}:",
            "--max_restarts",
            "0",
            "--tee",
            "3",
            *script,
        ]


def test_one_node_allocation(fake_scontrol):
    assert launch.plan(ONE_NODE_ENV, num_processes=8) == {
        "num_machines": 1,
        "machine_rank": 0,
        "num_processes": 8,
        "main_process_ip": "10.0.0.1",
        "main_process_port": 20025,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "16"}, "once per node"),
        ({"SLURM_NODEID": ""}, "SLURM_NODEID"),
        ({"SLURM_JOB_NUM_NODES": "", "SLURM_NNODES": ""}, "inside a Slurm allocation"),
    ],
)
def test_wrong_allocation_is_refused(fake_scontrol, change, message):
    env = {**NODE_ENV[0], **change}
    with pytest.raises(launch.SlurmEnvError, match=message):
        launch.plan(env, num_processes=16)


def test_world_size_must_divide_over_nodes(fake_scontrol):
    with pytest.raises(launch.SlurmEnvError, match="multiple of the 2 nodes"):
        launch.plan(NODE_ENV[0], num_processes=3)


def test_explicit_port_wins(fake_scontrol):
    assert launch.plan(NODE_ENV[1], num_processes=2, port=6000)["main_process_port"] == 6000


def test_cli_needs_the_training_command():
    res = subprocess.run(
        [sys.executable, "-m", "flame.launch", "--config_file", "c.yaml", "--num_processes", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_JOB_ID": ""},
    )
    assert res.returncode == 2 and "nothing to launch" in res.stderr
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "flame.launch",
            "--config_file",
            "c.yaml",
            "--num_processes",
            "2",
            "--",
            "-m",
            "flame.train_sft",
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SLURM")},
    )
    assert res.returncode == 2 and "inside a Slurm allocation" in res.stderr
