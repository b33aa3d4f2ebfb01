"""FActScore quality on real data, verifiers side by side: responses made of real Wikipedia
summary sentences (every fact supported) against copies with one sentence corrupted, on pages
HELD OUT from the trained verifier's training (the seeded split of flame.factscore.verifier_data).

Each response is 3 consecutive sentences of a held-out page. For every corruption kind (year,
number, entity, negation, nationality: exactly one span of one sentence changed; absent: the
true text scored against ANOTHER held-out page, so no sentence is supported) a corrupted copy
is made where the kind applies. Reported per verifier, setting and kind:
  - per-claim accuracy (sentence unit, each sentence one claim): balanced over the changed
    sentences, true in the true text and false in the corrupted one (absent: every sentence);
  - FActScore (no length penalty) of the true and the corrupted texts and their gap, with
    sentences as claims and, with --atomic, with atomic facts from the decomposer.

    .venv/bin/python benchmarks/factscore_quality.py \\
        --verifiers results/models/base/smollm2 results/models/verifier [--n 24] [--atomic]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import knowledge_base, print_machine  # noqa: E402

from flame.cli import run  # noqa: E402
from flame.factscore import aggregate  # noqa: E402

SETTINGS = [  # (label, retrieval, k, passage chars): the embedded default's evaluation / RM_fact
    ("topic page, 2 passages, 300 chars", "topic", 2, 300),
    ("open retrieval, 2 passages, 300 chars", "open", 2, 300),
]


def make_texts(kb, n: int, seed: int, held_out: float, passage_chars: int):
    """(true items, {kind: [(corrupted item, index of the changed sentence or None)]})."""
    from flame.factscore.verifier_data import (
        SPAN_KINDS,
        corrupt,
        names,
        page_sentences,
        split_pages,
    )

    rng = random.Random(seed)
    _, held = split_pages([p["title"] for p in kb.passages], held_out, seed)
    rng.shuffle(held)
    items = []
    for title in held:
        _, sents = page_sentences(kb, title, passage_chars)
        if len(sents) >= 3:
            items.append(
                {
                    "id": title,
                    "topic": title,
                    "prompt": f"Tell me about {title}.",
                    "sentences": sents[:3],
                    "response": " ".join(sents[:3]),
                }
            )
        if len(items) == n:
            break
    donors = sorted({x for it in items for s in it["sentences"] for x in names(s)})
    bad: dict[str, list] = {k: [] for k in (*SPAN_KINDS, "absent")}
    for i, it in enumerate(items):
        for kind in SPAN_KINDS:
            for j in rng.sample(range(3), 3):
                s = it["sentences"][j]
                changed = corrupt(s, kind, rng, [d for d in donors if d not in names(s)])
                if changed and changed != s:
                    sents = list(it["sentences"])
                    sents[j] = changed
                    bad[kind].append(({**it, "response": " ".join(sents)}, j))
                    break
        other = items[(i + 1) % len(items)]["topic"]  # the text, checked against another page
        bad["absent"].append(({**it, "topic": other, "prompt": f"Tell me about {other}."}, None))
    return items, bad


def rescore(results: list[dict], field: str) -> list[dict]:
    """Results with every fact's verdict read from ``field`` (supported: the scorer's verdict;
    verifier_supported: the LM verifier's alone, where the NP check was on)."""
    out = []
    for r in results:
        facts = [{**f, "supported": f.get(field, f["supported"])} for f in r["facts"]]
        n_sup = sum(f["supported"] for f in facts)
        score = n_sup / len(facts) if facts and not r["abstained"] else None
        out.append({**r, "facts": facts, "n_supported": n_sup, "score": score})
    return out


