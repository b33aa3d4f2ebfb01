"""The paper's data in the layouts users actually have (tests/fixtures/, see its README): the hub
build on them (OASST1 trees, the overlap policy, optional evaluation sets), FActScore-format
input to the FActScore CLI, one-line errors with exit status 2, and the paper config's workflow
on the fixtures (a dry run of the whole DAG, a real run of the data stage)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flame.cli import error_line, run
from flame.data import load_alpaca_eval, load_factscore_entities, load_oasst1_pairs, load_prompts
from flame.data.build import main as data_main
from flame.factscore.__main__ import read_items
from flame.io import RecordError, read_json, read_jsonl
from flame.tables import missing_note

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
FILES = {
    "oasst1": FIX / "oasst1" / "messages.jsonl",
    "alpaca_eval": FIX / "alpaca_eval" / "alpaca_eval.json",
    "factscore_entities": FIX / "factscore" / "prompt_entities.txt",
    "fava": FIX / "fava" / "annotations.json",
    "dpo_prompts": FIX / "dpo" / "prompts.jsonl",
}
DB = FIX / "factscore" / "enwiki-20230401.db"
GENERATIONS = FIX / "factscore" / "generations.jsonl"


def hub_args(out: Path, n_seed: int = 3, **files) -> list[str]:
    args = ["build", "--out-dir", str(out), "--source", "hub", "--n-seed", str(n_seed)]
    for key, path in {**FILES, **files}.items():
        args += ["--" + key.replace("_", "-"), str(path)]
    return args


def texts(path: Path) -> list[str]:
    return [r["instruction"] for r in read_jsonl(path)]


def flame(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "FLAME_DEBUG"}
    env = {**base, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=120
    )


# ------------------------------------------------------------------ loaders on the real layouts
def test_oasst1_message_rows_rebuild_trees_and_count_every_drop():
    drops = Counter()
    pairs = load_oasst1_pairs(str(FILES["oasst1"]), drops=drops)
    prompts = [p for p, _ in pairs]
    # first turns with a usable rank-0 reply; the follow-up turn of the tea tree is not a prompt
    assert dict(pairs)["How do I make a good cup of tea?"].startswith("Warm the pot")
    assert "And for green tea?" not in prompts
    assert len(pairs) == 8
    assert drops == {
        "prompt_other_language": 2,  # es, de
        "prompt_no_usable_rank0_reply": 1,  # rank-0 reply deleted, rank-1 left
        "prompt_replies_unranked": 1,  # one reply with rank null
        "prompt_deleted": 1,
        "prompt_review_failed": 1,
        "prompt_no_usable_reply": 2,  # only a synthetic reply; no reply yet
        "reply_deleted": 1,  # the deleted rank-0 reply
        "reply_synthetic": 1,
        "duplicate": 1,  # the same prompt, another case and spacing
    }


def test_oasst1_release_files_gzip_messages_and_nested_trees(tmp_path):
    """The release's *.messages.jsonl.gz and *.trees.jsonl.gz, and HF's Parquet, give the same
    pairs."""
    rows = [json.loads(line) for line in FILES["oasst1"].read_text().splitlines()]
    with gzip.open(tmp_path / "oasst_ready.messages.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in rows))
    nodes = {r["message_id"]: {**r, "replies": []} for r in rows}
    trees = []
    for r in rows:
        if r["parent_id"] is None:
            trees.append({"message_tree_id": r["message_id"], "tree_state": r["tree_state"],
                          "prompt": nodes[r["message_id"]]})  # fmt: skip
        else:
            nodes[r["parent_id"]]["replies"].append(nodes[r["message_id"]])
    for node in nodes.values():
        del node["parent_id"], node["message_tree_id"]
    with gzip.open(tmp_path / "oasst_ready.trees.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(t) + "\n" for t in trees))
    pd.DataFrame(rows).to_parquet(tmp_path / "train-00000-of-00001.parquet")  # the HF files
    expected = load_oasst1_pairs(str(FILES["oasst1"]))
    names = ["oasst_ready.messages.jsonl.gz", "oasst_ready.trees.jsonl.gz"]
    for name in [*names, "train-00000-of-00001.parquet"]:
        assert load_oasst1_pairs(str(tmp_path / name)) == expected, name


def test_oasst1_bad_rows_name_file_and_line(tmp_path):
    rows = [json.loads(line) for line in FILES["oasst1"].read_text().splitlines()]
    cases = [
        (lambda r: r[1].update(message_tree_id="other-tree"), ":2: message_tree_id 'other-tree'"),
        (lambda r: r[2].update(message_id=r[1]["message_id"]), ":3: duplicate message_id"),
        (lambda r: r[3].update(role="user"), ":4: role must be prompter or assistant"),
        (lambda r: r[0].pop("parent_id"), ":1: missing field"),
    ]
    for change, message in cases:
        bad = [dict(r) for r in rows]
        change(bad)
        path = tmp_path / "messages.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in bad))
        with pytest.raises(RecordError, match=f"{path}{message}"):
            load_oasst1_pairs(str(path))


def test_alpaca_eval_factscore_and_fava_layouts():
    alpaca = load_alpaca_eval(str(FILES["alpaca_eval"]))
    assert len(alpaca) == 7 and alpaca[0] == (
        "What is the capital of Australia?",
        "The capital of Australia is Canberra.",
    )
    drops = Counter()
    assert load_factscore_entities(str(FILES["factscore_entities"]), drops) == [
        "Ada Lovelace",
        "Alan Turing",
        "Khalid al-Mihdhar",
        "Marie Curie",
    ]
    assert drops == {"duplicate": 1}
    drops = Counter()
    fava = load_prompts(str(FILES["fava"]), drops)  # one item per (prompt, model)
    assert len(fava) == 3 and drops == {"duplicate": 2}


# ------------------------------------------------------------------ the overlap policy
def test_hub_build_overlap_policy(tmp_path):
    out = tmp_path / "data"
    data_main(hub_args(out))
    seed, dpo = texts(out / "seed.jsonl"), texts(out / "dpo.jsonl")
    alpaca, fava = texts(out / "eval/alpaca.jsonl"), texts(out / "eval/fava.jsonl")
    labels = read_jsonl(out / "classifier_labels.jsonl")
    # evaluation sets may share items
    assert "Summarize the history of the Roman Empire." in set(alpaca) & set(fava)
    # a label item in an evaluation set leaves the labels (the build no longer stops)
    assert "What is the capital of Australia?" in alpaca
    assert "cl-003" not in {r["id"] for r in labels} and len(labels) == 47
    # training never overlaps evaluation or label data
    held = set(alpaca) | set(fava) | set(texts(out / "eval/bio.jsonl"))
    held |= {r["instruction"] for r in labels}
    assert not (set(seed) | set(dpo)) & held and not set(seed) & set(dpo)
    assert len(seed) == 3 and {r["source"] for r in read_jsonl(out / "dpo.jsonl")} == {"dpo_file"}
    info = read_json(out / "manifest.json")["info"]
    assert info["missing_sets"] == {}
    dropped = info["dropped"]
    assert dropped["classifier_labels"] == {"in_eval/alpaca": 1, "ids": ["cl-003"]}
    assert dropped["seed"] == {"in_eval/alpaca": 2}  # board game, capital of Australia
    assert dropped["dpo"]["in_eval/alpaca"] == 1 and dropped["dpo"]["in_classifier_labels"] == 1
    assert sum(dropped["dpo"].values()) == 7 - len(dpo)
    assert dropped["fava"] == {"duplicate": 2} and dropped["factscore_entities"] == {"duplicate": 1}
    assert dropped["oasst1"]["prompt_other_language"] == 2


def test_missing_fava_leaves_its_columns_empty_with_a_note(tmp_path):
    out = tmp_path / "data"
    data_main(hub_args(out, fava="none"))
    assert read_jsonl(out / "eval/fava.jsonl") == [] and texts(out / "eval/alpaca.jsonl")
    manifest = read_json(out / "manifest.json")
    assert set(manifest["info"]["missing_sets"]) == {"eval/fava"}
    assert manifest["counts"]["eval/fava.jsonl"]["records"] == 0
    note = missing_note(out / "manifest.json")
    assert note.strip().startswith("Note: eval/fava was not built, its columns are empty: FAVA")
    assert missing_note(None) == "" and missing_note(tmp_path / "absent.json") == ""
    # without AlpacaEval there is no Alpaca Fact either; any set may be left out
    data_main([*hub_args(out, factscore_entities="none"), "--alpaca-eval", "none"])
    assert read_jsonl(out / "eval/alpaca.jsonl") == [] == read_jsonl(out / "eval/bio.jsonl")
    missing = read_json(out / "manifest.json")["info"]["missing_sets"]
    assert "Alpaca Fact" in missing["eval/alpaca"] and set(missing) == {"eval/alpaca", "eval/bio"}
    # a set that is configured but whose file is missing is an error, not a silent empty column
    with pytest.raises(FileNotFoundError, match="--fava .*nope.json: no such file.*fava: null"):
        data_main(hub_args(out, fava=tmp_path / "nope.json"))


def test_an_empty_set_flows_through_generation_and_evaluation(tmp_path, tiny_model):
    """What the workflow does with a left-out FAVA: generate writes an empty file and evaluate
    gives the set null scores (the tables print them as empty cells)."""
    from flame.evaluate import main as evaluate_main
    from flame.generate import main as generate_main
    from flame.knowledge import build

    data = tmp_path / "data"
    data_main(hub_args(data, fava="none", n_seed=2))
    bio, fava = data / "eval/bio.jsonl", data / "eval/fava.jsonl"
    gens = [tmp_path / "bio.jsonl", tmp_path / "fava.jsonl"]
    spec = json.dumps({"source": str(tiny_model), "batch_size": 8})
    generate_main(["--model", spec, "--inputs", str(bio), str(fava), "--outs", *map(str, gens),
                   "--max-new-tokens", "4", "--temperature", "0"])  # fmt: skip
    assert len(read_jsonl(gens[0])) == 4 and read_jsonl(gens[1]) == []
    build(f"sqlite:{DB}", tmp_path / "kb", max_passage_tokens=64)
    evaluate_main(
        ["--sets", f"bio={gens[0]}:topic", f"fava={gens[1]}:open", "--knowledge",
         str(tmp_path / "kb"), "--verifier", spec, "--unit", "sentence", "--k", "1",
         "--out", str(tmp_path / "factuality.json"), "--facts-dir", str(tmp_path / "facts")]
    )  # fmt: skip
    summary = read_json(tmp_path / "factuality.json")
    assert summary["bio"]["n_items"] == 4 and summary["fava"]["n_items"] == 0
    assert summary["fava"]["factscore"] is None and summary["fava"]["mean_length_chars"] is None


def test_tables_note_a_missing_set(tmp_path):
    """An empty FAVA set (what flame.evaluate writes for no records) gives empty FAVA cells and
    the manifest's reason under the tables; the other columns are filled."""
    from flame.factscore import aggregate
    from flame.tables import main as tables_main

    data = tmp_path / "data"
    data_main(hub_args(data, fava="none"))
    scored = {"abstained": False, "n_facts": 2, "n_supported": 1, "score": 0.5}
    for model in ["PT", "SFT", "SFT_fact"]:
        fact = {
            "bio": {**aggregate([scored], gamma=0), "mean_length_chars": 10.0},
            "alpaca_fact": {**aggregate([scored], gamma=0), "mean_length_chars": 10.0},
            "fava": {**aggregate([], gamma=0), "mean_length_chars": None},
        }
        (tmp_path / "eval" / model).mkdir(parents=True)
        (tmp_path / "eval" / model / "factuality.json").write_text(json.dumps(fact))
    out = tmp_path / "tables"
    tables_main(
        ["--eval-dir", str(tmp_path / "eval"), "--dpo-dir", str(tmp_path / "dpo"),
         "--out-dir", str(out), "--table2-rows", "PT", "SFT", "SFT_fact",
         "--table3-rows", "SFT", "--data-manifest", str(data / "manifest.json")]
    )  # fmt: skip
    md = (out / "table2_sft.md").read_text()
    assert "Note: eval/fava was not built, its columns are empty: FAVA: not given" in md
    row = next(line for line in md.splitlines() if line.startswith("| SFT |"))
    # Win, Bio x3, AF x3, FAVA x3, vs_baseline
    cells = [c.strip() for c in row.split("|")[2:-1]]
    assert all(c.startswith("- (") for c in cells[7:10]) and cells[1].startswith("50.0 (")
    header, sft = (out / "table2_sft.csv").read_text().splitlines()[:3:2]
    cells = dict(zip(header.split(","), sft.split(","), strict=True))
    assert cells["bio_fs"] == "50.0000" and cells["fava_fs"] == ""
    assert "Note:" not in (out / "table11_pairs.md").read_text()


