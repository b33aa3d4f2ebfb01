"""Table 1, the Bio pilot study: training people, the SFT sets and DPO pairs built from PT's own
and RAG-grounded bios, the RAG prompt, and the table itself."""

import json

import pytest

from flame import pilot, tables_extra
from flame.prompts import fewshot_prompt


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_training_people_leave_out_used_and_pageless_people():
    names = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Nobody Known", "Ada Lovelace"]
    pages = {"ada lovelace", "alan turing", "grace hopper"}
    has_page = lambda n: n.lower() in pages  # noqa: E731
    got, drops = pilot.training_people(names, {"alan turing"}, has_page, 2, seed=0)
    assert sorted(got) == ["Ada Lovelace", "Grace Hopper"]
    assert drops == {"excluded": 1, "no_page": 1}
    assert got == pilot.training_people(names, {"alan turing"}, has_page, 2, 0)[0]  # seeded
    with pytest.raises(ValueError, match="only 2 people are left"):
        pilot.training_people(names, {"alan turing"}, has_page, 3, 0)
    recs = pilot.prompt_records(got)
    assert recs[0]["instruction"] == f"Tell me a bio of {got[0]}."
    assert recs[0]["topic"] == got[0] and recs[0]["fact_based"] is True


def test_prompts_cli_from_an_entity_file(tmp_path):
    from flame.knowledge import build

    pages = [{"title": t, "text": f"{t} was a person."} for t in ["Ada", "Alan", "Grace"]]
    write_jsonl(tmp_path / "kb.jsonl", pages)
    build(f"jsonl:{tmp_path / 'kb.jsonl'}", tmp_path / "kb")
    (tmp_path / "names.txt").write_text("Ada\nAlan\nGrace\nNobody\n")
    write_jsonl(tmp_path / "bio.jsonl", [{"id": "b", "instruction": "x", "topic": "grace"}])
    args = ["prompts", "--entities", str(tmp_path / "names.txt"), "--knowledge"]
    args += [str(tmp_path / "kb"), "--exclude", str(tmp_path / "bio.jsonl"), "--n"]
    pilot.main([*args, "2", "--out", str(tmp_path / "p.jsonl")])
    got = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert sorted(r["topic"] for r in got) == ["Ada", "Alan"]  # Grace is evaluated, Nobody pageless
    with pytest.raises(ValueError, match="--n 3: only 2 people"):
        pilot.main([*args, "3", "--out", str(tmp_path / "p.jsonl")])


PT = [
    {"id": "p1", "instruction": "Tell me a bio of A.", "responses": ["a0", "a1", "a2", "a3"]},
    {"id": "p2", "instruction": "Tell me a bio of B.", "responses": ["b0", " ", "b2"]},
]
RAG = [
    {"id": "p1", "instruction": "Tell me a bio of A.", "responses": ["ra0", "a1", "ra2", "ra3"]},
    {"id": "p2", "instruction": "Tell me a bio of B.", "responses": ["rb0", "rb1", ""]},
]
# p1: a tie (a0 = a3) and one without facts (a2); p2: its empty response has no score
FS = {"p1": [0.5, 0.9, None, 0.5], "p2": [0.2, None, 0.7]}


def test_factscore_pairs_all_and_maxmin():
    got = pilot.fs_pairs(PT, FS, "all")
    assert {(p["chosen"], p["rejected"]) for p in got} == {
        ("a1", "a0"),
        ("a1", "a3"),
        ("b2", "b0"),
    }  # the tie a0 = a3 and the unscored a2 join no pair
    assert all(p["rm_fact"][0] > p["rm_fact"][1] and p["kind"] == "fact" for p in got)
    assert len({p["id"] for p in got}) == len(got)
    mm = pilot.fs_pairs(PT, FS, "maxmin")
    assert [(p["chosen"], p["rejected"]) for p in mm] == [("a1", "a0"), ("b2", "b0")]
    assert pilot.fs_pairs(PT, {"p1": [0.5] * 4}, "maxmin") == []  # all tied: no pair


def test_rag_pairs_choose_the_grounded_bio():
    got = pilot.rag_pairs(PT, {r["id"]: r for r in RAG})
    # a1 == a1 (identical) and the empty responses make no pair
    assert [(p["chosen"], p["rejected"]) for p in got] == [
        ("ra0", "a0"),
        ("ra2", "a2"),
        ("ra3", "a3"),
        ("rb0", "b0"),
    ]
    with pytest.raises(ValueError, match="no record for prompt p2"):
        pilot.rag_pairs(PT, {"p1": RAG[0]})


