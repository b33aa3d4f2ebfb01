"""The BT factuality reward model (flame.train_rm) against FActScore, side by side in one run:
responses/s of each on the same responses (no cache; model loading timed apart), and how far the
reward model agrees with FActScore's order (pairwise accuracy within each prompt, Kendall tau-b
over all responses). Run after the DAG with workflow/configs/fdpo.yaml:

    .venv/bin/python benchmarks/rm_vs_factscore.py --rm results/models/rm/RM_BT \\
        --samples results/dpo/SFT/samples.jsonl --knowledge results/knowledge/index
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from flame.cli import run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rm", default="results/models/rm/RM_BT", help="reward model folder")
    ap.add_argument("--samples", default="results/dpo/SFT/samples.jsonl")
    ap.add_argument("--knowledge", default="results/knowledge/index")
    ap.add_argument("--decomposer", default="results/models/base/smollm2", help="model spec")
    ap.add_argument("--verifier", default="results/models/base/smollm2", help="model spec")
    ap.add_argument("--k", type=int, default=2, help="passages per fact (embedded: 2)")
    ap.add_argument("--passage-chars", type=int, default=300)
    ap.add_argument("--n-fixed", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    from common import print_machine

    print_machine()

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from flame.factscore.options import build_scorer, load_models
    from flame.io import EXTRAS, SAMPLES, json_arg, read_jsonl
    from flame.knowledge import KnowledgeBase
    from flame.rm_bt import agreement
    from flame.train_rm import score, untrained_reason
    from flame.training import set_threads

    why = untrained_reason(args.rm)
    if why:
        raise SystemExit(f"{args.rm}: the reward model was not trained ({why}): nothing to compare")
    set_threads(args.threads)
    samples = [s for s in read_jsonl(args.samples, SAMPLES, optional=EXTRAS) if s.get("fact_based")]
    if not samples:
        raise SystemExit(f"{args.samples}: no fact-based prompt: FActScore scores nothing here")
    items = [{"id": f"{s['id']}#{j}", "prompt": s["instruction"], "topic": s.get("topic"),
              "response": x} for s in samples for j, x in enumerate(s["responses"])]  # fmt: skip
    opts = SimpleNamespace(
        unit="atomic", retrieval="open", k=args.k, n_fixed=args.n_fixed, n_bm25=0,
        passage_chars=args.passage_chars, max_fact_tokens=32, reranker=None, candidates=20,
        cache=None, threads=args.threads, decomposer=json_arg(args.decomposer),
        verifier=json_arg(args.verifier),
    )  # fmt: skip
    t0 = time.time()
    scorer = build_scorer(opts, *load_models(opts), KnowledgeBase.load(args.knowledge))
    fs_load = time.time() - t0
    t0 = time.time()
    fs = {r["id"]: r["score"] for r in scorer.score(items)}
    fs_s = time.time() - t0
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(args.rm)
    model = AutoModelForSequenceClassification.from_pretrained(args.rm)
    rm_load = time.time() - t0
    t0 = time.time()
    rm = score(model, tok, [i["prompt"] for i in items], [i["response"] for i in items])
    rm_s = time.time() - t0
    by_prompt_fs = {s["id"]: [fs[f"{s['id']}#{j}"] for j in range(len(s["responses"]))]
                    for s in samples}  # fmt: skip
    by_prompt_rm, k = {}, 0
    for s in samples:
        by_prompt_rm[s["id"]] = rm[k : k + len(s["responses"])]
        k += len(s["responses"])
    out = {
        "responses": len(items),
        "factscore": {
            "load_s": round(fs_load, 2),
            "score_s": round(fs_s, 2),
            "responses_per_s": len(items) / fs_s if fs_s else None,
        },  # fmt: skip
        "reward_model": {
            "load_s": round(rm_load, 2),
            "score_s": round(rm_s, 2),
            "responses_per_s": len(items) / rm_s if rm_s else None,
        },  # fmt: skip
        "agreement": agreement(by_prompt_rm, by_prompt_fs),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    run(main)
