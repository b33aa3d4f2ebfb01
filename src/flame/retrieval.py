"""Sparse retrieval: a generic BM25 index (on `bm25s`) over any list of texts.

Used to rank knowledge passages for fact verification (flame.knowledge, flame.factscore), to
pick the few-shot demonstrations most similar to a sentence (FActScore's decomposition demos)
and to pick the k most similar seed instructions as few-shot demos elsewhere.

Tokenisation: lowercase, words of 2+ word characters (scikit-learn's pattern), English stopwords
removed (bm25s' STOPWORDS_EN_PLUS list), no stemming. Scores are BM25 (Lucene variant, k1=1.5,
b=0.75). Results are ranked by score, ties broken by the lower index, so rankings are stable.

Retrievers are registered by name (``RETRIEVERS``; ``get_retriever(name)``): "bm25" here and
"dense" (flame.dense.DenseIndex: sentence embeddings + FAISS), which implement the same four
calls (build/search/save/load).

Example:
    python -c "from flame.retrieval import BM25Index; \
ix = BM25Index.build(['the cat sat', 'dogs bark loudly']); print(ix.search(['barking dog'], 1))"
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

_WORD = re.compile(r"(?u)\b\w\w+\b")
IDS_FILE = "ids.json"


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(STOPWORDS_EN_PLUS)


STOPWORDS = _stopwords()


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens without English stopwords."""
    return [t for t in _WORD.findall(text.lower()) if t not in STOPWORDS]


class Retriever(Protocol):
    """What every retriever offers. ``allowed`` restricts the candidates to those indices."""

    ids: list

    @classmethod
    def build(cls, texts: Sequence[str], ids: Sequence | None = None) -> Retriever: ...

    def search(
        self, queries: Sequence[str], k: int, allowed: Sequence[int] | None = None
    ) -> list[list[tuple[int, float]]]: ...

    def save(self, folder: str | Path) -> None: ...

    @classmethod
    def load(cls, folder: str | Path) -> Retriever: ...


def top_k(scores, k: int, candidates=None) -> list[tuple[int, float]]:
    """The k best (index, score) pairs of a score vector, best first, ties by lower index."""
    import numpy as np

    idx = np.arange(len(scores)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    if k <= 0 or idx.size == 0:
        return []
    sub = np.asarray(scores)[idx]
    order = np.lexsort((idx, -sub))[:k]  # primary key: score descending; then index ascending
    return [(int(idx[j]), float(sub[j])) for j in order]


class BM25Index:
    """BM25 over a list of texts. ``search`` returns positions into the indexed list;
    ``ids`` maps a position to the caller's id (defaults to the position itself)."""

    def __init__(self, model, ids: list):
        self.model = model
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, texts: Sequence[str], ids: Sequence | None = None) -> BM25Index:
        import bm25s

        texts = list(texts)
        if not texts:
            raise ValueError("cannot build a BM25 index over zero texts")
        ids = list(range(len(texts))) if ids is None else list(ids)
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        model = bm25s.BM25()
        model.index([tokenize(t) for t in texts], show_progress=False)
        return cls(model, ids)

    def scores(self, query: str):
        """BM25 score of every indexed text for one query (zeros if no query word is indexed)."""
        import numpy as np

        tok_ids = self.model.get_tokens_ids(tokenize(query))
        return self.model.get_scores_from_ids(np.asarray(tok_ids, dtype=np.int64))

    def search(
        self, queries: Sequence[str], k: int, allowed: Sequence[int] | None = None
    ) -> list[list[tuple[int, float]]]:
        """For each query the top-k (position, score) pairs, best first. Texts that share no
        word with the query score 0 and still fill the k slots (lowest positions first)."""
        return [top_k(self.scores(q), k, allowed) for q in queries]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(str(folder), show_progress=False)
        (folder / IDS_FILE).write_text(json.dumps(self.ids, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> BM25Index:
        import bm25s

        folder = Path(folder)
        if not (folder / IDS_FILE).exists():
            raise FileNotFoundError(f"{folder}: not a saved BM25 index (no {IDS_FILE})")
        model = bm25s.BM25.load(str(folder), show_progress=False)
        ids = json.loads((folder / IDS_FILE).read_text(encoding="utf-8"))
        return cls(model, ids)


# name -> class, or "module:Class" imported on first use (the dense retriever's dependencies
# are an optional extra: listing it must not import them)
RETRIEVERS: dict[str, type | str] = {"bm25": BM25Index, "dense": "flame.dense:DenseIndex"}


def get_retriever(name: str) -> type:
    """The retriever class registered under ``name``."""
    try:
        entry = RETRIEVERS[name]
    except KeyError:
        raise ValueError(f"unknown retriever {name!r} (known: {', '.join(RETRIEVERS)})") from None
    if isinstance(entry, str):
        import importlib

        module, _, attr = entry.partition(":")
        entry = RETRIEVERS[name] = getattr(importlib.import_module(module), attr)
    return entry
