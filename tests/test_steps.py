"""Logic of the pipeline steps: parsers of model outputs, thresholds, demo selection, SFT data,
win-rate outcomes, tables."""

import json
import math

import pytest

from flame.classify import accuracy, best_threshold, decide
from flame.fewshot import clip, select_demos
from flame.prompts import parse_score, parse_yes_no
from flame.rm_if import mean_or_none
from flame.sft_data import build


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Answer: Yes", True),
        (" No, it does not.", False),
        ("answer:no", False),
        ("Yes.", True),
        ("The answer is unclear", None),
        ("", None),
        ("Yesterday", None),
    ],
)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) is expected


@pytest.mark.parametrize(
    "text, prefixed, expected",
    [
        ("The response is relevant... Score: 4", False, 4),
        ("Score: 2 ... Score: 5", False, 5),
        (" 3", True, 3),
        (" 3", False, None),
        ("Score: 9", False, None),
        ("no idea", True, None),
        ("", True, None),
    ],
)
def test_parse_score(text, prefixed, expected):
    assert parse_score(text, prefixed=prefixed) == expected


def test_mean_or_none():
    assert mean_or_none([3, None, 5]) == 4.0
    assert mean_or_none([None, None]) is None


def test_threshold_calibration_beats_skewed_argmax():
    # a model biased towards "Yes": every margin positive, but fact-based ones are larger
    margin = [2.0, 1.8, 1.5, 0.4, 0.3, 0.2, None]
    gold = [True, True, True, False, False, False, False]
    assert accuracy([decide(m) for m in margin], gold) == pytest.approx(4 / 7)
    t, acc = best_threshold(margin, gold)
    assert 0.4 < t < 1.5 and acc == 1.0
    assert decide(None, -100) is False  # unreadable answers are never fact-based


def test_clip_at_sentence_boundary():
    text = "First sentence here. Second sentence is longer. Third."
    assert clip(text, 100) == text
    assert clip(text, 30) == "First sentence here."
    assert clip("x" * 50, 10).endswith("...")


def test_select_demos_prefers_similar_and_excludes_self():
    pool = [
        {"id": "1", "instruction": "Tell me a bio of Marie Curie."},
        {"id": "2", "instruction": "Write a poem about the sea."},
        {"id": "3", "instruction": "Tell me a bio of Isaac Newton."},
        {"id": "4", "instruction": "How do I bake bread?"},
    ]
    targets = [{"id": "1", "instruction": "Tell me a bio of Marie Curie."}]
    (demos,) = select_demos(pool, targets, k=2)
    assert 0 not in demos and demos[0] == 2 and len(demos) == 2


def test_sft_data_variants():
    seed = [
        {"id": "f1", "instruction": "Who is X?", "response": "human f1", "fact_based": True},
        {"id": "n1", "instruction": "Write a poem.", "response": "human n1", "fact_based": False},
    ]
    fewshot = [{"id": "f1", "responses": ["pt a", "  ", "pt b"]}]
    data, stats = build(seed, fewshot)
    assert [r["response"] for r in data["SFT_fact"]] == ["pt a", "pt b"]
    assert [r["response"] for r in data["SFT_FLAME"]] == ["human n1", "pt a", "pt b"]
    assert stats["dropped_empty_pt_responses"] == 1 and stats["n_SFT"] == 2
    with pytest.raises(ValueError, match="f1"):
        build(seed, [])


