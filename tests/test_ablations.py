"""Ablations: Table 7's fact-pair selections, Table 6's no-classifier SFT data, the ablation
config's dry run."""

import json

import pytest

from flame import pairs


def sample(pid, fact, n=4):
    return {
        "id": pid,
        "instruction": f"q {pid}",
        "responses": [f"{pid}-r{i}" for i in range(n)],
        "fact_based": fact,
    }


S = [sample("a", True), sample("b", False)]
RM_IF = {"a": [3.0, 3.2, 4.0, 1.0], "b": [1.0, 2.0, 3.0, 4.0]}
RM_FACT = {"a": [0.9, 0.1, 0.5, 0.6]}


def test_threshold_selection_takes_every_pair_above_the_gap():
    got, drops = pairs.select_fact_pairs(S, RM_IF, RM_FACT, "threshold", 0.5, 0.2)
    # gaps >= 0.2: (0,1) .8, (0,2) .4, (0,3) .3, (2,1) .4, (3,1) .5; RM_IF gap <= 0.5 keeps
    # (0,1) [3.0 vs 3.2] only; r2 (4.0) and r3 (1.0) are too far from the others
    assert [(p["chosen"], p["rejected"]) for p in got] == [("a-r0", "a-r1")]
    assert drops == {"fact_rm_if_gap_or_unknown": 4}
    loose, _ = pairs.select_fact_pairs(S, RM_IF, RM_FACT, "threshold", 10.0, 0.2)
    assert len(loose) == 5 and len({p["id"] for p in loose}) == 5


def test_combined_selection_weighs_if_and_fact():
    got, _ = pairs.select_fact_pairs(S, RM_IF, RM_FACT, "combined", fact_weight=5.0)
    # RM_IF + 5 RM_fact: 7.5, 3.7, 6.5, 4.0 -> r0 chosen, r1 rejected
    assert [(p["chosen"], p["rejected"]) for p in got] == [("a-r0", "a-r1")]
    got, _ = pairs.select_fact_pairs(S, RM_IF, RM_FACT, "combined", fact_weight=0.0)
    assert [(p["chosen"], p["rejected"]) for p in got] == [("a-r2", "a-r3")]
    with pytest.raises(ValueError, match="unknown fact-pair selection"):
        pairs.select_fact_pairs(S, RM_IF, RM_FACT, "median")


def test_pairs_cli_writes_suffixed_variant_sets(tmp_path):
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(x) + "\n" for x in S))
    (tmp_path / "if.jsonl").write_text(
        "".join(json.dumps({"id": k, "scores": v}) + "\n" for k, v in RM_IF.items())
    )
    (tmp_path / "f.jsonl").write_text(
        "".join(json.dumps({"id": k, "scores": v}) + "\n" for k, v in RM_FACT.items())
    )
    pairs.main(
        ["--samples", str(tmp_path / "s.jsonl"), "--rm-if", str(tmp_path / "if.jsonl")]
        + ["--rm-fact", str(tmp_path / "f.jsonl"), "--out-dir", str(tmp_path / "o")]
        + ["--counts", str(tmp_path / "c.json"), "--fact-selection", "threshold"]
        + ["--suffix", "_threshold", "--max-if-gap", "10"]
    )
    counts = json.loads((tmp_path / "c.json").read_text())
    assert set(counts["sets"]) == {"DPO_fact_threshold", "DPO_FLAME_threshold"}
    assert counts["sets"]["DPO_FLAME_threshold"] == {"if": 2, "fact": 5, "total": 7}
    assert not (tmp_path / "o" / "pairs_DPO.jsonl").exists()
    assert len((tmp_path / "o" / "pairs_DPO_FLAME_threshold.jsonl").read_text().splitlines()) == 7


def test_sft_data_without_classifier_is_half_human_half_pt():
    from flame.sft_data import build_without_classifier

    seed = [{"id": f"s{i}", "instruction": f"q{i}", "response": f"h{i}"} for i in range(4)]
    fewshot = [{"id": f"s{i}", "responses": [f"p{i}a", f"p{i}b", " "]} for i in range(4)]
    data = build_without_classifier(seed, fewshot, 0)
    origins = [d["origin"] for d in data]
    assert origins.count("human") == 4 and origins.count("pt") == 4
    assert all(d["response"].strip() for d in data)  # the empty PT answer is never drawn
    assert data == build_without_classifier(seed, fewshot, 0)  # seeded
    with pytest.raises(ValueError, match="lacks responses"):
        build_without_classifier(seed, fewshot[:3], 0)


