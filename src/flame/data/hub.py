"""The paper's real data: OASST1 seed pairs, AlpacaEval, FActScore entities, FAVA, DPO prompts.

Each loader takes a local file (.jsonl, .json, .parquet, .csv, .txt) or a Hugging Face dataset
(an id such as "OpenAssistant/oasst1", or an hf:// file path) read with datasets.load_dataset.
Local JSONL errors name file:line; other formats name the file and row.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flame.data.schema import line_numbers, make_record, norm
from flame.io import RecordError, read_json, read_jsonl

log = logging.getLogger("flame.data")
PROMPT_FIELDS = ("instruction", "prompt", "input", "question", "query", "text")
ENTITY_FIELDS = ("topic", "entity", "name", "title")
# the hub repo's loading script is not supported by datasets >= 4: read its JSON file instead
ALPACA_EVAL_FILE = "hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json"
HF_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class HubOptions:
    seed: int = 0
    oasst1: str = "OpenAssistant/oasst1"
    alpaca_eval: str = "tatsu-lab/alpaca_eval"
    factscore_entities: str | None = None  # FActScore data/labeled/prompt_entities.txt (183)
    fava: str | None = None  # FAVA's 141 knowledge-intensive instructions
    dpo_prompts: str | None = None  # default: OASST1 prompts not used in the seed set
    n_seed: int = 3200
    n_dpo: int | None = None  # None: all available
    n_eval_bio: int | None = None
    n_eval_alpaca: int | None = None
    n_eval_fava: int | None = None


def load_table(source: str, split: str = "train") -> list[tuple[str, dict[str, Any]]]:
    """Rows of a local file or HF dataset as (where, row) pairs; `where` names file:line/row."""
    path = Path(source)
    if path.exists():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            rows = zip(read_jsonl(path), line_numbers(path), strict=True)
            return [(f"{path}:{n}", r) for r, n in rows]
        if suffix == ".json":
            data = read_json(path)
            if isinstance(data, dict) and len(data) == 1 and isinstance([*data.values()][0], list):
                data = [*data.values()][0]  # {"data": [...]}
            if not isinstance(data, list):
                raise RecordError(f"{path}: expected a JSON list of records")
            for i, row in enumerate(data):
                if not isinstance(row, dict):
                    raise RecordError(f"{path}: item {i} is not a JSON object")
            return [(f"{path}: item {i}", r) for i, r in enumerate(data)]
        if suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            return [
                (f"{path}:{n}", {"text": t.strip()})
                for n, t in enumerate(lines, 1)
                if t.strip() and not t.startswith("#")
            ]
        if suffix in (".parquet", ".csv", ".tsv"):
            import pandas as pd

            if suffix == ".parquet":
                frame = pd.read_parquet(path)
            else:
                frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
            return [
                (f"{path}: row {i + 1}", _clean(r)) for i, r in enumerate(frame.to_dict("records"))
            ]
        raise RecordError(f"{path}: unsupported file type {suffix!r} (jsonl/json/parquet/csv/txt)")
    import datasets

    if source.startswith("hf://"):
        builder = HF_BUILDERS.get(Path(source).suffix.lower())
        if builder is None:
            raise RecordError(f"{source}: cannot tell the file format from the name")
        ds = datasets.load_dataset(builder, data_files=source, split="train")
    else:
        ds = datasets.load_dataset(source, split=split)
    return [(f"{source} [{split}] row {i}", dict(r)) for i, r in enumerate(ds)]


def _clean(row: dict) -> dict:
    """pandas gives NaN for empty cells: make them None."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _text(where: str, row: dict, fields=PROMPT_FIELDS) -> str:
    for field in fields:
        value = row.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise RecordError(f"{where}: no non-empty text in any of the fields {', '.join(fields)}")


