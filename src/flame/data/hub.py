"""The paper's real data: OASST1 seed pairs, AlpacaEval, FActScore entities, FAVA, DPO prompts.

Each loader takes a local file (.jsonl, .jsonl.gz, .json, .parquet, .csv, .txt) or a Hugging Face
dataset (an id such as "OpenAssistant/oasst1", or an hf:// file path) read with
datasets.load_dataset.
Local JSONL errors name file:line; other formats name the file and row.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flame.data.oasst import first_turn_pairs
from flame.data.schema import line_numbers, make_record, norm
from flame.io import RecordError, read_json, read_jsonl

log = logging.getLogger("flame.data")
PROMPT_FIELDS = ("instruction", "prompt", "input", "question", "query", "text")
ENTITY_FIELDS = ("topic", "entity", "name", "title")
# the hub repo's loading script is not supported by datasets >= 4: read its JSON file instead
ALPACA_EVAL_FILE = "hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json"
HF_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
LOCAL_SUFFIXES = (*HF_BUILDERS, ".tsv", ".txt", ".db", ".gz")


@dataclass
class HubOptions:
    seed: int = 0
    oasst1: str = "OpenAssistant/oasst1"
    # evaluation sets: each optional (None or "none": left out, its table columns empty)
    alpaca_eval: str | None = "tatsu-lab/alpaca_eval"
    factscore_entities: str | None = None  # FActScore data/labeled/prompt_entities.txt (183)
    fava: str | None = None  # FAVA's annotations.json: 141 knowledge-intensive instructions
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
        if path.name.lower().endswith(".jsonl.gz"):  # OASST1's release files
            return _read_jsonl_gz(path)
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
    from datasets.exceptions import DatasetsError
    from huggingface_hub.errors import EntryNotFoundError

    try:
        if source.startswith("hf://"):
            builder = HF_BUILDERS.get(Path(source).suffix.lower())
            if builder is None:
                raise RecordError(f"{source}: cannot tell the file format from the name")
            ds = datasets.load_dataset(builder, data_files=source, split="train")
        else:
            ds = datasets.load_dataset(source, split=split)
    except RecordError:
        raise
    # offline or refused (OSError: requests' and the hub's errors are ones), unknown id or file,
    # no such split (ValueError), a file it cannot parse (DatasetsError): say what to do instead.
    # Anything else (a TypeError, KeyError, AttributeError, ...) is a bug: its traceback stays.
    except (OSError, ValueError, DatasetsError, EntryNotFoundError) as err:
        raise OSError(
            f"{source}: cannot load it from the Hugging Face hub ({type(err).__name__}: "
            f"{str(err)[:200]}); give a local file instead"
        ) from err
    return [(f"{source} [{split}] row {i}", dict(r)) for i, r in enumerate(ds)]


def _read_jsonl_gz(path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"{path}:{n}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise RecordError(f"{path}:{n}: expected a JSON object")
            rows.append((f"{path}:{n}", row))
    return rows


def _clean(row: dict) -> dict:
    """pandas gives NaN for empty cells: make them None."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


def _text(where: str, row: dict, fields=PROMPT_FIELDS) -> str:
    for field in fields:
        value = row.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise RecordError(f"{where}: no non-empty text in any of the fields {', '.join(fields)}")


def _unique(items: list[tuple[str, Any]], drops: Counter | None = None) -> list[tuple[str, Any]]:
    """First occurrence of each instruction (by norm); repeats are counted as drops."""
    seen, out = set(), []
    for text, extra in items:
        if norm(text) not in seen:
            seen.add(norm(text))
            out.append((text, extra))
    if drops is not None and len(items) > len(out):
        drops["duplicate"] += len(items) - len(out)
    return out


def load_oasst1_pairs(
    source: str, lang: str = "en", drops: Counter | None = None
) -> list[tuple[str, str]]:
    """First-turn (instruction, rank-0 assistant reply) pairs in `lang`, in message-id order,
    from OASST1's message rows (see flame.data.oasst for how its quirks are handled)."""
    drops = Counter() if drops is None else drops
    return _unique(first_turn_pairs(load_table(source), lang, drops), drops)


def load_alpaca_eval(source: str, drops: Counter | None = None) -> list[tuple[str, str | None]]:
    """AlpacaEval (instruction, reference output or None): a JSON list of {instruction, output,
    generator, dataset}; 805 items."""
    if source.rstrip("/") == "tatsu-lab/alpaca_eval":
        source = ALPACA_EVAL_FILE
    rows = load_table(source, "eval")
    return _unique([(_text(w, r, ("instruction",)), r.get("output")) for w, r in rows], drops)


def load_factscore_entities(source: str, drops: Counter | None = None) -> list[str]:
    """FActScore entity names: a .txt file (one a line) or rows with topic/entity/name/title."""
    names = [_text(w, r, ENTITY_FIELDS + ("text",)) for w, r in load_table(source)]
    return [name for name, _ in _unique([(n, None) for n in names], drops)]


def load_prompts(source: str, drops: Counter | None = None) -> list[str]:
    """Instructions from any table with an instruction/prompt/input/question/query/text field
    (FAVA's annotations {prompt, model, output, annotated}: one prompt per model, so repeats;
    self-instruct DPO prompts)."""
    return [t for t, _ in _unique([(_text(w, r), None) for w, r in load_table(source)], drops)]


