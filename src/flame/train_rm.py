"""A Bradley-Terry factuality reward model, distilled from RM_fact (FLAME's FActScore reward).

Pairs: for every fact-based prompt, each two responses whose RM_fact rewards differ by at least
--min-gap make a pair (higher = chosen); with --pairs max_min only FLAME's highest-vs-lowest pair
per prompt. Prompts are split (seeded) into training and held-out sets by --heldout.
Model: the init checkpoint with a one-output sequence-classification head (TRL RewardTrainer),
prompt and response as one chat turn; loss -log sigmoid(r_chosen - r_rejected - margin), where
margin = --margin-scale x the RM_fact gap (0: no margin column), plus the recipe key
center_rewards_coefficient x mean (r_c + r_r)^2 when set (reward centering; 0.01 recommended).
LoRA is not offered here: the whole model and its head are trained.

Output: the reward model folder (atomic, with train_summary.json and the flame fingerprint) and
--metrics: pairwise accuracy against RM_fact's order on the training and the held-out pairs.
With zero training pairs (every response of a prompt got the same RM_fact) the run fails, or,
with --allow-empty, writes an untrained marker: the folder holds only train_summary.json
({"trained": false, "skipped": why}), the metrics say the same, and flame.rm_bt --allow-untrained
then scores nothing (no numbers are made up).

Example:
    python -m flame.train_rm --init results/models/sft/SFT \\
        --samples results/dpo/SFT/samples.jsonl --rm-fact results/dpo/SFT/rm_fact.jsonl \\
        --out results/models/rm/RM_BT --metrics results/rm/RM_BT_metrics.json \\
        --set max_steps=10 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

from flame import training
from flame.cli import run
from flame.io import EXTRAS, SAMPLES, SCORES, read_json, read_jsonl, setup_logging, write_json

log = logging.getLogger("flame.train_rm")

RECIPE = {
    **training.COMMON_RECIPE,
    "learning_rate": (1e-5, float),
    "center_rewards_coefficient": (None, float),  # Tunix tutorial / TRL: 0.01
}


def fact_pairs(samples, rm_fact, how="all", min_gap=0.0) -> list[dict]:
    """(prompt, chosen, rejected, gap) from responses ordered by RM_fact; ties never pair."""
    pairs = []
    for s in samples:
        scores = rm_fact.get(s["id"])
        if not scores:
            continue
        known = [(sc, j) for j, sc in enumerate(scores) if sc is not None]
        if how == "max_min":
            if len(known) < 2:
                continue
            hi, lo = max(known, key=lambda t: (t[0], -t[1])), min(known, key=lambda t: t)
            cands = [(hi, lo)]
        else:
            cands = [(a, b) for a in known for b in known if a[0] > b[0]]
        for (sa, a), (sb, b) in cands:
            if sa - sb > 0 and sa - sb >= min_gap:
                pairs.append({"id": f"{s['id']}:{a}>{b}", "group": s["id"],
                              "prompt": s["instruction"], "chosen": s["responses"][a],
                              "rejected": s["responses"][b], "gap": sa - sb})  # fmt: skip
    return pairs


def tie_report(samples, rm_fact) -> dict[str, int]:
    """How many prompts have two or more RM_fact scores, and how many of those all tie."""
    scored = tied = 0
    for s in samples:
        known = [sc for sc in rm_fact.get(s["id"]) or [] if sc is not None]
        if len(known) >= 2:
            scored += 1
            tied += len(set(known)) == 1
    return {"prompts_scored": scored, "prompts_all_tied": tied}


def untrained_reason(model_dir: str | Path) -> str | None:
    """Why a reward model folder holds no trained model (flame.train_rm --allow-empty), or None."""
    summary = Path(model_dir) / "train_summary.json"
    if not summary.exists():
        return None
    info = read_json(summary)
    if info.get("step") == "reward_model" and info.get("trained") is False:
        return str(info.get("skipped", "not trained"))
    return None


def write_untrained(out: Path, metrics_path: str, metrics: dict, why: str, init: str) -> dict:
    """The empty-pairs outcome: a folder with only the summary (atomic), and the metrics."""
    metrics = {**metrics, "trained": False, "skipped": why,
               "train_accuracy": None, "heldout_accuracy": None, "train_loss": None}  # fmt: skip
    if int(os.environ.get("RANK", "0")) != 0:  # under a launcher, the main process alone writes
        return metrics
    log.warning("%s: no reward model trained: %s", out, why)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_json(tmp / "train_summary.json",
               {"step": "reward_model", "init": init, "examples": 0, **metrics})  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    write_json(metrics_path, metrics)
    return metrics


def split(pairs: list[dict], heldout: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Held-out prompts (not pairs), so no response is on both sides."""
    groups = sorted({p["group"] for p in pairs})
    random.Random(seed).shuffle(groups)
    n = round(len(groups) * heldout)
    if heldout > 0 and len(groups) >= 2:
        n = min(max(n, 1), len(groups) - 1)
    held = set(groups[:n])
    return [p for p in pairs if p["group"] not in held], [p for p in pairs if p["group"] in held]


def to_example(pair: dict, tokenizer, margin_scale: float) -> dict[str, Any]:
    ex = {"chosen": messages(pair["prompt"], pair["chosen"], tokenizer),
          "rejected": messages(pair["prompt"], pair["rejected"], tokenizer)}  # fmt: skip
    if margin_scale:
        ex["margin"] = margin_scale * pair["gap"]
    return ex


