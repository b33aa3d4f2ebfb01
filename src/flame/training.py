"""Shared machinery of the training steps (flame.train_sft, flame.train_dpo).

- Recipes: a flat YAML mapping of the keys in a step's RECIPE spec (paper defaults), then
  `--set key=value` overrides; an unknown key or a value of the wrong type fails naming the key.
- Trainer arguments: fp32 on CPU, bf16 on GPU; the global batch (paper: 32 SFT, 64 DPO) is split
  into per-device batch x devices x gradient accumulation; "lr decaying to min_learning_rate" is
  transformers' cosine_with_min_lr (or polynomial with power 1 = linear to lr_end).
- Runs: Trainer checkpoints go to OUT.ckpt/ (a re-run resumes from the last complete one); the final
  model (LoRA merged into the base weights) is saved to OUT.tmp/ with its tokenizer,
  train_summary.json and flame fingerprint, then renamed to OUT; OUT.ckpt/ is then removed.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flame.io import RecordError, read_jsonl, write_json

log = logging.getLogger("flame.training")

# key -> (paper default, type). Types: int, float, bool, str, list (a str becomes a 1-item list).
COMMON_RECIPE: dict[str, tuple[Any, type]] = {
    "max_steps": (500, int),
    "global_batch_size": (32, int),  # split into per-device batch x devices x accumulation
    "per_device_train_batch_size": (4, int),
    "gradient_accumulation_steps": (None, int),  # null: derived from global_batch_size
    "learning_rate": (1e-6, float),
    "min_learning_rate": (1e-7, float),  # null or 0: no floor (plain scheduler)
    "lr_scheduler_type": ("cosine", str),
    "warmup_ratio": (0.0, float),
    "max_length": (2048, int),
    "seed": (42, int),
    "logging_steps": (10, int),
    "save_steps": (100, int),
    "save_total_limit": (2, int),
    "use_lora": (False, bool),
    "lora_r": (16, int),
    "lora_alpha": (32, int),
    "lora_dropout": (0.05, float),
    "lora_target_modules": ("all-linear", list),
    "dtype": ("float32", str),  # weights as loaded for training (bf16 autocast comes on top)
    "bf16": (None, bool),  # null: bf16 autocast on GPU, fp32 on CPU (bf16 is ~3x slower there)
    "gradient_checkpointing": (None, bool),  # null: on for GPU, off for CPU
}


class RecipeError(ValueError):
    """A bad recipe key or value; the message names the key and where it came from."""


def _coerce(key: str, value: Any, typ: type, where: str) -> Any:
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
        return None
    try:
        if typ is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            if isinstance(value, bool):
                return value
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)  # also reads "1e-6", which YAML 1.1 leaves as a string
        if typ is list:
            return [value] if isinstance(value, str) else [str(v) for v in value]
        return str(value)
    except (TypeError, ValueError):
        raise RecipeError(
            f"{where}: recipe key {key!r} expects {typ.__name__}, got {value!r}"
        ) from None


def load_recipe(
    spec: dict[str, tuple[Any, type]], path: str | None = None, sets: list[str] | None = None
) -> dict[str, Any]:
    """Paper defaults from `spec`, then the YAML file at `path`, then `key=value` overrides."""
    recipe = {k: default for k, (default, _) in spec.items()}
    layers: list[tuple[str, dict]] = []
    if path:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise RecipeError(f"{path}: a recipe must be a mapping of key: value")
        layers.append((str(path), data))
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise RecipeError(f"--set {item!r}: expected key=value")
        layers.append((f"--set {item}", {key.strip(): yaml.safe_load(value)}))
    for where, data in layers:
        for key, value in data.items():
            if key not in spec:
                raise RecipeError(
                    f"{where}: unknown recipe key {key!r}; known keys: {', '.join(sorted(spec))}"
                )
            recipe[key] = _coerce(key, value, spec[key][1], where)
    return recipe


def read_records(
    path: str | Path, fields: tuple[str, ...], optional: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """JSONL records that each carry `fields` as non-empty strings (and `optional`'s fields, where
    present, in their shapes: see flame.io.read_jsonl); errors name file:line."""
    records = read_jsonl(path, required=fields, optional=optional)
    if not records:
        raise RecordError(f"{path}: no records (empty file)")
    for i, rec in enumerate(records):
        bad = [f for f in fields if not isinstance(rec[f], str) or not rec[f].strip()]
        if bad:
            with open(path, encoding="utf-8") as fh:
                lineno = [n for n, line in enumerate(fh, 1) if line.strip()][i]
            raise RecordError(f"{path}:{lineno}: field(s) {', '.join(bad)} must be non-empty text")
    return records


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def training_args(config_cls, recipe: dict[str, Any], output_dir: Path, **extra):
    """The TRL config (SFTConfig/DPOConfig) for a recipe, for this machine and world size."""
    import torch

    cuda = torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = recipe["per_device_train_batch_size"]
    accum = recipe["gradient_accumulation_steps"]
    if accum is None:
        # a global batch smaller than one step's worth shrinks the per-device batch
        per_device = max(1, min(per_device, recipe["global_batch_size"] // world))
        per_step = per_device * world
        if recipe["global_batch_size"] % per_step:
            raise RecipeError(
                f"recipe key 'global_batch_size' ({recipe['global_batch_size']}) is not a multiple "
                f"of per_device_train_batch_size x processes ({per_device} x {world})"
            )
        accum = recipe["global_batch_size"] // per_step
    scheduler, sched_kwargs = recipe["lr_scheduler_type"], {}
    floor = recipe["min_learning_rate"]
    if floor and scheduler in ("cosine", "cosine_with_min_lr"):
        # the floor as a ratio: transformers' `min_lr` reads optimizer.defaults, which
        # DeepSpeed's ZeRO optimizer wrappers lack (AttributeError at the first step)
        scheduler = "cosine_with_min_lr"
        sched_kwargs = {"min_lr_rate": floor / recipe["learning_rate"]}
    elif floor and scheduler in ("linear", "polynomial"):
        scheduler, sched_kwargs = "polynomial", {"lr_end": floor, "power": 1.0}
    bf16 = cuda if recipe["bf16"] is None else recipe["bf16"]
    # One decision for the trainer and the launcher: accelerate launch exports the mixed
    # precision of its config file, and DeepSpeed's config must agree with the trainer's.
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if bf16 else "no"
    checkpointing = (
        cuda if recipe["gradient_checkpointing"] is None else recipe["gradient_checkpointing"]
    )
    log.info(
        "batch: %d per device x %d processes x %d accumulation = %d; lr %g -> %s (%s); %s",
        per_device, world, accum, per_device * world * accum, recipe["learning_rate"],
        floor, scheduler, "bf16" if bf16 else "fp32",
    )  # fmt: skip
    return config_cls(
        output_dir=str(output_dir),
        max_steps=recipe["max_steps"],
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        learning_rate=recipe["learning_rate"],
        lr_scheduler_type=scheduler,
        lr_scheduler_kwargs=sched_kwargs,
        warmup_steps=recipe["warmup_ratio"],  # a float in [0, 1) is a ratio of max_steps
        max_length=recipe["max_length"],
        seed=recipe["seed"],
        logging_steps=recipe["logging_steps"],
        save_strategy="steps",
        save_steps=recipe["save_steps"],
        save_total_limit=recipe["save_total_limit"],
        bf16=bf16,
        activation_checkpointing=checkpointing,  # transformers 5 name of gradient_checkpointing
        use_cpu=not cuda,
        model_init_kwargs={"dtype": recipe["dtype"]},
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **extra,
    )


def lora_config(recipe: dict[str, Any]):
    if not recipe["use_lora"]:
        return None
    from peft import LoraConfig

    targets = recipe["lora_target_modules"]
    targets = "all-linear" if targets in ("all-linear", ["all-linear"]) else list(targets)
    return LoraConfig(
        r=recipe["lora_r"],
        lora_alpha=recipe["lora_alpha"],
        lora_dropout=recipe["lora_dropout"],
        target_modules=targets,
        task_type="CAUSAL_LM",
    )


@dataclass(frozen=True)
class RunPaths:
    """OUT (final model), OUT.tmp (being written), OUT.ckpt (Trainer checkpoints for resume)."""

    out: Path

    @property
    def tmp(self) -> Path:
        return self.out.with_name(self.out.name + ".tmp")

    @property
    def ckpt(self) -> Path:
        return self.out.with_name(self.out.name + ".ckpt")

    @property
    def adapter(self) -> Path:
        return self.out.with_name(self.out.name + ".adapter")


def checkpoint_complete(path: Path) -> bool:
    """Trainer writes trainer_state.json after the weights and optimizer state; a DeepSpeed
    checkpoint must also hold the engine state its `latest` file names (a checkpoint whose removal
    was interrupted can keep trainer_state.json without it: found on the first rehearsal)."""
    if not (path / "trainer_state.json").exists():
        return False
    deepspeed = any(path.glob("global_step*")) or any(path.glob("zero_to_*.py"))
    if deepspeed:
        latest = path / "latest"
        return latest.is_file() and (path / latest.read_text().strip()).is_dir()
    return True


def last_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest complete checkpoint or None."""
    if not ckpt_dir.is_dir():
        return None
    found = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if checkpoint_complete(path):
            return str(path)
        log.warning("ignoring incomplete checkpoint %s", path)
    return None


