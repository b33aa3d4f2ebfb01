"""A persistent key-value cache for expensive calls (LM generations, judgments, fact checks).

SQLite in WAL mode with a busy timeout, so several Snakemake jobs can read and write the same
cache file at once. Keys are SHA-256 digests of a canonical JSON description of the call (the
model's fingerprint, the exact prompt, the decoding parameters, the sample index), so a re-run
with the same inputs makes zero model calls, and a changed prompt or model misses cleanly.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def make_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Cache:
    """`get_many`/`put_many` over one SQLite table; values are JSON."""

    def __init__(self, path: str | Path, namespace: str = "default"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=120, check_same_thread=False)
        self._retry(lambda: self._conn.execute("PRAGMA journal_mode=WAL"))
        self._retry(
            lambda: self._conn.execute(
                "CREATE TABLE IF NOT EXISTS cache (ns TEXT, key TEXT, value TEXT, created REAL,"
                " PRIMARY KEY (ns, key))"
            )
        )
        self._conn.commit()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _retry(fn, attempts: int = 20):
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as err:  # "database is locked" under contention
                if "locked" not in str(err) or i == attempts - 1:
                    raise
                time.sleep(0.05 * (i + 1))

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._retry(
                    lambda chunk=chunk, marks=marks: self._conn.execute(
                        f"SELECT key, value FROM cache WHERE ns=? AND key IN ({marks})",
                        [self.namespace, *chunk],
                    ).fetchall()
                )
                found.update((k, json.loads(v)) for k, v in rows)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def get(self, key: str, default: Any = None) -> Any:
        return self.get_many([key]).get(key, default)

    def put_many(self, items: dict[str, Any]) -> None:
        if not items:
            return
        now = time.time()
        rows = [
            (self.namespace, k, json.dumps(v, ensure_ascii=False), now) for k, v in items.items()
        ]

        def write():
            with self._conn:
                self._conn.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)", rows)

        with self._lock:
            self._retry(write)

    def put(self, key: str, value: Any) -> None:
        self.put_many({key: value})

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._conn.execute(
                "SELECT COUNT(*) FROM cache WHERE ns=?", [self.namespace]
            ).fetchone()
        return n

    def close(self) -> None:
        self._conn.close()
