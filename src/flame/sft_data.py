"""SFT data for the Table 2 variants that need the classifier (FLAME section 3.2).

- SFT:        every seed instruction with its human response: the seed file itself, which needs
              no classification (so the SFT model can serve as the classifier, as in the paper).
- SFT_fact:   the fact-based seed instructions with the pre-trained model's few-shot responses
              (every sample is one example), nothing else.
- SFT_FLAME:  non-fact-based instructions with human responses UNION fact-based instructions with
              the pre-trained model's responses.

- SFT_FLAME_noclf (Table 6's ablation, --without-classifier): no classifier; every seed
              instruction has its human answer and the PT model's answers, and the two sources
              are sampled 50/50: all human answers plus as many PT answers drawn at random
              (seeded) from the pool of every instruction's PT answers.

Empty PT responses are dropped and counted. Output records: {id, instruction, response, origin}
where origin is "human" or "pt".

Example:
    python -m flame.sft_data --seed classified/seed.jsonl --fewshot sft_data/pt_fewshot.jsonl \
        --out-dir results/sft_data
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from flame.cli import run
from flame.io import ID, read_jsonl, setup_logging, write_json, write_jsonl

log = logging.getLogger("flame.sft_data")

VARIANTS = ("SFT_fact", "SFT_FLAME")

FEWSHOT = {"id": ID, "responses": list[str]}


def human_examples(seed: list[dict]) -> list[dict]:
    """Every seed instruction with its human answer, as an SFT example."""
    return [
        {**{k: r[k] for k in ("id", "instruction", "response")}, "origin": "human"} for r in seed
    ]


def build(seed: list[dict], fewshot: list[dict]) -> tuple[dict[str, list[dict]], dict]:
    pt = {r["id"]: [x for x in r["responses"] if x.strip()] for r in fewshot}
    dropped = sum(len(r["responses"]) for r in fewshot) - sum(len(v) for v in pt.values())
    human = human_examples(seed)
    pt_examples: list[dict] = []
    for r in seed:
        if r.get("fact_based"):
            for i, text in enumerate(pt.get(r["id"], [])):
                pt_examples.append(
                    {
                        "id": f"{r['id']}#pt{i}",
                        "instruction": r["instruction"],
                        "response": text,
                        "origin": "pt",
                    }
                )
    fact_ids = {r["id"] for r in seed if r.get("fact_based")}
    missing = sorted(fact_ids - set(pt))
    if missing:
        raise ValueError(f"few-shot file lacks responses for fact-based seed ids: {missing[:5]}")
    data = {
        "SFT_fact": pt_examples,
        "SFT_FLAME": [h for h in human if h["id"] not in fact_ids] + pt_examples,
    }
    stats = {
        "n_seed": len(seed),
        "n_fact_based": len(fact_ids),
        "n_SFT": len(human),
        "dropped_empty_pt_responses": dropped,
        **{f"n_{k}": len(v) for k, v in data.items()},
    }
    return data, stats


def build_without_classifier(seed: list[dict], fewshot: list[dict], rng_seed: int) -> list[dict]:
    """Human answers of every seed instruction plus an equal number of PT answers (50/50)."""
    import random

    pt = {r["id"]: [x for x in r["responses"] if x.strip()] for r in fewshot}
    missing = sorted({r["id"] for r in seed} - set(pt))
    if missing:
        raise ValueError(f"few-shot file lacks responses for seed ids: {missing[:5]}")
    human = human_examples(seed)
    pool = [
        {"id": f"{r['id']}#pt{i}", "instruction": r["instruction"], "response": t, "origin": "pt"}
        for r in seed
        for i, t in enumerate(pt[r["id"]])
    ]
    rng = random.Random(rng_seed)
    drawn = rng.sample(pool, len(human)) if len(pool) >= len(human) else pool
    data = human + drawn
    rng.shuffle(data)
    return data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seed", required=True, help="classified seed JSONL (with fact_based)")
    ap.add_argument("--fewshot", required=True, help="PT few-shot responses JSONL")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument(
        "--without-classifier",
        action="store_true",
        help="write only SFT_FLAME_noclf.jsonl (Table 6; --fewshot has every seed instruction)",
    )
    ap.add_argument("--seed-value", type=int, default=0, help="seed of the 50/50 draw")
    ap.add_argument(
        "--allow-empty",
        action="store_true",
        help="write a variant with no examples as an empty file (its SFT keeps the init model)",
    )
    args = ap.parse_args(argv)
    setup_logging()
    if args.without_classifier:
        seed = read_jsonl(args.seed, {"id": ID, "instruction": str, "response": str})
        fewshot = read_jsonl(args.fewshot, FEWSHOT)
        data = build_without_classifier(seed, fewshot, args.seed_value)
        write_jsonl(Path(args.out_dir) / "SFT_FLAME_noclf.jsonl", data)
        log.info("SFT_FLAME_noclf: %d examples (%d human)", len(data), len(seed))
        return
    seed = read_jsonl(
        args.seed, {"id": ID, "instruction": str, "response": str, "fact_based": bool}
    )
    fewshot = read_jsonl(args.fewshot, FEWSHOT)
    data, stats = build(seed, fewshot)
    for name in VARIANTS:
        if not data[name]:
            why = f"{name}: no training examples (is any seed instruction fact-based?)"
            if not args.allow_empty:
                raise SystemExit(why)
            log.warning("%s; written empty (--allow-empty: its SFT keeps the init model)", why)
        write_jsonl(Path(args.out_dir) / f"{name}.jsonl", data[name])
    write_json(Path(args.out_dir) / "stats.json", stats)
    log.info("%s", stats)


if __name__ == "__main__":
    run(main)
