"""F-DPO training (Chaduvula et al., arXiv 2601.03027): DPO with a hallucination margin.

Loss per pair: -log sigmoid(beta * (m - lambda * delta_h)), where m is DPO's difference of
policy/reference log-ratios (chosen minus rejected) and delta_h = h_l - h_w in {0, 1} comes from
flame.fdpo. A pair whose rejected answer is hallucinated and whose chosen one is not must then
win by a margin of lambda nats; lambda = 0 (or delta_h = 0) is TRL's sigmoid DPO loss.

How it sits on TRL: `FDPOTrainer` subclasses `trl.DPOTrainer`. The per-pair `delta_h` column
is kept through TRL's column pruning (signature columns), carried by `FDPOCollator` (TRL's
preference collator plus one tensor), and popped before the forward. `_compute_loss` computes
the reference log-probs itself and hands TRL's own loss the reference chosen log-prob raised by
lambda * delta_h: TRL's sigmoid loss then reads -log sigmoid(beta * (m - lambda * delta_h)), and
every other part of TRL's step (PEFT reference, DeepSpeed, metrics) is unchanged. TRL's logged
rewards/chosen and rewards/margins therefore include the penalty; fdpo/penalty logs its mean.

Everything else (recipe, LoRA, checkpoints, resume, atomic output) is flame.train_dpo's; this
module adds --lam and --quantize (nf4: QLoRA through bitsandbytes, GPU only; on CPU plain LoRA,
recorded in train_summary.json as quantize none with quantize_requested nf4).
F-DPO's paper settings (workflow/configs/fdpo.yaml): QLoRA r 32, alpha 64, lr 1.8e-6, 3 epochs,
beta 0.1; lambda grid 0, 2, 4, 6, 8, 10, 20, 30, 50, 100.

Example:
    python -m flame.train_fdpo --lam 10 --init results/models/sft/SFT \\
        --pairs results/fdpo/SFT/pairs_FDPO.jsonl --out results/models/dpo/SFT+FDPO_l10 \\
        --set max_steps=5 --set use_lora=true --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
from pathlib import Path
from typing import Any

from flame import train_dpo, training
from flame.cli import run
from flame.io import PAIR_EXTRAS, RecordError, read_json, write_json

log = logging.getLogger("flame.train_fdpo")


def to_example(record: dict[str, Any], tokenizer) -> dict[str, Any]:
    """flame.train_dpo's preference example plus the pair's delta_h (0 or 1)."""
    delta_h = record.get("delta_h")
    if delta_h not in (0, 1) or isinstance(delta_h, bool):
        raise RecordError(f"pair {record.get('id')!r}: delta_h must be 0 or 1, got {delta_h!r}")
    return {**train_dpo.to_example(record, tokenizer), "delta_h": float(delta_h)}


def _classes():
    """The trainer and collator classes (defined on first use: importing TRL costs seconds)."""
    import torch
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    @dataclasses.dataclass
    class FDPOCollator(DataCollatorForPreference):
        """TRL's preference collator, plus `delta_h` as a float tensor (one value per pair)."""

        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().torch_call(examples)
            out["delta_h"] = torch.tensor([float(e["delta_h"]) for e in examples])
            return out

    class FDPOTrainer(DPOTrainer):
        """DPOTrainer with F-DPO's loss -log sigmoid(beta * (m - lam * delta_h))."""

        def __init__(self, *args, lam: float = 0.0, **kwargs):
            super().__init__(*args, **kwargs)
            if list(self.loss_types) != ["sigmoid"] or self.f_divergence_type != "reverse_kl":
                raise ValueError(
                    "F-DPO needs loss_type ['sigmoid'] and f_divergence_type 'reverse_kl'; got "
                    f"{self.loss_types} and {self.f_divergence_type!r}"
                )
            self.lam = float(lam)
            if isinstance(self.data_collator, DataCollatorForPreference):
                fields = {f.name: getattr(self.data_collator, f.name)
                          for f in dataclasses.fields(self.data_collator)}  # fmt: skip
                self.data_collator = FDPOCollator(**fields)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "delta_h" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "delta_h"]

        def _compute_loss(self, model, inputs, return_outputs):
            inputs = dict(inputs)
            delta_h = inputs.pop("delta_h")
            if self.precompute_ref_logps:
                ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
            else:
                ref = self.ref_model if self.ref_model is not None else model
                ref_chosen, ref_rejected = self.compute_ref_log_probs(ref, inputs)
            penalty = self.lam * delta_h.to(device=ref_chosen.device, dtype=ref_chosen.dtype)
            inputs["ref_chosen_logps"] = ref_chosen + penalty
            inputs["ref_rejected_logps"] = ref_rejected
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["fdpo/penalty"].append(
                self.accelerator.gather(self.beta * penalty).mean().item()
            )
            precompute, self.precompute_ref_logps = self.precompute_ref_logps, True
            try:
                return super()._compute_loss(model, inputs, return_outputs)
            finally:
                self.precompute_ref_logps = precompute

    return FDPOTrainer, FDPOCollator


