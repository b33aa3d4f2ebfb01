"""Tables 2, 3, 8, 11, table_paired and Figure 1 mark a row whose training had nothing to train
on (a DPO run on zero pairs: flame.train_dpo.copy_unchanged wrote the SFT model unchanged, its
train_summary.json says "skipped"), on a small results tree made here."""

import csv
import json

from flame import figure, tables

SUMMARY = {
    "factscore": 0.5,
    "mean_correct": 1.0,
    "mean_erroneous": 1.0,
    "mean_length_chars": 10.0,
}
SKIPPED = {"step": "dpo", "examples": 0, "global_step": 0, "skipped": "zero preference pairs"}
MARK = "(untrained: zero preference pairs)"


def results_tree(tmp_path):
    """PT (no checkpoint of ours), SFT and SFT+DPO trained, SFT+DPO_fact trained on 0 pairs."""
    ev, models, dpo = tmp_path / "eval", tmp_path / "models", tmp_path / "dpo"
    summaries = {
        "SFT": {"step": "sft", "examples": 4, "global_step": 2},
        "SFT+DPO": {"step": "dpo", "examples": 3, "global_step": 1},
        "SFT+DPO_fact": SKIPPED,
    }
    for m in ["PT", *summaries]:
        (ev / m / "facts").mkdir(parents=True)
        sets = ["bio"] if m == "PT" else ["bio", "alpaca_fact", "fava"]
        (ev / m / "factuality.json").write_text(json.dumps({s: SUMMARY for s in sets}))
        (ev / m / "facts" / "bio.jsonl").write_text(json.dumps({"id": "p", "supported": True}))
        if m != "PT":
            (ev / m / "alpaca.jsonl").write_text(json.dumps({"responses": ["abcd"]}) + "\n")
    for m, summary in summaries.items():
        ckpt = models / ("dpo" if "+" in m else "sft") / m
        ckpt.mkdir(parents=True)
        (ckpt / "train_summary.json").write_text(json.dumps(summary))
    wins = {"SFT": {"win_rate": 40.0}, "SFT+DPO_fact": {"win_rate": 50.0}}
    (ev / "winrate_table3.json").write_text(json.dumps({"models": wins}))
    (dpo / "SFT").mkdir(parents=True)
    (dpo / "SFT" / "pair_counts.json").write_text(json.dumps({"sets": {
        "DPO": {"if": 3, "fact": 0, "total": 3},
        "DPO_fact": {"if": 0, "fact": 0, "total": 0},
        "DPO_FLAME": {"if": 2, "fact": 0, "total": 2},  # no model of the tables trains on it
    }}))  # fmt: skip
    out = tmp_path / "t"
    tables.main(["--eval-dir", str(ev), "--dpo-dir", str(dpo), "--out-dir", str(out),
                 "--models-dir", str(models), "--table2-rows", "PT", "SFT",
                 "--table3-rows", "SFT", "SFT+DPO", "SFT+DPO_fact"])  # fmt: skip
    return out


def read(path, key="model"):
    with path.open(newline="") as f:
        return {r[key]: r for r in csv.DictReader(f)}


def md_row(md: str, start: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(start))


def test_train_status_reads_the_train_summary(tmp_path):
    assert tables.train_status(tmp_path / "absent") is None
    (tmp_path / "train_summary.json").write_text(json.dumps(SKIPPED))
    assert tables.train_status(tmp_path) == {"trained": False, "why": "zero preference pairs"}
    (tmp_path / "train_summary.json").write_text(json.dumps({"global_step": 0}))
    assert tables.train_status(tmp_path) == {"trained": False, "why": "no training step"}
    (tmp_path / "train_summary.json").write_text(json.dumps({"global_step": 3}))
    assert tables.train_status(tmp_path) == {"trained": True}
    assert [tables.trained_cell(s) for s in (None, {"trained": True})] == ["", "true"]


def test_tables_2_and_3_mark_a_row_trained_on_zero_pairs(tmp_path):
    out = results_tree(tmp_path)
    t3 = read(out / "table3_dpo.csv")
    assert {m: r["trained"] for m, r in t3.items()} == {
        "SFT": "true", "SFT+DPO": "true", "SFT+DPO_fact": "false"
    }  # fmt: skip
    assert list(t3["SFT"])[-2:] == ["trained", "vs_baseline"]  # vs_baseline stays last
    t2 = read(out / "table2_sft.csv")
    assert t2["PT"]["trained"] == "" and t2["SFT"]["trained"] == "true"  # PT: not trained here
    md = (out / "table3_dpo.md").read_text()
    assert md.count(MARK) == 1
    label = tables.paper()["row_labels"].get("SFT+DPO_fact", "SFT+DPO_fact")
    assert md_row(md, f"| {label} {MARK} |")
    assert "Not trained (zero preference pairs; the checkpoint is its init model unchanged" in md
    assert "untrained" not in (out / "table2_sft.md").read_text()


def test_tables_8_and_11_and_paired_mark_a_row_trained_on_zero_pairs(tmp_path):
    out = results_tree(tmp_path)
    t8 = read(out / "table8_length.csv")
    assert {m: r["trained"] for m, r in t8.items()} == {
        "SFT": "true", "SFT+DPO": "true", "SFT+DPO_fact": "false"
    }  # fmt: skip
    md8 = (out / "table8_length.md").read_text()
    assert md_row(md8, f"| SFT+DPO_fact {MARK} |") and md8.count(MARK) == 1
    assert "Not trained (zero preference pairs" in md8

    t11 = read(out / "table11_pairs.csv", "pair_set")
    assert {s: r["trained"] for s, r in t11.items()} == {
        "DPO": "true", "DPO_fact": "false", "DPO_FLAME": ""
    }  # fmt: skip
    md11 = (out / "table11_pairs.md").read_text()
    assert md_row(md11, f"| SFT+DPO_fact {MARK} | 0 | 0 |") and md11.count(MARK) == 1
    assert "Not trained (zero preference pairs" in md11

    with (out / "table_paired.csv").open(newline="") as f:
        paired = list(csv.DictReader(f))
    fact = [r for r in paired if r["model"] == "SFT+DPO_fact"]
    assert fact and all(r["trained"] == "false" and r["baseline_trained"] == "true" for r in fact)
    assert all(r["trained"] == "true" for r in paired if r["model"] == "SFT")
    assert {r["trained"] for r in paired if r["model"] == "PT"} == {""}
    mdp = (out / "table_paired.md").read_text()
    assert md_row(mdp, f"| table3 | SFT+DPO_fact {MARK} − SFT+DPO | Bio |")
    assert mdp.count(MARK) == 3  # one row per set
    assert "Not trained (zero preference pairs" in mdp


def test_figure1_marks_a_row_trained_on_zero_pairs(tmp_path):
    out = results_tree(tmp_path)
    pts = figure.points(figure.read_rows(out / "table3_dpo.csv"), "bio_fs")
    assert {p["name"]: p["untrained"] for p in pts} == {
        "SFT": False, "SFT+DPO": False, "SFT+DPO_fact": True
    }  # fmt: skip
    assert [figure.label(p) for p in pts][-1] == "SFT+DPO_fact (untrained)"
    figure.main(["--table", str(out / "table3_dpo.csv"), "--out", str(tmp_path / "fig")])
    svg = (tmp_path / "fig.svg").read_text()
    assert "SFT+DPO_fact (untrained)" in svg and figure.UNTRAINED_LEGEND in svg
    assert "SFT+DPO (untrained)" not in svg
