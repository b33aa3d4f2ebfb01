"""Records on disk: JSONL/JSON/CSV read with file:line errors and written atomically.

Every stage of the workflow passes JSONL records (one JSON object per line). Readers name the
file and line of any bad record; writers write to a temporary file in the same folder and
rename it into place, so a killed job never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import types
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin


class RecordError(ValueError):
    """A malformed input record; the message names the file and line."""


# The shapes of the records the steps pass each other, for read_jsonl's `required`/`optional`.
ID = str | int
PROMPTS = {"id": ID, "instruction": str}
SAMPLES = {"id": ID, "instruction": str, "responses": list[str]}
SCORES = {"id": ID, "scores": list[float | None]}
PAIRS = {"prompt": str, "chosen": str, "rejected": str}
PAIR_EXTRAS = {
    "kind": str | None,
    "rm_if": list[float | None] | None,
    "rm_fact": list[float | None] | None,
}
FACTS = {"id": ID, "supported": bool}  # the factscore step's facts files: one row a fact
EXTRAS = {"fact_based": bool | None, "topic": str | None}  # checked where a record has them

_NAMES = {  # spec: (singular, plural) as an error message says them
    str: ("a string", "strings"),
    float: ("a number", "numbers"),
    int: ("an integer", "integers"),
    bool: ("true or false", "booleans"),
    dict: ("an object", "objects"),
    list: ("a list", "lists"),
    type(None): ("null", "nulls"),
}


def conforms(value: Any, spec: Any) -> bool:
    """Whether a JSON value has the shape `spec`: str, float (an int too, not a bool), int, bool,
    dict, list, None, Any, a union (`float | None`) or a list of one (`list[list[float]]`)."""
    origin = get_origin(spec)
    if spec is Any:
        return True
    if spec is None or spec is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in get_args(spec))
    if origin is list:
        (item,) = get_args(spec)
        return isinstance(value, list) and all(conforms(v, item) for v in value)
    if spec is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if spec is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, spec)


def describe(spec: Any, plural: bool = False) -> str:
    """`list[list[float]]` -> "a list of lists of numbers", as an error message says it."""
    origin = get_origin(spec)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a, plural) for a in get_args(spec))
    if origin is list:
        return f"{'lists' if plural else 'a list'} of {describe(get_args(spec)[0], True)}"
    if spec is None:
        spec = type(None)
    return _NAMES[spec][plural] if spec in _NAMES else getattr(spec, "__name__", str(spec))


def check_fields(
    rec: dict[str, Any], where: str, required: Mapping[str, Any], optional: Mapping[str, Any]
) -> None:
    """Raise RecordError naming `where` (file:line) and the field unless `rec` has every
    `required` field and each required or present `optional` field has its shape."""
    missing = [k for k in required if k not in rec]
    if missing:
        raise RecordError(f"{where}: missing field(s) {', '.join(missing)}")
    for key, spec in (*required.items(), *optional.items()):
        if key in rec and not conforms(rec[key], spec):
            got = json.dumps(rec[key], ensure_ascii=False)
            got = got if len(got) <= 40 else got[:37] + "..."
            raise RecordError(f"{where}: field {key!r} must be {describe(spec)}, got {got}")


def read_jsonl(
    path: str | os.PathLike,
    required: Iterable[str] | Mapping[str, Any] = (),
    optional: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Read a JSONL file. Blank lines are skipped; a bad line raises RecordError naming it.

    `required`: fields each record must have; a mapping also gives each one's shape (see
    `conforms`: `{"prompt": str, "scores": list[float | None]}`). `optional`: shapes of fields
    checked where a record has them."""
    if not isinstance(required, Mapping):
        required = dict.fromkeys(required, Any)
    optional = optional or {}
    records = []
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(rec, dict):
                raise RecordError(
                    f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}"
                )
            check_fields(rec, f"{path}:{lineno}", required, optional)
            records.append(rec)
    return records


def record_lines(path: str | os.PathLike) -> list[int]:
    """Line numbers of the non-blank lines (the records read_jsonl returns, in order)."""
    with Path(path).open(encoding="utf-8") as fh:
        return [n for n, line in enumerate(fh, 1) if line.strip()]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Write records atomically; returns how many were written."""
    n = 0
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def setup_logging(level: str = "INFO") -> logging.Logger:
    """Log to stderr (Snakemake rules redirect it to the rule's log file)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    return logging.getLogger("flame")


def json_arg(value: str) -> Any:
    """argparse type: a JSON literal, or @path to a JSON/YAML file."""
    if value.startswith("@"):
        text = Path(value[1:]).read_text(encoding="utf-8")
        if value.endswith((".yaml", ".yml")):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
