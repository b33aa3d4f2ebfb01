"""Bootstrap intervals (flame.stats) on data whose answer is known, and the tables' error bars."""

import json
import math

import pytest

from flame.stats import (
    bootstrap,
    half_width,
    interval,
    overlaps,
    paired_difference,
    verdict,
)


def test_constant_data_has_a_zero_width_interval():
    assert bootstrap([0.7] * 20) == pytest.approx((0.7, 0.7))
    assert interval([]) == {"mean": None, "n": 0, "lo": None, "hi": None}
    assert interval([3.0]) == {"mean": 3.0, "n": 1, "lo": 3.0, "hi": 3.0}


def test_bernoulli_interval_matches_the_normal_approximation():
    # 400 coin flips with 50 % heads: mean 0.5, standard error 0.025, 95 % CI ~ 0.5 +- 0.049
    values = [0.0, 1.0] * 200
    lo, hi = bootstrap(values)
    assert lo < 0.5 < hi
    assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(0.25 / 400), rel=0.1)
    # n 4x larger: the interval halves
    lo4, hi4 = bootstrap(values * 4)
    assert (hi4 - lo4) == pytest.approx((hi - lo) / 2, rel=0.15)


def test_interval_is_seeded_scaled_and_within_the_data():
    values = [0.1, 0.9, 0.4, 0.4, 0.8, 0.3]
    a = interval(values, scale=100.0)
    assert a == interval(values, scale=100.0)  # same seed, same digits
    assert a["n"] == 6 and a["mean"] == pytest.approx(100 * sum(values) / 6)
    assert 10.0 <= a["lo"] < a["mean"] < a["hi"] <= 90.0
    assert half_width(a["lo"], a["hi"]) == pytest.approx((a["hi"] - a["lo"]) / 2)


def test_paired_difference_cancels_the_prompt_spread():
    # prompts differ a lot, the model's gain on each is a steady +0.1: the separate intervals
    # overlap, the paired one is tight around +0.1 and excludes 0
    base = {f"p{i}": i / 20 for i in range(20)}
    better = {k: v + 0.1 for k, v in base.items()}
    better["extra"] = 1.0  # only in one model: not paired
    d = paired_difference(better, base, scale=100.0)
    assert d["n"] == 20 and d["mean"] == pytest.approx(10.0)
    assert d["lo"] == pytest.approx(10.0) and d["hi"] == pytest.approx(10.0)
    a = interval(list(better.values())[:20])
    b = interval(list(base.values()))
    assert overlaps((a["lo"], a["hi"]), (b["lo"], b["hi"]))
    assert verdict(d) == "higher" and verdict(paired_difference(base, better)) == "lower"
    noisy = {k: v + (0.1 if i % 2 else -0.1) for i, (k, v) in enumerate(base.items())}
    assert verdict(paired_difference(noisy, base)) == "not distinguishable"
    assert verdict(paired_difference({}, base)) == "" and paired_difference({}, base)["n"] == 0


def test_overlaps():
    assert overlaps((0, 1), (1, 2)) and overlaps((0, 3), (1, 2))
    assert not overlaps((0, 1), (1.5, 2))


def _summary(fs: float, lo: float, hi: float, n: int = 10) -> dict:
    return {
        "factscore": fs,
        "mean_correct": 2.0,
        "mean_erroneous": 2.0,
        "mean_length_chars": 100.0,
        "factscore_ci": {"mean": fs, "n": n, "lo": lo, "hi": hi},
    }