def test_tables_render(tmp_path):
    from flame import tables

    ev = tmp_path / "eval"
    summary = {
        "factscore": 0.5,
        "mean_correct": 2.0,
        "mean_erroneous": 2.0,
        "mean_length_chars": 100.0,
    }
    for m in ["PT", "SFT", "SFT_fact"]:
        (ev / m).mkdir(parents=True)
        fs = (
            {"bio": summary}
            if m == "PT"
            else {"bio": summary, "alpaca_fact": summary, "fava": {**summary, "factscore": None}}
        )
        (ev / m / "factuality.json").write_text(json.dumps(fs))
        if m != "PT":
            (ev / m / "alpaca.jsonl").write_text(json.dumps({"responses": ["abcd"]}) + "\n")
    # per-fact rows: SFT_fact beats SFT by 50 points on each of the 3 shared prompts
    for m, sup in [("SFT", [1, 0]), ("SFT_fact", [1, 1])]:
        (ev / m / "facts").mkdir()
        rows = [{"id": f"p{i}", "supported": bool(s)} for i in range(3) for s in sup]
        rows.append({"id": f"only-{m}", "supported": True})  # not shared: left out
        (ev / m / "facts" / "bio.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ev / "winrate_table2.json").write_text(
        json.dumps({"models": {"SFT_fact": {"win_rate": 62.5}}})
    )
    (ev / "winrate_table3.json").write_text(json.dumps({"models": {}}))
    dpo = tmp_path / "dpo" / "SFT"
    dpo.mkdir(parents=True)
    (dpo / "pair_counts.json").write_text(
        json.dumps({"sets": {"DPO": {"if": 3, "fact": 0, "total": 3}}})
    )
    tables.main(
        [
            "--eval-dir",
            str(ev),
            "--dpo-dir",
            str(tmp_path / "dpo"),
            "--out-dir",
            str(tmp_path / "t"),
            "--table2-rows",
            "PT",
            "SFT",
            "SFT_fact",
            "--table3-rows",
            "SFT",
        ]
    )
    t2 = (tmp_path / "t" / "table2_sft.csv").read_text().splitlines()
    assert t2[0].startswith("model,win,bio_fs")
    rows = {line.split(",")[0]: line.split(",") for line in t2[1:]}
    assert float(rows["SFT"][1]) == 50.0 and float(rows["SFT_fact"][1]) == 62.5
    assert float(rows["SFT"][2]) == 50.0  # FActScore as a percentage
    assert rows["PT"][5] == ""  # PT has no Alpaca Fact cell
    assert rows["SFT"][8] == ""  # FAVA FActScore None -> empty, not NaN
    assert rows["SFT"][12] == "44.7"  # paper's Bio FS beside ours
    md = (tmp_path / "t" / "table2_sft.md").read_text()
    assert "PT (5-shot)" in md and "62.5 (48.1)" in md
    assert "| SFT+DPO | 3 | 0 |" in (tmp_path / "t" / "table11_pairs.md").read_text()
    paired = (tmp_path / "t" / "table_paired.csv").read_text().splitlines()
    assert "table2,SFT_fact,SFT,bio,3,50.00,50.00,50.00,higher,0,," in paired
    assert "table2,PT,SFT,bio,0,,,,,0,," in paired  # PT wrote no facts file
    assert (
        "| table2 | SFT_fact − SFT | Bio | +50.0 [+50.0, +50.0] | 3 | higher |"
        in (tmp_path / "t" / "table_paired.md").read_text()
    )
    t8 = (tmp_path / "t" / "table8_length.csv").read_text()
    assert "SFT,4.0,100.0" in t8 and not any(
        math.isnan(float(x)) for x in t8.splitlines()[1].split(",")[1:3]
    )


def test_expected_score_distribution():
    from flame.rm_if import expected_score, score_distribution

    dist = score_distribution(
        [math.log(0.1), -math.inf, -math.inf, -math.inf, -math.inf, math.log(0.3)]
    )
    assert dist[0] == pytest.approx(0.25) and dist[5] == pytest.approx(0.75)
    assert expected_score(dist) == pytest.approx(3.75)
    assert score_distribution(None) is None and expected_score(None) is None
    assert score_distribution([-math.inf] * 6) is None


