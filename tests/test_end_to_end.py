"""The whole DAG, for real: on a tiny random-weight model (fast, every stage, kill + resume), and
on the embedded default (SmolLM2-135M, Wikipedia summaries; ~15 minutes on 2 cores)."""

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from shrunk import configfiles, link_inputs

ROOT = Path(__file__).resolve().parents[1]
TABLE3_ROWS = [
    "Chat",
    "SFT",
    "SFT+DPO",
    "SFT+DPO_fact",
    "SFT+DPO_FLAME",
    "SFT_FLAME",
    "SFT_FLAME+DPO",
    "SFT_FLAME+DPO_FLAME",
]
TABLES = ["table2_sft", "table3_dpo", "table8_length", "table11_pairs", "table_paired"]


def snakemake(wd: Path, *args: str, timeout: int = 3000) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=wd,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


def tiny_config(model: Path) -> dict:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["models"] = {"tiny": {"source": str(model), "backend": "transformers", "batch_size": 16}}
    cfg["trained_models"] = {"backend": "transformers", "batch_size": 16}
    cfg["roles"] = {
        r: "tiny"
        for r in [
            "pretrained",
            "sft_init",
            "fact_decomposer",
            "fact_verifier",
            "eval_judge",
            "chat_baseline",
        ]
    }
    cfg["roles"].update(classifier="SFT", if_judge="policy")
    cfg["data"].update(
        n_seed_fact=6,
        n_seed_nonfact=10,
        n_dpo_fact=4,
        n_dpo_nonfact=2,
        n_eval_bio=2,
        n_eval_alpaca=4,
        n_eval_fava=2,
    )
    for section in ("fewshot", "sampling", "evaluation"):
        cfg[section]["max_new_tokens"] = 12
    cfg["rm_if"].update(max_new_tokens=2)
    cfg["sft"].update(
        max_steps=2, global_batch_size=2, per_device_train_batch_size=2, max_length=128
    )
    cfg["dpo"].update(
        max_steps=1,
        global_batch_size=2,
        per_device_train_batch_size=2,
        max_length=128,
        allow_empty_pairs=True,
    )
    for section in ("rm_fact", "evaluation"):
        cfg[section].update(max_fact_tokens=12)
    return cfg


def read_table(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def check_pair_invariants(results: Path) -> None:
    """What holds at any scale: an IF pair's chosen response has the higher RM_IF and a fact
    pair's the higher RM_fact; fact pairs come only from prompts classified fact-based; the
    counts file counts the pair files' lines."""
    for policy in sorted((results / "dpo").glob("*/pair_counts.json")):
        samples = [
            json.loads(x) for x in (policy.parent / "samples.jsonl").read_text().splitlines()
        ]
        fact_based = {s["id"]: bool(s.get("fact_based")) for s in samples}
        counts = json.loads(policy.read_text())
        assert counts["fact_based_prompts"] == sum(fact_based.values()), policy
        for name, c in counts["sets"].items():
            lines = (policy.parent / f"pairs_{name}.jsonl").read_text().splitlines()
            pairs = [json.loads(x) for x in lines]
            assert len(pairs) == c["total"], (policy, name)
            for p in pairs:
                sample = p["id"].rsplit(":", 1)[0]
                assert sample in fact_based, p["id"]
                if p["kind"] == "fact":
                    assert fact_based[sample], ("fact pair from a non-fact prompt", p["id"])
                    assert p["rm_fact"][0] > p["rm_fact"][1], ("chosen has lower RM_fact", p)
                else:
                    assert p["rm_if"][0] > p["rm_if"][1], ("chosen has lower RM_IF", p)


def check_dpo_rows_trained(results: Path) -> None:
    """A DPO row trained on k > 0 pairs has weights that differ from its init (the SFT model);
    a row trained on 0 pairs is the SFT model unchanged and says so in its summary."""
    from safetensors import safe_open

    def tensors(folder: Path) -> dict:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), "pt") as fh:
                out.update({k: fh.get_tensor(k) for k in fh.keys()})
        return out

    rows = sorted((results / "models/dpo").glob("*/train_summary.json"))
    assert rows
    for path in rows:
        summary = json.loads(path.read_text())
        init = Path(summary["init"])
        init = init if init.is_absolute() else results.parent / init
        after, before = tensors(path.parent), tensors(init)
        assert after.keys() == before.keys(), path
        same = all(after[k].equal(before[k]) for k in after)
        if summary.get("skipped"):
            assert same, ("a 0-pair row must be its SFT model unchanged", path)
        else:
            assert summary["global_step"] > 0 and not same, ("trained, yet unchanged", path)