def evaluate(scorer_for, items, bad, unit: str = "sentence") -> dict:
    """Scores every text once; per verdict (the LM verifier alone, and with the NP check where
    it is on) and kind: FActScore of the true and corrupted texts and the gap; with sentence
    units also the per-claim accuracy (claim i of a text is its sentence i)."""
    strip = lambda its: [{x: v for x, v in it.items() if x != "sentences"} for it in its]  # noqa: E731
    scorer = scorer_for(unit)
    good_raw = scorer.score(strip(items))
    bad_raw = {kind: scorer.score(strip([p for p, _ in pairs])) for kind, pairs in bad.items()}
    fields = {"LM": "verifier_supported"}
    if scorer.np_threshold is not None:
        fields["LM + NP"] = "supported"
    report = {}
    for name, field in fields.items():
        good = {r["id"]: r for r in rescore(good_raw, field)}
        out = {}
        for kind, pairs in bad.items():
            if not pairs:
                continue
            res = rescore(bad_raw[kind], field)
            right, total = 0, 0
            for r, (_, j) in zip(res, pairs, strict=True):
                if unit != "sentence":
                    break
                g = good[r["id"]]["facts"]
                idx = range(len(r["facts"])) if j is None else [j]
                for i in idx:
                    right += g[i]["supported"] + (not r["facts"][i]["supported"])
                    total += 2
            fs_true = aggregate([good[p["id"]] for p, _ in pairs], gamma=0)["factscore"]
            fs_bad = aggregate(res, gamma=0)["factscore"]
            out[kind] = {
                "n": len(pairs),
                "claim_accuracy": right / total if total else None,
                "factscore_true": fs_true,
                "factscore_corrupted": fs_bad,
                "gap": fs_true - fs_bad,
            }
        kinds = list(out.values())
        n = sum(k["n"] for k in kinds)
        out["all"] = {
            "n": n,
            "claim_accuracy": None
            if unit != "sentence"
            else sum(k["claim_accuracy"] * k["n"] for k in kinds) / n,
            "gap": sum(k["gap"] * k["n"] for k in kinds) / n,
            # the true texts once each (kinds share them): how many true claims pass
            "factscore_true": aggregate(list(good.values()), gamma=0)["factscore"],
        }
        report[name] = out
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--verifiers",
        nargs="+",
        help="model specs, compared side by side",
        default=["results/models/base/smollm2", "results/models/verifier"],
    )
    ap.add_argument("--decomposer", default="results/models/base/smollm2", help="model spec")
    ap.add_argument("--knowledge", type=Path, default=None)
    ap.add_argument("--n", type=int, default=24, help="held-out pages (true texts)")
    ap.add_argument("--atomic", action="store_true", help="also FActScore with atomic facts")
    ap.add_argument("--seed", type=int, default=0, help="the verifier's split seed")
    ap.add_argument("--held-out", type=float, default=0.2, help="the verifier's held-out share")
    ap.add_argument(
        "--np",
        type=float,
        default=None,
        help="also score with FActScore's NP check at this threshold (e.g. 0.5)",
    )
    ap.add_argument("--cache", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    print_machine()

    from flame.factscore import FactScorer
    from flame.io import json_arg
    from flame.lm import load_lm

    kb = knowledge_base(args.knowledge)
    items, bad = make_texts(kb, args.n, args.seed, args.held_out, SETTINGS[0][3])
    print(
        f"{len(items)} held-out pages; corrupted texts per kind: "
        + ", ".join(f"{k} {len(v)}" for k, v in bad.items())
    )
    decomposer = load_lm(json_arg(args.decomposer), cache=args.cache, threads=args.threads)
    report = {}
    for spec in args.verifiers:
        verifier = load_lm(json_arg(spec), cache=args.cache, threads=args.threads)
        print(f"\nverifier {spec} ({verifier.fingerprint})")
        for label, retrieval, k, chars in SETTINGS:

            def scorer_for(unit, retrieval=retrieval, k=k, chars=chars, verifier=verifier):
                return FactScorer(
                    decomposer,
                    verifier,
                    kb,
                    unit=unit,
                    retrieval=retrieval,
                    k=k,
                    n_fixed=3,
                    n_bm25=0,
                    passage_chars=chars,
                    max_fact_tokens=32,
                    np_threshold=args.np,
                )

            res = evaluate(scorer_for, items, bad)
            if args.atomic:
                atomic = evaluate(scorer_for, items, bad, unit="atomic")
                for name in res:
                    res[name]["atomic"] = {
                        kind: {"gap": r["gap"], "factscore_true": r.get("factscore_true")}
                        for kind, r in atomic[name].items()
                    }
            print(f"  {label}")
            for name, by_kind in res.items():
                report[f"{spec} | {name} | {label}"] = by_kind
                print(f"   {name}")
                for kind, r in by_kind.items():
                    if kind == "atomic":
                        continue
                    fs = ""
                    if "factscore_corrupted" in r:
                        t, c = r["factscore_true"], r["factscore_corrupted"]
                        fs = f" ({100 * t:.1f} vs {100 * c:.1f})"
                    elif r.get("factscore_true") is not None:
                        fs = f" (true texts {100 * r['factscore_true']:.1f})"
                    print(
                        f"    {kind:12s} n {r['n']:3d}  claim accuracy {r['claim_accuracy']:.3f}"
                        f"  FActScore gap {100 * r['gap']:+5.1f} points{fs}"
                    )
                if args.atomic:
                    print(
                        "    atomic facts, FActScore gap: "
                        + ", ".join(
                            f"{kind} {100 * g['gap']:+.1f}" for kind, g in by_kind["atomic"].items()
                        )
                        + f"; true texts {100 * by_kind['atomic']['all']['factscore_true']:.1f}"
                    )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    run(main)