def messages(prompt: str, response: str, tokenizer):
    if getattr(tokenizer, "chat_template", None):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    from flame.lm import Prompt
    from flame.lm.hf import render

    return render(tokenizer, Prompt.chat(prompt)) + " " + response


def score(model, tokenizer, prompts, responses, batch_size=16, max_length=None) -> list[float]:
    """The reward of each (prompt, response), tokenised as in training."""
    import torch

    texts = []
    for p, r in zip(prompts, responses, strict=True):
        m = messages(p, r, tokenizer)
        texts.append(tokenizer.apply_chat_template(m, tokenize=False) if isinstance(m, list) else m)
    out: list[float] = []
    tokenizer.padding_side = "right"
    model.eval()
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True,
                        truncation=max_length is not None, max_length=max_length,
                        add_special_tokens=False)  # fmt: skip
        with torch.no_grad():
            out += model(**enc).logits[:, 0].float().tolist()
    return out


def accuracy(model, tokenizer, pairs, max_length=None) -> float | None:
    """Share of pairs the reward model orders as RM_fact does (ties count half)."""
    if not pairs:
        return None
    prompts = [p["prompt"] for p in pairs]
    rc = score(model, tokenizer, prompts, [p["chosen"] for p in pairs], max_length=max_length)
    rr = score(model, tokenizer, prompts, [p["rejected"] for p in pairs], max_length=max_length)
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rc, rr, strict=True)) / len(
        pairs
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    training.add_common_args(ap)
    ap.add_argument(
        "--samples", required=True, nargs="+", help="JSONL {id, instruction, responses}"
    )
    ap.add_argument(
        "--rm-fact", required=True, nargs="+", help="JSONL {id, scores}, one per --samples"
    )
    ap.add_argument("--metrics", required=True, help="JSON: pairwise accuracy vs RM_fact")
    ap.add_argument("--pairs", choices=("all", "max_min"), default="all")
    ap.add_argument("--min-gap", type=float, default=0.0)
    ap.add_argument("--margin-scale", type=float, default=0.0, help="margin = scale x RM_fact gap")
    ap.add_argument("--heldout", type=float, default=0.2, help="share of prompts held out")
    ap.add_argument(
        "--allow-empty",
        action="store_true",
        help="with zero training pairs, write an untrained marker instead of failing",
    )
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    if len(args.samples) != len(args.rm_fact):
        raise SystemExit("error: give one --rm-fact file per --samples file")
    recipe = training.load_recipe(RECIPE, args.recipe, args.set)
    if recipe["use_lora"]:
        raise SystemExit("error: recipe key use_lora: the reward model trains the whole model")
    pairs, ties = [], {"prompts_scored": 0, "prompts_all_tied": 0}
    for sp, rp in zip(args.samples, args.rm_fact, strict=True):
        samples = read_jsonl(sp, SAMPLES, optional=EXTRAS)
        rm = {r["id"]: r["scores"] for r in read_jsonl(rp, SCORES)}
        pairs += fact_pairs(samples, rm, args.pairs, args.min_gap)
        for k, v in tie_report(samples, rm).items():
            ties[k] += v
    train, held = split(pairs, args.heldout, recipe["seed"])
    log.info("%d fact pairs: %d for training, %d held out (%s)", len(pairs), len(train),
             len(held), ties)  # fmt: skip
    counts = {"pairs": len(pairs), "train_pairs": len(train), "heldout_pairs": len(held), **ties,
              "pair_selection": args.pairs, "min_gap": args.min_gap,
              "margin_scale": args.margin_scale,
              "center_rewards_coefficient": recipe["center_rewards_coefficient"]}  # fmt: skip
    if not train:
        why = (
            f"zero RM_fact pairs ({ties['prompts_scored']} prompts with 2+ scored "
            f"responses, {ties['prompts_all_tied']} of them all tied; min_gap {args.min_gap})"
        )
        if not ties["prompts_scored"]:
            why += "; RM_fact scores only prompts classified fact-based"
        if not args.allow_empty:
            raise SystemExit(f"error: {', '.join(args.rm_fact)}: {why}: nothing to train on")
        return write_untrained(Path(args.out), args.metrics, counts, why, args.init)
    training.set_threads(args.threads)
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.init)
    paths = training.RunPaths(Path(args.out))
    config = training.training_args(
        RewardConfig, recipe, paths.ckpt,
        center_rewards_coefficient=recipe["center_rewards_coefficient"],
    )  # fmt: skip
    data = Dataset.from_list([to_example(p, tokenizer, args.margin_scale) for p in train])
    trainer = RewardTrainer(
        model=args.init, args=config, train_dataset=data, processing_class=tokenizer
    )
    summary = {"step": "reward_model", "trained": True, "data": args.rm_fact,
               "examples": len(train),
               "kept": len(trainer.train_dataset), "margin_scale": args.margin_scale}  # fmt: skip
    origin = f"flame.train_rm init={args.init} rm_fact={','.join(args.rm_fact)}"
    summary = training.train_and_save(trainer, args.init, paths, recipe, summary, origin)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(paths.out)
    metrics = {
        **counts,
        "trained": True,
        "train_accuracy": accuracy(model, tokenizer, train, recipe["max_length"]),
        "heldout_accuracy": accuracy(model, tokenizer, held, recipe["max_length"]),
        "train_loss": summary.get("train_loss"),
    }
    write_json(args.metrics, metrics)
    log.info("reward model: %s", metrics)
    return metrics


if __name__ == "__main__":
    run(main)
