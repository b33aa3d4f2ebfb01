"""The options every FActScore front end shares (the standalone CLI, RM_fact, evaluation), and
building a FactScorer from them: models loaded once (one model when decomposer and verifier are
the same spec), the knowledge base, retrieval and re-ranking settings.

Example:
    ap = argparse.ArgumentParser(); add_scorer_args(ap, retrieval="open", k=10)
    args = ap.parse_args(); scorer = build_scorer(args, *load_models(args), load_kb(args))
"""

from __future__ import annotations

import argparse

from flame.io import json_arg


def add_scorer_args(ap: argparse.ArgumentParser, retrieval: str = "topic", k: int = 5) -> None:
    ap.add_argument("--knowledge", required=True, help="folder built by flame.knowledge build")
    ap.add_argument("--decomposer", type=json_arg, help="model spec; needed for --unit atomic")
    ap.add_argument("--verifier", required=True, type=json_arg, help="model spec")
    ap.add_argument("--unit", choices=("atomic", "sentence"), default="atomic")
    ap.add_argument("--retrieval", choices=("topic", "open"), default=retrieval)
    ap.add_argument("--k", type=int, default=k, help="passages per fact (5 FActScore, 10 FLAME)")
    ap.add_argument("--passage-chars", type=int, default=1000, help="truncate passages to this")
    ap.add_argument("--n-fixed", type=int, default=7, help="fixed decomposition demos")
    ap.add_argument("--n-bm25", type=int, default=1, help="demos picked by BM25 per sentence")
    ap.add_argument("--max-fact-tokens", type=int, default=128, help="decomposer output limit")
    ap.add_argument("--reranker", help="cross-encoder folder or hub id that re-ranks passages")
    ap.add_argument("--candidates", type=int, default=20, help="first-stage passages to re-rank")
    ap.add_argument(
        "--np-threshold",
        type=float,
        help="FActScore's NP check: supported = verifier True AND the passages carry every"
        " salient token and this share of the other words (flame.factscore.support)",
    )
    ap.add_argument(
        "--unknown-topic",
        choices=("skip", "fail"),
        default="skip",
        help="--retrieval topic, an item whose topic is not a page of the knowledge source (or"
        " that has none): skip = leave it out of FActScore, counted (n_unknown_topic); fail ="
        " stop with an error naming it. Never checked against other pages",
    )
    ap.add_argument("--cache", help="SQLite cache of LM calls and retrievals")
    ap.add_argument("--threads", type=int, help="CPU threads for local models")


def load_models(args):
    """(decomposer or None, verifier), cached; one model when both specs are the same."""
    from flame.lm import load_lm, parse_spec

    if args.unit == "atomic" and not args.decomposer:
        raise SystemExit("--unit atomic needs --decomposer")
    verifier = load_lm(args.verifier, cache=args.cache, threads=args.threads)
    if args.unit != "atomic":
        return None, verifier
    if parse_spec(args.decomposer) == parse_spec(args.verifier):
        return verifier, verifier
    return load_lm(args.decomposer, cache=args.cache, threads=args.threads), verifier


def build_scorer(args, decomposer, verifier, kb, **overrides):
    """A FactScorer with the options in `args`; `overrides` replace any of its keyword arguments
    (e.g. retrieval=..., or a re-ranker / retrieval cache object shared by several scorers)."""
    from flame.factscore.scorer import FactScorer

    kwargs = dict(
        unit=args.unit, retrieval=args.retrieval, k=args.k, n_fixed=args.n_fixed,
        n_bm25=args.n_bm25, passage_chars=args.passage_chars,
        max_fact_tokens=args.max_fact_tokens, reranker=args.reranker,
        candidates=args.candidates, cache=args.cache,
        np_threshold=getattr(args, "np_threshold", None),
        unknown_topic=getattr(args, "unknown_topic", "skip"),
    )  # fmt: skip
    return FactScorer(decomposer, verifier, kb, **{**kwargs, **overrides})
