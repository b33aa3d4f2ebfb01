"""Figure 1 and `snakemake --report`: the report collects every table, Figure 1 and the
classifier report, with captions naming the paper's tables (on a small results tree made here,
not the full DAG)."""

import subprocess
import sys

from flame import figure

TABLE3 = (
    "model,win,bio_fs,paper_win,paper_bio_fs,win_lo,win_hi,bio_fs_lo,bio_fs_hi\n"
    "SFT,30,40,27.1,44.7,20,40,30,50\n"
    "SFT+DPO,50,35,50,42.3,50,50,25,45\n"
    "SFT+DPO_fact,45,,40.8,47.1,,,,\n"  # no Bio FS: not plotted
)


def test_figure1_png_and_svg(tmp_path):
    (tmp_path / "t3.csv").write_text(TABLE3)
    pts = figure.points(figure.read_rows(tmp_path / "t3.csv"), "bio_fs")
    assert [p["name"] for p in pts] == ["SFT", "SFT+DPO"]
    assert pts[0]["xerr"] == (10.0, 10.0) and pts[1]["yerr"] == (0.0, 0.0)
    assert pts[0]["paper"] == (44.7, 27.1)
    figure.main(["--table", str(tmp_path / "t3.csv"), "--out", str(tmp_path / "fig")])
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "fig.svg").read_text()
    # no plottable row: still a figure, which says so
    (tmp_path / "empty.csv").write_text("model,win,bio_fs\nSFT,50,\n")
    figure.main(["--table", str(tmp_path / "empty.csv"), "--out", str(tmp_path / "empty")])
    assert "no model has both" in (tmp_path / "empty.svg").read_text()


def test_report_collects_tables_figure_and_classifier(workflow_dir):
    wd = workflow_dir
    tables = ["table2_sft", "table3_dpo", "table8_length", "table11_pairs", "table5_truthfulqa"]
    tables += ["table_judge", "table_paired"]
    (wd / "results/tables").mkdir(parents=True)
    (wd / "results/classified").mkdir(parents=True)
    for t in tables:
        (wd / f"results/tables/{t}.csv").write_text("model,x\nSFT,1\n")
        (wd / f"results/tables/{t}.md").write_text(f"### {t}\n")
    (wd / "results/tables/table3_dpo.csv").write_text(TABLE3)
    (wd / "results/classified/report.json").write_text("{}\n")
    figure.main(["--table", str(wd / "results/tables/table3_dpo.csv")]
                + ["--out", str(wd / "results/figures/figure1")])  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--report", "report.html", "--cores", "1"],
        cwd=wd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    html = (wd / "report.html").read_text()
    for name in [*(f"{t}.{e}" for t in tables for e in ("csv", "md")), "figure1.svg"]:
        assert f'"filename": "{name}"' in html, name
    assert "data:image/png;charset=utf8;filename=figure1.png;base64,iVBORw0KGgo" in html
    assert "filename=report.json;base64" in html
    for caption in ["FLAME Table 2", "FLAME Table 3", "FLAME Table 5", "FLAME Table 8"]:
        assert caption in html, caption
    assert "FLAME Table 11" in html and "FLAME Figure 1" in html
    assert "The win-rate judge's quality" in html
    assert "Fact-based instruction classification" in html
