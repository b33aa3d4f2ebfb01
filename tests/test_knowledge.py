import json
import sqlite3

import pytest

from flame.data import load_wiki_summaries
from flame.knowledge import (
    SPECIAL_SEPARATOR,
    KnowledgeBase,
    build,
    chunk_text,
    export_sqlite,
    iter_documents,
    main,
)


def write_factscore_db(path, pages):
    """A DB in FActScore's format: passages of each page joined by its separator."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE documents (title PRIMARY KEY, text);")
    for title, passages in pages.items():
        text = SPECIAL_SEPARATOR.join(f"<s>{p}</s>" for p in passages)
        conn.execute("INSERT INTO documents VALUES (?, ?)", (title, text))
    conn.commit()
    conn.close()


def test_chunk_text_packs_sentences_under_the_limit():
    text = "One two three. Four five six seven. Eight nine. Ten."
    assert chunk_text(text, 6) == ["One two three.", "Four five six seven. Eight nine.", "Ten."]
    assert chunk_text(text, 100) == [text]
    long = " ".join(f"w{i}" for i in range(25)) + ". Short one."
    parts = chunk_text(long, 10)
    assert [len(p.split()) for p in parts] == [
        10,
        10,
        7,
    ]  # a long sentence is hard-cut, its rest packed
    assert " ".join(parts).split() == long.split()  # nothing lost, order kept
    assert chunk_text("", 5) == [] and chunk_text("   \n ", 5) == []


def test_factscore_sqlite_db_is_read_and_split(tmp_path):
    db = tmp_path / "enwiki.db"
    write_factscore_db(
        db,
        {
            "Ada Lovelace": ["Ada Lovelace was an English mathematician.", "She wrote notes."],
            "Alan Turing": ["Alan Turing was a computer scientist."],
        },
    )
    docs = dict(iter_documents(f"sqlite:{db}"))
    assert docs["Ada Lovelace"] == [
        "Ada Lovelace was an English mathematician.",
        "She wrote notes.",
    ]
    meta = build(f"sqlite:{db}", tmp_path / "kb", max_passage_tokens=256)
    assert meta["n_pages"] == 2 and meta["n_passages"] == 3
    kb = KnowledgeBase.load(tmp_path / "kb")
    ps = kb.topic_passages("ada LOVELACE")  # case-insensitive
    assert [p["text"] for p in ps] == docs["Ada Lovelace"]
    assert all("<s>" not in p["text"] for p in kb.passages)
    assert kb.has_topic("Alan Turing") and not kb.has_topic("Grace Hopper")
    assert kb.topic_passages("Grace Hopper") == [] and kb.topic_passages(None) == []
    assert kb.search("computer scientist", 1)[0]["title"] == "Alan Turing"
    hits = kb.search_topic("Ada Lovelace", ["Ada Lovelace notes"], 5)[0]
    assert [h["text"] for h in hits] == ["She wrote notes.", docs["Ada Lovelace"][0]]


def test_sqlite_without_documents_table_fails_clearly(tmp_path):
    db = tmp_path / "bad.db"
    sqlite3.connect(db).execute("CREATE TABLE pages (name TEXT)").connection.close()
    with pytest.raises(ValueError, match="table documents: missing column"):
        list(iter_documents(f"sqlite:{db}"))


def test_jsonl_and_parquet_sources_merge_pages_and_chunk(tmp_path):
    src = tmp_path / "docs.jsonl"
    rows = [
        {"title": "Paris", "text": ["Paris is the capital of France.", "It lies on the Seine."]},
        {"title": "Paris", "text": "Paris hosted the 1900 Olympics."},
        {"title": "Empty", "text": ""},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = build(f"jsonl:{src}", tmp_path / "kb", max_passage_tokens=6)
    assert meta["documents_sharing_a_title"] == 1 and meta["skipped_empty_documents"] == 1
    kb = KnowledgeBase.load(tmp_path / "kb")
    texts = [p["text"] for p in kb.topic_passages("Paris")]
    assert texts == [
        "Paris is the capital of France.",
        "It lies on the Seine.",
        "Paris hosted the 1900 Olympics.",
    ]
    assert [p["id"] for p in kb.passages] == [0, 1, 2]

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"title": ["Rome"], "text": ["Rome is in Italy."]}), tmp_path / "d.pq")
    build(f"parquet:{tmp_path / 'd.pq'}", tmp_path / "kb2")
    assert (
        KnowledgeBase.load(tmp_path / "kb2").topic_passages("rome")[0]["text"]
        == "Rome is in Italy."
    )
    pq.write_table(pa.table({"name": ["x"]}), tmp_path / "bad.pq")
    with pytest.raises(ValueError, match="missing column"):
        build(f"parquet:{tmp_path / 'bad.pq'}", tmp_path / "kb3")


def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict({"title": ["Oslo"], "text": ["Oslo is in Norway."], "x": [1]})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert list(iter_documents(f"hf:{tmp_path / 'ds'}")) == [("Oslo", ["Oslo is in Norway."])]


def test_build_is_atomic_and_replaces(tmp_path):
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"title": "A", "text": "Alpha text."}) + "\n")
    out = tmp_path / "kb"
    build(f"jsonl:{src}", out)
    src.write_text(json.dumps({"title": "B", "text": "Beta text."}) + "\n")
    main(["build", "--source", f"jsonl:{src}", "--out", str(out)])
    assert KnowledgeBase.load(out).has_topic("B") and not KnowledgeBase.load(out).has_topic("A")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "kb"]  # no temp folders left
    with pytest.raises(ValueError, match="gave no passages"):
        src.write_text(json.dumps({"title": "C", "text": ""}) + "\n")
        build(f"jsonl:{src}", out)
    assert KnowledgeBase.load(out).has_topic("B")  # a failed build keeps the old folder


def test_unknown_source_and_unbuilt_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown knowledge source 'wiki'"):
        list(iter_documents("wiki"))
    with pytest.raises(FileNotFoundError, match="python -m flame.knowledge build"):
        KnowledgeBase.load(tmp_path)


def test_embedded_wiki_summaries_and_index(tmp_path):
    rows = load_wiki_summaries()
    assert len(rows) == 10033
    assert set(rows[0]) == {"title", "extract", "description", "topic"}
    einstein = next(r for r in rows if r["title"] == "Albert Einstein")
    assert "relativity" in einstein["extract"]
    build("embedded", tmp_path / "kb")
    kb = KnowledgeBase.load(tmp_path / "kb")
    assert kb.meta["n_pages"] == 10033
    assert kb.search("Tell me a bio of Albert Einstein.", 3)[0]["title"] == "Albert Einstein"


def test_export_writes_factscores_layout_that_reads_back(tmp_path):
    """`flame.knowledge export` (make shrink-data): FActScore's SQLite layout, passages joined by
    its separator; --max-pages keeps the --include pages; a name with no page is reported."""
    pages = tmp_path / "pages.jsonl"
    rows = [
        {"title": f"Page {i}", "text": f"Sentence one of {i}. Sentence two of {i}."}
        for i in range(20)
    ]
    pages.write_text("".join(json.dumps(r) + "\n" for r in rows))
    db = tmp_path / "kb.db"
    counts = export_sqlite(
        f"jsonl:{pages}", db, max_passage_tokens=4, max_pages=5, include=["Page 7", "Nobody"]
    )
    assert counts["pages"] == 5 and counts["include_without_page"] == ["Nobody"]
    conn = sqlite3.connect(db)
    got = dict(conn.execute("SELECT title, text FROM documents").fetchall())
    conn.close()
    assert len(got) == 5 and "Page 7" in got and "Nobody" not in got
    assert got["Page 7"] == "Sentence one of 7.####SPECIAL####SEPARATOR####Sentence two of 7."
    back = dict(iter_documents(f"sqlite:{db}"))
    assert back["Page 7"] == ["Sentence one of 7.", "Sentence two of 7."]
    # without --max-pages every page; the same seed gives the same sample
    assert export_sqlite(f"jsonl:{pages}", db)["pages"] == 20
    a = export_sqlite(f"jsonl:{pages}", tmp_path / "a.db", max_pages=3, seed=1)
    b = export_sqlite(f"jsonl:{pages}", tmp_path / "b.db", max_pages=3, seed=1)
    read = [
        sorted(t for (t,) in sqlite3.connect(p).execute("SELECT title FROM documents"))
        for p in (tmp_path / "a.db", tmp_path / "b.db")
    ]
    assert a == b and read[0] == read[1] and len(read[0]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.db", "b.db", "kb.db", "pages.jsonl"]
