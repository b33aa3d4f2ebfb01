"""Sample responses from a model (chat format): m responses per DPO prompt from an SFT model
(FLAME section 3.3, paper m=4), or evaluation responses (one per prompt).

Output records keep the input's fields and add ``responses`` (a list of m strings) and ``model``.

Example:
    python -m flame.generate --model results/models/sft/SFT --inputs classified/dpo_prompts.jsonl \
        --out dpo/SFT/samples.jsonl --n 4 --temperature 0.7 --top-p 0.9
    python -m flame.generate --model results/models/dpo/SFT+DPO --name SFT+DPO \
        --inputs eval/bio.jsonl eval/alpaca.jsonl --outs gen/bio.jsonl gen/alpaca.jsonl --n 1
"""

from __future__ import annotations

import argparse
import logging

from flame.cli import run
from flame.io import PROMPTS, json_arg, read_jsonl, setup_logging, write_jsonl
from flame.lm import Prompt, Sampling, load_lm

log = logging.getLogger("flame.generate")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, type=json_arg, help="model spec")
    ap.add_argument("--name", default=None, help="model name written into the records")
    ap.add_argument("--inputs", nargs="+", required=True, help="JSONL files with 'instruction'")
    ap.add_argument("--outs", "--out", nargs="+", required=True, help="one output per input")
    ap.add_argument("--n", type=int, default=1, help="responses per prompt")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--system", default=None, help="optional system message")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if len(args.inputs) != len(args.outs):
        ap.error("--inputs and --outs must have the same length")
    setup_logging()
    files = [read_jsonl(p, PROMPTS) for p in args.inputs]
    lm = load_lm(args.model, cache=args.cache, threads=args.threads)
    sampling = Sampling(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        n=args.n,
        seed=args.seed,
    )
    # one backend call over every file, so batches are full
    records = [r for recs in files for r in recs]
    outs = lm.generate(
        [Prompt.chat(r["instruction"], system=args.system) for r in records], sampling
    )
    name = args.name or str(
        args.model.get("source") if isinstance(args.model, dict) else args.model
    )
    for rec, responses in zip(records, outs, strict=True):
        rec["responses"] = responses
        rec["model"] = name
    for path, recs in zip(args.outs, files, strict=True):
        write_jsonl(path, recs)
    empty = sum(1 for r in records for x in r["responses"] if not x.strip())
    log.info(
        "%d prompts x %d: %d empty responses; %.1f generated tokens/s (%d tokens)",
        len(records),
        args.n,
        empty,
        lm.stats.tokens_per_second(),
        lm.stats.generated_tokens,
    )


if __name__ == "__main__":
    run(main)