def test_data_cli_writes_sft_sets_pairs_and_counts(tmp_path):
    write_jsonl(tmp_path / "pt.jsonl", PT)
    write_jsonl(tmp_path / "rag.jsonl", RAG)
    write_jsonl(tmp_path / "fs.jsonl", [{"id": k, "scores": v} for k, v in FS.items()])
    pilot.main(
        ["data", "--pt", str(tmp_path / "pt.jsonl"), "--rag", str(tmp_path / "rag.jsonl")]
        + ["--factscore", str(tmp_path / "fs.jsonl"), "--sft-dir", str(tmp_path / "sft")]
        + ["--pairs-dir", str(tmp_path / "dpo"), "--counts", str(tmp_path / "c.json")]
    )
    counts = json.loads((tmp_path / "c.json").read_text())
    assert counts == {
        "people": 2,
        "selection": "all",
        "sets": {"SFT_PT": 6, "SFT_RAG": 6, "DPO_FS": 3, "DPO_RAG": 4},
        "factscore": {"n_items": 7, "n_unknown_topic": 0, "unknown_topics": []},
    }
    sft = [json.loads(x) for x in (tmp_path / "sft/SFT_PT.jsonl").read_text().splitlines()]
    assert sft[0] == {
        "id": "p1#0",
        "instruction": "Tell me a bio of A.",
        "response": "a0",
        "origin": "pt",
    }
    pairs = (tmp_path / "dpo/pairs_DPO_RAG.jsonl").read_text().splitlines()
    assert {"prompt", "chosen", "rejected"} <= set(json.loads(pairs[0]))


def test_rag_prompt_puts_passages_before_the_instruction():
    demos = [("Tell me a bio of C.", "C was a poet.")]
    plain = fewshot_prompt("Tell me a bio of A.", demos).text
    rag = fewshot_prompt("Tell me a bio of A.", demos, ["A was born in 1900.", "A died."]).text
    assert "### Context:" not in plain
    head, tail = rag.split("### Context:\n")
    assert head == plain.split("### Instruction:\nTell me a bio of A.")[0]
    assert tail.startswith("A was born in 1900.\n\nA died.\n\n### Instruction:\nTell me a bio")


def test_fewshot_with_knowledge_retrieves_the_topic_page(tmp_path, tiny_model):
    from flame import fewshot
    from flame.knowledge import build

    pages = [
        {"title": "Ada Lovelace", "text": "Ada Lovelace was a mathematician. She wrote notes."},
        {"title": "Alan Turing", "text": "Alan Turing was a mathematician and a code breaker."},
    ]
    write_jsonl(tmp_path / "kb.jsonl", pages)
    build(f"jsonl:{tmp_path / 'kb.jsonl'}", tmp_path / "kb", max_passage_tokens=8)
    demos = [
        {"id": f"d{i}", "instruction": f"Question {i} about maths?", "response": f"Answer {i}."}
        for i in range(3)
    ]
    targets = [
        {"id": "t1", "instruction": "Tell me a bio of Ada Lovelace.", "topic": "Ada Lovelace"},
        {"id": "t2", "instruction": "Tell me about code breaker work.", "topic": "Nobody"},
    ]
    write_jsonl(tmp_path / "demos.jsonl", demos)
    write_jsonl(tmp_path / "t.jsonl", targets)
    fewshot.main(
        ["--model", json.dumps({"source": str(tiny_model), "backend": "transformers"})]
        + ["--demos", str(tmp_path / "demos.jsonl"), "--inputs", str(tmp_path / "t.jsonl")]
        + ["--out", str(tmp_path / "o.jsonl"), "--k", "2", "--n", "1"]
        + ["--max-new-tokens", "4", "--knowledge", str(tmp_path / "kb"), "--passages", "1"]
    )
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    passages = {
        json.loads(x)["id"]: json.loads(x)["title"]
        for x in (tmp_path / "kb/passages.jsonl").read_text().splitlines()
    }
    assert [passages[i] for i in out[0]["context"]] == ["Ada Lovelace"]
    assert [passages[i] for i in out[1]["context"]] == ["Alan Turing"]  # open search
    assert len(out[0]["responses"]) == 1


def test_data_counts_bios_whose_person_has_no_page(tmp_path):
    """flame.rm_fact --retrieval topic left B's bios out (no page of B): no DPO_FS pair comes
    from them and counts.json says how many were left out."""
    pt = [{**PT[0], "topic": "A"}, {**PT[1], "topic": "B"}]
    write_jsonl(tmp_path / "pt.jsonl", pt)
    write_jsonl(tmp_path / "rag.jsonl", RAG)
    fs = [{"id": "p1", "scores": FS["p1"], "unknown_topic": False},
          {"id": "p2", "scores": [None] * 3, "unknown_topic": True}]  # fmt: skip
    write_jsonl(tmp_path / "fs.jsonl", fs)
    pilot.main(
        ["data", "--pt", str(tmp_path / "pt.jsonl"), "--rag", str(tmp_path / "rag.jsonl")]
        + ["--factscore", str(tmp_path / "fs.jsonl"), "--sft-dir", str(tmp_path / "sft")]
        + ["--pairs-dir", str(tmp_path / "dpo"), "--counts", str(tmp_path / "c.json")]
    )
    counts = json.loads((tmp_path / "c.json").read_text())
    assert counts["sets"]["DPO_FS"] == 2  # a1 > a0, a1 > a3; none of B's
    assert counts["factscore"] == {"n_items": 7, "n_unknown_topic": 3, "unknown_topics": ["B"]}


