"""FActScore quality on real data: responses made of real Wikipedia summary sentences (every
fact supported) against copies with one fact corrupted (a year shifted or a nationality swapped).

Reports, per setting: per-sentence verification accuracy (each sentence is one fact; the
corrupted sentence should be judged false, the others true) and the FActScore gap between the
true and corrupted sets with atomic facts. Settings differ in retrieval mode, passages and the
verifier (any model spec, e.g. a stronger local model or an OpenAI-compatible server):

    .venv/bin/python benchmarks/factscore_quality.py [--verifier SPEC] [--n 24]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import corrupt, knowledge_base, people_responses, print_machine  # noqa: E402

SETTINGS = [  # (label, retrieval, k, passage chars)
    ("topic page, 1 passage", "topic", 1, 600),
    ("open retrieval, 3 passages", "open", 3, 400),
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--verifier", default="results/models/base/smollm2", help="model spec")
    ap.add_argument("--decomposer", default="results/models/base/smollm2", help="model spec")
    ap.add_argument("--knowledge", type=Path, default=None)
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print_machine()

    from flame.factscore import FactScorer, aggregate
    from flame.io import json_arg
    from flame.lm import load_lm

    kb = knowledge_base(args.knowledge)
    true_items, bad_items, bad_index = [], [], []
    for k, it in enumerate(people_responses(kb, args.n * 2)):
        for j, s in enumerate(it["sentences"]):
            changed = corrupt(s, k)
            if changed:
                sents = list(it["sentences"])
                sents[j] = changed
                true_items.append({**it, "sentences": it["sentences"]})
                bad_items.append({**it, "response": " ".join(sents), "sentences": sents})
                bad_index.append(j)
                break
        if len(true_items) == args.n:
            break
    verifier = load_lm(json_arg(args.verifier), cache=args.cache, threads=args.threads)
    decomposer = (
        verifier
        if args.decomposer == args.verifier
        else load_lm(json_arg(args.decomposer), cache=args.cache, threads=args.threads)
    )
    print(f"{len(true_items)} people; verifier {verifier.fingerprint}")
    report = {}

    def strip(items):
        return [{x: v for x, v in it.items() if x != "sentences"} for it in items]

    for label, retrieval, k, chars in SETTINGS:
        scorer = functools.partial(
            FactScorer, decomposer, verifier, kb, retrieval=retrieval, k=k, n_fixed=3, n_bm25=1,
            passage_chars=chars, max_fact_tokens=48,
        )  # fmt: skip
        good = scorer(unit="sentence").score(strip(true_items))
        bad = scorer(unit="sentence").score(strip(bad_items))
        right = total = 0
        for r in good:
            right += sum(f["supported"] for f in r["facts"])
            total += len(r["facts"])
        corrupted_right = 0
        for r, j in zip(bad, bad_index, strict=True):
            for i, f in enumerate(r["facts"]):
                ok = (not f["supported"]) if i == j else f["supported"]
                right += ok
                total += 1
                corrupted_right += ok and i == j
        fs_true = aggregate(scorer(unit="atomic").score(strip(true_items)), gamma=0)["factscore"]
        fs_bad = aggregate(scorer(unit="atomic").score(strip(bad_items)), gamma=0)["factscore"]
        report[label] = {
            "per_fact_accuracy": right / total,
            "corrupted_facts_caught": corrupted_right / len(bad),
            "factscore_true": fs_true, "factscore_corrupted": fs_bad,
            "factscore_gap": fs_true - fs_bad,
        }  # fmt: skip
        print(
            f"  {label:28s} accuracy {right / total:.3f}; corrupted caught "
            f"{corrupted_right}/{len(bad)}; FActScore true {fs_true:.3f} vs corrupted "
            f"{fs_bad:.3f} (gap {fs_true - fs_bad:+.3f})"
        )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