def remove_tree(path: Path) -> None:
    """Remove a folder so that an interruption never leaves part of it at `path`: it is renamed
    away first (atomic), then deleted; a leftover `.NAME.del-*` is removed by the next run."""
    for stale in path.parent.glob(f".{path.name}.del-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if not path.exists():
        return
    trash = path.with_name(f".{path.name}.del-{os.getpid()}-{time.time_ns()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 1024)


def train_and_save(trainer, init: str, paths: RunPaths, recipe: dict, summary: dict, origin: str):
    """Train (resuming from OUT.ckpt if any), then write OUT atomically; return the summary."""
    from flame.models import write_fingerprint

    t0 = time.time()
    main = trainer.accelerator.is_main_process
    resume = last_checkpoint(paths.ckpt)
    start_step = 0
    if resume:
        from transformers import TrainerState

        start_step = TrainerState.load_from_json(f"{resume}/trainer_state.json").global_step
        log.info("resuming from %s (step %d)", resume, start_step)
    result = trainer.train(resume_from_checkpoint=resume)
    train_s = time.time() - t0
    args = trainer.args
    batch = args.per_device_train_batch_size * args.world_size * args.gradient_accumulation_steps
    done = trainer.state.global_step - start_step
    summary = {
        **summary,
        "init": init,
        "train_loss": result.training_loss,
        "global_step": trainer.state.global_step,
        "resumed_from_step": start_step if resume else None,
        "global_batch_size": batch,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "examples_per_s": done * batch / train_s if train_s > 0 else None,
        "train_wall_s": round(train_s, 2),
        "world_size": args.world_size,
        "distributed": distributed_type(trainer),
        "device": str(args.device),
        "precision": "bf16" if args.bf16 else "fp32",
        "loss_history": [
            [entry["step"], entry["loss"]] for entry in trainer.state.log_history if "loss" in entry
        ],
        # the learning rate the scheduler set at each logged step (what the optimizer used)
        "lr_history": [
            [entry["step"], entry["learning_rate"]]
            for entry in trainer.state.log_history
            if "learning_rate" in entry
        ],
        "recipe": recipe,
    }
    if main:
        shutil.rmtree(paths.tmp, ignore_errors=True)
        shutil.rmtree(paths.adapter, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    # every process takes part in saving (ZeRO-3 gathers the sharded weights); only the main
    # process writes files
    trainer.save_model(str(paths.adapter if recipe["use_lora"] else paths.tmp))
    rss = gather_floats(trainer.accelerator, peak_rss_mb())
    if not main:
        return summary
    if recipe["use_lora"]:
        merge_lora(init, paths.adapter, paths.tmp, recipe["dtype"])
        shutil.rmtree(paths.adapter)
    trainer.processing_class.save_pretrained(paths.tmp)
    summary["wall_s"] = round(time.time() - t0, 2)
    summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
    summary["peak_rss_mb_per_process"] = [round(x, 1) for x in rss]
    write_json(paths.tmp / "train_summary.json", summary)
    summary["fingerprint"] = write_fingerprint(paths.tmp, origin=origin)
    old = paths.out.with_name(paths.out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if paths.out.exists():
        paths.out.rename(old)
    paths.tmp.rename(paths.out)
    shutil.rmtree(old, ignore_errors=True)
    remove_tree(paths.ckpt)
    log.info(
        "trained %d steps (loss %.4f, %.2f examples/s, %.0f s, peak RSS %.0f MB) -> %s",
        summary["global_step"], summary["train_loss"], summary["examples_per_s"] or 0,
        summary["wall_s"], summary["peak_rss_mb"], paths.out,
    )  # fmt: skip
    return summary


def distributed_type(trainer) -> str:
    """How the run was spread: NO (one process), MULTI_CPU / MULTI_GPU (DDP) or DEEPSPEED
    (with its ZeRO stage)."""
    state = trainer.accelerator.state
    kind = str(state.distributed_type).split(".")[-1]
    plugin = getattr(state, "deepspeed_plugin", None)
    return f"{kind} ZeRO-{plugin.zero_stage}" if plugin is not None else kind


def gather_floats(accelerator, value: float) -> list[float]:
    """`value` from every process, in rank order (a barrier: every process must call it)."""
    from accelerate.utils import gather_object

    if accelerator.num_processes == 1:
        return [value]
    return [float(v) for v in gather_object([value])]


def merge_lora(init: str, adapter: Path, out: Path, dtype: str) -> None:
    """Load the base weights, fold the trained LoRA adapter into them and save a plain model."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    # Training is over and only this process merges: under ZeRO-3 from_pretrained would
    # otherwise partition the base weights across processes that have already left.
    unset_hf_deepspeed_config()
    base = AutoModelForCausalLM.from_pretrained(init, dtype=getattr(torch, dtype))
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    log.info("merged the LoRA adapter %s into %s", adapter, init)


def add_common_args(ap) -> None:
    ap.add_argument("--init", required=True, help="checkpoint folder to start from")
    ap.add_argument("--out", required=True, help="model folder to write (atomically)")
    ap.add_argument("--recipe", help="YAML mapping of recipe keys (paper defaults otherwise)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override one recipe key (repeatable)")  # fmt: skip
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--log-level", default="INFO")
