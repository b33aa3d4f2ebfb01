import json
import math

import pytest

from flame.factscore import (
    DemoSelector,
    FactScorer,
    aggregate,
    build_verify_prompt,
    decompose,
    is_abstained,
    length_penalty,
    load_demos,
    parse_facts,
    split_sentences,
    text_verdict,
    verify,
)
from flame.factscore.decompose import INSTRUCTION, build_prompt
from flame.io import RecordError
from flame.knowledge import KnowledgeBase, build
from flame.lm import LM, load_lm

PAGES = [
    {
        "title": "Ada Lovelace",
        "text": "Ada Lovelace was an English mathematician. She wrote the first published "
        "algorithm for Babbage's Analytical Engine. She was born in London in 1815.",
    },
    {
        "title": "Alan Turing",
        "text": "Alan Turing was an English computer scientist. He "
        "formalised computation with the Turing machine. He worked at Bletchley Park.",
    },
    {"title": "Paris", "text": "Paris is the capital of France. The Eiffel Tower is in Paris."},
]


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    d = tmp_path_factory.mktemp("kb")
    (d / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAGES))
    build(f"jsonl:{d / 'pages.jsonl'}", d / "kb", max_passage_tokens=12)
    return KnowledgeBase.load(d / "kb")


class ScriptedLM(LM):
    """Answers from a script and records every call (to check batching and the text path)."""

    fingerprint = "scripted"

    def __init__(self, generations=None, choices=None):
        super().__init__()
        self.generations, self.choices, self.calls = generations, choices, []

    def generate(self, prompts, sampling):
        self.calls.append(("generate", len(prompts)))
        return [[self.generations(p.text)] for p in prompts]

    def choose(self, prompts, options):
        self.calls.append(("choose", len(prompts)))
        return [self.choices(p.text) for p in prompts]

    def loglikelihood(self, pairs):
        raise AssertionError("not expected: FActScore does not score continuations")


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "J. R. R. Tolkien wrote it. He was English.",
            ["J. R. R. Tolkien wrote it.", "He was English."],
        ),
        (
            "Dr. Smith met Mr. Jones at St. Paul's. They talked.",
            ["Dr. Smith met Mr. Jones at St. Paul's.", "They talked."],
        ),
        (
            "He moved to the U.S. He joined the U.S. Army.",
            ["He moved to the U.S.", "He joined the U.S. Army."],
        ),
        (
            "Fruit, e.g. apples, i.e. red ones, etc. are good. Yes.",
            ["Fruit, e.g. apples, i.e. red ones, etc. are good.", "Yes."],
        ),
        (
            "Pi is about 3.14. It was born on Jan. 5, 1990 at 4.30 p.m. Then it rained.",
            ["Pi is about 3.14.", "It was born on Jan. 5, 1990 at 4.30 p.m.", "Then it rained."],
        ),
        (
            '- First item.\n* Second, No. 9\n1. Third\n\n## Head\nWhat? Yes! "Quoted." Done',
            ["First item.", "Second, No. 9", "Third", "Head", "What?", "Yes!", '"Quoted."', "Done"],
        ),
        (
            "John F. Kennedy and A. A. Milne met. Vitamin C. It helps.",
            ["John F. Kennedy and A. A. Milne met.", "Vitamin C.", "It helps."],
        ),
        ("", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_packaged_demos_cover_bios_and_general_knowledge():
    demos = load_demos()
    assert len(demos) >= 15
    sentences = " ".join(d["sentence"] for d in demos)
    for word in ("He ", "She ", "Photosynthesis", "Paris", "Battle", "novel"):
        assert word in sentences
    assert all(d["facts"] and all(f.endswith(".") for f in d["facts"]) for d in demos)


def test_demo_selector_picks_most_similar_demo_and_orders_prompt():
    demos = load_demos()
    sel = DemoSelector(demos, n_fixed=7, n_bm25=1)
    (chosen,) = sel.select(["The Nile River flows through Egypt into the Mediterranean."])
    assert chosen[:7] == demos[:7]
    assert chosen[7]["sentence"].startswith("The Amazon River")
    prompt = build_prompt("Target sentence.", chosen)
    assert prompt.count(INSTRUCTION) == 9 and prompt.endswith(f"{INSTRUCTION}Target sentence.\n")
    assert prompt.index("Amazon River") > prompt.index(demos[6]["sentence"])
    assert DemoSelector(demos, n_fixed=2, n_bm25=0).select(["x"]) == [demos[:2]]


def test_parse_facts_and_fallback():
    out = "- He was born in Paris.\n- He was born in 1902.\n- He was born in Paris.\n- He was b"
    assert parse_facts(out) == ["He was born in Paris.", "He was born in 1902."]
    assert parse_facts("- a fact\n- another") == ["a fact.", "another."]
    assert parse_facts("no bullets here") == []
    assert parse_facts(f"- x.\n{INSTRUCTION}y\n- z.") == ["x."]
    lm = ScriptedLM(generations=lambda t: "- One fact." if t.endswith("Good.\n") else "garbage")
    facts, fallbacks = decompose(["Good.", "Bad one.", "Good."], lm, DemoSelector(load_demos()))
    assert facts == [["One fact."], ["Bad one."], ["One fact."]] and fallbacks == 1
    assert lm.calls == [("generate", 2)]  # one batched call, identical sentences asked once
    assert decompose(["A.", "B."], None, unit="sentence") == ([["A."], ["B."]], 0)


def test_length_penalty_and_aggregate_hand_computed():
    assert length_penalty(5, 10) == pytest.approx(math.exp(1 - 10 / 5))  # 0.36788
    assert length_penalty(10, 10) == 1.0 and length_penalty(3, 0) == 1.0
    results = [
        {"abstained": False, "n_facts": 4, "n_supported": 3, "score": 0.75},
        {"abstained": False, "n_facts": 10, "n_supported": 5, "score": 0.5},
        {"abstained": True, "n_facts": 0, "n_supported": 0, "score": None},
        {"abstained": False, "n_facts": 0, "n_supported": 0, "score": None},
    ]
    s = aggregate(results, gamma=10)
    assert s["factscore"] == pytest.approx(0.625)
    assert s["factscore_gamma"] == pytest.approx((0.75 * math.exp(1 - 2.5) + 0.5) / 2)  # 0.33367
    assert s["respond_ratio"] == 0.75 and s["n_scored"] == 2
    assert s["mean_facts"] == pytest.approx(14 / 3)
    assert s["mean_correct"] == pytest.approx(8 / 3) and s["mean_erroneous"] == 2
    assert aggregate(results, gamma=0)["factscore_gamma"] == pytest.approx(0.625)
    empty = aggregate([], 10)
    assert empty["factscore"] is None and empty["respond_ratio"] is None


def test_abstention_detection():
    for text in (
        "I'm sorry, I cannot help.",
        "I don’t know who that is.",
        "  I cannot answer.",
        "There is no information about this person. Sorry.",
    ):
        assert is_abstained(text)
    for text in ("Ada Lovelace was a mathematician. No information survives on her dog.", ""):
        assert not is_abstained(text)


def test_text_verdict_rule():
    assert text_verdict("True.") and not text_verdict("False, it is not.")
    assert text_verdict("True, although one could say false") is True  # both: first wins
    assert text_verdict("false, not true") is False
    assert text_verdict("Yes, that matches the context.") is True
    for refusal in ("It is not stated.", "I cannot tell.", "Unknown!", "No information given."):
        assert text_verdict(refusal) is False
    assert text_verdict("Untrue") is True  # whole words only; no refusal word either


def test_verify_prompt_best_last_truncated_and_text_path():
    ps = [{"title": "Best", "text": "first " * 100}, {"title": "Second", "text": "short."}]
    p = build_verify_prompt("Ada", "She was born in 1815.", ps, passage_chars=40)
    assert p.startswith("Answer the question about Ada based on the given context.\n\n")
    assert p.index("Title: Second") < p.index("Title: Best")  # best passage nearest the question
    assert p.endswith("\n\nInput: She was born in 1815. True or False?\nOutput:")
    assert "first " * 8 not in p and " ..." in p
    assert build_verify_prompt(None, "x", ps).startswith("Answer the question based on")
    lm = ScriptedLM(
        generations=lambda t: "It is unknown.",
        choices=lambda t: None if "C" in t else ([-0.1, -2.0] if "A" in t else [-3.0, -0.5]),
    )
    supported, scores, n_text = verify(["fact A", "fact B", "fact C"], lm)
    assert supported == [True, False, False] and n_text == 1
    assert scores[0] == pytest.approx(1.9) and scores[2] is None
    assert lm.calls == [("choose", 3), ("generate", 1)]


@pytest.fixture(scope="module")
def tiny_lm(tiny_model):
    return load_lm({"source": str(tiny_model), "batch_size": 8})


def test_topic_vs_open_retrieval_with_tiny_model(kb, tiny_lm):
    items = [
        {
            "id": "a",
            "prompt": "Tell me a bio of Ada Lovelace.",
            "topic": "Ada Lovelace",
            "response": "Ada Lovelace was born in London. She worked at Bletchley Park.",
        },
        {
            "id": "b",
            "prompt": "Tell me a bio of Grace Hopper.",
            "topic": "Grace Hopper",
            "response": "Grace Hopper wrote code.",
        },
        {"id": "c", "prompt": "Tell me about Paris.", "response": "I'm sorry, I do not know.",
         "retrieval": "open"},
        {"id": "d", "prompt": "Tell me about Paris.", "response": "", "retrieval": "open"},
    ]  # fmt: skip
    ada = {p["id"] for p in kb.topic_passages("Ada Lovelace")}
    topic = FactScorer(None, tiny_lm, kb, unit="sentence", retrieval="topic", k=2)
    res = {r["id"]: r for r in topic.score(items)}
    assert [f["fact"] for f in res["a"]["facts"]] == split_sentences(items[0]["response"])
    assert all(set(f["passages"]) <= ada and len(f["passages"]) == 2 for f in res["a"]["facts"])
    assert topic.counts["unknown_topic_items"] == 1  # Grace Hopper has no page: left out
    assert res["b"]["unknown_topic"] and res["b"]["facts"] == [] and res["b"]["score"] is None
    assert res["c"]["abstained"] and res["c"]["score"] is None and res["c"]["n_facts"] == 0
    assert res["d"]["n_facts"] == 0 and not res["d"]["abstained"] and res["d"]["score"] is None
    assert topic.counts["empty_responses"] == 1
    a = res["a"]
    assert a["score"] == a["n_supported"] / 2
    assert all(isinstance(f["verifier_score"], float) for f in a["facts"])
    assert all(f["supported"] == (f["verifier_score"] > 0) for f in a["facts"])

    opened = FactScorer(None, tiny_lm, kb, unit="sentence", retrieval="open", k=3)
    ra = opened.score(items[:1])[0]
    first = [p["id"] for p in kb.search(items[0]["prompt"], 3)]
    assert all(f["passages"] == first for f in ra["facts"])  # one query per response
    # an item may name its own mode: the topic scorer does open retrieval for it
    mixed = topic.score([{**items[0], "id": "o", "retrieval": "open"}, items[0]])
    assert all(f["passages"] == first[:2] for f in mixed[0]["facts"])
    assert all(set(f["passages"]) <= ada for f in mixed[1]["facts"])
    with pytest.raises(ValueError, match="unknown retrieval 'web'"):
        topic.score([{**items[0], "retrieval": "web"}])


def test_a_topic_the_knowledge_source_lacks_is_left_out_never_checked_elsewhere(kb):
    """Grace Hopper has no page; her bio states facts that ARE on Alan Turing's and Ada
    Lovelace's pages. Topic retrieval must not verify them against those pages: the item gets
    no score, is counted, and no verifier prompt ever shows another page."""
    lm = ScriptedLM(generations=lambda t: "- A fact.", choices=lambda t: [-0.1, -3.0])
    scorer = FactScorer(None, lm, kb, unit="sentence", retrieval="topic", k=2)
    items = [
        {"id": "ada", "topic": "Ada Lovelace", "response": "Ada Lovelace was born in 1815."},
        {"id": "grace", "prompt": "Tell me a bio of Grace Hopper.", "topic": "Grace Hopper",
         "response": "She worked at Bletchley Park. She was born in London in 1815."},
        {"id": "none", "prompt": "Tell me a bio.", "response": "He worked at Bletchley Park."},
        {"id": "open", "prompt": "Who worked at Bletchley Park?", "topic": "Grace Hopper",
         "response": "Alan Turing worked at Bletchley Park.", "retrieval": "open"},
    ]  # fmt: skip
    res = {r["id"]: r for r in scorer.score(items)}
    for rid in ("grace", "none"):
        assert res[rid]["unknown_topic"] and res[rid]["score"] is None
        assert res[rid]["n_facts"] == 0 and res[rid]["facts"] == [] and not res[rid]["abstained"]
    assert res["ada"]["score"] == 1.0 and not res["ada"]["unknown_topic"]
    assert res["open"]["score"] == 1.0 and not res["open"]["unknown_topic"]  # open: unaffected
    assert scorer.counts["unknown_topic_items"] == 2
    (choose,) = [c for c in lm.calls if c[0] == "choose"]
    assert choose[1] == 2  # only Ada's fact and the open item's: Grace's never reach it
    ada = {p["id"] for p in kb.topic_passages("Ada Lovelace")}
    assert set(res["ada"]["facts"][0]["passages"]) <= ada
    summary = aggregate(list(res.values()), gamma=0)
    assert summary["n_unknown_topic"] == 2 and summary["unknown_topics"] == [
        "Grace Hopper",
        "(no topic)",
    ]
    assert summary["n_items"] == 4 and summary["n_responding"] == 2
    assert summary["factscore"] == 1.0 and summary["respond_ratio"] == 1.0
    assert summary["mean_facts"] == 1.0  # left-out items are no zero-fact responses


def test_unknown_topic_fail_names_the_item_before_any_model_call(kb):
    lm = ScriptedLM(generations=lambda t: "- A fact.", choices=lambda t: [-0.1, -3.0])
    scorer = FactScorer(lm, lm, kb, retrieval="topic", k=2, unknown_topic="fail")
    items = [
        {"id": 1, "topic": "Ada Lovelace", "response": "Ada was born in 1815."},
        {"id": 2, "topic": "Grace Hopper", "response": "She was born in 1906.",
         "where": "bio.jsonl:2"},
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"^bio.jsonl:2: topic 'Grace Hopper' is not a page"):
        scorer.score(items)
    with pytest.raises(ValueError, match=r"^item 3: no topic"):
        scorer.score([{"id": 3, "prompt": "Tell me a bio.", "response": "x"}])
    assert lm.calls == []
    assert scorer.score(items[:1])[0]["score"] == 1.0
    with pytest.raises(ValueError, match="unknown_topic 'drop'"):
        FactScorer(lm, lm, kb, unknown_topic="drop")


def test_atomic_mode_batches_one_generate_and_one_choose(kb):
    lm = ScriptedLM(
        generations=lambda t: "- A fact.\n- Another fact.", choices=lambda t: [-1.0, -2.0]
    )
    scorer = FactScorer(lm, lm, kb, k=1)
    items = [{"id": i, "prompt": "p", "topic": "Paris", "response": "One. Two."} for i in range(3)]
    res = scorer.score(items)
    assert [r["n_facts"] for r in res] == [4, 4, 4] and res[0]["score"] == 1.0
    assert [c[0] for c in lm.calls] == ["generate", "choose"]
    with pytest.raises(ValueError, match="needs a decomposer"):
        FactScorer(None, lm, kb)


def write_gens(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def test_cli_end_to_end_and_cache(kb, tiny_model, tmp_path):
    from flame.factscore.__main__ import main

    gens = tmp_path / "gens.jsonl"
    write_gens(
        gens,
        [
            {
                "id": "x",
                "prompt": "Tell me a bio of Ada Lovelace.",
                "topic": "Ada Lovelace",
                "response": "Ada Lovelace was a mathematician. She was born in 1815.",
            },
            "",
            {
                "id": "y",
                "instruction": "Tell me a bio of Alan Turing.",
                "topic": "Alan Turing",
                "responses": ["Alan Turing was English.", "I'm sorry, I don't know."],
            },
        ],
    )
    spec = json.dumps({"source": str(tiny_model), "batch_size": 8})
    args = [
        "--input",
        str(gens),
        "--decomposer",
        spec,
        "--verifier",
        spec,
        "--knowledge",
        str(kb.folder),
        "--out",
        str(tmp_path / "facts.jsonl"),
        "--summary",
        str(tmp_path / "summary.json"),
        "--k",
        "2",
        "--gamma",
        "0",
        "--cache",
        str(tmp_path / "lm.sqlite"),
    ]
    first = main(args)
    rows = [json.loads(line) for line in (tmp_path / "facts.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["x", "y#0", "y#1"]
    assert rows[1]["sample"] == 0 and rows[2]["item_id"] == "y" and rows[2]["abstained"]
    assert rows[0]["n_facts"] >= 2 and all(len(f["passages"]) == 2 for f in rows[0]["facts"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n_items"] == 3 and summary["respond_ratio"] == pytest.approx(2 / 3)
    assert summary["lm_calls"] > 0 and summary["counts"]["records"] == 2
    assert first["factscore"] == summary["factscore"]
    again = main(args)
    assert again["lm_calls"] == 0 and again["cache"]["misses"] == 0 and again["cache"]["hits"] > 0
    assert [
        json.loads(line) for line in (tmp_path / "facts.jsonl").read_text().splitlines()
    ] == rows


def test_cli_unknown_topic_skip_counts_and_fail_exits_2(kb, tiny_model, tmp_path, capsys):
    from flame.cli import run
    from flame.factscore.__main__ import main

    gens = tmp_path / "gens.jsonl"
    write_gens(gens, [
        {"id": "a", "topic": "Ada Lovelace", "output": "Ada Lovelace was a mathematician."},
        "",
        {"id": "g", "topic": "Grace Hopper", "output": "Grace Hopper worked at Bletchley Park."},
    ])  # fmt: skip
    spec = json.dumps({"source": str(tiny_model), "batch_size": 8})
    args = ["--input", str(gens), "--verifier", spec, "--unit", "sentence",
            "--knowledge", str(kb.folder), "--out", str(tmp_path / "facts.jsonl"),
            "--summary", str(tmp_path / "summary.json"), "--k", "2"]  # fmt: skip
    summary = main(args)
    assert summary["n_unknown_topic"] == 1 and summary["unknown_topics"] == ["Grace Hopper"]
    assert summary["n_items"] == 2 and summary["n_scored"] == 1
    assert summary["counts"]["unknown_topic_items"] == 1
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "facts.jsonl").open())}
    assert rows["g"]["unknown_topic"] and rows["g"]["score"] is None and rows["g"]["facts"] == []
    (tmp_path / "summary.json").unlink()
    with pytest.raises(SystemExit) as err:
        run(main, [*args, "--unknown-topic", "fail"])
    assert err.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: {gens}:3: topic 'Grace Hopper' is not a page of the knowledge")
    assert not (tmp_path / "summary.json").exists()


def test_cli_rejects_malformed_lines_and_unbuilt_knowledge(kb, tmp_path):
    from flame.factscore.__main__ import main

    gens = tmp_path / "gens.jsonl"
    base = [
        "--input",
        str(gens),
        "--verifier",
        "unused",
        "--unit",
        "sentence",
        "--knowledge",
        str(kb.folder),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--summary",
        str(tmp_path / "s.json"),
    ]
    ok = {"prompt": "p", "response": "r"}
    for bad, message in [
        ({"prompt": "p"}, "needs a response: 'response' or 'output'"),
        ({"response": "r"}, "needs a prompt \\('prompt' or 'instruction'"),
        ({"prompt": "p", "responses": ["a", 3]}, "needs a response"),
        ({"topic": 3, "output": "r"}, "topic field 'topic' must be a string"),
        ("{not json", "not valid JSON"),
    ]:
        write_gens(gens, [ok, "", bad])
        with pytest.raises(RecordError, match=f"gens.jsonl:3: {message}"):
            main(base)
    write_gens(gens, [ok])
    with pytest.raises(FileNotFoundError, match="flame.knowledge build --source embedded"):
        main([*base[:6], "--knowledge", "embedded", *base[8:]])
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.slow
def test_real_model_scores_a_true_and_a_false_fact(tmp_path, smollm2_dir):
    """SmolLM2-135M as decomposer and verifier on the embedded Wikipedia summaries, with
    FActScore's NP check as the default config runs it: the true bio scores above the false one."""
    build("embedded", tmp_path / "kb")
    lm = load_lm({"source": str(smollm2_dir), "batch_size": 16}, threads=2)
    scorer = FactScorer(
        lm, lm, KnowledgeBase.load(tmp_path / "kb"), k=2, passage_chars=300, max_fact_tokens=48,
        np_threshold=0.5,
    )  # fmt: skip
    bio = {"prompt": "Tell me a bio of Albert Einstein.", "topic": "Albert Einstein"}
    true, false = scorer.score(
        [
            {**bio, "id": 1, "response": "Albert Einstein was a German-born physicist."},
            {**bio, "id": 2, "response": "Albert Einstein was a Brazilian football goalkeeper."},
        ]
    )
    assert true["n_facts"] >= 1 and false["n_facts"] >= 1
    assert true["score"] > false["score"], (true["facts"], false["facts"])
    res = true
    assert all(p in range(len(scorer.kb.passages)) for f in res["facts"] for p in f["passages"])
    assert all(
        scorer.kb.passages[f["passages"][0]]["title"] == "Albert Einstein" for f in res["facts"]
    )