# ------------------------------------------------------------------ FActScore CLI input
def test_factscore_reads_factscores_own_format():
    items, counts = read_items(GENERATIONS)
    assert counts == {"records": 3, "empty_responses": 0}
    assert items[0] == {
        "id": 1,
        "prompt": "Question: Tell me a bio of Ada Lovelace.",
        "topic": "Ada Lovelace",
        "where": f"{GENERATIONS}:1",
        "response": items[0]["response"],
    }
    assert items[0]["response"].startswith("Ada Lovelace was an English mathematician.")


@pytest.mark.parametrize("field", ["output", "generation", "completion", "text"])
def test_factscore_common_response_fields(tmp_path, field):
    path = tmp_path / "gens.jsonl"
    path.write_text(json.dumps({"topic": "Ada Lovelace", field: "She was a mathematician."}))
    (item,) = read_items(path)[0]
    assert item["response"] == "She was a mathematician." and item["prompt"] == ""


def test_factscore_named_fields(tmp_path):
    path = tmp_path / "gens.jsonl"
    rec = {
        "q": "Who was Ada?",
        "entity": "Ada Lovelace",
        "answer": "A mathematician.",
        "output": "",
    }
    path.write_text(json.dumps(rec) + "\n")
    (item,) = read_items(path, "q", "entity", "answer")[0]
    assert (item["prompt"], item["topic"], item["response"]) == (
        "Who was Ada?",
        "Ada Lovelace",
        "A mathematician.",
    )
    with pytest.raises(RecordError, match=r"gens.jsonl:1: needs a response: 'reply'.*--response"):
        read_items(path, "q", "entity", "reply")
    with pytest.raises(RecordError, match=r":1: needs a prompt \('prompt' or .*--topic-field"):
        read_items(path)