def quantized_as(quantize: str | None, cuda: bool | None = None) -> str:
    """What the policy is really loaded as for `--quantize`: nf4 only where torch sees a GPU
    (bitsandbytes' 4-bit kernels), else none (plain LoRA). The summary records this."""
    if quantize != "nf4":
        return "none"
    import torch

    return "nf4" if (torch.cuda.is_available() if cuda is None else cuda) else "none"


def trainer_factory(lam: float, quantize: str | None = None, cuda: bool | None = None):
    """What flame.train_dpo.build_trainer calls in place of DPOTrainer. `cuda` (default: whether
    torch sees a GPU) decides whether nf4 loads the policy in 4 bits or falls back to LoRA."""
    trainer_cls, _ = _classes()
    kwargs: dict[str, Any] = {"lam": lam}
    if quantize == "nf4":
        import torch

        if quantized_as(quantize, cuda) == "nf4":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
                # bf16 storage: what PEFT's QLoRA + DeepSpeed ZeRO-3 recipe needs to shard the
                # 4-bit weights (harmless on one GPU)
                bnb_4bit_quant_storage=torch.bfloat16,
            )
            log.info("QLoRA: the policy is loaded in 4-bit NF4 (bitsandbytes)")
        else:
            log.warning("--quantize nf4 needs a GPU (bitsandbytes): training plain LoRA on CPU")
    return functools.partial(trainer_cls, **kwargs)


def main(argv: list[str] | None = None) -> dict:
    """flame.train_dpo's CLI plus --lam and --quantize."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--lam", type=float, help="F-DPO lambda (0: plain DPO)")
    ap.add_argument("--quantize", choices=("none", "nf4"), default="none")
    ap.add_argument("--epochs", type=float, help="max_steps = ceil(epochs x pairs / global batch)")
    ap.add_argument("--out")
    ap.add_argument("--pairs")
    ap.add_argument("--recipe")
    ap.add_argument("--set", action="append", default=[])
    args, rest = ap.parse_known_args(argv)
    if {"-h", "--help"} & set(rest):
        print(__doc__)
        print("F-DPO: --lam LAMBDA (required), --quantize {none,nf4}; flame.train_dpo options:")
        return train_dpo.main(["--help"])
    if args.lam is None or args.lam < 0 or not args.out:
        raise SystemExit(f"error: --lam >= 0 and --out are required (got --lam {args.lam})")
    quantize = None if args.quantize == "none" else args.quantize
    sets = list(args.set)
    if quantize:
        sets.append("use_lora=true")  # QLoRA trains an adapter, never the 4-bit base
    if args.epochs:
        recipe = training.load_recipe(train_dpo.RECIPE, args.recipe, sets)
        n = sum(1 for line in Path(args.pairs).open(encoding="utf-8") if line.strip())
        steps = max(1, math.ceil(args.epochs * n / recipe["global_batch_size"]))
        log.info("%g epochs of %d pairs: max_steps %d", args.epochs, n, steps)
        sets.append(f"max_steps={steps}")
    rest += [f"--set={s}" for s in sets] + (["--recipe", args.recipe] if args.recipe else [])
    rest += ["--pairs", args.pairs] if args.pairs else []
    summary = train_dpo.main(
        [*rest, "--out", args.out],
        trainer_cls=trainer_factory(args.lam, quantize),
        to_example=to_example,
        optional={**PAIR_EXTRAS, "delta_h": int},  # 0 or 1: to_example checks the value
    )
    ran = quantized_as(quantize)
    extra = {"fdpo": {"lambda": args.lam, "quantize": ran, "epochs": args.epochs}}
    if ran != args.quantize:  # asked for nf4 without a GPU: the summary says what trained
        extra["fdpo"]["quantize_requested"] = args.quantize
        extra["fdpo"]["quantize_note"] = "nf4 needs a GPU (bitsandbytes): trained plain LoRA"
    saved = Path(args.out) / "train_summary.json"
    if saved.exists():
        write_json(saved, {**read_json(saved), **extra})
    return {**summary, **extra}


if __name__ == "__main__":
    run(main)