def check_tables(results: Path, table3_rows: list[str], strict: bool, table5: bool = True) -> None:
    """Tables have the paper's rows, every number is finite, win rates are all there; with
    `strict` every model has Bio FActScore cells, otherwise an empty one must mean the model's
    Bio responses had no facts at all (a tiny random model may answer with nothing)."""
    check_pair_invariants(results)
    check_dpo_rows_trained(results)
    for t in TABLES:
        for ext in ("csv", "md"):
            assert (results / "tables" / f"{t}.{ext}").stat().st_size > 0, f"{t}.{ext}"
    t2 = read_table(results / "tables" / "table2_sft.csv")
    assert [r["model"] for r in t2] == ["PT", "SFT", "SFT_fact", "SFT_FLAME"]
    t3 = read_table(results / "tables" / "table3_dpo.csv")
    assert [r["model"] for r in t3] == table3_rows
    for rows in (t2, t3):
        for row in rows:
            for key, value in row.items():
                if key in ("model", "trained", "vs_baseline") or value == "":
                    continue
                assert math.isfinite(float(value)), (row["model"], key, value)
            # a row trained on nothing (zero pairs: its train_summary.json) says so
            summary = results / "models" / ("dpo" if "+" in row["model"] else "sft")
            summary = summary / row["model"] / "train_summary.json"
            info = json.loads(summary.read_text()) if summary.exists() else None
            trained = info and not info.get("skipped") and info.get("global_step")
            want = "" if info is None else "true" if trained else "false"
            assert row["trained"] == want, (row["model"], row["trained"])
    for row in t2[1:] + t3:
        assert row["win"] != "", row["model"]
        if row["bio_fs"] == "":
            assert not strict, (row["model"], "bio_fs")
            summary = json.loads((results / "eval" / row["model"] / "factuality.json").read_text())
            assert summary["bio"]["n_scored"] == 0, row["model"]
    base3 = next(r for r in t3 if r["model"] == "SFT+DPO")
    assert float(base3["win"]) == 50.0
    if table5:
        t5 = read_table(results / "tables" / "table5_truthfulqa.csv")
        assert [r["model"] for r in t5] == ["SFT", "SFT+DPO", "SFT_FLAME+DPO_FLAME"]
        assert all(0 <= float(r["mc2"]) <= 100 and r["mc1_n"] for r in t5)
    else:
        assert not (results / "tables" / "table5_truthfulqa.csv").exists()
    assert (results / "figures" / "figure1.png").stat().st_size > 0
    assert "<svg" in (results / "figures" / "figure1.svg").read_text()
    pairs = read_table(results / "tables" / "table11_pairs.csv")
    assert {(r["sft_model"], r["pair_set"]) for r in pairs} >= {
        ("SFT", "DPO"),
        ("SFT", "DPO_fact"),
        ("SFT_FLAME", "DPO_FLAME"),
    }


