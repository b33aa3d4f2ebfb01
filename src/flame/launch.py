"""Multi-node training inside a Slurm allocation: one `accelerate launch` per node.

The training rules run this under `srun --ntasks-per-node 1` when `training.nodes` > 1, the way
alignment-handbook's recipes/launch.slurm starts a multi-node run: every node's launcher gets
the same world size, number of machines and main address/port, and its own machine rank.

    srun --nodes 8 --ntasks-per-node 1 --kill-on-bad-exit=1 \\
        python -m flame.launch --config_file workflow/accelerate/deepspeed_zero3.yaml \\
        --num_processes 64 -- -m flame.train_sft --init PT --data sft.jsonl --out OUT

From the Slurm environment of each task:
- num_machines: SLURM_JOB_NUM_NODES (or SLURM_NNODES);
- machine_rank: SLURM_NODEID (one task per node, so also SLURM_PROCID);
- main_process_ip: the address of the allocation's first node (the first of `scontrol show
  hostnames $SLURM_JOB_NODELIST`, as its NodeAddr from `scontrol show node`);
- main_process_port: --port, or 20000 + SLURM_JOB_ID % 10000 (two jobs that share a head node
  do not collide, and every node of one job computes the same port);
- num_processes: --num_processes, the world size over all nodes (a multiple of the node count).

`--dry-run` prints the command instead of running it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping

from flame.cli import run


class SlurmEnvError(RuntimeError):
    pass


def _get(env: Mapping[str, str], *names: str) -> str:
    for name in names:
        if env.get(name):
            return env[name]
    raise SlurmEnvError(
        f"{' / '.join(names)} is not set: flame.launch runs inside a Slurm allocation, "
        "one task per node (srun --ntasks-per-node 1)"
    )


def first_host(nodelist: str) -> str:
    """The first node name of a Slurm node list (node[1-8] -> node1)."""
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
    ).stdout.split()
    if not out:
        raise SlurmEnvError(f"scontrol show hostnames {nodelist}: no hosts")
    return out[0]


def node_address(node: str) -> str:
    """The node's NodeAddr (its host name or IP, as slurm.conf declares it)."""
    res = subprocess.run(
        ["scontrol", "-o", "show", "node", node], capture_output=True, text=True, check=False
    )
    for field in res.stdout.split():
        if field.startswith("NodeAddr="):
            return field.split("=", 1)[1]
    return node


def plan(env: Mapping[str, str], num_processes: int, port: int | None = None) -> dict:
    """The accelerate launch arguments of this node, from its Slurm environment."""
    nodes = int(_get(env, "SLURM_JOB_NUM_NODES", "SLURM_NNODES"))
    rank = int(_get(env, "SLURM_NODEID"))
    tasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or nodes)
    if tasks != nodes:
        raise SlurmEnvError(
            f"{tasks} tasks on {nodes} nodes: run flame.launch once per node "
            "(srun --ntasks-per-node 1)"
        )
    if num_processes % nodes:
        raise SlurmEnvError(
            f"--num_processes {num_processes} is not a multiple of the {nodes} nodes"
        )
    if port is None:
        port = 20000 + int(_get(env, "SLURM_JOB_ID", "SLURM_JOBID")) % 10000
    head = first_host(_get(env, "SLURM_JOB_NODELIST", "SLURM_NODELIST"))
    return {
        "num_machines": nodes,
        "machine_rank": rank,
        "num_processes": num_processes,
        "main_process_ip": node_address(head),
        "main_process_port": port,
    }


def command(p: dict, config_file: str, script: list[str], node_name: str = "") -> list[str]:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file]
    for key in ("num_machines", "machine_rank", "num_processes", "main_process_ip"):
        cmd += [f"--{key}", str(p[key])]
    cmd += ["--main_process_port", str(p["main_process_port"])]
    if node_name:
        cmd += ["--role", f"{node_name}:"]  # log lines name their node
    return cmd + ["--max_restarts", "0", "--tee", "3", *script]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(
        prog="python -m flame.launch",
        usage="%(prog)s --config_file C --num_processes N [--port P] -- -m flame.train_sft ARGS",
        description=__doc__.split("\n")[0],
    )
    ap.add_argument("--config_file", required=True, help="accelerate config (workflow/accelerate/)")
    ap.add_argument("--num_processes", type=int, required=True, help="world size, all nodes")
    ap.add_argument("--port", type=int, help="main process port (default: from the job id)")
    ap.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    args = ap.parse_args(argv[:split])
    script = argv[split + 1 :]
    if not script:
        ap.error("nothing to launch: add -- and the training command (-m flame.train_sft ...)")
    try:
        p = plan(os.environ, args.num_processes, args.port)
    except SlurmEnvError as exc:
        raise SystemExit(f"flame.launch: {exc}") from None
    cmd = command(p, args.config_file, script, os.environ.get("SLURMD_NODENAME", ""))
    print(shlex.join(cmd), flush=True)
    if not args.dry_run:
        os.execv(cmd[0], cmd)


if __name__ == "__main__":
    run(main)
