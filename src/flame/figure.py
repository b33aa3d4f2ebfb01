"""FLAME Figure 1: helpfulness (win rate) against factuality (FActScore) for every Table 3 model,
with 95 % bootstrap error bars on both axes, as a PNG and an SVG (matplotlib).

Reads the Table 3 CSV written by flame.tables (columns win, X, paper_win, paper_X, and
win_lo/win_hi, X_lo/X_hi). Our models are filled points with error bars; the paper's numbers
(Llama-2 70B) for the same rows are hollow grey points, joined to ours by a faint line. When no
row has both numbers (a model whose responses hold no facts), the figure says so. A row whose
`trained` column is false (a DPO run on zero pairs: its checkpoint is the SFT model unchanged,
flame.tables.train_status) is a hollow point labelled "NAME (untrained)".

Example:
    python -m flame.figure --table results/tables/table3_dpo.csv --x bio_fs \
        --out results/figures/figure1
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from flame.cli import run
from flame.io import atomic_path

AXES = {"bio_fs": "Bio", "af_fs": "Alpaca Fact", "fava_fs": "FAVA"}
UNTRAINED_LEGEND = "untrained (no pairs): its init model unchanged"


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def num(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def err(row: dict, m: str, v: float) -> tuple[float, float]:
    """Distances from v down to the interval's low end and up to its high end (0 if unknown)."""
    lo, hi = num(row.get(f"{m}_lo")), num(row.get(f"{m}_hi"))
    return (0.0, 0.0) if lo is None or hi is None else (v - lo, hi - v)


def points(rows: list[dict], x: str) -> list[dict]:
    """Plottable rows: name, our (x, y) with interval half-lengths, the paper's (x, y)."""
    out = []
    for r in rows:
        ox, oy = num(r.get(x)), num(r.get("win"))
        if ox is None or oy is None:
            continue
        out.append(
            {
                "name": r["model"],
                "x": ox,
                "y": oy,
                "xerr": err(r, x, ox),
                "yerr": err(r, "win", oy),
                "paper": (num(r.get(f"paper_{x}")), num(r.get("paper_win"))),
                "untrained": r.get("trained") == "false",
            }
        )
    return out


def label(p: dict) -> str:
    """A point's label: its model, marked when it was trained on nothing."""
    return f"{p['name']} (untrained)" if p["untrained"] else p["name"]


def plot(pts: list[dict], x: str, out: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for p in pts:
        bar = ax.errorbar(
            p["x"], p["y"], xerr=[[p["xerr"][0]], [p["xerr"][1]]],
            yerr=[[p["yerr"][0]], [p["yerr"][1]]], fmt="o", capsize=3,
        )  # fmt: skip
        if p["untrained"]:  # hollow: the init model's numbers, not a trained row's
            bar.lines[0].set_markerfacecolor("none")
        ax.annotate(label(p), (p["x"], p["y"]), textcoords="offset points", xytext=(5, 5))
        px, py = p["paper"]
        if px is not None and py is not None:
            ax.scatter([px], [py], facecolors="none", edgecolors="grey")
            ax.plot([p["x"], px], [p["y"], py], color="grey", alpha=0.2, lw=0.8)
    if not pts:
        ax.text(0.5, 0.5, f"no model has both a win rate and {x}", ha="center",
                transform=ax.transAxes)  # fmt: skip
    ax.scatter([], [], facecolors="none", edgecolors="grey", label="paper (Llama-2 70B)")
    if any(p["untrained"] for p in pts):
        ax.scatter([], [], facecolors="none", edgecolors="black", label=UNTRAINED_LEGEND)
    ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(f"FActScore on {AXES.get(x, x)} (%)")
    ax.set_ylabel("win rate vs SFT+DPO (%)")
    ax.set_title("Figure 1: helpfulness vs factuality (95 % bootstrap intervals)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written = []
    for ext in ("png", "svg"):
        path = Path(f"{out}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=150)
        written.append(path)
    plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--table", required=True, type=Path, help="table3_dpo.csv")
    ap.add_argument("--x", default="bio_fs", choices=sorted(AXES), help="FActScore column")
    ap.add_argument("--out", required=True, help="output path without extension")
    args = ap.parse_args(argv)
    pts = points(read_rows(args.table), args.x)
    if not pts:  # e.g. a tiny model whose responses hold no facts: say so in the figure
        print(f"warning: {args.table}: no row has both a win rate and {args.x}")
    for path in plot(pts, args.x, args.out):
        print(path)


if __name__ == "__main__":
    run(main)