@pytest.mark.slow
def test_tiny_model_whole_dag_with_kill_and_resume(workflow_dir, tiny_model, shrink_data):
    """workflow/configs/laptop.yaml and multiproc.yaml, shrunk (laptop's own settings beyond
    sizes: Table 5 left out; multiproc's: every SFT and DPO job as 2 DeepSpeed ZeRO-3 processes),
    on the tiny model: the whole DAG, interrupted during 2-process SFT and resumed; a changed
    parameter re-runs only what depends on it. One DAG serves both configs (CI time)."""
    wd = workflow_dir
    link_inputs(wd, shrink_data)
    overlays = ["workflow/configs/laptop.yaml", "workflow/configs/multiproc.yaml"]
    files = configfiles(wd, overlays, tiny_model)
    # start the run and interrupt it (Ctrl-C / Slurm's SIGTERM) while SFT models are trained
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", *files],
        cwd=wd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 600
    while not (wd / "results/models/sft/SFT").exists() and time.time() < deadline:
        if proc.poll() is not None:  # failed before SFT: show why
            res = snakemake(wd, "--cores", "2", *files)
            pytest.fail(f"the run stopped before SFT training:\n{res.stderr[-4000:]}")
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    try:  # Snakemake may let a Ctrl-C pass while it is between jobs: then it gets Slurm's SIGTERM
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    assert (wd / "results/models/sft/SFT").exists(), "the run never reached SFT training"
    assert not (wd / "results/tables").exists()
    # restart: finishes without manual clean-up
    res = snakemake(wd, "--cores", "2", *files)
    assert res.returncode == 0, res.stderr[-4000:]
    results = wd / "results"
    check_tables(results, TABLE3_ROWS, strict=False, table5=False)
    leftovers = [p for p in results.rglob("*") if p.name.endswith((".tmp", ".ckpt"))]
    assert leftovers == []
    models = sorted((results / "models").glob("*/*/train_summary.json"))
    assert len(models) == 3 + 5  # SFT, SFT_fact, SFT_FLAME and the five DPO rows
    for path in models:
        summary = json.loads(path.read_text())
        if summary.get("skipped"):  # an empty pair set at tiny scale: the SFT model, unchanged
            continue
        assert summary["world_size"] == 2, path
        assert summary["distributed"] == "DEEPSPEED ZeRO-3", path
    log = (results / "logs/train_sft/SFT.log").read_text()
    assert "2 per device x 2 processes" in log or "1 per device x 2 processes" in log
    # nothing changed: nothing to do
    res = snakemake(wd, "--cores", "2", *files)
    assert res.returncode == 0 and "Nothing to be done" in res.stdout + res.stderr
    # a changed parameter re-runs only its rule and what depends on it
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["pairs"]["max_if_gap"] = 0.25
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = snakemake(wd, "-n", "--cores", "2", *files)
    planned = res.stdout
    assert "rule pairs:" in planned and "rule train_dpo:" in planned
    for upstream in (
        "rule train_sft:",
        "rule classify:",
        "rule sample_responses:",
        "rule rm_if:",
        "rule rm_fact:",
        "rule build_data:",
    ):
        assert upstream not in planned, upstream


@pytest.mark.embedded
def test_embedded_default_end_to_end(workflow_dir):
    """The real embedded default, exactly as `make demo` runs it."""
    wd = workflow_dir
    res = snakemake(wd, "--cores", "2", timeout=3600)
    assert res.returncode == 0, res.stderr[-4000:]
    check_tables(
        wd / "results",
        TABLE3_ROWS,
        strict=True,
    )
    report = yaml.safe_load((wd / "results/classified/report.json").read_text())
    # the probe's cross-validated accuracy on the 48 hand labels (measured 0.94; chance 0.5)
    assert report["labelled"]["accuracy"] >= 0.8 and report["labelled"]["n"] >= 40, report
    check_signal(wd / "results", report)
    check_ablations(wd)
    check_fdpo_on_top(wd)


def check_signal(results: Path, report: dict) -> None:
    """Issue 15: the default's numbers rest on real verdicts. The probe classifier passes the
    DPO prompts built as fact-seeking more often than the others, so DPO_fact trains on fact
    pairs; FActScore's NP check ran on every fact and overruled SmolLM2's "True" somewhere.
    (Whether Bio FActScore differs between rows is left to noise at 3 bios: not asserted.)"""
    assert report["mode"] == "probe"
    prompts = [json.loads(x) for x in (results / "classified/dpo_prompts.jsonl").read_text()
               .splitlines()]  # fmt: skip
    share = {kind: sum(p["fact_based"] for p in prompts if p["kind"] == kind)
             / sum(p["kind"] == kind for p in prompts) for kind in ("fact", "nonfact")}  # fmt: skip
    assert share["fact"] > share["nonfact"], share
    pairs = read_table(results / "tables" / "table11_pairs.csv")
    assert sum(int(r["fact_pairs"]) for r in pairs if r["pair_set"] == "DPO_fact") > 0
    facts = [json.loads(x) for f in sorted(results.glob("eval/*/facts/bio.jsonl"))
             for x in f.read_text().splitlines()]  # fmt: skip
    assert facts and all("np_support" in f and "verifier_supported" in f for f in facts)
    assert any(f["verifier_supported"] and not f["supported"] for f in facts)


