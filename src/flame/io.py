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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


class RecordError(ValueError):
    """A malformed input record; the message names the file and line."""


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Read a JSONL file. Blank lines are skipped; a bad line raises RecordError naming it."""
    required = tuple(required)
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
            missing = [k for k in required if k not in rec]
            if missing:
                raise RecordError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
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
