"""FActScore on any JSONL of generations.

Input records (JSONL): {"id" (optional; default the line number), a prompt ("prompt",
"instruction", "input" or "question"), "topic" (the page title for --retrieval topic; a record
needs a prompt or a topic), a response ("response", "output", "generation", "completion" or
"text": str)} or "responses": [str, ...] (flattened: result ids "ID#i", with "item_id": ID and
"sample": i). FActScore's own files ({"input", "output", "topic"}) score as they are; other
field names are given with --prompt-field, --topic-field and --response-field.

Outputs: --out, one result per response: {id, topic, abstained, n_facts, n_supported, score,
facts: [{sentence, fact, passages: [passage ids], supported, verifier_score}]} (+ item_id,
sample); --summary: aggregate() (factscore, factscore_gamma, respond_ratio, mean_facts,
mean_correct, mean_erroneous, n_items, n_unknown_topic, unknown_topics, ...) plus the settings,
counts and LM call statistics. With --retrieval topic, a record whose topic is not a page of
the knowledge source is left out (result unknown_topic: true, score null; --unknown-topic skip)
or stops the step with "error: FILE:LINE: topic ... is not a page ..." (--unknown-topic fail).

Example:
    python -m flame.knowledge build --source embedded --out results/knowledge/embedded
    python -m flame.factscore --input gens.jsonl --decomposer results/models/base/smollm2 \
        --verifier results/models/base/smollm2 --knowledge results/knowledge/embedded \
        --out facts.jsonl --summary summary.json --retrieval topic --k 5 --gamma 10 \
        --cache results/cache/lm.sqlite
    (dense first stage + re-ranking: --knowledge results/knowledge/embedded-dense \
        --reranker cross-encoder/ms-marco-MiniLM-L6-v2 --candidates 20 --k 10)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from flame.cli import run
from flame.factscore.options import add_scorer_args, build_scorer, load_models
from flame.io import (
    RecordError,
    read_jsonl,
    record_lines,
    setup_logging,
    write_json,
    write_jsonl,
)

log = logging.getLogger("flame.factscore")


PROMPT_FIELDS = ("prompt", "instruction", "input", "question")
TOPIC_FIELDS = ("topic",)
RESPONSE_FIELDS = ("response", "output", "generation", "completion", "text")


def _field(rec: dict, where: str, names: tuple[str, ...], what: str):
    """The first of `names` present in `rec` (None if none); it must be a string."""
    for name in names:
        if rec.get(name) is not None:
            if not isinstance(rec[name], str):
                raise RecordError(f"{where}: {what} field {name!r} must be a string")
            return rec[name]
    return None


def read_items(
    path: Path,
    prompt_field: str | None = None,
    topic_field: str | None = None,
    response_field: str | None = None,
) -> tuple[list[dict], dict[str, int]]:
    """Scorer items from a generations file (see the module docstring), and skip counts.
    A *_field argument replaces the default field names for that part."""
    records = read_jsonl(path)
    prompts = (prompt_field,) if prompt_field else PROMPT_FIELDS
    topics = (topic_field,) if topic_field else TOPIC_FIELDS
    answers = (response_field,) if response_field else RESPONSE_FIELDS
    items: list[dict] = []
    counts = {"records": len(records), "empty_responses": 0}
    for rec, line in zip(records, record_lines(path), strict=True):
        where = f"{path}:{line}"
        prompt = _field(rec, where, prompts, "prompt")
        topic = _field(rec, where, topics, "topic")
        if prompt is None and topic is None:
            raise RecordError(
                f"{where}: needs a prompt ({' or '.join(map(repr, prompts))}) or a topic "
                f"({' or '.join(map(repr, topics))}); name other fields with --prompt-field "
                "or --topic-field"
            )
        rid = rec.get("id", line)
        base = {"prompt": prompt or "", "topic": topic, "where": where}
        many = rec.get("responses") if not response_field else None
        response = _field(rec, where, answers, "response")
        if response is not None:
            items.append({"id": rid, **base, "response": response})
        elif isinstance(many, list) and all(isinstance(r, str) for r in many):
            for i, r in enumerate(many):
                items.append({"id": f"{rid}#{i}", "item_id": rid, "sample": i, **base,
                              "response": r})  # fmt: skip
        else:
            names = " or ".join(map(repr, answers + (() if response_field else ("responses",))))
            raise RecordError(
                f"{where}: needs a response: {names} (a string; 'responses': a list of strings);"
                " name another field with --response-field"
            )
    counts["empty_responses"] = sum(not it["response"].strip() for it in items)
    return items, counts


def load_knowledge(arg: str):
    from flame.knowledge import BUILD_HINT, KnowledgeBase

    path = Path(arg)
    if not path.is_dir():
        name = arg.partition(":")[0] or "kb"
        raise FileNotFoundError(
            f"--knowledge {arg}: not a built knowledge folder. Build it once with: "
            + BUILD_HINT.format(source=arg, folder=f"results/knowledge/{name}")
        )
    return KnowledgeBase.load(path)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m flame.factscore", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--input", required=True, type=Path, help="JSONL of generations")
    ap.add_argument("--out", required=True, type=Path, help="per-response results (JSONL)")
    ap.add_argument("--summary", required=True, type=Path, help="aggregate scores (JSON)")
    ap.add_argument("--gamma", type=float, default=10, help="length penalty; 0 disables (FLAME)")
    ap.add_argument("--demos", type=Path, help="JSONL of {sentence, facts} demos")
    ap.add_argument("--no-abstention", action="store_true", help="do not detect abstentions")
    ap.add_argument("--prompt-field", help=f"prompt field (default: {', '.join(PROMPT_FIELDS)})")
    ap.add_argument("--topic-field", help="topic (page title) field (default: topic)")
    ap.add_argument(
        "--response-field", help=f"response field (default: {', '.join(RESPONSE_FIELDS)})"
    )
    add_scorer_args(ap, retrieval="topic", k=5)
    return ap


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    setup_logging()
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    from flame.factscore import aggregate, load_demos

    items, counts = read_items(args.input, args.prompt_field, args.topic_field, args.response_field)
    kb = load_knowledge(args.knowledge)
    decomposer, verifier = load_models(args)
    scorer = build_scorer(
        args, decomposer, verifier, kb, detect_abstention=not args.no_abstention,
        demos=load_demos(args.demos) if args.demos else None,
    )  # fmt: skip
    cache = getattr(verifier, "cache", None)
    results = scorer.score(items)
    for it, res in zip(items, results, strict=True):
        if "sample" in it:
            res["item_id"], res["sample"] = it["item_id"], it["sample"]
    lms = [lm for lm in {id(x): x for x in (decomposer, verifier) if x}.values()]
    summary = aggregate(results, args.gamma)
    summary.update(
        settings={k: v for k, v in vars(args).items() if k not in ("input", "out", "summary")}
        | {"input": str(args.input), "knowledge_meta": kb.meta},
        counts={**counts, **scorer.counts},
        lm_calls=sum(lm.stats.calls for lm in lms),
        lm_seconds=round(sum(lm.stats.seconds for lm in lms), 3),
        cache={"hits": cache.hits, "misses": cache.misses} if cache else None,
    )
    summary["settings"] = {k: str(v) if isinstance(v, Path) else v
                           for k, v in summary["settings"].items()}  # fmt: skip
    write_jsonl(args.out, results)
    write_json(args.summary, summary)
    log.info(
        "%d responses (%d abstained, %d empty): %d facts, %d decomposition fallbacks, "
        "%d left out (topic not in the knowledge source); FActScore %s (gamma %s: %s); %d LM calls",
        len(results), scorer.counts["abstained"], counts["empty_responses"],
        scorer.counts["facts"], scorer.counts["decompose_fallbacks"],
        scorer.counts["unknown_topic_items"], summary["factscore"], args.gamma,
        summary["factscore_gamma"], summary["lm_calls"],
    )  # fmt: skip
    return summary


if __name__ == "__main__":
    run(main)