# jobs workflow/configs/ablations.yaml adds to the embedded default's (Tables 6, 7, 9 and 1);
# `tables` and what reads it may re-run because the evaluated models' list grew
ABLATION_JOBS = {
    "fewshot_pt_all", "sft_data_noclf", "pairs_selection", "train_sft", "train_dpo",
    "eval_generate", "eval_factuality", "winrate", "table6", "table7", "alignment_tax", "table9",
    "pilot_prompts", "pilot_generate", "pilot_factscore", "pilot_data", "pilot_eval_rag",
    "pilot_eval_generate", "table1", "tables", "figure1", "table5", "all",
}  # fmt: skip


def check_ablations(wd: Path) -> None:
    """workflow/configs/ablations.yaml end to end on top of the default's results: only the
    ablations' own jobs run, and Tables 6, 7, 9 and 1 have every row with real numbers."""
    ablations = ("--configfile", "workflow/configs/ablations.yaml")
    res = snakemake(wd, "--cores", "2", *ablations, timeout=1800)
    assert res.returncode == 0, res.stderr[-4000:]
    ran = set(re.findall(r"^(\w+)\s+\d+$", res.stdout + res.stderr, flags=re.M)) - {"total"}
    assert ran and ran <= ABLATION_JOBS, ran - ABLATION_JOBS
    tables = wd / "results/tables"

    def rows(name: str, models: list[str], metrics: list[str]) -> dict[str, dict]:
        got = {r["model"]: r for r in read_table(tables / f"{name}.csv")}
        assert list(got) == models, name
        for m, r in got.items():
            for k in metrics:
                assert math.isfinite(float(r[k])), (name, m, k)
        assert "±" in (tables / f"{name}.md").read_text(), name
        return got

    t6 = rows("table6_classifier", ["SFT_FLAME", "SFT_FLAME_noclf"], ["win", "bio_fs"])
    assert t6["SFT_FLAME_noclf"]["bio_fs_n"] and t6["SFT_FLAME_noclf"]["vs_baseline"]
    t7 = rows(
        "table7_pair_selection",
        ["SFT+DPO_FLAME", "SFT+DPO_FLAME_threshold", "SFT+DPO_FLAME_combined"],
        ["pairs", "win", "bio_fs"],
    )
    for model, r in t7.items():  # each row counts the pairs its model really trained on
        sft, pair_set = model.split("+", 1)
        trained = json.loads((wd / f"results/models/dpo/{model}/train_summary.json").read_text())
        lines = (wd / trained["data"]).read_text().splitlines()
        assert Path(trained["data"]).name == f"pairs_{pair_set}.jsonl", trained["data"]
        assert int(r["pairs"]) == sum(json.loads(x)["kind"] == "fact" for x in lines), model
    rows("table9_alignment_tax", ["SFT+DPO", "SFT_FLAME+DPO_FLAME"], ["mmlu", "gsm8k"])
    pilot = ["PT", "PT_RAG", "SFT_PT", "SFT_RAG", "SFT_PT+DPO_FS", "SFT_PT+DPO_RAG"]
    t1 = rows("table1_bio_pilot", pilot, ["bio_fs", "bio_fs_lo", "bio_fs_hi"])
    assert t1["PT"]["vs_baseline"] == "baseline" and t1["PT"]["paper_bio_fs"] == "39.1"
    # PT+RAG writes its bios from the topic's own pages: more of its facts are supported
    assert float(t1["PT_RAG"]["bio_fs"]) > float(t1["PT"]["bio_fs"]), (t1["PT_RAG"], t1["PT"])
    lo, hi = float(t1["PT"]["bio_fs_lo"]), float(t1["PT"]["bio_fs_hi"])
    for m in pilot[1:]:  # "differs" exactly where the intervals do not overlap
        apart = float(t1[m]["bio_fs_lo"]) > hi or float(t1[m]["bio_fs_hi"]) < lo
        assert t1[m]["vs_baseline"] == ("differs: Bio FS" if apart else "not distinguishable"), m
    for m in pilot[2:]:  # trained on something: its examples / pairs are counted
        assert int(t1[m]["train"]) > 0, m
    # the report collects them, with captions naming the paper's tables
    res = snakemake(wd, "--report", "report.html", *ablations)
    assert res.returncode == 0, res.stderr[-4000:]
    html = (wd / "report.html").read_text()
    for n, name in [(1, "table1_bio_pilot"), (6, "table6_classifier")] + [
        (7, "table7_pair_selection"),
        (9, "table9_alignment_tax"),
    ]:
        assert f"FLAME Table {n}:" in html and f'"filename": "{name}.md"' in html, name