def test_rm_if_cli_both_modes(tiny_model, tmp_path):
    from flame import rm_if

    samples = tmp_path / "s.jsonl"
    samples.write_text(
        json.dumps({"id": "a", "instruction": "Say hi.", "responses": ["hi", "hello there"]}) + "\n"
    )
    for mode in ("expected", "sample"):
        out = tmp_path / f"{mode}.jsonl"
        rm_if.main(
            [
                "--judge",
                str(tiny_model),
                "--samples",
                str(samples),
                "--out",
                str(out),
                "--mode",
                mode,
                "--r",
                "2",
                "--max-new-tokens",
                "2",
                "--prefix",
                "Score:",
            ]
        )
        (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rec["scores"]) == 2 and len(rec["judgments"]) == 2
        if mode == "expected":
            assert all(0 <= s <= 5 for s in rec["scores"])
            assert sum(rec["judgments"][0]) == pytest.approx(1.0)
        else:
            assert all(len(j) == 2 for j in rec["judgments"])


BIO_PAGES = [
    {"title": "Stephen Hawking", "text": "Stephen Hawking was a renowned astrophysicist. He "
     "was born in Oxford in 1942."},
    {"title": "Ada Lovelace", "text": "Ada Lovelace was an English mathematician."},
]  # fmt: skip
BIO = [
    {"id": "ada", "instruction": "Tell me a bio of Ada Lovelace.", "topic": "Ada Lovelace",
     "responses": ["Ada Lovelace was an English mathematician."], "fact_based": True},
    {"id": "doug", "instruction": "Tell me a bio of Doug Sheehan.", "topic": "Doug Sheehan",
     "responses": ["Doug Sheehan was a renowned astrophysicist."], "fact_based": True},
]  # fmt: skip


@pytest.fixture
def bio_kb(tmp_path):
    from flame.knowledge import build

    (tmp_path / "pages.jsonl").write_text("".join(json.dumps(p) + "\n" for p in BIO_PAGES))
    build(f"jsonl:{tmp_path / 'pages.jsonl'}", tmp_path / "kb", max_passage_tokens=32)
    (tmp_path / "bio.jsonl").write_text("".join(json.dumps(r) + "\n" for r in BIO))
    return tmp_path / "kb", tmp_path / "bio.jsonl"


def test_evaluate_leaves_out_a_bio_whose_person_has_no_page(bio_kb, tiny_model, tmp_path, capsys):
    """Doug Sheehan has no page; his bio's claim is on Stephen Hawking's. Evaluate gives it no
    score and counts it in factuality.json; --unknown-topic fail stops naming file and line."""
    from flame import evaluate
    from flame.cli import run
    from flame.io import read_json, read_jsonl

    kb, bio = bio_kb
    spec = json.dumps({"source": str(tiny_model), "batch_size": 8})
    args = ["--sets", f"bio={bio}:topic", "--verifier", spec, "--unit", "sentence",
            "--knowledge", str(kb), "--k", "2", "--out", str(tmp_path / "factuality.json"),
            "--facts-dir", str(tmp_path / "facts")]  # fmt: skip
    evaluate.main(args)
    s = read_json(tmp_path / "factuality.json")["bio"]
    assert s["n_unknown_topic"] == 1 and s["unknown_topics"] == ["Doug Sheehan"]
    assert s["n_items"] == 2 and s["n_scored"] == 1 and s["factscore_ci"]["n"] == 1
    assert s["mean_correct_ci"]["n"] == 1 and s["respond_ratio"] == 1.0
    assert {f["id"] for f in read_jsonl(tmp_path / "facts" / "bio.jsonl")} == {"ada"}
    (tmp_path / "factuality.json").unlink()
    with pytest.raises(SystemExit) as err:
        run(evaluate.main, [*args, "--unknown-topic", "fail"])
    assert err.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: {bio}:2: topic 'Doug Sheehan' is not a page of the knowledge")
    assert not (tmp_path / "factuality.json").exists()


