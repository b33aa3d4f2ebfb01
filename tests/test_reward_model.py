"""The Bradley-Terry factuality reward model (flame.train_rm): pairs from RM_fact, the held-out
split, and a real training run on the tiny model that beats chance on its own pairs."""

from __future__ import annotations

import json

from flame import rm_bt, train_rm

SAMPLES = [
    {"id": f"s{i}", "instruction": f"Tell me about city {i}.", "fact_based": True,
     "responses": [f"City {i} is a real place with a river.", f"City {i} zzz qqq nonsense.",
                   f"City {i} is a place."]}
    for i in range(8)
]  # fmt: skip
RM_FACT = [{"id": f"s{i}", "scores": [1.0, 0.0, 0.5 if i % 2 else None]} for i in range(8)]


def test_fact_pairs_and_heldout_split():
    rm = {r["id"]: r["scores"] for r in RM_FACT}
    pairs = train_rm.fact_pairs(SAMPLES, rm)
    # odd prompts: 3 scored responses -> 3 pairs; even: 2 scored -> 1 pair
    assert len(pairs) == 4 * 3 + 4 * 1
    assert all(p["gap"] > 0 for p in pairs)
    assert len(train_rm.fact_pairs(SAMPLES, rm, how="max_min")) == 8
    assert len(train_rm.fact_pairs(SAMPLES, rm, min_gap=0.6)) == 8
    train, held = train_rm.split(pairs, 0.25, seed=0)
    assert {p["group"] for p in train}.isdisjoint({p["group"] for p in held})
    assert len({p["group"] for p in held}) == 2 and len(train) + len(held) == len(pairs)


def test_reward_model_beats_chance_on_its_training_pairs(tiny_model, tmp_path):
    samples, rm = tmp_path / "samples.jsonl", tmp_path / "rm_fact.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    rm.write_text("".join(json.dumps(r) + "\n" for r in RM_FACT))
    out, metrics = tmp_path / "RM_BT", tmp_path / "metrics.json"
    res = train_rm.main(["--init", str(tiny_model), "--samples", str(samples), "--rm-fact", str(rm),
                         "--out", str(out), "--metrics", str(metrics), "--heldout", "0.25",
                         "--margin-scale", "1.0", "--set", "max_steps=12",
                         "--set", "global_batch_size=4", "--set", "learning_rate=3e-3",
                         "--set", "min_learning_rate=0", "--set", "center_rewards_coefficient=0.01",
                         "--set", "max_length=64", "--threads", "2"])  # fmt: skip
    saved = json.loads(metrics.read_text())
    assert saved == res and saved["train_pairs"] > 0 and saved["heldout_pairs"] > 0
    assert saved["train_accuracy"] > 0.75, saved  # chance is 0.5
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert (out / "flame_fingerprint.json").exists()
    # the trained model as RM_fact: same records, agreement with FActScore's order
    scores, stats = tmp_path / "rm_bt.jsonl", tmp_path / "stats.json"
    rm_bt.main(["--model", str(out), "--samples", str(samples), "--out", str(scores),
                "--compare", str(rm), "--stats", str(stats), "--threads", "2"])  # fmt: skip
    recs = [json.loads(line) for line in scores.read_text().splitlines()]
    assert [r["id"] for r in recs] == [s["id"] for s in SAMPLES]
    assert all(len(r["scores"]) == 3 and None not in r["scores"] for r in recs)
    agree = json.loads(stats.read_text())
    assert agree["responses"] == 24 and agree["responses_per_s"] > 0
    assert agree["agreement_with_factscore"]["pairs"] == 16
    assert agree["agreement_with_factscore"]["pairwise_accuracy"] > 0.75


def test_kendall_tau_and_pairwise_agreement():
    assert rm_bt.kendall_tau_b([1, 2, 3], [10, 20, 30]) == 1.0
    assert rm_bt.kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1.0
    assert rm_bt.kendall_tau_b([1], [1]) is None
    assert abs(rm_bt.kendall_tau_b([1, 2, 2], [1, 2, 3]) - 2 / (2 * 3) ** 0.5) < 1e-12
    ref = {"a": [1.0, 0.0, 0.5], "b": [None, 1.0, 1.0]}
    ours = {"a": [3.0, 1.0, 0.0], "b": [0.0, 2.0, 1.0]}
    got = rm_bt.agreement(ours, ref)
    # a: (0>1 right, 0>2 right, 2>1 wrong); b: the only pair ties in the reference
    assert got["pairs"] == 3 and abs(got["pairwise_accuracy"] - 2 / 3) < 1e-12


def test_zero_pairs_fail_or_leave_the_reward_model_untrained(tmp_path):
    """Every response of a prompt scored alike (e.g. a verifier that says True to everything):
    no pairs. Without --allow-empty train_rm fails naming the file; with it the RM folder is an
    untrained marker, rm_bt refuses it unless --allow-untrained, and then scores nothing."""
    import pytest

    samples, rm = tmp_path / "samples.jsonl", tmp_path / "rm_fact.jsonl"
    samples.write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    tied = [{"id": s["id"], "scores": [1.0, 1.0, None]} for s in SAMPLES]
    rm.write_text("".join(json.dumps(r) + "\n" for r in tied))
    out, metrics = tmp_path / "RM_BT", tmp_path / "metrics.json"
    args = ["--init", str(tmp_path / "never-loaded"), "--samples", str(samples), "--rm-fact",
            str(rm), "--out", str(out), "--metrics", str(metrics)]  # fmt: skip
    with pytest.raises(SystemExit, match=r"rm_fact.jsonl: zero RM_fact pairs \(8 prompts"):
        train_rm.main(args)
    assert not out.exists() and not metrics.exists()
    res = train_rm.main([*args, "--allow-empty"])
    saved = json.loads(metrics.read_text())
    assert saved == res and saved["trained"] is False and saved["train_accuracy"] is None
    assert saved["pairs"] == 0 and saved["prompts_scored"] == saved["prompts_all_tied"] == 8
    assert [p.name for p in out.iterdir()] == ["train_summary.json"]
    assert "8 of them all tied" in train_rm.untrained_reason(out)
    scores, stats = tmp_path / "rm_bt.jsonl", tmp_path / "stats.json"
    bt = ["--model", str(out), "--samples", str(samples), "--out", str(scores),
          "--compare", str(rm), "--stats", str(stats)]  # fmt: skip
    with pytest.raises(SystemExit, match="the reward model was not trained: zero RM_fact pairs"):
        rm_bt.main(bt)
    rm_bt.main([*bt, "--allow-untrained"])
    recs = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(recs) == 8 and all(r["scores"] == [None, None, None] for r in recs)
    st = json.loads(stats.read_text())
    assert st["trained"] is False and st["scored"] == 0 and st["responses_per_s"] is None
    # flame.pairs then finds no fact pairs (and does not fail)
    from flame import pairs

    rm_if = tmp_path / "rm_if.jsonl"
    rm_if.write_text("".join(json.dumps({"id": s["id"], "scores": [3.0, 1.0, 2.0]}) + "\n"
                             for s in SAMPLES))  # fmt: skip
    pairs.main(["--samples", str(samples), "--rm-if", str(rm_if), "--rm-fact", str(scores),
                "--out-dir", str(tmp_path / "p"), "--counts", str(tmp_path / "c")])  # fmt: skip
    assert (tmp_path / "p" / "pairs_DPO_fact.jsonl").read_text() == ""
