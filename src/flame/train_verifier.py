"""Train a FactCC-style fact verifier on the knowledge source itself (issue 15).

Examples come from ``flame.factscore.verifier_data``: a page's sentences shown with its own
passage (True, verbatim) and copies with exactly one corruption, or shown with other pages'
passages only (False), every one rendered with FActScore's verification prompt, the exact text
the scorer asks. Pages are split into train and held-out by a seeded hash of the title; only
train pages are used for training, and ``--eval-examples`` held-out examples are scored at the end
(per-kind accuracy in ``train_summary.json``).

The objective is the scorer's decision itself: cross-entropy over the two options' next-token
log-probabilities (logsumexp over the "True"/" True" ids vs "False"/" False", as ``LM.choose``
reads them) at the prompt's last position. Only the last ``--train-layers`` transformer blocks
(and the final norm) are trained; the layers below, the embeddings and the LM head stay frozen,
which halves a step's cost on a CPU.

Output: a checkpoint folder OUT (model, tokenizer, train_summary.json, flame fingerprint,
examples.jsonl with the training examples), written to OUT.tmp and renamed; any model spec
can then name it (``roles.fact_verifier: verifier`` in the workflow).

Example:
    python -m flame.train_verifier --init results/models/base/smollm2 \\
        --knowledge results/knowledge/index --out results/models/verifier \\
        --n-pages 400 --n-examples 360 --steps 30 --batch-size 12 --lr 1e-3 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import resource
import shutil
import time
from collections import Counter
from pathlib import Path

from flame.cli import run
from flame.factscore.verifier_data import KINDS, make_examples, split_pages
from flame.io import setup_logging, write_json, write_jsonl

log = logging.getLogger("flame.train_verifier")


def option_ids(tokenizer) -> tuple[list[int], list[int]]:
    from flame.factscore.verify import OPTIONS
    from flame.lm.hf import option_token_ids

    return option_token_ids(tokenizer, OPTIONS[0]), option_token_ids(tokenizer, OPTIONS[1])


def margins(model, tokenizer, prompts: list[str], ids: tuple, bf16: bool):
    """logP(True) - logP(False) at each prompt's end; a tensor with grad when training.
    Prompts sharing a token prefix (a page's claims share their passages) run it once, laid
    out as the scorer's shared-prefix path lays them out (flame.lm.hf: prefix, left padding,
    suffix), so a context costs one pass however many claims it has."""
    import torch

    from flame.lm.hf import prefix_groups

    toks = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    groups = [(plen or len(toks[m[0]]) - 1, m) for plen, m in prefix_groups(toks, 16)]
    pad, dev = tokenizer.pad_token_id, model.device
    pmax = max(plen for plen, _ in groups)
    pre = torch.full((len(groups), pmax), pad)
    pmask = torch.zeros((len(groups), pmax), dtype=torch.long)
    ppos = torch.zeros((len(groups), pmax), dtype=torch.long)
    owner, rows, suffixes = [], [], []
    for g, (plen, members) in enumerate(groups):
        pre[g, pmax - plen :] = torch.tensor(toks[members[0]][:plen])
        pmask[g, pmax - plen :] = 1
        ppos[g, pmax - plen :] = torch.arange(plen)
        for i in members:
            owner.append(g)
            rows.append(i)
            suffixes.append(toks[i][plen:])
    width = max(len(x) for x in suffixes)
    inp = torch.full((len(suffixes), width), pad)
    smask = torch.zeros((len(suffixes), width), dtype=torch.long)
    pos = torch.zeros((len(suffixes), width), dtype=torch.long)
    for r, (suffix, g) in enumerate(zip(suffixes, owner, strict=True)):
        plen, n = groups[g][0], len(suffix)
        inp[r, width - n :] = torch.tensor(suffix)
        smask[r, width - n :] = 1
        pos[r, width - n :] = torch.arange(plen, plen + n)
    index = torch.tensor(owner, device=dev)
    mask = torch.cat([pmask.to(dev)[index], smask.to(dev)], dim=1)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        cache = model(
            input_ids=pre.to(dev),
            attention_mask=pmask.to(dev),
            position_ids=ppos.to(dev),
            use_cache=True,
            logits_to_keep=1,
        ).past_key_values
        cache.batch_select_indices(index)  # each row gets its group's prefix
        logits = model(
            input_ids=inp.to(dev),
            attention_mask=mask,
            position_ids=pos.to(dev),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits
    logp = logits[:, -1, :].float().log_softmax(-1)
    m = logp[:, ids[0]].logsumexp(-1) - logp[:, ids[1]].logsumexp(-1)
    back = torch.empty(len(rows), dtype=torch.long, device=dev)
    back[torch.tensor(rows, device=dev)] = torch.arange(len(rows), device=dev)
    return m[back]


def freeze_below(model, train_layers: int) -> int:
    """Train only the last ``train_layers`` blocks and the final norm (0: everything)."""
    if train_layers <= 0:
        return sum(p.numel() for p in model.parameters())
    for p in model.parameters():
        p.requires_grad = False
    layers = model.model.layers
    for block in list(layers)[-train_layers:]:
        for p in block.parameters():
            p.requires_grad = True
    for p in model.model.norm.parameters():
        p.requires_grad = True
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def evaluate(model, tokenizer, examples: list[dict], ids, bf16: bool, batch: int) -> dict:
    """Accuracy over held-out examples, overall and per kind ("true" = the verbatim ones)."""
    import torch

    right: Counter = Counter()
    total: Counter = Counter()
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(examples), batch):
            part = examples[s : s + batch]
            m = margins(model, tokenizer, [e["prompt"] for e in part], ids, bf16)
            for e, v in zip(part, m.tolist(), strict=True):
                total[e["kind"]] += 1
                right[e["kind"]] += (v > 0) == e["label"]
    per_kind = {k: round(right[k] / total[k], 4) for k in sorted(total)}
    n = sum(total.values())
    return {
        "accuracy": round(sum(right.values()) / n, 4) if n else None,
        "n": n,
        "per_kind": per_kind,
        "n_per_kind": dict(sorted(total.items())),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--init", required=True, help="checkpoint folder to start from")
    ap.add_argument("--knowledge", required=True, help="built knowledge folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-pages", type=int, default=400, help="train pages drawn (0: all)")
    ap.add_argument("--n-examples", type=int, default=360)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kinds", default=",".join(KINDS), help="negative kinds, comma-separated")
    ap.add_argument("--k", type=int, default=2, help="passages per prompt (at most)")
    ap.add_argument("--passage-chars", type=int, default=300)
    ap.add_argument("--train-layers", type=int, default=4, help="last blocks trained (0: all)")
    ap.add_argument("--held-out", type=float, default=0.2, help="share of pages held out")
    ap.add_argument("--eval-examples", type=int, default=0, help="held-out examples scored")
    ap.add_argument("--bf16", choices=["auto", "yes", "no"], default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    setup_logging(args.log_level)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if not kinds or args.steps < 1 or args.n_examples < 2 or not 0 <= args.held_out < 1:
        raise SystemExit("--kinds, --steps >= 1, --n-examples >= 2 and 0 <= --held-out < 1")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flame.cpu import native_bf16
    from flame.knowledge import KnowledgeBase
    from flame.models import write_fingerprint

    t0 = time.time()
    load0 = os.getloadavg()[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    kb = KnowledgeBase.load(args.knowledge)
    train_pages, held_pages = split_pages(
        [p["title"] for p in kb.passages], args.held_out, args.seed
    )
    if args.n_pages and args.n_pages < len(train_pages):
        train_pages = rng.sample(train_pages, args.n_pages)
    left_out: dict = {}  # pages no example came from: not in the knowledge source, no sentence
    examples = make_examples(
        kb, train_pages, args.n_examples, kinds, args.k, args.passage_chars, args.seed,
        left_out=left_out,
    )  # fmt: skip
    held = []
    if args.eval_examples and held_pages:
        pool = rng.sample(held_pages, min(len(held_pages), 4 * args.eval_examples))
        held = make_examples(
            kb, pool, args.eval_examples, kinds, args.k, args.passage_chars, args.seed + 1
        )
    pages_left_out = {k: len(v) for k, v in left_out.items()}
    log.info(
        "%d training examples from %d pages (%s; left out: %s); %d held-out examples from %d pages",
        len(examples),
        len(train_pages),
        dict(Counter(e["kind"] for e in examples)),
        pages_left_out,
        len(held),
        len(held_pages),
    )

    tokenizer = AutoTokenizer.from_pretrained(args.init)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.init, dtype=torch.float32)
    gpu = torch.cuda.is_available()
    model.to("cuda" if gpu else "cpu")
    bf16 = args.bf16 == "yes" or (args.bf16 == "auto" and (gpu or native_bf16()))
    trained = freeze_below(model, args.train_layers)
    ids = option_ids(tokenizer)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0
    )
    warmup = max(1, args.steps // 10)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10 %
        if step < warmup:
            return args.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    blocks: dict[str, list[int]] = {}  # a page visit's claims stay together: one shared context
    for i, e in enumerate(examples):
        blocks.setdefault(e["prompt"].split("\n\nInput:")[0], []).append(i)
    order: list[int] = []
    history = []
    model.train()
    t_train = time.time()
    for step in range(args.steps):
        while len(order) < args.batch_size:
            more = list(blocks.values())
            rng.shuffle(more)
            order += [i for block in more for i in block]
        batch = [examples[i] for i in order[: args.batch_size]]
        del order[: args.batch_size]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        m = margins(model, tokenizer, [e["prompt"] for e in batch], ids, bf16)
        labels = torch.tensor([1.0 if e["label"] else 0.0 for e in batch], device=m.device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        history.append([step + 1, round(loss.item(), 4)])
        if (step + 1) % 5 == 0 or step + 1 == args.steps:
            log.info(
                "step %d/%d loss %.4f (%.1f s)",
                step + 1,
                args.steps,
                loss.item(),
                time.time() - t_train,
            )
    train_s = time.time() - t_train
    summary = {
        "step": "train_verifier",
        "init": args.init,
        "knowledge": args.knowledge,
        "examples": len(examples),
        "kinds": list(kinds),
        "examples_per_kind": dict(Counter(e["kind"] for e in examples)),
        "train_pages": len(train_pages),
        "held_out_pages": len(held_pages),
        "train_pages_left_out": pages_left_out,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "k": args.k,
        "passage_chars": args.passage_chars,
        "train_layers": args.train_layers,
        "trained_parameters": trained,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "threads": torch.get_num_threads(),
        "device": str(model.device),
        "seed": args.seed,
        "loss_history": history,
        "train_wall_s": round(train_s, 2),
        "load_average_start": round(load0, 2),
    }
    if held:
        summary["held_out"] = evaluate(model, tokenizer, held, ids, bf16, args.batch_size)
        log.info("held-out accuracy %s", summary["held_out"])
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    write_jsonl(tmp / "examples.jsonl", examples)
    summary["wall_s"] = round(time.time() - t0, 2)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # less load-sensitive than wall
    summary["load_average_end"] = round(os.getloadavg()[0], 2)
    write_json(tmp / "train_summary.json", summary)
    summary["fingerprint"] = write_fingerprint(tmp, origin=f"flame.train_verifier init={args.init}")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("verifier written to %s in %.1f s (training %.1f s)", out, summary["wall_s"], train_s)
    return summary


if __name__ == "__main__":
    run(main)
