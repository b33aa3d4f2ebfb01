"""Factuality evaluation of one model (FLAME section 5): FActScore without length penalty, mean
# correct and # erroneous facts per response, and mean response length, on each evaluation set.
Each mean also comes with its n and a 95 % bootstrap interval over responses (flame.stats):
``factscore_ci``, ``mean_correct_ci``, ``mean_erroneous_ci`` = {mean, n, lo, hi}.

Sets are given as NAME=generations.jsonl[:retrieval]; retrieval is `topic` (FActScore: passages
of the entity's own page; Bio) or `open` (the instruction as query; Alpaca Fact, FAVA). With
--only-fact-based NAME, only records the classifier marked fact-based are scored (Alpaca Fact is
the fact-based subset of the AlpacaEval-style set).

A topic-retrieval item whose topic is not a page of the knowledge source is never scored against
other pages: it is left out of the set's FActScore and counted (``n_unknown_topic``, and
``unknown_topics``: their names), or, with --unknown-topic fail, the step stops with an error
naming its file and line.

Example:
    python -m flame.evaluate --knowledge results/knowledge/embedded \
        --decomposer results/models/base/smollm2 --verifier results/models/base/smollm2 \
        --sets bio=results/eval/SFT/bio.jsonl:topic alpaca_fact=results/eval/SFT/alpaca.jsonl:open \
        --only-fact-based alpaca_fact --out results/eval/SFT/factuality.json \
        --facts-dir results/eval/SFT/facts
"""

from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path

from flame.cli import run
from flame.factscore.options import add_scorer_args, build_scorer, load_models
from flame.io import (
    EXTRAS,
    SAMPLES,
    read_jsonl,
    record_lines,
    setup_logging,
    write_json,
    write_jsonl,
)

log = logging.getLogger("flame.evaluate")


def parse_set(value: str) -> tuple[str, str, str]:
    name, sep, rest = value.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH[:topic|open], got {value!r}")
    path, _, mode = (
        rest.rpartition(":") if rest.endswith((":topic", ":open")) else (rest, "", "open")
    )
    return name, path, mode


def intervals(results: list[dict]) -> dict:
    """n and bootstrap interval of FActScore (responses with >= 1 fact) and of the mean numbers
    of correct / erroneous facts (responding items), as `aggregate` defines those means."""
    from flame.stats import interval

    responding = [r for r in results if not r["abstained"] and not r.get("unknown_topic")]
    return {
        "factscore_ci": interval([r["score"] for r in responding if r["n_facts"] > 0]),
        "mean_correct_ci": interval([r["n_supported"] for r in responding]),
        "mean_erroneous_ci": interval([r["n_facts"] - r["n_supported"] for r in responding]),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sets", nargs="+", required=True, type=parse_set)
    ap.add_argument("--only-fact-based", nargs="*", default=[], help="set names to filter")
    ap.add_argument("--out", required=True, help="JSON: per-set summary")
    ap.add_argument("--facts-dir", required=True, help="per-fact JSONL per set")
    ap.add_argument("--gamma", type=float, default=0.0, help="length penalty (FLAME: 0)")
    add_scorer_args(ap, retrieval="open", k=5)
    args = ap.parse_args(argv)
    setup_logging()
    from flame.cache import Cache
    from flame.dense import Reranker
    from flame.factscore import aggregate
    from flame.knowledge import KnowledgeBase

    decomposer, verifier = load_models(args)
    kb = KnowledgeBase.load(args.knowledge)
    retrieval_cache = Cache(args.cache, namespace="retrieval") if args.cache else None
    reranker = Reranker(args.reranker) if args.reranker else None  # one model for all modes
    items_of: dict[str, list[dict]] = {}
    for name, path, _ in args.sets:
        recs = read_jsonl(path, SAMPLES, optional=EXTRAS)
        lines = record_lines(path)
        items_of[name] = [
            {
                "id": f"{name}/{r['id']}",
                "prompt": r["instruction"],
                "topic": r.get("topic"),
                "response": r["responses"][0] if r["responses"] else "",
                "where": f"{path}:{line}",
            }
            for r, line in zip(recs, lines, strict=True)
            if name not in args.only_fact_based or r.get("fact_based")
        ]
    # one scorer call over all sets (each item carries its set's retrieval mode): one
    # decomposition batch and one verification batch, fuller batches, shared prefixes
    items = [{**i, "retrieval": m} for name, _, m in args.sets for i in items_of[name]]
    scorer = build_scorer(
        args, decomposer, verifier, kb, retrieval=args.retrieval, reranker=reranker,
        cache=retrieval_cache,
    )  # fmt: skip
    results_of = {r["id"]: r for r in (scorer.score(items) if items else [])}
    summary = {}
    for name, _, mode in args.sets:
        items = items_of[name]
        results = [results_of[i["id"]] for i in items]
        for r in results:
            r["id"] = r["id"].split("/", 1)[1]
        summary[name] = {
            **aggregate(results, gamma=args.gamma),
            **intervals(results),
            "retrieval": mode,
            "mean_length_chars": (
                statistics.fmean(len(i["response"]) for i in items) if items else None
            ),
        }
        write_jsonl(
            Path(args.facts_dir) / f"{name}.jsonl",
            ({"id": r["id"], **f} for r in results for f in r["facts"]),
        )
        log.info("%s: %s", name, summary[name])
    write_json(args.out, summary)


if __name__ == "__main__":
    run(main)