def check_fdpo_on_top(wd: Path) -> None:
    """F-DPO and the BT reward model (workflow/configs/fdpo.yaml) on top of the default's results:
    only the new rules run; both tables are written with evaluated rows. At this scale a pair set
    can be empty (e.g. no DPO prompt classified fact-based): its rows must then say "no pairs"
    and the RM "not trained", never fail or show a made-up accuracy."""
    t0 = time.time()
    res = snakemake(wd, "--cores", "2", "--configfile", "config.yaml", "workflow/configs/fdpo.yaml",
                    timeout=1800)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    print(f"fdpo.yaml on top of the default: {time.time() - t0:.0f} s")
    ran = {m[1] for m in re.finditer(r"^(\w+)\s+\d+$", res.stdout + res.stderr, flags=re.M)}
    assert not ran & {"train_sft", "classify", "sample_responses", "rm_fact", "rm_if", "pairs",
                      "train_dpo"}, ran  # fmt: skip
    assert {"invert", "fdpo_pairs", "train_fdpo", "train_rm", "table_fdpo", "table_rm"} <= ran
    check_fdpo_tables(wd / "results", trained=True)


def check_fdpo_tables(results: Path, trained: bool = False) -> None:
    """With `trained` (the embedded default, whose probe passes fact-based DPO prompts), F-DPO
    and the RM must have trained on real pairs; otherwise "no pairs" is an accepted outcome."""
    counts = json.loads((results / "fdpo/SFT/fdpo_counts.json").read_text())
    assert counts["pairs"] > 0 or not trained, counts
    assert counts["buckets_after_flip"]["10"] == 0
    assert sum(counts["buckets_after_flip"].values()) == counts["pairs"]
    fdpo = {r["model"]: r for r in read_table(results / "tables/table_fdpo.csv")}
    for lam in ("0", "10"):
        row = fdpo[f"F-DPO λ={lam} (SFT+FDPO_l{lam})"]
        assert row["trained"] == ("yes" if counts["pairs"] else "no pairs"), row
        assert int(row["count"]) > 0 and 0 <= float(row["factuality"]) <= 10, row
        assert 0 <= float(row["halluc_rate"]) <= 1, row
    assert float(fdpo["paper: Qwen3-8B + F-DPO"]["halluc_rate"]) == 0.084
    assert "before flipping" in (results / "tables/table_fdpo.md").read_text()
    rm = {r["model"]: r for r in read_table(results / "tables/table_rm.csv")}
    assert list(rm) == ["SFT + DPO_fact (FActScore)", "SFT + DPO_fact (RM_BT)"]
    assert all(int(r["count"]) > 0 and r["trained"] in ("yes", "no pairs") for r in rm.values())
    metrics = json.loads((results / "rm/RM_BT_metrics.json").read_text())
    md = (results / "tables/table_rm.md").read_text()
    assert metrics["trained"] or not trained, metrics
    if metrics["trained"]:
        assert metrics["train_pairs"] > 0 and 0 <= metrics["train_accuracy"] <= 1
        assert "responses/s" in md
    else:
        assert metrics["train_pairs"] == 0 and metrics["train_accuracy"] is None
        assert "RM_BT: not trained: zero RM_fact pairs" in md
        assert rm["SFT + DPO_fact (RM_BT)"]["trained"] == "no pairs"
