"""Data stage: shipped resources, embedded splits (disjointness, counts, determinism), the
command line, and the hub/file loaders on tiny local files (hubs are unreachable in tests)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pandas as pd
import pytest

from flame.data import (
    FIELDS,
    CountError,
    EmbeddedOptions,
    build_embedded,
    load_alpaca_eval,
    load_classifier_labels,
    load_factscore_entities,
    load_nonfact,
    load_oasst1_pairs,
    load_prompts,
    load_wiki_summaries,
)
from flame.data.build import main
from flame.data.schema import TRAIN_SPLITS, check_splits, norm, record_id
from flame.data.wiki import to_entity
from flame.io import RecordError, read_json, read_jsonl

SMALL = EmbeddedOptions(
    n_seed_fact=6,
    n_seed_nonfact=10,
    n_dpo_fact=5,
    n_dpo_nonfact=4,
    n_eval_bio=7,
    n_eval_alpaca=10,
    n_eval_fava=5,
)


@pytest.fixture(scope="module")
def wiki():
    return {e["title"]: e for e in load_wiki_summaries()}


@pytest.fixture(scope="module")
def default_build():
    return build_embedded(EmbeddedOptions())[0]


def test_resources_are_valid():
    nonfact = load_nonfact()
    assert len(nonfact) >= 90
    assert all(len(r["response"]) >= 20 for r in nonfact)
    assert len({r["category"] for r in nonfact}) >= 8
    labels = load_classifier_labels()
    assert len(labels) >= 40
    assert 0.4 <= sum(r["fact_based"] for r in labels) / len(labels) <= 0.6
    texts = [norm(r["instruction"]) for r in nonfact + labels]
    assert len(texts) == len(set(texts))


def test_default_build_schema_ids_and_disjointness(default_build, wiki):
    labels = [r["instruction"] for r in load_classifier_labels()]
    check_splits(default_build, labels)  # raises on any shared id / instruction / entity
    all_records = [r for recs in default_build.values() for r in recs]
    assert all(tuple(r) == FIELDS for r in all_records)
    assert len({r["id"] for r in all_records}) == len(all_records)
    for split, records in default_build.items():
        assert all(r["id"] == record_id(split, r["instruction"]) for r in records)
    train = {r["topic"] for s in TRAIN_SPLITS for r in default_build[s]} - {None}
    for split in ("eval/bio", "eval/alpaca", "eval/fava"):
        assert not train & {r["topic"] for r in default_build[split]}
    seed_topics = {r["topic"] for r in default_build["seed"]} - {None}
    assert not seed_topics & {r["topic"] for r in default_build["dpo"]}
    for rec in all_records:  # fact records are about their entity, with its summary as reference
        if rec["kind"] == "fact":
            assert rec["topic"] in wiki
            assert rec["response"] in (None, wiki[rec["topic"]]["extract"])
    seed = default_build["seed"]
    assert all(r["response"] for r in seed)
    assert all(r["response"] is None for r in default_build["dpo"])


def test_bio_entities_are_people_never_trained_on(default_build, wiki):
    bio = default_build["eval/bio"]
    assert len(bio) == EmbeddedOptions().n_eval_bio
    for rec in bio:
        assert wiki[rec["topic"]]["topic"] == "People"
        assert rec["instruction"] == f"Tell me a bio of {rec['topic']}."
    training_text = " ".join(r["instruction"] for s in TRAIN_SPLITS for r in default_build[s])
    assert not any(rec["topic"] in training_text for rec in bio)


def test_counts_respected_and_deterministic():
    a, _ = build_embedded(SMALL)
    kinds = {split: Counter(r["kind"] for r in recs) for split, recs in a.items()}
    assert kinds["seed"] == {"fact": 6, "nonfact": 10}
    assert kinds["dpo"] == {"fact": 5, "nonfact": 4}
    assert kinds["eval/bio"] == {"fact": 7}
    assert kinds["eval/alpaca"] == {"fact": 3, "nonfact": 7}  # round(10 * 0.3) fact-seeking
    assert kinds["eval/fava"] == {"fact": 5}
    assert build_embedded(SMALL)[0] == a
    other, _ = build_embedded(replace(SMALL, seed=1))
    assert other["seed"] != a["seed"]


@pytest.mark.parametrize(
    "option, value",
    [("n_eval_bio", 100_000), ("n_seed_fact", 100_000), ("n_seed_nonfact", 500)],
)
def test_count_too_large_names_the_option(option, value):
    flag = "--" + option.replace("_", "-")
    with pytest.raises(CountError, match=flag):
        build_embedded(replace(SMALL, **{option: value}))


def test_cli_writes_all_files(tmp_path):
    out = tmp_path / "data"
    counts = [
        "--n-seed-fact",
        "3",
        "--n-seed-nonfact",
        "5",
        "--n-dpo-fact",
        "2",
        "--n-dpo-nonfact",
        "2",
        "--n-eval-bio",
        "3",
        "--n-eval-alpaca",
        "4",
        "--n-eval-fava",
        "2",
        "--seed",
        "3",
    ]
    main(["build", "--out-dir", str(out), *counts])
    manifest = read_json(out / "manifest.json")
    expected = {"seed": 8, "dpo": 4, "eval/bio": 3, "eval/alpaca": 4, "eval/fava": 2}
    for split, n in expected.items():
        records = read_jsonl(out / f"{split}.jsonl", required=FIELDS)
        assert len(records) == n == manifest["counts"][f"{split}.jsonl"]["records"]
    assert manifest["options"]["seed"] == 3 and manifest["source"] == "embedded"
    assert read_jsonl(out / "classifier_labels.jsonl") == load_classifier_labels()
    assert not list(out.rglob("*.tmp"))
    with pytest.raises(CountError, match="--n-eval-bio"):
        main(["build", "--out-dir", str(out), "--n-eval-bio", "100000"])
    with pytest.raises(ValueError, match="--n-seed applies to --source hub"):
        main(["build", "--out-dir", str(out), "--n-seed", "5"])


def test_entity_phrasing():
    def ent(title, extract, topic="Physical sciences", description="x"):
        return to_entity(dict(title=title, extract=extract, topic=topic, description=description))

    moon = ent("Moon", "The Moon is Earth's only natural satellite.")
    assert (moon.style, moon.fill("What {be} {name}?")) == ("proper", "What is the Moon?")
    hosp = ent("Hospital", "A hospital is a health care institution.")
    assert hosp.fill("Explain what {name} {be}.") == "Explain what a hospital is."
    lipid = ent("Lipid", "Lipids are organic compounds. A lipid is not soluble in water.")
    assert lipid.fill("What {be} {name}?") == "What are lipids?"
    alive = ent("Ada Smith", "Ada Smith is a writer.", "People", "Writer (born 1950)")
    assert alive.fill("Who {be} {name}?") == "Who is Ada Smith?"
    assert ent("The Foos", "The Foos are a band.", "People", "English rock band") is None


def test_malformed_resource_lines_name_file_and_line(tmp_path):
    good = {"id": "nf-1", "instruction": "Write a poem.", "response": "Roses.", "category": "c"}
    cases = [
        ("{not json", ":2: not valid JSON"),
        (json.dumps({**good, "id": "nf-2", "response": 3}), ":2: field 'response'"),
        (json.dumps({**good, "id": "nf-2", "instruction": "write  a POEM."}), ":2: duplicate"),
        (json.dumps({"id": "nf-2", "instruction": "Hi"}), ":2: missing field"),
    ]
    for line, message in cases:
        path = tmp_path / "nonfact.jsonl"
        path.write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(RecordError, match=f"{path}{message}"):
            load_nonfact(path)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"id": "c", "instruction": "Hi", "fact_based": "yes"}) + "\n")
    with pytest.raises(RecordError, match=f"{labels}:1: field 'fact_based' must be true or false"):
        load_classifier_labels(labels)
    wiki = tmp_path / "wiki.json"
    wiki.write_text(json.dumps({"A": {"title": "A", "extract": None}}))
    with pytest.raises(RecordError, match="entry 'A': field 'extract'"):
        load_wiki_summaries(wiki)


# ---------------------------------------------------------------- hub / file loaders
def _oasst_rows():
    def msg(mid, parent, role, text, lang="en", rank=None, **kw):
        row = dict(message_id=mid, parent_id=parent, role=role, text=text, lang=lang, rank=rank)
        return {**row, **kw}

    return [
        msg("p1", None, "prompter", "How do I boil an egg?"),
        msg("a1", "p1", "assistant", "Simmer it for eight minutes.", rank=0),
        msg("a2", "p1", "assistant", "Just boil it.", rank=1),
        msg("p1b", "a1", "prompter", "And for a soft yolk?"),  # second turn: not a seed prompt
        msg("p2", None, "prompter", "Write a poem about rain."),
        msg("a3", "p2", "assistant", "Rain taps the glass.", rank=0),
        msg("p3", None, "prompter", "Wie spät ist es?", lang="de"),
        msg("a4", "p3", "assistant", "Es ist zwölf.", lang="de", rank=0),
        msg("p4", None, "prompter", "Give me a synonym for happy."),
        msg("a5", "p4", "assistant", "Deleted reply.", rank=0, deleted=True),
        msg("a6", "p4", "assistant", "Joyful.", rank=0),
        msg("p5", None, "prompter", "What is the capital of France?"),
        msg("a7", "p5", "assistant", "Paris.", rank=0),
        msg("p6", None, "prompter", "Any tips for sleeping better?"),
        msg("a8", "p6", "assistant", "Unranked reply."),
    ]


@pytest.fixture()
def hub_files(tmp_path):
    files = {
        "oasst1": tmp_path / "oasst.jsonl",
        "alpaca": tmp_path / "alpaca_eval.json",
        "entities": tmp_path / "prompt_entities.txt",
        "fava": tmp_path / "fava.parquet",
        "dpo": tmp_path / "dpo.csv",
    }
    files["oasst1"].write_text("".join(json.dumps(r) + "\n" for r in _oasst_rows()))
    alpaca = [
        {"instruction": "What is the capital of France?", "output": "Paris.", "dataset": "x"},
        {"instruction": "Write a limerick about a frog.", "output": "A frog...", "dataset": "x"},
        {"instruction": "Explain how tides work.", "output": "The Moon...", "dataset": "x"},
    ]
    files["alpaca"].write_text(json.dumps(alpaca))
    files["entities"].write_text("Ada Lovelace\n\nAlan Turing\nAda Lovelace\n")
    fava = ["Describe the main achievements of Marie Curie.", "What is the history of Rome?"]
    pd.DataFrame({"prompt": fava + fava[:1], "model": ["a", "b", "c"]}).to_parquet(files["fava"])
    prompts = [
        "How do I boil an egg?",
        "Write a poem about rain.",
        "Give me a synonym for happy.",
        "Plan a picnic.",
        "Name a colour.",
        "Explain how tides work.",
    ]
    pd.DataFrame({"instruction": prompts}).to_csv(files["dpo"], index=False)
    return files


def test_hub_loaders_on_local_files(hub_files):
    pairs = load_oasst1_pairs(str(hub_files["oasst1"]))
    assert pairs == [
        ("How do I boil an egg?", "Simmer it for eight minutes."),
        ("Write a poem about rain.", "Rain taps the glass."),
        ("Give me a synonym for happy.", "Joyful."),
        ("What is the capital of France?", "Paris."),
    ]
    alpaca = load_alpaca_eval(str(hub_files["alpaca"]))
    assert alpaca[0] == ("What is the capital of France?", "Paris.") and len(alpaca) == 3
    assert load_factscore_entities(str(hub_files["entities"])) == ["Ada Lovelace", "Alan Turing"]
    assert len(load_prompts(str(hub_files["fava"]))) == 2  # deduplicated
    assert len(load_prompts(str(hub_files["dpo"]))) == 6
    named = hub_files["entities"].with_suffix(".jsonl")
    named.write_text(json.dumps({"topic": "Ada Lovelace", "output": "..."}) + "\n")
    assert load_factscore_entities(str(named)) == ["Ada Lovelace"]


def test_hub_input_errors_name_file_and_line(hub_files, tmp_path):
    bad = tmp_path / "oasst_bad.jsonl"
    rows = _oasst_rows()[:2]
    del rows[1]["role"]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RecordError, match=f"{bad}:2: missing field"):
        load_oasst1_pairs(str(bad))
    fava = tmp_path / "fava.jsonl"
    fava.write_text(json.dumps({"prompt": "Describe Rome."}) + "\n\n" + json.dumps({"x": 1}) + "\n")
    with pytest.raises(RecordError, match=f"{fava}:3: no non-empty text"):
        load_prompts(str(fava))
    xml = tmp_path / "prompts.xml"
    xml.write_text("<prompts/>")
    with pytest.raises(RecordError, match="unsupported file type"):
        load_prompts(str(xml))


def test_hub_build_from_local_files(hub_files, tmp_path):
    out = tmp_path / "data"
    args = [
        "build",
        "--out-dir",
        str(out),
        "--source",
        "hub",
        "--oasst1",
        str(hub_files["oasst1"]),
        "--alpaca-eval",
        str(hub_files["alpaca"]),
        "--factscore-entities",
        str(hub_files["entities"]),
        "--fava",
        str(hub_files["fava"]),
        "--n-seed",
        "2",
    ]
    main(args)
    seed = read_jsonl(out / "seed.jsonl", required=FIELDS)
    dpo = read_jsonl(out / "dpo.jsonl", required=FIELDS)
    alpaca = read_jsonl(out / "eval/alpaca.jsonl", required=FIELDS)
    bio = read_jsonl(out / "eval/bio.jsonl", required=FIELDS)
    # the OASST prompt that is also an AlpacaEval instruction is dropped: 3 pairs remain
    assert len(seed) == 2 and len(dpo) == 1 and len(alpaca) == 3
    assert {r["source"] for r in seed + dpo} == {"oasst1"} and all(r["response"] for r in seed)
    assert [r["instruction"] for r in bio] == [
        "Tell me a bio of Ada Lovelace.",
        "Tell me a bio of Alan Turing.",
    ]
    assert read_json(out / "manifest.json")["info"]["dropped"]["seed"] == {"in_eval/alpaca": 1}
    main([*args, "--dpo-prompts", str(hub_files["dpo"])])
    dpo = read_jsonl(out / "dpo.jsonl")
    seed_texts = {r["instruction"] for r in read_jsonl(out / "seed.jsonl")}
    assert {r["source"] for r in dpo} == {"dpo_file"}
    assert not seed_texts & {r["instruction"] for r in dpo}
    assert "Explain how tides work." not in {r["instruction"] for r in dpo}  # an eval item
    assert len(dpo) == 6 - 2 - 1
    with pytest.raises(ValueError, match="--n-seed=9 exceeds"):
        main([*args[:-1], "9"])
    with pytest.raises(ValueError, match="--n-eval-fava=5"):
        main([*args, "--n-eval-fava", "5"])


def test_same_files_across_processes(tmp_path):
    """Byte-identical output in a fresh interpreter with another hash seed (no set-order leaks)."""
    import os
    import subprocess
    import sys

    args = ["build", "--n-seed-fact", "4", "--n-eval-bio", "4", "--seed", "7"]
    main([*args, "--out-dir", str(tmp_path / "a")])
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    cmd = [sys.executable, "-m", "flame.data", *args, "--out-dir", str(tmp_path / "b")]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    hashes = [read_json(tmp_path / d / "manifest.json")["sha256"] for d in "ab"]
    assert hashes[0] == hashes[1]