def _fact(fs, lo, hi):
    return {"bio": {"factscore": fs, "factscore_ci": {"n": 3, "lo": lo, "hi": hi}}}


def test_table1_rows_counts_paper_and_marks(tmp_path):
    ev = tmp_path / "eval"
    models = {
        "PT": _fact(0.4, 0.3, 0.5),
        "PT_RAG": _fact(0.8, 0.7, 0.9),
        "SFT_PT": _fact(0.45, 0.35, 0.55),
        "SFT_PT+DPO_FS": {"bio": {"factscore": None, "n_scored": 0}},
    }
    for m, f in models.items():
        (ev / m).mkdir(parents=True)
        (ev / m / "factuality.json").write_text(json.dumps(f))
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({"sets": {"SFT_PT": 18, "DPO_FS": 5}}))
    out = tmp_path / "t1"
    tables_extra.main(
        ["pilot", "--eval-dir", str(ev), "--rows", *models, "--baseline", "PT"]
        + ["--pilot-counts", str(counts), "--out", str(out)]
    )
    lines = (tmp_path / "t1.csv").read_text().splitlines()
    head = lines[0].split(",")
    rows = {x.split(",")[0]: dict(zip(head, x.split(","), strict=True)) for x in lines[1:]}
    assert list(rows) == list(models)
    assert rows["PT_RAG"]["paper_bio_fs"] == "55.4" and rows["PT_RAG"]["bio_fs_n"] == "3"
    assert rows["PT_RAG"]["vs_baseline"] == "differs: Bio FS"
    assert rows["SFT_PT"]["vs_baseline"] == "not distinguishable"
    assert rows["SFT_PT"]["train"] == "18" and rows["PT"]["train"] == ""
    assert rows["SFT_PT+DPO_FS"]["bio_fs"] == "" and rows["SFT_PT+DPO_FS"]["train"] == "5"
    md = (tmp_path / "t1.md").read_text()
    assert "paper, Llama-2 7B" in md
    assert "| SFT on PT's own bios | 18 (-) | 45.0 ± 10.0 (37.9) | not distinguishable |" in md
    assert "†" not in md and rows["PT"]["bio_left_out"] == "0"
    with pytest.raises(SystemExit, match="SFT_RAG/factuality.json"):
        tables_extra.main(
            ["pilot", "--eval-dir", str(ev), "--rows", "PT", "SFT_RAG", "--out", str(out)]
        )


def test_table1_says_how_many_bios_were_left_out(tmp_path):
    """Bio FS of a model whose bios of people without a page were left out, and the DPO_FS
    pairs built from PT bios so left out: the cells are marked and a note counts them."""
    ev = tmp_path / "eval"
    left = {"n_items": 4, "n_unknown_topic": 3, "unknown_topics": ["Doug Sheehan", "X", "Y"]}
    models = {
        "PT": {"bio": {**_fact(0.4, 0.3, 0.5)["bio"], **left}},
        "SFT_PT+DPO_FS": {"bio": {"factscore": None, "n_scored": 0, **left, "n_unknown_topic": 4,
                                  "unknown_topics": ["Doug Sheehan", "X", "Y", "Z"]}},
    }  # fmt: skip
    for m, f in models.items():
        (ev / m).mkdir(parents=True)
        (ev / m / "factuality.json").write_text(json.dumps(f))
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({"sets": {"DPO_FS": 5}, "factscore": {
        "n_items": 12, "n_unknown_topic": 6, "unknown_topics": ["Q", "R"]}}))  # fmt: skip
    out = tmp_path / "t1"
    tables_extra.main(
        ["pilot", "--eval-dir", str(ev), "--rows", *models, "--baseline", "PT"]
        + ["--pilot-counts", str(counts), "--out", str(out)]
    )
    lines = (tmp_path / "t1.csv").read_text().splitlines()
    head = lines[0].split(",")
    rows = {x.split(",")[0]: dict(zip(head, x.split(","), strict=True)) for x in lines[1:]}
    assert rows["PT"]["bio_left_out"] == "3" and rows["SFT_PT+DPO_FS"]["bio_left_out"] == "4"
    assert rows["SFT_PT+DPO_FS"]["train_left_out"] == "6" and rows["PT"]["train_left_out"] == ""
    md = (tmp_path / "t1.md").read_text()
    assert "| 40.0 ± 10.0 † (" in md and "| - † (" in md and "| 5 † (" in md
    assert (
        "† Bio FS, PT (few-shot): 3 of 4 bios left out: topic not in the knowledge source "
        "(Doug Sheehan, X, Y)." in md
    )
    assert "4 of 4 bios left out" in md
    assert "training examples / pairs, " in md and "6 of 12 PT bios left out" in md
