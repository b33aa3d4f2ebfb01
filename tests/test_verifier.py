"""The trained fact verifier: its corruption generator, its page split, its training path (on a
tiny random model and a project-written knowledge source, not the embedded one) and how the
workflow plugs it in (roles.fact_verifier: verifier)."""

from __future__ import annotations

import difflib
import json
import random
import subprocess
import sys

import pytest
import yaml

from flame.factscore.verifier_data import (
    KINDS,
    SPAN_KINDS,
    corrupt,
    make_examples,
    names,
    split_pages,
)

PAGES = {
    "Ada Varn": "Ada Varn was a Danish chemist who was born in 1871 in Aarhus. She won two prizes "
    "for her work on salts. In 1902 she moved to Paris with Carl Oster. Her laboratory had 12 "
    "assistants and is now a museum.",
    "Bram Olde": "Bram Olde was a Dutch painter of the Golden Age. He was born in 1620 in Leiden "
    "and died in 1688. He painted three portraits of Maria Teunis. His works are kept in the "
    "Rijksmuseum in Amsterdam.",
    "Ceto River": "The Ceto River is a river in northern Italy that is 240 km long. It rises in "
    "the Alps near Lake Orta. The river was bridged by the Romans in 120 BC. Five cities lie on "
    "its "
    "banks, including Vercelli.",
    "Dara Quill": "Dara Quill is an Irish novelist who has written seven novels. Her first book, "
    "Salt Roads, was published in 1999. She lives in Galway with her husband Tom Reyes. She "
    "was awarded the Kerry Prize in 2014.",
    "Eno Station": "Eno Station is a research base in Antarctica that opened in 1957. It was built "
    "by the Norwegian Polar Institute. About 40 scientists work there in summer. The station "
    "can house 80 people.",
    "Fen Oaks": "Fen Oaks is a village in eastern England with 2,300 inhabitants. It was recorded "
    "in the Domesday Book in 1086. The church of Saint Mary dates from 1340. The village has "
    "four pubs and a school.",
}
SENTENCES = [
    "Ada Varn was a Danish chemist who was born in 1871 in Aarhus.",
    "She won two prizes for her work on salts, and her laboratory had 12 assistants.",
    "In 1902 she moved to Paris with Carl Oster.",
    "Bram Olde is not the painter of the Night Watch.",
    "The river is 240 km long and rises in the Alps near Lake Orta.",
]


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
    from flame.knowledge import KnowledgeBase, build

    d = tmp_path_factory.mktemp("verifier_kb")
    src = d / "pages.jsonl"
    src.write_text("".join(json.dumps({"title": t, "text": x}) + "\n" for t, x in PAGES.items()))
    build(f"jsonl:{src}", d / "kb")
    return KnowledgeBase.load(d / "kb")


def changed_spans(a: str, b: str) -> list[tuple]:
    ops = difflib.SequenceMatcher(None, a.split(), b.split(), autojunk=False).get_opcodes()
    return [op for op in ops if op[0] != "equal"]


@pytest.mark.parametrize("kind", SPAN_KINDS)
def test_each_corruption_kind_changes_exactly_one_span(kind):
    donors = ["Lake Geneva", "Otto Lind", "Kyoto"]
    made = 0
    for seed in range(5):
        rng = random.Random(seed)
        for s in SENTENCES:
            bad = corrupt(s, kind, rng, [d for d in donors if d not in names(s)])
            if bad is None:
                continue
            made += 1
            assert bad != s
            assert len(changed_spans(s, bad)) == 1, (kind, s, bad)
    assert made >= 5, f"{kind} applied to too few sentences"


def test_corruption_kinds_do_what_they_say():
    rng = random.Random(1)
    s = SENTENCES[0]
    year = corrupt(s, "year", rng)
    assert "1871" not in year and year.replace(year.split()[-3], "1871") == s
    assert corrupt(s, "nationality", rng).split()[3] != "Danish"
    assert "was not" in corrupt(s, "negation", rng)
    assert corrupt(SENTENCES[3], "negation", rng) == "Bram Olde is the painter of the Night Watch."
    number = corrupt(SENTENCES[1], "number", rng)
    assert ("two" not in number.split()) or ("12" not in number)
    assert "Kyoto" in corrupt(s, "entity", rng, ["Kyoto"])
    assert corrupt("It rained.", "year", rng) is None
    with pytest.raises(ValueError, match="unknown corruption kind"):
        corrupt(s, "sarcasm", rng)


def test_split_is_disjoint_by_page_and_stable():
    titles = [f"Page {i}" for i in range(500)]
    train, held = split_pages(titles + titles[:50], 0.2, seed=3)
    assert not set(train) & set(held)
    assert set(train) | set(held) == set(titles)
    assert 60 < len(held) < 140
    assert split_pages(titles, 0.2, seed=3) == (train, held)
    assert split_pages(titles, 0.2, seed=4)[1] != held


