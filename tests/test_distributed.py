"""Multi-process training for real, on this CPU: 2 processes (gloo) under DeepSpeed ZeRO-3,
ZeRO-2 and DDP, with the project's own accelerate configs and the paper recipe (cosine decay to a
min learning rate). Equivalence with one process at the same global batch, resume after a kill,
and the workflow's training rules under `training.launcher: accelerate`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCEL = ROOT / "workflow/accelerate"
CONFIGS = {
    "zero3": ("deepspeed_zero3.yaml", "DEEPSPEED ZeRO-3"),
    "zero2": ("deepspeed_zero2.yaml", "DEEPSPEED ZeRO-2"),
    "ddp": ("multi_gpu.yaml", "MULTI_CPU"),
}
# loss trajectories of 2 processes x b and 1 process x 2b agree to float32 reduction noise
LOSS_RTOL = 1e-4

pytestmark = pytest.mark.slow


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dist_data")
    # answers of different lengths: token-weighted SFT losses must still average correctly
    sft = [
        {
            "id": f"s{i}",
            "instruction": f"What is {i} plus {i}?",
            "response": f"It is {2 * i}." + " Indeed." * (i % 4),
        }  # fmt: skip
        for i in range(16)
    ]
    pairs = [
        {
            "id": f"p{i}",
            "prompt": f"Who wrote book {i}?",
            "chosen": f"Author {i} wrote it." + " Truly." * (i % 3),
            "rejected": "No idea.",
            "kind": "fact" if i % 2 else "if",
        }  # fmt: skip
        for i in range(16)
    ]
    return {"sft": write_jsonl(d / "sft.jsonl", sft), "dpo": write_jsonl(d / "pairs.jsonl", pairs)}


def train_cmd(step: str, config: str | None, model: Path, data: dict, out: Path, *sets: str):
    """The command line the workflow's training rules run (see common.smk's launcher())."""
    launch = [sys.executable, "-m", f"flame.train_{step}"]
    if config:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(ACCEL / CONFIGS[config][0]), "--num_processes", "2",
                  "--main_process_port", "0", "-m", f"flame.train_{step}"]  # fmt: skip
    flag = "--data" if step == "sft" else "--pairs"
    args = ["--init", str(model), flag, str(data[step]), "--out", str(out), "--threads", "1",
            "--set", "global_batch_size=4", "--set", "max_length=64",
            "--set", "logging_steps=1"]  # fmt: skip
    for s in sets:
        args += ["--set", s]
    return launch + args


def run(cmd: list[str], log: Path, timeout: int = 600) -> dict:
    with log.open("w") as fh:
        res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
    text = log.read_text()
    assert res.returncode == 0, text[-3000:]
    out = Path(cmd[cmd.index("--out") + 1])
    summary = json.loads((out / "train_summary.json").read_text())
    summary["_log"] = text
    return summary


def check_min_lr_schedule(summary: dict, steps: int, peak: float, floor: float) -> None:
    """The learning rate the optimizer used at each step (log_history, every step) is the
    paper's cosine from `peak` towards the `floor`: lr_s = floor + (peak - floor) x (1 + cos(pi
    (s - 1) / steps)) / 2. A schedule that never decays, or decays to 0, fails."""
    import math

    assert [s for s, _ in summary["lr_history"]] == list(range(1, steps + 1)), summary["lr_history"]
    want = [floor + (peak - floor) * (1 + math.cos(math.pi * (s - 1) / steps)) / 2
            for s in range(1, steps + 1)]  # fmt: skip
    got = [lr for _, lr in summary["lr_history"]]
    assert got == pytest.approx(want, rel=1e-4), (got, want)
    assert got[-1] < 2 * floor  # the last step runs close to the floor


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("step", ["sft", "dpo"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_two_process_training_under_each_launcher(config, step, lora, tiny_model, data, tmp_path):
    """The paper recipe as it is (lr 1e-6 -> 1e-7 with cosine_with_min_lr: the schedule that
    crashed under ZeRO-3), 2 processes, fp32 chosen for the CPU; one process writes the model."""
    out = tmp_path / "model"
    summary = run(
        train_cmd(step, config, tiny_model, data, out, "max_steps=6",
                  "per_device_train_batch_size=2", f"use_lora={str(lora).lower()}"),
        tmp_path / "train.log",
    )  # fmt: skip
    assert summary["world_size"] == 2 and summary["distributed"] == CONFIGS[config][1]
    assert summary["global_step"] == 6 and summary["global_batch_size"] == 4
    assert summary["precision"] == "fp32" and summary["device"].startswith("cpu")
    assert summary["recipe"]["min_learning_rate"] == 1e-7
    check_min_lr_schedule(summary, steps=6, peak=1e-6, floor=1e-7)
    assert len(summary["peak_rss_mb_per_process"]) == 2
    # exactly one process saved: one "trained" line, one fingerprint, nothing left behind
    assert summary["_log"].count("INFO flame.training: trained 6 steps") == 1
    fingerprint = json.loads((out / "flame_fingerprint.json").read_text())
    assert f"train_{step}" in fingerprint["origin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train.log"]
    trained, init = weights(out), weights(tiny_model)
    assert init.keys() <= trained.keys()  # LoRA merged: a plain model, all weights gathered
    assert all(trained[k].shape == init[k].shape for k in init)
    # ZeRO-2 writes the tied output embedding out as well: the same tensor, loaded tied
    for key in trained.keys() - init.keys():
        assert key == "lm_head.weight"
        assert trained[key].equal(trained["model.embed_tokens.weight"])
    assert any(not trained[k].equal(init[k]) for k in init)


def test_deepspeed_dpo_with_precomputed_reference(tiny_model, data, tmp_path):
    """precompute_ref_log_probs: the reference log-probs are computed once (their cache must be
    visible to both processes) and the reference model is freed."""
    out = tmp_path / "model"
    summary = run(
        train_cmd("dpo", "zero3", tiny_model, data, out, "max_steps=2",
                  "per_device_train_batch_size=2", "precompute_ref_log_probs=true"),
        tmp_path / "train.log",
    )  # fmt: skip
    assert summary["recipe"]["precompute_ref_log_probs"] is True
    assert summary["global_step"] == 2 and summary["distributed"] == "DEEPSPEED ZeRO-3"
    assert "Computing reference log probs" in summary["_log"]


# flame.train_dpo's (or train_fdpo's) own CLI, the module named first, that also writes the
# reference log-probs TRL precomputed (main process, just before training) to OUT.ref.json
DUMP_REF = """
import json, runpy, sys
from flame import training

