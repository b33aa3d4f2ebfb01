"""The pairwise judge behind the win rates, and the statistics that say whether it judges at all.

A judge compares two responses x and y to one instruction and gives a verdict: 1 (x is better),
0 (y is better), 0.5 (a tie) or None (its answer could not be read, counted as 0.5 in win rates).
Three modes, chosen by config (``winrate.mode``):

- ``prompt`` (AlpacaEval's protocol; the paper's GPT-4 judge): the pairwise prompt
  (flame.prompts.pairwise_prompt) in both orders, the judge's choice "A"/"B" read in each. An
  instruction's verdict is the mean of the two: when the orders disagree (position bias) it is a
  tie. Works with every backend, chat APIs included.
- ``logprob``: the same prompt in both orders, but the verdict is the sign of the mean, over the
  two orders, of log P(x's letter) - log P(y's letter): the position bias, the same in both orders,
  cancels. Needs a backend that gives next-token log-probs (transformers, vLLM; not chat APIs).
- ``reverse``: each response on its own: how likely the judge finds the instruction after
  reading the response, log P(instruction | response) (REVERSE below). A response that answers
  the instruction makes it predictable; an empty, off-topic, refusing, truncated or repetitive one
  does not. Order-free (no position bias), and a tie only when both responses score the same.
  Needs `loglikelihood` (transformers, vLLM, OpenAI-compatible /completions with echo).

`judge_stats` gives the rates that the win-rate JSON, the tables and benchmarks/judge_quality.py
report: tie rate, unreadable rate, position-swap agreement and the share of decided verdicts
that prefer the first response.
"""

from __future__ import annotations

import math

from flame.lm import LM
from flame.prompts import REVERSE, pairwise_prompt

MODES = ("prompt", "logprob", "reverse")


def _sign(margin: float) -> float:
    return 1.0 if margin > 0 else 0.0 if margin < 0 else 0.5


def _pick(scores: list[float] | None) -> float | None:
    """'A' (1) or 'B' (0) from the two option scores; 0.5 when equal; None when unreadable."""
    if not scores or any(s is None or math.isnan(s) for s in scores):
        return None
    return _sign(scores[0] - scores[1])


def judge(lm: LM, items: list[tuple[str, str, str]], mode: str = "prompt") -> list[dict]:
    """Judge (instruction, x, y) items. For each: {verdict, orders, margin, identical}: orders
    are the two per-order verdicts (x shown first, then y first; None for the order-free mode),
    margin the score gap in x's favour (None in prompt mode), identical whether x == y."""
    if mode not in MODES:
        raise ValueError(f"unknown judge mode {mode!r}: expected one of {', '.join(MODES)}")
    out = _judge(lm, items, mode)
    for j, (_, x, y) in zip(out, items, strict=True):
        j["identical"] = x == y
    return out


def _judge(lm: LM, items: list[tuple[str, str, str]], mode: str) -> list[dict]:
    if mode == "reverse":
        pairs = [REVERSE.format(response=r) for _, x, y in items for r in (x, y)]
        targets = [" " + i for i, _, _ in items for _ in (0, 1)]
        ll = lm.loglikelihood(list(zip(pairs, targets, strict=True)))
        out = []
        for k in range(len(items)):
            lx, ly = ll[2 * k], ll[2 * k + 1]
            ok = lx is not None and ly is not None and math.isfinite(lx) and math.isfinite(ly)
            margin = lx - ly if ok else None
            out.append({"verdict": _sign(margin) if ok else None, "orders": None, "margin": margin})
        return out
    prompts = []
    for instruction, x, y in items:
        prompts += [pairwise_prompt(instruction, x, y), pairwise_prompt(instruction, y, x)]
    scores = lm.choose(prompts, ["A", "B"])
    out = []
    for k in range(len(items)):
        first, second = scores[2 * k], scores[2 * k + 1]
        a, b = _pick(first), _pick(second)
        orders = [a, None if b is None else 1.0 - b]  # in the second order x is "B"
        if None in orders:
            out.append({"verdict": None, "orders": orders, "margin": None})
        elif mode == "prompt":
            out.append({"verdict": (orders[0] + orders[1]) / 2, "orders": orders, "margin": None})
        else:
            margin = ((first[0] - first[1]) + (second[1] - second[0])) / 2
            out.append({"verdict": _sign(margin), "orders": orders, "margin": margin})
    return out


def points(judgments: list[dict]) -> list[float]:
    """Each verdict as a score for x: unreadable counts as a tie (0.5)."""
    return [0.5 if j["verdict"] is None else j["verdict"] for j in judgments]


def judge_stats(judgments: list[dict]) -> dict:
    """Rates over instructions (None where no instruction qualifies):

    - unreadable_rate: the judge's answer could not be read (in either order);
    - tie_rate: readable, but neither response preferred (equal scores, or, in prompt mode, the
      two orders pick different responses);
    - swap_agreement: of the instructions judged in both orders with a decided verdict in each,
      the share where both orders pick the same response (None for the order-free mode);
    - first_position_rate: of those decided per-order verdicts, the share picking whichever
      response was shown first (0.5 for an unbiased judge, 1.0 for one that always says "A");
    - identical_rate: the two responses were the same text (a tie is then the right verdict).
    """
    n = len(judgments)
    readable = [j for j in judgments if j["verdict"] is not None]
    two = [j["orders"] for j in judgments if j["orders"] and 0.5 not in j["orders"]]
    two = [o for o in two if None not in o]
    # x is first in order 1 (verdict 1 = first), second in order 2 (verdict 0 = first)
    firsts = sum(o[0] == 1.0 for o in two) + sum(o[1] == 0.0 for o in two)
    return {
        "n": n,
        "unreadable_rate": (n - len(readable)) / n if n else None,
        "tie_rate": sum(j["verdict"] == 0.5 for j in readable) / n if n else None,
        "swap_agreement": sum(o[0] == o[1] for o in two) / len(two) if two else None,
        "first_position_rate": firsts / (2 * len(two)) if two else None,
        "identical_rate": sum(bool(j.get("identical")) for j in judgments) / n if n else None,
    }