def _unique(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    seen, out = set(), []
    for text, extra in items:
        if norm(text) not in seen:
            seen.add(norm(text))
            out.append((text, extra))
    return out


def load_oasst1_pairs(source: str, lang: str = "en") -> list[tuple[str, str]]:
    """First-turn (instruction, rank-0 assistant reply) pairs in `lang`, in message-id order.
    OASST1 rows: message_id, parent_id, role (prompter/assistant), text, lang, rank, deleted."""
    rows = load_table(source)
    prompts, replies = {}, {}
    for where, row in rows:
        missing = [k for k in ("message_id", "parent_id", "role", "text") if k not in row]
        if missing:
            raise RecordError(f"{where}: missing field(s) {', '.join(missing)}")
        if row.get("deleted") is True or row.get("review_result") is False:
            continue
        if row["role"] == "prompter" and row["parent_id"] is None and row.get("lang") == lang:
            prompts[row["message_id"]] = _text(where, row, ("text",))
        rank = row.get("rank")
        if row["role"] == "assistant" and rank is not None and int(rank) == 0:
            replies.setdefault(row["parent_id"], _text(where, row, ("text",)))
    pairs = [(prompts[m], replies[m]) for m in sorted(prompts) if m in replies]
    log.info(
        "%s: %d English first-turn prompts, %d with a rank-0 reply",
        source,
        len(prompts),
        len(pairs),
    )
    return _unique(pairs)


def load_alpaca_eval(source: str) -> list[tuple[str, str | None]]:
    """AlpacaEval (instruction, reference output or None); 805 items."""
    if source.rstrip("/") == "tatsu-lab/alpaca_eval":
        source = ALPACA_EVAL_FILE
    return _unique(
        [(_text(w, r, ("instruction",)), r.get("output")) for w, r in load_table(source, "eval")]
    )


def load_factscore_entities(source: str) -> list[str]:
    """FActScore entity names: a .txt file (one a line) or rows with topic/entity/name/title."""
    names = [_text(w, r, ENTITY_FIELDS + ("text",)) for w, r in load_table(source)]
    return [name for name, _ in _unique([(n, None) for n in names])]


def load_prompts(source: str) -> list[str]:
    """Instructions from any table with an instruction/prompt/input/question/query/text field
    (FAVA's knowledge-intensive instructions, self-instruct DPO prompts)."""
    return [t for t, _ in _unique([(_text(w, r), None) for w, r in load_table(source)])]


def _sample(items: list, n: int | None, option: str, what: str, rng: random.Random) -> list:
    """All items (n None), or n of them chosen with `rng`, kept in their original order."""
    if n is None:
        return list(items)
    if n < 0 or n > len(items):
        raise ValueError(f"{option}={n} must be between 0 and the {len(items)} {what}")
    keep = sorted(rng.sample(range(len(items)), n))
    return [items[i] for i in keep]


def build_hub(opts: HubOptions, reserved: list[str]) -> tuple[dict[str, list[dict]], dict]:
    """Evaluation sets first; seed and DPO prompts then exclude any evaluation or classifier-label
    instruction (AlpacaEval holds OASST prompts). Returns ({split: records}, manifest info)."""
    for option, value in (("--factscore-entities", opts.factscore_entities), ("--fava", opts.fava)):
        if not value:
            raise ValueError(f"{option} is required with --source hub (a file or dataset id)")
    rng = random.Random(opts.seed)
    alpaca = _sample(
        load_alpaca_eval(opts.alpaca_eval),
        opts.n_eval_alpaca,
        "--n-eval-alpaca",
        "AlpacaEval instructions",
        rng,
    )
    people = _sample(
        load_factscore_entities(opts.factscore_entities),
        opts.n_eval_bio,
        "--n-eval-bio",
        "FActScore entities",
        rng,
    )
    fava = _sample(
        load_prompts(opts.fava), opts.n_eval_fava, "--n-eval-fava", "FAVA instructions", rng
    )
    bio = [f"Tell me a bio of {name}." for name in people]  # FActScore's prompt
    taken = {norm(t) for t in [i for i, _ in alpaca] + bio + fava + reserved}
    dropped = {}

    def fresh(items, what):
        kept = [it for it in items if norm(it[0] if isinstance(it, tuple) else it) not in taken]
        dropped[what] = len(items) - len(kept)
        return kept

    pairs = fresh(load_oasst1_pairs(opts.oasst1), "oasst1")
    rng.shuffle(pairs)
    if opts.n_seed > len(pairs):
        raise ValueError(f"--n-seed={opts.n_seed} exceeds the {len(pairs)} OASST1 pairs available")
    seed_pairs, held_out = pairs[: opts.n_seed], [p for p, _ in pairs[opts.n_seed :]]
    taken |= {norm(p) for p, _ in seed_pairs}
    if opts.dpo_prompts:
        prompts, dpo_source = fresh(load_prompts(opts.dpo_prompts), "dpo_prompts"), "dpo_file"
    else:
        prompts, dpo_source = held_out, "oasst1"
    dpo = _sample(prompts, opts.n_dpo, "--n-dpo", f"DPO prompts ({dpo_source})", rng)
    splits = {
        "seed": [make_record("seed", p, r, None, None, "oasst1") for p, r in seed_pairs],
        "dpo": [make_record("dpo", p, None, None, None, dpo_source) for p in dpo],
        "eval/bio": [
            make_record("eval/bio", f"Tell me a bio of {n}.", None, n, "fact", "factscore")
            for n in people
        ],
        "eval/alpaca": [
            make_record("eval/alpaca", i, o, None, None, "alpaca_eval") for i, o in alpaca
        ],
        "eval/fava": [make_record("eval/fava", f, None, None, "fact", "fava") for f in fava],
    }
    log.info("hub: dropped instructions already in an evaluation or label set: %s", dropped)
    return splits, {"info": {"dropped_overlapping": dropped}}
