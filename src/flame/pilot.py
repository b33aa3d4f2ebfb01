"""The biography pilot study (FLAME section 3, Table 1): what SFT and DPO on the model's own
generations, or on retrieval-grounded ones, do to FActScore on Bio.

- ``prompts``: "Tell me a bio of X." for people of the knowledge source that no data split uses
  (the paper: 500 training entities apart from FActScore's 183 evaluation ones). People are the
  embedded Wikipedia summaries' topic "People" (``--entities embedded``) or the names of a file,
  one a line (FActScore's unlabelled ``prompt_entities.txt``); a person whose page the knowledge
  source lacks is dropped (PT+RAG needs it), as is one named in any ``--exclude`` file.
- ``data``: from the pre-trained model's few-shot bios (``--pt``, n per person), its RAG-grounded
  bios (``--rag``) and the FActScore of each PT bio (``--factscore``, flame.rm_fact's records):
  - SFT_PT / SFT_RAG: every non-empty PT / RAG bio is one SFT example;
  - DPO_FS: pairs of the PT's own bios of a person, the higher FActScore chosen (``--selection
    all``: every pair, ties and unscored bios dropped, as the paper's 45 pairs of 10 samples;
    ``maxmin``: the best against the worst);
  - DPO_RAG: the j-th RAG bio chosen, the j-th own bio rejected.
  Counts go to ``--counts`` ({people, selection, sets: {name: examples or pairs}, factscore:
  {n_items, n_unknown_topic, unknown_topics}}): a person whose page the knowledge source lacks
  is never scored against another page (flame.rm_fact --retrieval topic leaves them out,
  ``unknown_topic: true``); their bios make no DPO_FS pair and are counted here, and Table 1's
  DPO_FS cell says so.

Example:
    python -m flame.pilot prompts --entities embedded --knowledge results/knowledge/embedded \
        --exclude results/data/*.jsonl results/data/eval/*.jsonl --n 500 --out pilot/bio_train.jsonl
    python -m flame.pilot data --pt pilot/pt.jsonl --rag pilot/rag.jsonl \
        --factscore pilot/pt_factscore.jsonl --sft-dir results/sft_data \
        --pairs-dir results/dpo/SFT_PT --counts pilot/counts.json
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
from pathlib import Path

from flame.cli import run
from flame.io import EXTRAS, ID, SAMPLES, SCORES, read_jsonl, setup_logging, write_json, write_jsonl

log = logging.getLogger("flame.pilot")

SOURCE = "pilot"


def embedded_people(min_chars: int = 300) -> list[str]:
    """Names of the people among the embedded Wikipedia summaries (the Bio eval's pool)."""
    from flame.data.wiki import entities, load_wiki_summaries, wiki_summaries_path

    return [e.title for e in entities(load_wiki_summaries(wiki_summaries_path()), min_chars)
            if e.style == "person"]  # fmt: skip


def training_people(
    names: list[str], exclude: set[str], has_page, n: int, seed: int
) -> tuple[list[str], dict]:
    """n names (seeded draw, in draw order) that are not excluded and have a page."""
    drops = {"excluded": 0, "no_page": 0}
    pool = []
    for name in dict.fromkeys(names):
        if name.lower() in exclude:
            drops["excluded"] += 1
        elif not has_page(name):
            drops["no_page"] += 1
        else:
            pool.append(name)
    if n > len(pool):
        raise ValueError(
            f"--n {n}: only {len(pool)} people are left for training (after dropping "
            f"{drops['excluded']} used by other splits and {drops['no_page']} without a page)"
        )
    return random.Random(seed).sample(pool, n), drops


def prompt_records(people: list[str]) -> list[dict]:
    from flame.data.schema import make_record
    from flame.data.wiki import BIO

    recs = [make_record("pilot", BIO.format(name=p), None, p, "fact", SOURCE) for p in people]
    return [{**r, "fact_based": True} for r in recs]


def fs_pairs(samples: list[dict], scores: dict[str, list], selection: str) -> list[dict]:
    """DPO_FS: pairs of one prompt's own responses ranked by FActScore; ties and responses
    without a score (no facts) are dropped."""
    out = []
    for s in samples:
        scored = [(x, r) for x, r in zip(scores.get(s["id"], []), s["responses"], strict=False)
                  if x is not None and r.strip()]  # fmt: skip
        if selection == "maxmin":
            by_score = lambda t: t[0]  # noqa: E731  ties: the first sample in order
            candidates = [(max(scored, key=by_score), min(scored, key=by_score))] if scored else []
        elif selection == "all":
            candidates = [(a, b) if a[0] > b[0] else (b, a)
                          for a, b in itertools.combinations(scored, 2)]  # fmt: skip
        else:
            raise ValueError(f"unknown --selection {selection!r} (all | maxmin)")
        for (sc, chosen), (sr, rejected) in candidates:
            if sc > sr and chosen != rejected:
                out.append(pair(s, chosen, rejected, "fact", [sc, sr], len(out)))
    return out


def rag_pairs(pt: list[dict], rag: dict[str, dict]) -> list[dict]:
    """DPO_RAG: the RAG-grounded bio chosen over the model's own bio, sample by sample."""
    out = []
    for s in pt:
        if s["id"] not in rag:
            raise ValueError(f"--rag has no record for prompt {s['id']} of --pt")
        for own, grounded in zip(s["responses"], rag[s["id"]]["responses"], strict=False):
            if own.strip() and grounded.strip() and own != grounded:
                out.append(pair(s, grounded, own, "rag", None, len(out)))
    return out


def pair(s: dict, chosen: str, rejected: str, kind: str, fs, i: int) -> dict:
    return {"id": f"{s['id']}#{i}", "prompt": s["instruction"], "chosen": chosen,
            "rejected": rejected, "kind": kind, "rm_if": None, "rm_fact": fs}  # fmt: skip


def sft_examples(samples: list[dict], origin: str) -> list[dict]:
    return [
        {"id": f"{s['id']}#{j}", "instruction": s["instruction"], "response": r, "origin": origin}
        for s in samples
        for j, r in enumerate(s["responses"])
        if r.strip()
    ]


def cmd_prompts(args) -> None:
    from flame.data.hub import load_factscore_entities
    from flame.knowledge import KnowledgeBase

    names = (
        embedded_people() if args.entities == "embedded" else load_factscore_entities(args.entities)
    )
    exclude = {
        str(r["topic"]).lower()
        for path in args.exclude
        for r in read_jsonl(path, optional=EXTRAS)
        if r.get("topic")
    }
    kb = KnowledgeBase.load(args.knowledge)
    people, drops = training_people(names, exclude, kb.has_topic, args.n, args.seed)
    write_jsonl(args.out, prompt_records(people))
    log.info("%d training people of %d names; dropped %s", len(people), len(names), drops)


def cmd_data(args) -> None:
    pt = read_jsonl(args.pt, SAMPLES, optional=EXTRAS)
    rag = {r["id"]: r for r in read_jsonl(args.rag, {"id": ID, "responses": list[str]})}
    fs_records = read_jsonl(args.factscore, SCORES, optional={"unknown_topic": bool})
    scores = {r["id"]: r["scores"] for r in fs_records}
    unknown = {r["id"] for r in fs_records if r.get("unknown_topic")}
    left = [s for s in pt if s["id"] in unknown]
    sets = {
        f"{args.sft_dir}/SFT_PT.jsonl": sft_examples(pt, "pt"),
        f"{args.sft_dir}/SFT_RAG.jsonl": sft_examples(list(rag.values()), "rag"),
        f"{args.pairs_dir}/pairs_DPO_FS.jsonl": fs_pairs(pt, scores, args.selection),
        f"{args.pairs_dir}/pairs_DPO_RAG.jsonl": rag_pairs(pt, rag),
    }
    counts = {}
    for path, records in sets.items():
        write_jsonl(path, records)
        counts[Path(path).stem.removeprefix("pairs_")] = len(records)
    factscore = {
        "n_items": sum(len(s["responses"]) for s in pt),
        "n_unknown_topic": sum(len(s["responses"]) for s in left),
        "unknown_topics": list(dict.fromkeys(s.get("topic") or "(no topic)" for s in left)),
    }
    write_json(args.counts, {"people": len(pt), "selection": args.selection, "sets": counts,
                             "factscore": factscore})  # fmt: skip
    log.info("pilot training sets: %s; PT bios left out of FActScore (topic not in the "
             "knowledge source): %d", counts, factscore["n_unknown_topic"])  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prompts", help="bio prompts of training people")
    p.add_argument("--entities", default="embedded", help="embedded | a file of names")
    p.add_argument("--knowledge", required=True, help="knowledge folder (people need a page)")
    p.add_argument("--exclude", nargs="*", default=[], help="JSONL files whose topics are used")
    p.add_argument("--n", type=int, required=True, help="people (paper: 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    d = sub.add_parser("data", help="SFT sets and DPO pairs of the pilot")
    d.add_argument("--pt", required=True, help="PT few-shot bios (flame.fewshot)")
    d.add_argument("--rag", required=True, help="PT+RAG bios (flame.fewshot --knowledge)")
    d.add_argument("--factscore", required=True, help="FActScore of --pt (flame.rm_fact)")
    d.add_argument("--selection", choices=("all", "maxmin"), default="all")
    d.add_argument("--sft-dir", required=True)
    d.add_argument("--pairs-dir", required=True)
    d.add_argument("--counts", required=True)
    args = ap.parse_args(argv)
    setup_logging()
    if args.cmd == "prompts":
        if args.n < 1:
            ap.error("--n must be >= 1")
        cmd_prompts(args)
    else:
        cmd_data(args)


if __name__ == "__main__":
    run(main)
