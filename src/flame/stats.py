"""Error bars: percentile bootstrap intervals over the items of an evaluation set.

Every FActScore, win-rate, TruthfulQA and accuracy number the workflow reports is a mean over
items (responses, instructions, questions). `interval(values)` gives its n and a 95 % percentile
bootstrap interval (2,000 resamples of the items, a fixed seed, so reruns give the same digits).
Two numbers whose intervals overlap cannot be told apart at this sample size: the tables mark
such rows "not distinguishable" from their baseline.

Example:
    >>> interval([0.0, 1.0, 1.0, 1.0])
    {'mean': 0.75, 'n': 4, 'lo': 0.25, 'hi': 1.0}
"""

from __future__ import annotations

from collections.abc import Sequence

N_BOOT = 2000
LEVEL = 0.95


def bootstrap(
    values: Sequence[float], n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[float, float] | None:
    """The percentile bootstrap interval of the mean of `values` (None when empty)."""
    import numpy as np

    x = np.asarray([float(v) for v in values], dtype=float)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def interval(values: Sequence[float], scale: float = 1.0, **kw) -> dict:
    """{mean, n, lo, hi} of `values` times `scale` (mean/lo/hi None when there are no values)."""
    vals = [float(v) for v in values]
    ci = bootstrap(vals, **kw)
    if ci is None:
        return {"mean": None, "n": 0, "lo": None, "hi": None}
    return {
        "mean": scale * sum(vals) / len(vals),
        "n": len(vals),
        "lo": scale * ci[0],
        "hi": scale * ci[1],
    }


def paired_difference(a: dict, b: dict, scale: float = 1.0, **kw) -> dict:
    """{mean, n, lo, hi} of a[i] - b[i] over the items i both have: the difference of two
    models on the same prompts, with the interval of the paired bootstrap (much narrower than
    comparing two separate intervals when the prompts vary more than the models do)."""
    shared = sorted(set(a) & set(b), key=str)
    return interval([a[i] - b[i] for i in shared], scale=scale, **kw)


def verdict(ci: dict) -> str:
    """'higher' / 'lower' where a difference's interval excludes 0, else 'not distinguishable'
    ('' without an interval)."""
    if ci.get("lo") is None:
        return ""
    if ci["lo"] > 0:
        return "higher"
    if ci["hi"] < 0:
        return "lower"
    return "not distinguishable"


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether two closed intervals share a point."""
    return a[0] <= b[1] and b[0] <= a[1]


def half_width(lo: float | None, hi: float | None) -> float | None:
    """Half the interval's width: the ± shown in Markdown tables."""
    return None if lo is None or hi is None else (hi - lo) / 2.0