def test_tables_carry_intervals_and_mark_indistinguishable_rows(tmp_path):
    from flame import tables

    ev = tmp_path / "eval"
    sets = {
        "SFT": _summary(0.5, 0.4, 0.6),
        "SFT_fact": _summary(0.55, 0.45, 0.65),  # overlaps SFT everywhere
        "SFT_FLAME": _summary(0.9, 0.85, 0.95),  # Bio FS clearly above SFT
    }
    for m, s in sets.items():
        (ev / m).mkdir(parents=True)
        (ev / m / "factuality.json").write_text(json.dumps({"bio": s}))
    ci = {"mean": 55.0, "n": 6, "lo": 40.0, "hi": 70.0}
    (ev / "winrate_table2.json").write_text(
        json.dumps(
            {
                "models": {
                    "SFT_fact": {"win_rate": 55.0, "win_rate_ci": ci},
                    "SFT_FLAME": {"win_rate": 55.0, "win_rate_ci": ci},
                }
            }
        )
    )
    (ev / "winrate_table3.json").write_text(json.dumps({"models": {}}))
    (tmp_path / "dpo").mkdir()
    out = tmp_path / "t"
    tables.main(
        ["--eval-dir", str(ev), "--dpo-dir", str(tmp_path / "dpo"), "--out-dir", str(out)]
        + ["--table2-rows", "SFT", "SFT_fact", "SFT_FLAME", "--table3-rows", "SFT"]
    )
    lines = (out / "table2_sft.csv").read_text().splitlines()
    head = lines[0].split(",")
    rows = {line.split(",")[0]: dict(zip(head, line.split(","), strict=True)) for line in lines[1:]}
    assert rows["SFT_fact"]["bio_fs_n"] == "10"
    assert float(rows["SFT_fact"]["bio_fs_lo"]) == 45.0 and float(rows["SFT_fact"]["win_hi"]) == 70
    assert rows["SFT"]["win_lo"] == "50.0000" and rows["SFT"]["vs_baseline"] == "baseline"
    assert rows["SFT_fact"]["vs_baseline"] == "not distinguishable"
    assert rows["SFT_FLAME"]["vs_baseline"] == "differs: Bio FS"
    md = (out / "table2_sft.md").read_text()
    assert "55.0 ± 15.0 (48.1)" in md and "90.0 ± 5.0 (49.5)" in md
    assert "| vs SFT |" in md and "not distinguishable" in md
    # a row differing on two metrics: "; " keeps the hand-written CSV's columns intact
    far = {"mean": 90.0, "n": 6, "lo": 85.0, "hi": 95.0}
    (ev / "winrate_table2.json").write_text(
        json.dumps({"models": {"SFT_FLAME": {"win_rate": 90.0, "win_rate_ci": far}}})
    )
    tables.main(
        ["--eval-dir", str(ev), "--dpo-dir", str(tmp_path / "dpo"), "--out-dir", str(out)]
        + ["--table2-rows", "SFT", "SFT_FLAME", "--table3-rows", "SFT"]
    )
    last = (out / "table2_sft.csv").read_text().splitlines()[-1].split(",")
    assert len(last) == len(head) and last[-1] == "differs: Win; Bio FS"


def test_factuality_intervals_follow_aggregate():
    from flame.evaluate import intervals
    from flame.factscore import aggregate

    results = [
        {"abstained": False, "n_facts": 4, "n_supported": 3, "score": 0.75},
        {"abstained": False, "n_facts": 2, "n_supported": 0, "score": 0.0},
        {"abstained": False, "n_facts": 0, "n_supported": 0, "score": 0.0},  # no facts: no FS
        {"abstained": True, "n_facts": 0, "n_supported": 0, "score": 0.0},
    ]
    agg, ci = aggregate(results, gamma=0), intervals(results)
    assert ci["factscore_ci"]["n"] == 2 and ci["factscore_ci"]["mean"] == agg["factscore"]
    assert ci["mean_correct_ci"]["n"] == 3 and ci["mean_correct_ci"]["mean"] == agg["mean_correct"]
    assert ci["mean_erroneous_ci"]["mean"] == agg["mean_erroneous"]
    assert ci["factscore_ci"]["lo"] == 0.0 and ci["factscore_ci"]["hi"] == 0.75


def test_classifier_report_carries_an_accuracy_interval(tiny_model, tmp_path):
    from flame import classify

    labels = [{"instruction": f"Question {i}?", "fact_based": i % 2 == 0} for i in range(6)]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels))
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "instruction": "Hi?"}) + "\n")
    classify.main(
        ["--model", json.dumps({"source": str(tiny_model), "backend": "transformers"})]
        + ["--inputs", str(tmp_path / "in.jsonl"), "--outputs", str(tmp_path / "out.jsonl")]
        + ["--labels", str(tmp_path / "labels.jsonl"), "--report", str(tmp_path / "r.json")]
    )
    lab = json.loads((tmp_path / "r.json").read_text())["labelled"]
    ci = lab["accuracy_ci"]
    assert ci["n"] == 6 and ci["mean"] == pytest.approx(lab["accuracy"])
    assert 0.0 <= ci["lo"] <= ci["mean"] <= ci["hi"] <= 1.0
