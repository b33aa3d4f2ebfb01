"""classify --mode probe: a linear probe on the classifier's hidden states (flame.classify)."""

import json
import random

import pytest

from flame import classify
from flame.classify import cross_validated, fit_probe
from flame.lm import Prompt, load_lm
from flame.lm.hf import TransformersLM


def test_probe_separates_a_linear_signal_and_its_cross_validation_does_not_leak():
    rng = random.Random(0)
    y = [i % 2 == 0 for i in range(40)]
    # feature 0 carries the label, the rest is noise
    x = [
        [(1.0 if t else -1.0) + rng.gauss(0, 0.3)] + [rng.gauss(0, 1) for _ in range(5)] for t in y
    ]
    cv = cross_validated(x, y, folds=5, c=1.0)
    assert sum((m > 0) == t for m, t in zip(cv, y, strict=True)) == 40
    # pure noise in more dimensions than items: a probe fit on all of it explains its own labels,
    # the cross-validated one cannot (no item is predicted by a probe that saw it)
    noise = [[rng.gauss(0, 1) for _ in range(80)] for _ in y]
    shuffled = [rng.random() < 0.5 for _ in y]
    inside = fit_probe(noise, shuffled, c=100.0)(noise)
    assert sum((m > 0) == t for m, t in zip(inside, shuffled, strict=True)) == 40
    held = cross_validated(noise, shuffled, folds=5, c=100.0)
    assert sum((m > 0) == t for m, t in zip(held, shuffled, strict=True)) <= 28
    with pytest.raises(ValueError, match="fact-based and other"):
        cross_validated(x, [True] * 40, folds=5, c=1.0)


def test_features_do_not_depend_on_the_batch(tiny_model):
    lm = load_lm({"source": str(tiny_model), "batch_size": 4, "dtype": "float32"})
    short = Prompt.chat("Who was Ada?", prefix="Answer:")
    long = Prompt.chat("Write a long poem about the sea, the wind and the stars.")
    alone = lm.features([short])[0]
    padded = lm.features([long, short])[1]  # left-padded next to the longer prompt
    assert len(alone) == 2 * lm.model.config.hidden_size
    assert alone == pytest.approx(padded, abs=1e-4)


def test_cli_probe_mode_classifies_and_reports_cross_validated_accuracy(
    tiny_model, tmp_path, monkeypatch
):
    names = "Ada Alan Marie Isaac Grace Niels Rosalind Charles Emmy Max".split()
    labels = [{"instruction": f"Who was {n} and when was {n} born?", "fact_based": True}
              for n in names]  # fmt: skip
    labels += [{"instruction": f"Write a cheerful poem for my cat named {n}!",
                "fact_based": False} for n in names]  # fmt: skip
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels))
    inputs = [
        {"id": "f", "instruction": "Who was Lise and when was Lise born?"},
        {"id": "n", "instruction": "Write a cheerful poem for my cat named Lise!"},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in inputs))
    spec = json.dumps({"source": str(tiny_model), "dtype": "float32"})
    args = ["--model", spec, "--labels", str(tmp_path / "labels.jsonl"), "--mode", "probe"]
    args += ["--inputs", str(tmp_path / "in.jsonl"), "--outputs", str(tmp_path / "out.jsonl")]
    args += ["--report", str(tmp_path / "r.json"), "--folds", "5", "--calibrate"]
    args += ["--cache", str(tmp_path / "cache.sqlite")]
    classify.main(args)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mode"] == "probe" and report["cross_validated_folds"] == 5
    assert not report["calibrated"] and report["threshold"] == 0.0  # calibration: prompt only
    assert report["labelled"]["accuracy"] >= 0.9 and report["labelled"]["accuracy_ci"]["n"] == 20
    out = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    assert out["f"]["fact_based"] and not out["n"]["fact_based"]
    assert out["f"]["fact_margin"] > 0 > out["n"]["fact_margin"]

    # the features are cached: a re-run computes none and gives the same margins
    def boom(self, prompts):
        raise AssertionError("features recomputed despite the cache")

    monkeypatch.setattr(TransformersLM, "features", boom)
    classify.main(args)
    again = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["fact_margin"] for r in again] == [out["f"]["fact_margin"], out["n"]["fact_margin"]]
    with pytest.raises(ValueError, match="--folds"):
        classify.main([*args[:-2], "--folds", "50"])


def test_a_backend_without_hidden_states_says_so():
    from flame.lm.openai import OpenAILM

    lm = OpenAILM({"model": "served", "base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(ValueError, match="no hidden states.*--mode prompt"):
        lm.features([Prompt.chat("Who was Ada?")])
