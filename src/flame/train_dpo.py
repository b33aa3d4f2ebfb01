"""Direct preference optimisation (DPO) of the SFT model on preference pairs.

Each pair is one chat turn in TRL's conversational preference format: the instruction as the
user message, `chosen` and `rejected` as the two assistant messages (models without a chat
template get the plain transcript flame.lm renders). The reference model is the init (SFT) model:
TRL loads it from the same checkpoint folder (or, with LoRA, disables the adapter).

Paper (FLAME, section 5): 500 steps, batch 64, lr 1e-6 decaying to 1e-7, max length 2048,
beta 0.1; IF pairs and fact pairs are mixed in one training set.

Input records (JSONL): {"id", "prompt", "chosen", "rejected", "kind": "if"|"fact", ...}; extra
fields are ignored. A later variant adds columns by extending `to_example` / `COLUMNS` and passing
its own trainer class to `build_trainer`.
Output: a checkpoint folder OUT with the model, tokenizer, train_summary.json and the flame
fingerprint; OUT.ckpt/ holds Trainer checkpoints while training (a re-run resumes from them).

Example:
    python -m flame.train_dpo --init results/models/sft/SFT --pairs pairs.jsonl \\
        --out results/models/dpo/SFT+DPO --set max_steps=5 --set global_batch_size=2 --threads 2
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from flame import training
from flame.cli import run
from flame.io import PAIR_EXTRAS, RecordError, setup_logging, write_json

log = logging.getLogger("flame.train_dpo")

REQUIRED = ("prompt", "chosen", "rejected")
RECIPE = {
    **training.COMMON_RECIPE,
    "global_batch_size": (64, int),
    "beta": (0.1, float),
    "loss_type": ("sigmoid", list),  # TRL DPO loss names, e.g. sigmoid, ipo, robust
    # the reference model's log-probs computed once before training, then the reference is freed
    # (false: the reference stays loaded, sharded like the policy under ZeRO-3); see README
    "precompute_ref_log_probs": (False, bool),
}


def to_example(record: dict[str, Any], tokenizer) -> dict[str, Any]:
    """One pair in TRL's preference format (conversational when the model has a chat template)."""
    if getattr(tokenizer, "chat_template", None):
        return {
            "prompt": [{"role": "user", "content": record["prompt"]}],
            "chosen": [{"role": "assistant", "content": record["chosen"]}],
            "rejected": [{"role": "assistant", "content": record["rejected"]}],
        }
    from flame.lm import Prompt
    from flame.lm.hf import render

    return {
        "prompt": render(tokenizer, Prompt.chat(record["prompt"])),
        "chosen": " " + record["chosen"],
        "rejected": " " + record["rejected"],
    }


def build_dataset(
    records: list[dict],
    tokenizer,
    to_example=to_example,
    on_disk: Path | None = None,
    key: str = "",
):
    """The pairs as a datasets.Dataset; in memory, or saved under `on_disk` and memory-mapped
    from there. TRL writes precomputed reference log-probs next to the dataset's own files, so
    with several processes they must be in a folder every process sees (in memory, each process
    would look in a temporary folder of its own). A folder saved earlier from the same examples
    and `key` (what else the reference log-probs depend on: see `reference_key`) is kept as it
    is, with TRL's cached log-probs in it: a resumed run reuses them instead of recomputing."""
    from datasets import Dataset, load_from_disk

    examples = [to_example(r, tokenizer) for r in records]
    if on_disk is None:
        return Dataset.from_list(examples)
    from accelerate import PartialState

    digest = hashlib.sha256(json.dumps([key, examples], sort_keys=True).encode()).hexdigest()
    stamp = on_disk / "flame_pairs.sha256"  # written last: a complete folder for these pairs
    state = PartialState()
    with state.main_process_first():
        if state.is_main_process:
            if stamp.is_file() and stamp.read_text().strip() == digest:
                log.info("reusing %s (and any reference log-probs cached in it)", on_disk)
            else:
                shutil.rmtree(on_disk, ignore_errors=True)
                Dataset.from_list(examples).save_to_disk(on_disk)
                stamp.write_text(digest + "\n")
    return load_from_disk(str(on_disk))


def reference_key(init: str, recipe: dict[str, Any]) -> str:
    """What the reference log-probs depend on besides the pairs: the init weights (its flame
    fingerprint; TRL's own cache key hashes the weights, which under ZeRO-3 are empty shards on
    every process) and the recipe keys that change the reference forward."""
    folder = Path(init)
    fingerprint = folder / "flame_fingerprint.json"
    if fingerprint.is_file():
        weights = json.loads(fingerprint.read_text())["fingerprint"]
    else:  # no fingerprint: the weight files' names, sizes and modification times
        files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
        weights = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return json.dumps([weights] + [recipe[k] for k in ("dtype", "bf16", "max_length")])