def test_examples_verbatim_positives_balanced_and_only_from_their_pages(kb):
    train, held = split_pages(list(PAGES), 0.34, seed=0)
    assert train and held
    examples = make_examples(kb, train, 60, KINDS, k=2, passage_chars=300, seed=0)
    assert len(examples) == 60
    assert sum(e["label"] for e in examples) == 30
    assert {e["title"] for e in examples} <= set(train)
    kinds = {e["kind"] for e in examples if not e["label"]}
    assert kinds == set(KINDS)
    for e in examples:
        assert e["prompt"].endswith(f"Input: {e['claim']} True or False?\nOutput:")
        if e["label"]:
            assert e["claim"] == e["sentence"]
            assert e["claim"] in PAGES[e["title"]]
            assert e["claim"] in e["prompt"].split("\n\nInput:")[0]  # the evidence is shown
        elif e["kind"] == "absent":
            assert f"Title: {e['title']}\n" not in e["prompt"]
        else:
            assert e["claim"] not in PAGES[e["title"]]
            assert len(changed_spans(e["sentence"], e["claim"])) == 1
    with pytest.raises(ValueError, match="unknown corruption kinds"):
        make_examples(kb, train, 4, ("year", "sarcasm"))


def test_examples_leave_out_and_count_pages_the_knowledge_source_lacks(kb):
    """A title with no page is left out (counted), never matched to another page: no example
    carries it and no positive comes from elsewhere under its name."""
    left: dict = {}
    titles = ["Ada Varn", "Nobody Known", "Bram Olde"]
    examples = make_examples(kb, titles, 20, KINDS, k=2, passage_chars=300, seed=0, left_out=left)
    assert left == {"not_in_knowledge": ["Nobody Known"], "no_usable_sentence": []}
    assert {e["title"] for e in examples} == {"Ada Varn", "Bram Olde"}
    assert all(e["sentence"] in PAGES[e["title"]] for e in examples)
    with pytest.raises(ValueError, match="1 not in the knowledge source"):
        make_examples(kb, ["Nobody Known"], 4, KINDS)


@pytest.mark.slow
def test_train_verifier_on_a_tiny_model(kb, tiny_model, tmp_path):
    """The training path end to end: examples, steps, a loadable checkpoint that the scorer's
    verify() uses, held-out per-kind accuracy in the summary."""
    from flame.factscore.verify import verify
    from flame.lm import load_lm
    from flame.train_verifier import main

    out = tmp_path / "verifier"
    summary = main([
        "--init", str(tiny_model), "--knowledge", str(kb.folder), "--out", str(out),
        "--n-pages", "0", "--n-examples", "24", "--steps", "3", "--batch-size", "4",
        "--lr", "1e-3", "--train-layers", "1", "--held-out", "0.34", "--eval-examples", "8",
        "--threads", "1", "--seed", "0",
    ])  # fmt: skip
    assert summary["steps"] == 3 and len(summary["loss_history"]) == 3
    assert summary["held_out"]["n"] == 8 and set(summary["held_out"]["per_kind"]) >= {"true"}
    assert (out / "flame_fingerprint.json").exists() and not out.with_name("verifier.tmp").exists()
    assert len((out / "examples.jsonl").read_text().splitlines()) == 24
    lm = load_lm({"source": str(out), "backend": "transformers", "dtype": "float32"})
    lines = (out / "examples.jsonl").read_text().splitlines()[:4]
    supported, margins, _ = verify([json.loads(line)["prompt"] for line in lines], lm)
    assert len(supported) == 4 and all(m is not None for m in margins)


def test_freeze_below_trains_only_the_last_blocks(tiny_model):
    from transformers import AutoModelForCausalLM

    from flame.train_verifier import freeze_below

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    n = freeze_below(model, 1)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(t.startswith(("model.layers.1.", "model.norm")) for t in trainable)
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
def test_workflow_trains_the_verifier_only_when_a_role_names_it(workflow_dir):
    def plan(role):
        cfg = yaml.safe_load((workflow_dir / "config.yaml").read_text())
        cfg["roles"]["fact_verifier"] = role
        (workflow_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
        return subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "2"],
            cwd=workflow_dir, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    res = plan("verifier")
    assert res.returncode == 0, res.stderr
    assert "rule train_verifier:" in res.stdout
    assert "results/models/verifier" in res.stdout and "--kinds year,number" in res.stdout
    res = plan("smollm2")
    assert res.returncode == 0, res.stderr
    assert "train_verifier" not in res.stdout
    cfg = yaml.safe_load((workflow_dir / "config.yaml").read_text())
    cfg["roles"]["eval_judge"] = "verifier"
    (workflow_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1"],
                         cwd=workflow_dir, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode != 0 and "only meaningful for fact_verifier" in res.stderr + res.stdout


def test_training_margins_are_the_scorers_margins(kb, tiny_model):
    """Training optimises exactly what the scorer reads: the shared-prefix batch gives the
    margins flame.factscore.verify gives for the same prompts (fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from flame.factscore.verify import verify
    from flame.lm import load_lm
    from flame.train_verifier import margins, option_ids

    examples = make_examples(kb, list(PAGES), 10, KINDS, k=2, passage_chars=300, seed=1)
    prompts = [e["prompt"] for e in examples]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.inference_mode():
        ours = margins(model, tok, prompts, option_ids(tok), bf16=False).tolist()
    lm = load_lm({"source": str(tiny_model), "backend": "transformers", "dtype": "float32"})
    _, theirs, _ = verify(prompts, lm)
    assert ours == pytest.approx(theirs, abs=1e-4)
