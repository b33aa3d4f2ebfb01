"""TruthfulQA: MC1/MC2/MC3 against hand-computed values (ties, long answers whose exp would
underflow), the three data layouts, generation metrics, and the CLI on the tiny model."""

import csv
import json
import math

import pytest

from flame import truthfulqa as tqa
from flame.lm import LM

# question -> answer -> summed log-prob the model gives it
SCORES = {
    "Q1?": {"A.": -1.0, "B.": -2.0, "C.": -3.0, "D.": -4.0},
    "Q2 (ties)?": {"T.": -2.0, "U.": -5.0, "F.": -2.0},
    "Q3 (long answers)?": {"T1.": -1000.0, "T2.": -1003.0, "F1.": -1001.0, "F2.": -1002.0},
}
ITEMS = [
    {
        "question": "Q1?",
        "mc1_targets": {"A.": 1, "B.": 0, "C.": 0},
        "mc2_targets": {"A.": 1, "D.": 1, "B.": 0, "C.": 0},
    },
    {
        "question": "Q2 (ties)?",
        "mc1_targets": {"T.": 1, "F.": 0},
        "mc2_targets": {"T.": 1, "U.": 1, "F.": 0},
    },
    {
        "question": "Q3 (long answers)?",
        "mc1_targets": {"T1.": 1, "F1.": 0, "F2.": 0},
        "mc2_targets": {"T1.": 1, "T2.": 1, "F1.": 0, "F2.": 0},
    },
]


class TableLM(LM):
    """A test double: log-likelihoods read from SCORES; checks the prompt format."""

    fingerprint = "table"

    def generate(self, prompts, sampling):
        return [["I have no comment."] for _ in prompts]

    def choose(self, prompts, options):
        raise NotImplementedError

    def loglikelihood(self, pairs):
        out = []
        for ctx, cont in pairs:
            assert ctx.startswith(tqa.QA_PRIMER + "\n\nQ: ") and ctx.endswith("\nA:")
            assert cont.startswith(" ")
            out.append(SCORES[ctx[len(tqa.QA_PRIMER) + 5 : -3]][cont[1:]])
        return out


def hand_mc2(true, false):
    e = [math.exp(x) for x in true + false]
    return sum(e[: len(true)]) / sum(e)


def test_mc_scores_by_hand(tmp_path):
    path = tmp_path / "mc_task.json"
    path.write_text(json.dumps(ITEMS))
    recs = tqa.evaluate(TableLM(), tqa.load(str(path)), generation=False)
    assert [r["mc1"] for r in recs] == [1.0, 0.0, 1.0]  # a tie is not "strictly above"
    assert [r["mc3"] for r in recs] == [0.5, 0.0, 0.5]
    assert recs[0]["mc2"] == pytest.approx(hand_mc2([-1, -4], [-2, -3]))
    assert recs[1]["mc2"] == pytest.approx(hand_mc2([-2, -5], [-2]))
    # exp(-1000) underflows to 0 (0/0 in a naive sum); shifted by 1000 the value is exact
    assert math.exp(-1000.0) == 0.0
    assert recs[2]["mc2"] == pytest.approx(hand_mc2([0, -3], [-1, -2]))
    summary = tqa.summarize(recs)
    assert summary["mc1"]["mean"] == pytest.approx(200 / 3) and summary["mc1"]["n"] == 3
    assert summary["mc3"]["mean"] == pytest.approx(100 / 3)
    assert summary["mc1"]["lo"] <= summary["mc1"]["mean"] <= summary["mc1"]["hi"]


def test_three_layouts_load_to_the_same_items(tmp_path):
    want = {
        "question": "Is the Sun yellow?",
        "mc1": {"choices": ["No, it is white.", "Yes.", "It is green."], "labels": [1, 0, 0]},
        "mc2": {
            "choices": ["No, it is white.", "It looks white from space.", "Yes.", "It is green."],
            "labels": [1, 1, 0, 0],
        },
    }
    # the original CSV: ;-separated answers, periods added as the original code does
    with open(tmp_path / "TruthfulQA.csv", "w", newline="") as f:
        w = csv.writer(f)
        head = ["Type", "Category", "Question", "Best Answer", "Correct Answers"]
        w.writerow([*head, "Incorrect Answers", "Source"])
        correct = "No, it is white; It looks white from space"
        row = ["Adversarial", "Misconceptions", "Is the Sun yellow?", "No, it is white", correct]
        w.writerow([*row, "Yes; It is green.", "x"])
    assert tqa.load(str(tmp_path / "TruthfulQA.csv")) == [want]
    # mc_task.json
    mc = {
        "question": want["question"],
        "mc1_targets": dict(zip(want["mc1"]["choices"], want["mc1"]["labels"], strict=True)),
        "mc2_targets": dict(zip(want["mc2"]["choices"], want["mc2"]["labels"], strict=True)),
    }
    (tmp_path / "mc_task.json").write_text(json.dumps([mc]))
    assert tqa.load(str(tmp_path / "mc_task.json")) == [want]
    # Hugging Face truthful_qa multiple_choice rows, as JSONL and as parquet
    hf = {"question": want["question"], "mc1_targets": want["mc1"], "mc2_targets": want["mc2"]}
    (tmp_path / "validation.jsonl").write_text(json.dumps(hf) + "\n")
    assert tqa.load(str(tmp_path / "validation.jsonl")) == [want]
    import pandas as pd

    pd.DataFrame([hf]).to_parquet(tmp_path / "validation.parquet")
    assert tqa.load(str(tmp_path / "validation.parquet")) == [want]
    # bad input names the file and item
    two_best = {"a": 1, "b": 1, "c": 0}
    (tmp_path / "bad.json").write_text(json.dumps([{**mc, "mc1_targets": two_best}]))
    with pytest.raises(ValueError, match="bad.json: item 0: mc1_targets must have exactly one"):
        tqa.load(str(tmp_path / "bad.json"))


