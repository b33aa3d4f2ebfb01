import pytest

from flame.retrieval import BM25Index, get_retriever, tokenize, top_k

DOCS = [
    "The cat sat on the mat.",
    "Dogs bark loudly at night.",
    "A dog chased the cat up a tree.",
    "Quantum mechanics describes atoms.",
]


def test_tokenize_lowercases_and_drops_stopwords():
    assert tokenize("The Cat and THE dog, in a Tree!") == ["cat", "dog", "tree"]
    assert tokenize("the of and") == []


def test_search_ranks_by_bm25_with_stable_ties():
    ix = BM25Index.build(DOCS)
    (hits,) = ix.search(["quantum atoms"], 2)
    assert hits[0][0] == 3 and hits[0][1] > 0
    assert hits[1] == (0, 0.0)  # no overlap: score 0, lowest position first
    both = ix.search(["cat dog", "bark"], 2)
    assert both[0][0][0] == 2  # the only text with both words
    assert both[1][0][0] == 1
    assert len(ix.search(["cat"], 10)[0]) == len(DOCS)  # k larger than the corpus
    assert [i for i, _ in ix.search(["the"], 3)[0]] == [0, 1, 2]  # stopword-only query


def test_search_restricted_to_allowed_positions():
    ix = BM25Index.build(DOCS)
    hits = ix.search(["cat"], 5, allowed=[1, 2, 3])[0]
    assert [i for i, _ in hits][0] == 2 and 0 not in [i for i, _ in hits]
    assert ix.search(["cat"], 5, allowed=[])[0] == []


def test_save_load_roundtrip_keeps_ids_and_scores(tmp_path):
    ix = BM25Index.build(DOCS, ids=["a", "b", "c", "d"])
    ix.save(tmp_path / "ix")
    back = BM25Index.load(tmp_path / "ix")
    assert back.ids == ["a", "b", "c", "d"] and len(back) == 4
    assert back.search(["dog tree"], 3) == ix.search(["dog tree"], 3)
    with pytest.raises(FileNotFoundError, match="not a saved BM25 index"):
        BM25Index.load(tmp_path)


def test_build_rejects_bad_input_and_registry():
    with pytest.raises(ValueError, match="zero texts"):
        BM25Index.build([])
    with pytest.raises(ValueError, match="2 ids for 4 texts"):
        BM25Index.build(DOCS, ids=[1, 2])
    assert get_retriever("bm25") is BM25Index
    with pytest.raises(ValueError, match="unknown retriever 'nope'"):
        get_retriever("nope")


def test_top_k_orders_by_score_then_index():
    assert top_k([0.5, 2.0, 0.5, 1.0], 3) == [(1, 2.0), (3, 1.0), (0, 0.5)]
    assert top_k([0.5, 2.0, 0.5], 2, candidates=[2, 0]) == [(0, 0.5), (2, 0.5)]
    assert top_k([1.0], 0) == []
