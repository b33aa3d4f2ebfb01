"""Supervised fine-tuning (SFT): train the pre-trained model on instruction/response pairs.

Each record is one chat turn: the instruction as the user message, the response as the assistant
message, rendered with the tokenizer's chat template (models without one get the plain
"User: ...\\n\\nAssistant:" transcript that flame.lm uses). The loss covers only the response
tokens (TRL's conversational prompt-completion format with completion-only loss).

Paper (FLAME, section 5): 500 steps, batch 32, lr 1e-6 decaying to 1e-7, max length 2048.

Input records (JSONL): {"id", "instruction", "response", ...}; extra fields are ignored.
Output: a checkpoint folder OUT with the model, tokenizer, train_summary.json and the flame
fingerprint; OUT.ckpt/ holds Trainer checkpoints while training (a re-run resumes from them).

Example:
    python -m flame.train_sft --init results/models/base/smollm2 --data sft.jsonl \\
        --out results/models/sft/SFT --set max_steps=10 --set global_batch_size=4 --threads 2
    accelerate launch --config_file workflow/accelerate/deepspeed_zero3.yaml \\
        -m flame.train_sft --init PT --data sft.jsonl --out results/models/sft/SFT
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from flame import training
from flame.cli import run
from flame.io import setup_logging

log = logging.getLogger("flame.train_sft")

REQUIRED = ("instruction", "response")
RECIPE = dict(training.COMMON_RECIPE)  # paper defaults: batch 32, 500 steps, lr 1e-6 -> 1e-7


def to_example(record: dict[str, Any], tokenizer) -> dict[str, Any]:
    """One record in TRL's prompt-completion format (conversational when the model has a chat
    template, otherwise the plain transcript flame.lm renders for template-less models)."""
    if getattr(tokenizer, "chat_template", None):
        return {
            "prompt": [{"role": "user", "content": record["instruction"]}],
            "completion": [{"role": "assistant", "content": record["response"]}],
        }
    from flame.lm import Prompt
    from flame.lm.hf import render

    return {
        "prompt": render(tokenizer, Prompt.chat(record["instruction"])),
        "completion": " " + record["response"],
    }


def build_trainer(init: str, records: list[dict], recipe: dict[str, Any], output_dir: Path):
    """An SFTTrainer for `records`, starting from the checkpoint `init`."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(init)
    dataset = Dataset.from_list([to_example(r, tokenizer) for r in records])
    args = training.training_args(SFTConfig, recipe, output_dir, completion_only_loss=True)
    return SFTTrainer(
        model=init,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=training.lora_config(recipe),
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    training.add_common_args(ap)
    ap.add_argument("--data", required=True, help="JSONL of {id, instruction, response}")
    ap.add_argument(
        "--allow-empty",
        action="store_true",
        help="with zero examples, write the init model unchanged (global_step 0), not fail",
    )
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    recipe = training.load_recipe(RECIPE, args.recipe, args.set)
    if args.allow_empty and not any(line.strip() for line in Path(args.data).open()):
        from flame.train_dpo import copy_unchanged

        return copy_unchanged(args.init, Path(args.out), args.data, recipe, "sft", "zero examples")
    records = training.read_records(args.data, REQUIRED)
    log.info("%d SFT examples from %s", len(records), args.data)
    training.set_threads(args.threads)
    paths = training.RunPaths(Path(args.out))
    trainer = build_trainer(args.init, records, recipe, paths.ckpt)
    kept = len(trainer.train_dataset)
    if kept < len(records):
        log.warning("%d examples dropped (prompt fills max_length)", len(records) - kept)
    summary = {"step": "sft", "data": str(args.data), "examples": len(records), "kept": kept}
    origin = f"flame.train_sft init={args.init} data={args.data}"
    return training.train_and_save(trainer, args.init, paths, recipe, summary, origin)


if __name__ == "__main__":
    run(main)