train_and_save = training.train_and_save


def dump_then_train(trainer, *args, **kwargs):
    if trainer.accelerator.is_main_process:
        data = trainer.train_dataset
        cols = ("prompt_ids", "chosen_ids", "ref_chosen_logps", "ref_rejected_logps")
        with open(sys.argv[sys.argv.index("--out") + 1] + ".ref.json", "w") as fh:
            json.dump(data.select_columns(list(cols)).to_dict(), fh)
    return train_and_save(trainer, *args, **kwargs)


training.train_and_save = dump_then_train
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("step", ["dpo", "fdpo"])
def test_zero3_full_parameter_precomputed_reference_matches_one_process(
    step, tiny_model, data, tmp_path
):
    """The paper's DPO set-up (full parameters, precompute_ref_log_probs) under ZeRO-3 with 2
    processes. 4 pairs, so each process's precompute pass is one batch: TRL's precompute engine,
    left on the policy, then crashed the first training forward (IndexError: pop from an empty
    deque, in DeepSpeed's record_parameters). The reference log-probs are those one process
    computes, pair by pair, and so is the loss at each step (the whole set is the global batch);
    F-DPO (flame.train_fdpo, lambda 1) takes the same path."""
    pairs = [json.loads(line) for line in data["dpo"].read_text().splitlines()[:4]]
    pairs = {step: write_jsonl(tmp_path / "pairs.jsonl",
                               [{**p, "delta_h": i % 2} for i, p in enumerate(pairs)])}  # fmt: skip
    (tmp_path / "dump_ref.py").write_text(DUMP_REF)
    found = {}
    for name, config, per_device in [("one", None, 4), ("zero3", "zero3", 2)]:
        cmd = train_cmd(step, config, tiny_model, pairs, tmp_path / name, "max_steps=2",
                        "learning_rate=1e-3", f"per_device_train_batch_size={per_device}",
                        "use_lora=false", "precompute_ref_log_probs=true")  # fmt: skip
        cmd[max(i for i, a in enumerate(cmd) if a == "-m")] = str(tmp_path / "dump_ref.py")
        cmd += ["--lam", "1"] if step == "fdpo" else []
        found[name] = run(cmd, tmp_path / f"{name}.log")
        found[name]["ref"] = json.loads((tmp_path / f"{name}.ref.json").read_text())
    one, multi = found["one"], found["zero3"]
    assert multi["world_size"] == 2 and multi["distributed"] == "DEEPSPEED ZeRO-3"
    assert multi["global_step"] == 2 and multi["per_device_train_batch_size"] == 2
    assert multi["recipe"]["use_lora"] is False and multi["recipe"]["precompute_ref_log_probs"]
    assert "Computing reference log probs" in multi["_log"]
    trained, init = weights(tmp_path / "zero3"), weights(tiny_model)
    assert any(not trained[k].equal(init[k]) for k in init)
    # the same pairs in the same order, with the same reference log-probs
    for col in ("prompt_ids", "chosen_ids"):
        assert multi["ref"][col] == one["ref"][col]
    for col in ("ref_chosen_logps", "ref_rejected_logps"):
        assert multi["ref"][col] == pytest.approx(one["ref"][col], rel=1e-5)
        assert len(set(multi["ref"][col])) == 4  # one value per pair, none repeated
    assert [s for s, _ in multi["loss_history"]] == [s for s, _ in one["loss_history"]] == [1, 2]
    for (_, a), (_, b) in zip(one["loss_history"], multi["loss_history"], strict=True):
        assert b == pytest.approx(a, rel=LOSS_RTOL)
    if step == "dpo":  # at step 1 the policy is the reference: the loss is log 2
        assert one["loss_history"][0][1] == pytest.approx(0.693147, rel=1e-4)
    assert one["loss_history"][1][1] != pytest.approx(one["loss_history"][0][1], rel=1e-3)


