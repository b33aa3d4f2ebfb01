"""Table 9 through lm-eval: local task YAMLs with data_files, run on the tiny test model."""

import json
import shutil

import pytest

from flame import alignment_tax


def test_task_configs_point_at_local_files(tmp_path):
    cfg = alignment_tax.task_config("mmlu", "embedded", 5, 16)
    files = cfg["dataset_kwargs"]["data_files"]
    assert set(files) == {"dev", "test"} and cfg["output_type"] == "multiple_choice"
    assert all(json.loads(open(f).readline())["choices"] for f in files.values())
    gsm = alignment_tax.task_config("gsm8k", "embedded", 8, 16)
    assert gsm["generation_kwargs"]["max_gen_toks"] == 16 and gsm["num_fewshot"] == 8
    assert all(
        "####" in json.loads(open(f).readline())["answer"]
        for f in gsm["dataset_kwargs"]["data_files"].values()
    )  # noqa: E501
    with pytest.raises(FileNotFoundError, match="dev.jsonl"):
        alignment_tax.task_config("mmlu", str(tmp_path), 5, 16)


@pytest.mark.slow
def test_lm_eval_on_the_tiny_model(tiny_model, tmp_path):
    # a folder source (the layout a user brings) for MMLU, the embedded set for GSM8K
    mmlu = tmp_path / "mmlu"
    mmlu.mkdir()
    files = alignment_tax.data_files("embedded", "mmlu")
    shutil.copy(files["dev"], mmlu / "dev.jsonl")
    shutil.copy(files["test"], mmlu / "test.jsonl")
    out = tmp_path / "tax.json"
    alignment_tax.main(
        ["--model", str(tiny_model), "--mmlu", str(mmlu), "--gsm8k", "embedded"]
        + ["--limit", "3", "--max-gen-toks", "4", "--gsm8k-shots", "2", "--out", str(out)]
    )
    res = json.loads(out.read_text())
    assert res["mmlu"]["n"] == 3 and res["gsm8k"]["n"] == 3
    for bench in ("mmlu", "gsm8k"):
        r = res[bench]
        assert 0 <= r["lo"] <= r["mean"] <= r["hi"] <= 100
    assert res["mmlu"]["task"] == "flame_mmlu" and res["gsm8k"]["shots"] == 2
    # a random 4-token answer never carries "#### N": strict exact match is 0
    assert res["gsm8k"]["mean"] == 0.0


def test_table9_renders(tmp_path):
    from flame import tables_extra

    for m, (a, b) in {"SFT+DPO": (60.0, 20.0), "SFT_FLAME+DPO_FLAME": (55.0, 25.0)}.items():
        (tmp_path / m).mkdir()
        cells = {
            "mmlu": {"mean": a, "n": 16, "lo": a - 20, "hi": a + 20},
            "gsm8k": {"mean": b, "n": 12, "lo": b - 15, "hi": b + 15},
        }
        (tmp_path / m / "alignment_tax.json").write_text(json.dumps(cells))
    tables_extra.main(
        ["alignment-tax", "--eval-dir", str(tmp_path), "--rows", "SFT+DPO"]
        + ["SFT_FLAME+DPO_FLAME", "--baseline", "SFT+DPO", "--out", str(tmp_path / "t9")]
    )
    md = (tmp_path / "t9.md").read_text()
    assert "| SFT+DPO | 60.0 ± 20.0 (69.3) | 20.0 ± 15.0 (59.3) | baseline |" in md
    assert "58.2) | not distinguishable |" in md