def _fact(fs, lo, hi):
    return {"bio": {"factscore": fs, "factscore_ci": {"n": 3, "lo": lo, "hi": hi}}}


def test_tables_6_and_7(tmp_path):
    from flame import tables_extra

    ev, dpo = tmp_path / "eval", tmp_path / "dpo" / "SFT"
    models = {
        "SFT_FLAME": _fact(0.5, 0.4, 0.6),
        "SFT_FLAME_noclf": _fact(0.45, 0.35, 0.55),
        "SFT+DPO_FLAME": _fact(0.5, 0.45, 0.55),
        "SFT+DPO_FLAME_threshold": _fact(0.8, 0.7, 0.9),
    }
    for m, f in models.items():
        (ev / m).mkdir(parents=True)
        (ev / m / "factuality.json").write_text(json.dumps(f))
    ci = {"mean": 40.0, "n": 6, "lo": 30.0, "hi": 50.0}
    (ev / "winrate_table6.json").write_text(
        json.dumps(
            {
                "baseline": "SFT",
                "models": {
                    "SFT_FLAME": {"win_rate": 40.0, "win_rate_ci": ci},
                    "SFT_FLAME_noclf": {"win_rate": 40.0, "win_rate_ci": ci},
                },
            }
        )
    )
    (ev / "winrate_table7.json").write_text(
        json.dumps(
            {
                "baseline": "SFT+DPO",
                "models": {
                    "SFT+DPO_FLAME": {"win_rate": 40.0, "win_rate_ci": ci},
                    "SFT+DPO_FLAME_threshold": {"win_rate": 40.0, "win_rate_ci": ci},
                },
            }
        )
    )
    dpo.mkdir(parents=True)
    (dpo / "pair_counts.json").write_text(
        json.dumps({"sets": {"DPO_FLAME": {"if": 3, "fact": 2, "total": 5}}})
    )
    (dpo / "pair_counts_threshold.json").write_text(
        json.dumps({"sets": {"DPO_FLAME_threshold": {"if": 3, "fact": 7, "total": 10}}})
    )
    out6, out7 = tmp_path / "t6", tmp_path / "t7"
    tables_extra.main(
        ["classifier", "--eval-dir", str(ev), "--rows", "SFT_FLAME", "SFT_FLAME_noclf"]
        + ["--baseline", "SFT_FLAME", "--winrate", str(ev / "winrate_table6.json")]
        + ["--out", str(out6)]
    )
    md6 = (tmp_path / "t6.md").read_text()
    assert "| SFT_FLAME without classifier | 40.0 ± 10.0 (47.6) | 45.0 ± 10.0 (48.4) |" in md6
    assert "not distinguishable" in md6
    tables_extra.main(
        ["pair-selection", "--eval-dir", str(ev), "--rows", "SFT+DPO_FLAME"]
        + ["SFT+DPO_FLAME_threshold", "--baseline", "SFT+DPO_FLAME"]
        + ["--winrate", str(ev / "winrate_table7.json"), "--pair-counts"]
        + [str(dpo / "pair_counts.json"), str(dpo / "pair_counts_threshold.json")]
        + ["--out", str(out7)]
    )
    lines = (tmp_path / "t7.csv").read_text().splitlines()
    head = lines[0].split(",")
    rows = {line.split(",")[0]: dict(zip(head, line.split(","), strict=True)) for line in lines[1:]}
    assert rows["SFT+DPO_FLAME_threshold"]["pairs"] == "7"
    assert rows["SFT+DPO_FLAME_threshold"]["paper_pairs"] == "5126"
    assert rows["SFT+DPO_FLAME_threshold"]["vs_baseline"] == "differs: Bio FS"
    assert "| all pairs with dRM_fact >= 0.2 | 7 (5126) |" in (tmp_path / "t7.md").read_text()


def test_ablation_config_dry_run(workflow_dir):
    import re
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "2"]
        + ["--configfile", "workflow/configs/ablations.yaml"],
        cwd=workflow_dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for rule, n in [("fewshot_pt_all", 1), ("sft_data_noclf", 1), ("pairs_selection", 2)]:
        assert re.search(rf"^{rule}\s+{n}$", res.stdout, flags=re.M), rule
    for rule, n in [("train_sft", 6), ("train_dpo", 9), ("table6", 1), ("table7", 1)] + [
        ("alignment_tax", 2),
        ("table9", 1),
        ("pilot_generate", 2),
        ("pilot_eval_generate", 4),
        ("table1", 1),
    ]:
        assert re.search(rf"^{rule}\s+{n}$", res.stdout, flags=re.M), rule
    assert "winrate_table6.json" in res.stdout and "winrate_table7.json" in res.stdout