def test_factscore_cli_scores_factscore_format_with_the_fixture_db(tmp_path, tiny_model):
    """FActScore's files as they are: generations {input, output, topic} scored against its
    SQLite DB (passages joined by its separator), one line per result."""
    from flame.factscore.__main__ import main
    from flame.knowledge import build

    build(f"sqlite:{DB}", tmp_path / "kb", max_passage_tokens=64)
    spec = json.dumps({"source": str(tiny_model), "batch_size": 8})
    summary = main(
        ["--input", str(GENERATIONS), "--verifier", spec, "--unit", "sentence",
         "--knowledge", str(tmp_path / "kb"), "--out", str(tmp_path / "facts.jsonl"),
         "--summary", str(tmp_path / "summary.json"), "--k", "2"]
    )  # fmt: skip
    rows = read_jsonl(tmp_path / "facts.jsonl")
    assert [r["topic"] for r in rows] == ["Ada Lovelace", "Alan Turing", "Khalid al-Mihdhar"]
    assert rows[2]["abstained"] and rows[0]["n_facts"] == 2
    assert summary["n_items"] == 3 and summary["counts"]["unknown_topic_items"] == 0
    assert all(len(f["passages"]) == 2 for f in rows[0]["facts"])


# ------------------------------------------------------------------ one-line errors, status 2
def test_run_turns_bad_input_into_one_line_and_status_2(capsys, monkeypatch):
    monkeypatch.delenv("FLAME_DEBUG", raising=False)

    def bad(argv=None):
        raise RecordError("data.jsonl:3: field 'x' must be a string")

    with pytest.raises(SystemExit) as exit_:
        run(bad, [])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: data.jsonl:3: field 'x' must be a string\n"
    with pytest.raises(SystemExit) as exit_:
        run(bad, ["--debug"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("Traceback") and err.endswith("string\n")

    def bug(argv=None):
        raise KeyError("x")  # not bad input: a bug keeps its traceback and status

    with pytest.raises(KeyError):
        run(bug, [])
    assert error_line(SystemExit("--unit atomic needs --decomposer")) == (
        "error: --unit atomic needs --decomposer"
    )
    assert error_line(SystemExit("error: x")) == "error: x"
    missing = FileNotFoundError(2, "No such file or directory", "a/b.json")
    assert error_line(missing) == "error: a/b.json: No such file or directory"


def test_every_step_entry_point_goes_through_flame_cli():
    mains = [
        p
        for p in (ROOT / "src/flame").rglob("*.py")
        if "\nif __name__ ==" in p.read_text() or p.name == "__main__.py"
    ]
    assert len(mains) >= 17
    for path in mains:
        text = path.read_text()
        if path.name == "__main__.py" and "def main" not in text:
            assert text.rstrip().endswith("run(main)"), path
        elif 'if __name__ == "__main__":' in text:
            assert text.rstrip().endswith('if __name__ == "__main__":\n    run(main)'), path


def test_steps_print_one_error_line(tmp_path):
    bad = tmp_path / "gens.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n{not json\n")
    oasst = tmp_path / "messages.jsonl"
    oasst.write_text(json.dumps({"message_id": "m1", "parent_id": None, "text": "Hi"}) + "\n")
    cases = [
        (["flame.data", *hub_args(tmp_path / "d", oasst1=oasst)],
         f"error: {oasst}:1: missing field(s) role"),
        (["flame.data", *hub_args(tmp_path / "d", fava=tmp_path / "fava.json")],
         f"error: --fava {tmp_path / 'fava.json'}: no such file (fix the path, or leave the set"),
        (["flame.factscore", "--input", str(bad), "--verifier", "x", "--knowledge", "kb",
          "--out", str(tmp_path / "o"), "--summary", str(tmp_path / "s")],
         f"error: {bad}:2: not valid JSON"),
        (["flame.generate", "--model", "x", "--inputs", str(bad), "--outs", str(tmp_path / "o")],
         f"error: {bad}:1: missing field(s) id, instruction"),
    ]  # fmt: skip
    for args, message in cases:
        res = flame(*args)
        assert res.returncode == 2, res.stderr
        assert res.stderr.splitlines()[-1].startswith(message), res.stderr
        assert "Traceback" not in res.stderr
    res = flame(*cases[0][0], env={"FLAME_DEBUG": "1"})
    assert res.returncode == 2 and "Traceback" in res.stderr
    assert res.stderr.splitlines()[-1].startswith(cases[0][1])


# ------------------------------------------------------------------ the paper config on fixtures
@pytest.fixture()
def paper_on_fixtures(workflow_dir):
    cfg = yaml.safe_load((workflow_dir / "workflow/configs/paper.yaml").read_text())
    cfg["data"]["hub"] = {**{k: str(v) for k, v in FILES.items()}, "n_seed": 3}
    cfg["knowledge"]["source"] = f"sqlite:{DB}"
    cfg["training"].update(nodes=1, num_processes=8)  # one machine (one-node.yaml), no Slurm
    (workflow_dir / "paper_fixtures.yaml").write_text(yaml.safe_dump(cfg))
    return workflow_dir


def snakemake(wd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "paper_fixtures.yaml", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=300, env=env)


def test_paper_config_sets_every_key_of_the_embedded_config():
    """`--configfile paper.yaml` adds to config.yaml (the Snakefile loads it first): a key that
    paper.yaml leaves out would keep its toy value (e.g. data.n_eval_bio: 3, dpo.use_lora)."""
    small = yaml.safe_load((ROOT / "config.yaml").read_text())
    paper = yaml.safe_load((ROOT / "workflow/configs/paper.yaml").read_text())

    def leaks(a, b, path):
        for key, value in a.items():
            if key not in b:
                yield f"{path}{key}"
            elif isinstance(value, dict) and isinstance(b[key], dict):
                yield from leaks(value, b[key], f"{path}{key}.")

    embedded_only = {
        f"data.n_{s}" for s in ("seed_fact", "seed_nonfact", "dpo_fact", "dpo_nonfact")
    }
    assert set(leaks({k: v for k, v in small.items() if k != "models"}, paper, "")) == embedded_only


def test_paper_config_on_fixtures_dry_run(paper_on_fixtures):
    res = snakemake(paper_on_fixtures, "-n", "-p", "--cores", "8")
    assert res.returncode == 0, res.stderr
    for rule in ["build_data", "build_knowledge", "train_dpo", "eval_factuality", "tables"]:
        assert re.search(rf"^{rule}\s+\d+", res.stdout, flags=re.M), rule
    # config.yaml's toy sizes do not leak into the paper's data (--configfile adds to it)
    (command,) = [line for line in res.stdout.splitlines() if "-m flame.data build" in line]
    assert "--source hub --seed 0 --alpaca-eval" in command and "--n-seed 3" in command
    for key, path in FILES.items():
        assert f"--{key.replace('_', '-')} {path}" in command
    assert "--knowledge" in res.stdout and f"sqlite:{DB}" in res.stdout
    build = res.stdout[res.stdout.index("rule build_data:") :].split("\n\n")[0]
    assert all(str(path) in build.split("output:")[0] for path in FILES.values())  # inputs


@pytest.mark.slow  # three Snakemake runs: 14-27 s on the shared 2-core machine
def test_paper_config_on_fixtures_builds_data(paper_on_fixtures):
    wd = paper_on_fixtures
    res = snakemake(wd, "--cores", "1", "results/data/manifest.json")
    assert res.returncode == 0, res.stderr + (wd / "results/logs/build_data.log").read_text()
    manifest = read_json(wd / "results/data/manifest.json")
    assert manifest["source"] == "hub" and manifest["counts"]["seed.jsonl"]["records"] == 3
    assert manifest["info"]["missing_sets"] == {}
    assert manifest["options"]["fava"] == str(FILES["fava"])
    cfg = yaml.safe_load((wd / "paper_fixtures.yaml").read_text())
    cfg["data"]["hub"]["fava"] = None  # a user without FAVA's file
    (wd / "paper_fixtures.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake(wd, "--cores", "1", "--force", "results/data/manifest.json")
    assert res.returncode == 0, res.stderr
    assert set(read_json(wd / "results/data/manifest.json")["info"]["missing_sets"]) == {
        "eval/fava"
    }
    # a wrong path: the job fails; its log has the traceback and ends with the error line
    cfg["data"]["hub"]["fava"] = "data/fava/annotations.json"
    (wd / "paper_fixtures.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake(wd, "--cores", "1", "--force", "results/data/manifest.json")
    log = (wd / "results/logs/build_data.log").read_text()
    assert res.returncode != 0 and "Traceback" in log
    assert log.splitlines()[-1] == (
        "error: --fava data/fava/annotations.json: no such file (fix the path, or leave the set "
        "out with data.hub.fava: null (--fava none))"
    )