def test_rm_fact_topic_retrieval_gives_a_pageless_person_no_reward(bio_kb, tiny_model, tmp_path):
    from flame import rm_fact
    from flame.io import read_jsonl

    kb, bio = bio_kb
    spec = json.dumps({"source": str(tiny_model), "batch_size": 8})
    rm_fact.main(["--samples", str(bio), "--verifier", spec, "--unit", "sentence",
                  "--retrieval", "topic", "--knowledge", str(kb), "--k", "2",
                  "--out", str(tmp_path / "rm.jsonl"),
                  "--facts", str(tmp_path / "f.jsonl")])  # fmt: skip
    recs = {r["id"]: r for r in read_jsonl(tmp_path / "rm.jsonl")}
    assert recs["doug"]["scores"] == [None] and recs["doug"]["n_facts"] == [0]
    assert recs["doug"]["unknown_topic"] and not recs["ada"]["unknown_topic"]
    assert recs["ada"]["scores"][0] is not None
    assert {f["id"] for f in read_jsonl(tmp_path / "f.jsonl")} == {"ada#0"}


def test_tables_mark_and_count_left_out_bios(tmp_path):
    from flame import table_fdpo, tables

    ev = tmp_path / "eval"
    full = {
        "factscore": 0.5,
        "mean_correct": 1.0,
        "mean_erroneous": 1.0,
        "n_items": 4,
        "n_unknown_topic": 0,
        "unknown_topics": [],
        "mean_length_chars": 10.0,
    }
    part = {**full, "n_unknown_topic": 3, "unknown_topics": ["Doug Sheehan", "A", "B"]}
    for m, bio in [("SFT", full), ("SFT_fact", part)]:
        (ev / m / "facts").mkdir(parents=True)
        (ev / m / "factuality.json").write_text(
            json.dumps({"bio": bio, "alpaca_fact": full, "fava": full})
        )
        (ev / m / "facts" / "bio.jsonl").write_text(json.dumps({"id": "p", "supported": True}))
    tables.main(["--eval-dir", str(ev), "--dpo-dir", str(tmp_path / "dpo"),
                 "--out-dir", str(tmp_path / "t"), "--table2-rows", "SFT", "SFT_fact",
                 "--table3-rows", "SFT"])  # fmt: skip
    head, *lines = (tmp_path / "t" / "table2_sft.csv").read_text().splitlines()
    rows = {x.split(",")[0]: dict(zip(head.split(","), x.split(","), strict=True)) for x in lines}
    assert rows["SFT_fact"]["bio_left_out"] == "3" and rows["SFT"]["bio_left_out"] == "0"
    assert rows["SFT_fact"]["af_left_out"] == "0"
    md = (tmp_path / "t" / "table2_sft.md").read_text()
    assert md.count("†") == 2  # the SFT_fact Bio FS cell and its note
    assert "| 50.0 † (48.5) |" in md
    assert (
        "† Bio FS, SFT_fact: 3 of 4 bios left out: topic not in the knowledge source "
        "(Doug Sheehan, A, B)." in md.splitlines()
    )
    paired = (tmp_path / "t" / "table_paired.csv").read_text().splitlines()
    assert "table2,SFT_fact,SFT,bio,1,0.00,0.00,0.00,not distinguishable,3,," in paired
    assert "3 of 4 bios left out" in (tmp_path / "t" / "table_paired.md").read_text()
    table_fdpo.main(["--eval-dir", str(ev), "--out-dir", str(tmp_path / "f"),
                     "--rows", "SFT=0", "SFT_fact=1"])  # fmt: skip
    head, *lines = (tmp_path / "f" / "table_fdpo.csv").read_text().splitlines()
    assert head.endswith(",bio_left_out,af_left_out,fava_left_out")
    assert lines[1].endswith(",3,0,0") and lines[0].endswith(",0,0,0")
    md = (tmp_path / "f" / "table_fdpo.md").read_text()
    assert "| 50.000 † |" in md and "† Bio FS, F-DPO λ=1 (SFT_fact): 3 of 4 bios left out" in md