def test_empty_pair_set_under_two_processes_copies_once(tiny_model, data, tmp_path):
    """--allow-empty with zero pairs: the main process alone writes the init model unchanged (two
    processes copying into one temporary folder raced and failed)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "model"
    cmd = train_cmd("dpo", "zero3", tiny_model, {"dpo": empty}, out, "max_steps=2")
    summary = run([*cmd, "--allow-empty"], tmp_path / "train.log")
    assert summary["skipped"] == "zero preference pairs" and summary["global_step"] == 0
    assert weights(out).keys() == weights(tiny_model).keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "model", "train.log"]


EQUIV = {  # name -> (accelerate config or None, per-device batch); global batch 4 for all
    "one": (None, 4),
    "ddp": ("ddp", 2),
    "zero3": ("zero3", 2),
    "zero3_accum": ("zero3", 1),  # 1 x 2 processes x 2 accumulation steps
}


@pytest.fixture(scope="module")
def trajectories(tiny_model, data, tmp_path_factory) -> dict:
    """Loss per step of SFT (4 steps, lr 1e-3 so that the loss moves) under each set-up."""
    d = tmp_path_factory.mktemp("equiv")
    found = {}
    for name, (config, per_device) in EQUIV.items():
        found[name] = run(
            train_cmd("sft", config, tiny_model, data, d / name, "max_steps=4",
                      "learning_rate=1e-3", f"per_device_train_batch_size={per_device}"),
            d / f"{name}.log",
        )  # fmt: skip
    return found


@pytest.mark.parametrize("name", ["ddp", "zero3", "zero3_accum"])
def test_two_processes_match_one_at_the_same_global_batch(name, trajectories):
    one, multi = trajectories["one"], trajectories[name]
    per_device = EQUIV[name][1]
    # the global-batch arithmetic: accumulation derived per world size
    assert (one["world_size"], one["per_device_train_batch_size"]) == (1, 4)
    assert one["gradient_accumulation_steps"] == 1
    assert (multi["world_size"], multi["per_device_train_batch_size"]) == (2, per_device)
    assert multi["gradient_accumulation_steps"] == 4 // (2 * per_device)
    assert multi["global_batch_size"] == one["global_batch_size"] == 4
    steps = [s for s, _ in one["loss_history"]]
    assert steps == [1, 2, 3, 4] and [s for s, _ in multi["loss_history"]] == steps
    losses = [loss for _, loss in one["loss_history"]]
    assert losses[-1] < losses[0] - 0.05  # the trajectory really moves
    for (_, a), (_, b) in zip(one["loss_history"], multi["loss_history"], strict=True):
        assert b == pytest.approx(a, rel=LOSS_RTOL)


def test_deepspeed_run_resumes_after_kill(tiny_model, data, tmp_path):
    """SIGTERM (what Slurm and Snakemake send) a 2-process ZeRO-3 run after its first checkpoint;
    the same command resumes from it, finishes, and the model loads and generates."""
    out = tmp_path / "model"
    ckpt = tmp_path / "model.ckpt"
    cmd = train_cmd("sft", "zero3", tiny_model, data, out, "max_steps=30", "save_steps=2",
                    "per_device_train_batch_size=2")  # fmt: skip
    with (tmp_path / "first.log").open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while not list(ckpt.glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    time.sleep(1)
    assert not out.exists(), "a killed run must not leave a final model"
    layout = {p.name for p in ckpt.glob("checkpoint-*/*")}
    assert "latest" in layout and any(n.startswith("global_step") for n in layout)  # DeepSpeed's
    summary = run(cmd, tmp_path / "second.log")
    assert summary["resumed_from_step"] and summary["resumed_from_step"] >= 2
    assert summary["global_step"] == 30
    assert not ckpt.exists() and not out.with_name("model.tmp").exists()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tok("What is 2 plus 2?", return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 4