def release_precompute_engine(trainer) -> None:
    """Remove the DeepSpeed engine TRL wrapped the policy in to precompute the reference
    log-probs (`_precompute_engine`, built whenever DeepSpeed is on and there is no separate
    reference model). TRL keeps it for later `evaluate` calls, so under ZeRO-3 its parameter
    hooks stay on the policy's modules next to those of the training engine, which renumbers
    the modules (ds_id). When the precompute pass was one batch per process, the stale engine's
    parameter trace is still being recorded, and the first training forward builds it from the
    old numbers: IndexError "pop from an empty deque" on every process (with longer passes its
    hooks still ran, next to the training engine's, on every step)."""
    engine = getattr(trainer, "_precompute_engine", None)
    if engine is None:
        return
    engine.destroy()  # ZeRO-3: removes the module hooks of its parameter coordinator
    trainer._precompute_engine = None


def build_trainer(
    init: str,
    records: list[dict],
    recipe: dict[str, Any],
    output_dir: Path,
    trainer_cls=None,
    to_example=to_example,
):
    """A DPOTrainer (or `trainer_cls`) for `records`; the reference is the init checkpoint."""
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(init)
    args = training.training_args(
        DPOConfig,
        recipe,
        output_dir,
        beta=recipe["beta"],
        loss_type=recipe["loss_type"],
        precompute_ref_log_probs=recipe["precompute_ref_log_probs"],
    )
    precompute = recipe["precompute_ref_log_probs"]
    trainer = (trainer_cls or DPOTrainer)(
        model=init,
        args=args,
        train_dataset=build_dataset(
            records,
            tokenizer,
            to_example,
            output_dir / "pairs_dataset" if precompute else None,
            reference_key(init, recipe) if precompute else "",
        ),
        processing_class=tokenizer,
        peft_config=training.lora_config(recipe),
    )
    release_precompute_engine(trainer)
    return trainer


def read_pairs(
    path: str | Path, required: tuple[str, ...] = REQUIRED, optional=PAIR_EXTRAS
) -> list[dict]:
    try:
        records = training.read_records(path, required, optional)
    except RecordError as err:
        if "no records" in str(err):
            raise RecordError(f"{path}: zero preference pairs: nothing to train DPO on") from None
        raise
    kinds = collections.Counter(str(r.get("kind", "unlabelled")) for r in records)
    log.info(
        "%d pairs from %s (%s)",
        len(records),
        path,
        ", ".join(f"{k}: {n}" for k, n in kinds.items()),
    )
    return records


def copy_unchanged(
    init: str, out: Path, pairs: str, recipe: dict, step: str = "dpo", why="zero preference pairs"
) -> dict:
    """Training on zero pairs (or, for SFT, zero examples) leaves the model as it is: the init
    checkpoint is copied (atomically), with a summary that says so. Its fingerprint is the
    init's: the weights are identical."""
    summary = {"step": step, "data": str(pairs), "examples": 0, "kept": 0, "global_step": 0,
               "skipped": why, "init": init, "recipe": recipe}  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:  # under a launcher, the main process alone copies
        return summary
    log.warning("%s: %s: %s is written unchanged from %s", pairs, why, out, init)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(init, tmp, ignore=shutil.ignore_patterns("train_summary.json"))
    write_json(tmp / "train_summary.json", summary)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return summary


def main(
    argv: list[str] | None = None,
    trainer_cls=None,
    to_example=to_example,
    required=REQUIRED,
    optional=PAIR_EXTRAS,
) -> dict:
    """The CLI; a variant (e.g. F-DPO with per-pair columns) passes its trainer class, its
    record->example function, its required fields and the shapes of its other fields."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    training.add_common_args(ap)
    ap.add_argument("--pairs", required=True, help="JSONL of {id, prompt, chosen, rejected, kind}")
    ap.add_argument(
        "--allow-empty",
        action="store_true",
        help="with zero pairs, write the init model unchanged (global_step 0) instead of failing",
    )
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    recipe = training.load_recipe(RECIPE, args.recipe, args.set)
    if args.allow_empty and not any(line.strip() for line in Path(args.pairs).open()):
        return copy_unchanged(args.init, Path(args.out), args.pairs, recipe)
    records = read_pairs(args.pairs, required, optional)
    training.set_threads(args.threads)
    paths = training.RunPaths(Path(args.out))
    trainer = build_trainer(args.init, records, recipe, paths.ckpt, trainer_cls, to_example)
    kept = len(trainer.train_dataset)
    if kept < len(records):
        log.warning("%d pairs dropped (prompt fills max_length)", len(records) - kept)
    kinds = collections.Counter(str(r.get("kind", "unlabelled")) for r in records)
    summary = {"step": "dpo", "data": str(args.pairs), "examples": len(records), "kept": kept,
               "kinds": dict(kinds)}  # fmt: skip
    origin = f"flame.train_dpo init={args.init} pairs={args.pairs}"
    return training.train_and_save(trainer, args.init, paths, recipe, summary, origin)


if __name__ == "__main__":
    run(main)