def _sample(items: list, n: int | None, option: str, what: str, rng: random.Random) -> list:
    """All items (n None), or n of them chosen with `rng`, kept in their original order."""
    if n is None:
        return list(items)
    if n < 0 or n > len(items):
        raise ValueError(f"{option}={n} must be between 0 and the {len(items)} {what}")
    keep = sorted(rng.sample(range(len(items)), n))
    return [items[i] for i in keep]


NOT_GIVEN = ("", "none", "null")
EVAL_FILES = {  # split: (option, what it is)
    "eval/alpaca": ("alpaca_eval", "AlpacaEval (and so Alpaca Fact, its fact-based subset)"),
    "eval/bio": ("factscore_entities", "Bio (FActScore's entity list)"),
    "eval/fava": ("fava", "FAVA"),
}


def given(value: str | None) -> str | None:
    """The option's source, or None when it is left out (unset, "", "none" or "null")."""
    return None if value is None or value.strip().lower() in NOT_GIVEN else value


def _check_file(option: str, value: str) -> None:
    """A missing local file names the option and says how to leave the set out."""
    path = Path(value)
    if not path.exists() and (
        path.suffix.lower() in LOCAL_SUFFIXES or value.startswith((".", "/"))
    ):
        flag = "--" + option.replace("_", "-")
        hint = "fix the path"
        if option in {o for o, _ in EVAL_FILES.values()}:
            hint += f", or leave the set out with data.hub.{option}: null ({flag} none)"
        raise FileNotFoundError(f"{flag} {value}: no such file ({hint})")


def _load(loader, option: str, value: str, drops: dict[str, Counter]):
    """loader(value) with its drops counted under `option`."""
    _check_file(option, value)
    return loader(value, drops=drops.setdefault(option, Counter()))


def build_hub(opts: HubOptions, reserved: list[str]) -> tuple[dict[str, list[dict]], dict]:
    """Evaluation sets first (each optional; they may share instructions); seed and DPO prompts
    then leave out every evaluation or classifier-label (`reserved`) instruction, counted
    (AlpacaEval holds OASST prompts). Returns ({split: records}, {"info": manifest info})."""
    if not given(opts.oasst1):
        raise ValueError("--oasst1 is required with --source hub (the SFT seed pairs)")
    for option in ("oasst1", "dpo_prompts", *(o for o, _ in EVAL_FILES.values())):
        if given(getattr(opts, option)):  # every path checked before any (slow) loading
            _check_file(option, getattr(opts, option))
    rng = random.Random(opts.seed)
    drops: dict[str, Counter] = {}
    missing = {}
    for split, (option, what) in EVAL_FILES.items():
        if not given(getattr(opts, option)):
            flag = "--" + option.replace("_", "-")
            missing[split] = f"{what}: not given (data.hub.{option} / {flag})"
            log.warning("hub: %s is left out: %s", split, missing[split])

    def load_eval(option, loader, n_option, what):
        value = given(getattr(opts, option))
        if value is None:
            return []
        items = _load(loader, option, value, drops)
        return _sample(items, getattr(opts, n_option), "--" + n_option.replace("_", "-"), what, rng)

    alpaca = load_eval("alpaca_eval", load_alpaca_eval, "n_eval_alpaca", "AlpacaEval instructions")
    people = load_eval(
        "factscore_entities", load_factscore_entities, "n_eval_bio", "FActScore entities"
    )
    fava = load_eval("fava", load_prompts, "n_eval_fava", "FAVA instructions")
    bio = [f"Tell me a bio of {name}." for name in people]  # FActScore's prompt
    taken = {norm(t): "classifier_labels" for t in reserved}
    for split, texts in (("eval/alpaca", [i for i, _ in alpaca]), ("eval/bio", bio),
                         ("eval/fava", fava)):  # fmt: skip
        taken.update({norm(t): split for t in texts})

    def fresh(items, what):
        """Items whose instruction is in no evaluation, label (or seed) set; drops counted."""
        kept = []
        for it in items:
            where = taken.get(norm(it[0] if isinstance(it, tuple) else it))
            if where is None:
                kept.append(it)
            else:
                drops.setdefault(what, Counter())[f"in_{where}"] += 1
        return kept

    pairs = fresh(_load(load_oasst1_pairs, "oasst1", opts.oasst1, drops), "seed")
    rng.shuffle(pairs)
    if opts.n_seed > len(pairs):
        raise ValueError(f"--n-seed={opts.n_seed} exceeds the {len(pairs)} OASST1 pairs available")
    seed_pairs, held_out = pairs[: opts.n_seed], [p for p, _ in pairs[opts.n_seed :]]
    taken |= {norm(p): "seed" for p, _ in seed_pairs}
    if given(opts.dpo_prompts):
        prompts = fresh(_load(load_prompts, "dpo_prompts", opts.dpo_prompts, drops), "dpo")
        dpo_source = "dpo_file"
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
    dropped = {k: dict(sorted(v.items())) for k, v in sorted(drops.items()) if v}
    log.info("hub: left out (by input, reason): %s", dropped)
    return splits, {"info": {"dropped": dropped, "missing_sets": missing}}