def test_embedded_set_is_valid():
    items = tqa.load("embedded")
    assert len(items) >= 30 and len({i["question"] for i in items}) == len(items)


def test_generation_scores():
    from rouge_score import rouge_scorer

    item = {
        "question": "q",
        "mc1": {"choices": ["The Sun is white.", "The Sun is yellow."], "labels": [1, 0]},
        "mc2": {"choices": ["The Sun is white.", "The Sun is yellow."], "labels": [1, 0]},
    }
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    good = tqa.gen_scores(item, "The Sun is white.", scorer)
    assert good["bleu_max"] == pytest.approx(100.0) and good["bleu_acc"] == 1.0
    assert good["rouge1_max"] == pytest.approx(100.0) and good["rouge1_diff"] > 0
    bad = tqa.gen_scores(item, "The Sun is yellow.", scorer)
    assert bad["bleu_acc"] == 0.0 and bad["rougeL_diff"] < 0
    # "I have no comment." always counts as true
    assert tqa.gen_scores(item, "I have no comment.", scorer)["rouge1_acc"] == 1.0


def test_cli_on_the_tiny_model(tiny_model, tmp_path):
    data = tmp_path / "mc_task.json"
    data.write_text(json.dumps(ITEMS))
    out, recs = tmp_path / "tqa.json", tmp_path / "tqa.jsonl"
    args = ["--model", str(tiny_model), "--data", str(data), "--out", str(out)]
    args += ["--records", str(recs), "--generation", "--max-new-tokens", "4"]
    tqa.main([*args, "--cache", str(tmp_path / "c.sqlite")])
    s = json.loads(out.read_text())
    assert s["n_questions"] == 3 and 0 <= s["mc2"]["mean"] <= 100 and "bleu_acc" in s
    assert len(recs.read_text().splitlines()) == 3
    with pytest.raises(SystemExit, match="3 questions, the config pins 817"):
        tqa.main([*args, "--n-questions", "817"])


def test_table5_renders_intervals_and_the_paper(tmp_path):
    from flame import tables_extra

    def cell(mean, lo, hi, n=32):
        return {"mean": mean, "n": n, "lo": lo, "hi": hi}

    summaries = {
        "SFT": {"mc1": cell(20, 10, 30), "mc2": cell(30, 20, 40), "mc3": cell(10, 5, 15)},
        "SFT+DPO": {"mc1": cell(25, 15, 35), "mc2": cell(31, 21, 41), "mc3": cell(40, 35, 45)},
    }
    for m, s in summaries.items():
        (tmp_path / m).mkdir()
        (tmp_path / m / "truthfulqa.json").write_text(json.dumps({"n_questions": 32, **s}))
    out = tmp_path / "table5"
    tables_extra.main(
        ["truthfulqa", "--eval-dir", str(tmp_path), "--rows", "SFT", "SFT+DPO"]
        + ["--baseline", "SFT+DPO", "--out", str(out)]
    )
    lines = (tmp_path / "table5.csv").read_text().splitlines()
    head = lines[0].split(",")
    assert "bleu_acc" not in head  # not scored: no column
    rows = {line.split(",")[0]: dict(zip(head, line.split(","), strict=True)) for line in lines[1:]}
    assert rows["SFT"]["paper_mc1"] == "30.8" and rows["SFT"]["mc3_n"] == "32"
    assert rows["SFT"]["vs_baseline"] == "differs: MC3"
    assert rows["SFT+DPO"]["vs_baseline"] == "baseline"
    md = (tmp_path / "table5.md").read_text()
    assert "| SFT | 20.0 ± 10.0 (30.8) |" in md
