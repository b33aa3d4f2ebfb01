"""The record schema shared by every data file, the shipped resources, and the split checks.

Every file written by `python -m flame.data build` holds records with exactly these fields:

    id           str   unique across all files; "<split>-<sha256 of the instruction>[:10]" (stable)
    instruction  str   the user's request; unique within a file, and a training instruction
                       (seed, dpo) is in no other file (evaluation sets may share items)
    response     str | null   a human / reference response (seed: the SFT target), null if none
    topic        str | null   the Wikipedia title the instruction is about (null if none)
    kind         "fact" | "nonfact" | null   how the record was built (a gold label for sanity
                 checks of the fact-based classifier; null = no gold label, e.g. OASST1 prompts)
    source       str   "embedded", "oasst1", "alpaca_eval", "factscore", "fava", "dpo_file"
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flame.io import RecordError, read_jsonl

FIELDS = ("id", "instruction", "response", "topic", "kind", "source")
KINDS = ("fact", "nonfact", None)
TRAIN_SPLITS = ("seed", "dpo")
TRAIN_SPLITS_SET = set(TRAIN_SPLITS)
EVAL_SPLITS = ("eval/bio", "eval/alpaca", "eval/fava")
RESOURCES = Path(__file__).resolve().parent.parent / "resources"
NONFACT_FILE = RESOURCES / "nonfact_instructions.jsonl"
CLASSIFIER_FILE = RESOURCES / "classifier_labels.jsonl"


def norm(text: str) -> str:
    """Comparison key of an instruction: whitespace collapsed, case folded."""
    return " ".join(text.split()).casefold()


def record_id(split: str, instruction: str) -> str:
    digest = hashlib.sha256(norm(instruction).encode("utf-8")).hexdigest()[:10]
    return f"{split.split('/')[-1]}-{digest}"


def make_record(split, instruction, response, topic, kind, source) -> dict[str, Any]:
    assert kind in KINDS, kind
    return {
        "id": record_id(split, instruction),
        "instruction": instruction,
        "response": response,
        "topic": topic,
        "kind": kind,
        "source": source,
    }


def line_numbers(path: str | os.PathLike) -> list[int]:
    """Line numbers of the non-blank lines of a file: parallel to what read_jsonl returns."""
    with Path(path).open(encoding="utf-8") as fh:
        return [n for n, line in enumerate(fh, 1) if line.strip()]


def read_typed(path: str | os.PathLike, types: Mapping[str, type]) -> list[dict[str, Any]]:
    """read_jsonl with field types, plus checks that str fields are non-empty and `id` and
    `instruction` unique; every error names file:line."""
    records = read_jsonl(path, required=types)
    seen: dict[str, dict[str, int]] = {"id": {}, "instruction": {}}
    for rec, lineno in zip(records, line_numbers(path), strict=True):
        where = f"{path}:{lineno}"
        for key, typ in types.items():
            if typ is str and not rec[key].strip():
                raise RecordError(f"{where}: field {key!r} must be a non-empty string")
        for key, index in seen.items():
            if key in rec:
                k = norm(rec[key])
                if k in index:
                    raise RecordError(f"{where}: duplicate {key} (first at line {index[k]})")
                index[k] = lineno
    return records


def load_nonfact(path: str | os.PathLike = NONFACT_FILE) -> list[dict[str, Any]]:
    """Hand-written instructions that need no factual knowledge, each with a human response:
    {id, instruction, response, category}."""
    return read_typed(path, {"id": str, "instruction": str, "response": str, "category": str})


def load_classifier_labels(path: str | os.PathLike = CLASSIFIER_FILE) -> list[dict[str, Any]]:
    """Hand-labelled instructions {id, instruction, fact_based: bool} for the classifier check."""
    return read_typed(path, {"id": str, "instruction": str, "fact_based": bool})


def check_splits(splits: Mapping[str, list[dict]], reserved: Iterable[str] = ()) -> None:
    """Raise ValueError unless: every record has the schema; ids are unique across all splits;
    no instruction is in `reserved` (the classifier labels) or twice in one split; a training
    split shares no instruction with any other split; no topic is in two splits unless both are
    evaluation sets (evaluation sets may share items)."""
    reserved_keys = {norm(t) for t in reserved}
    ids: dict[str, str] = {}
    texts: dict[str, str] = {}
    topics: dict[str, str] = {}
    for split, records in splits.items():
        seen: set[str] = set()
        for rec in records:
            missing = [f for f in FIELDS if f not in rec]
            if missing:
                raise ValueError(f"{split}: record {rec.get('id')!r} lacks {', '.join(missing)}")
            if rec["kind"] not in KINDS or not isinstance(rec["instruction"], str):
                raise ValueError(f"{split}: record {rec['id']!r} has a bad kind or instruction")
            if rec["id"] in ids:
                raise ValueError(f"{split}: id {rec['id']!r} also in {ids[rec['id']]}")
            ids[rec["id"]] = split
            key = norm(rec["instruction"])
            if key in reserved_keys:
                raise ValueError(f"{split}: {rec['instruction']!r} is a classifier-label item")
            other = texts.get(key)
            if key in seen or (other and TRAIN_SPLITS_SET & {split, other}):
                raise ValueError(
                    f"{split}: instruction {rec['instruction']!r} also in {other or split}"
                )
            seen.add(key)
            texts.setdefault(key, split)
            topic = rec["topic"]
            if topic is not None:
                first = topics.setdefault(topic, split)
                if first != split and not {first, split} <= set(EVAL_SPLITS):
                    raise ValueError(f"{split}: entity {topic!r} also used in {first}")
