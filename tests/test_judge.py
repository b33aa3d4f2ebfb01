"""The win-rate judge (flame.judge): its statistics on hand-made judgments, the order bookkeeping
of each mode with a scripted model, the pair set, and the real path on the tiny model."""

from __future__ import annotations

import json

import pytest

from flame import judge_quality, winrate
from flame.io import read_jsonl
from flame.judge import judge, judge_stats, points
from flame.lm import LM

# hand-made judgments: verdict for x, the two per-order verdicts (x first, then y first)
HAND = [
    {"verdict": 1.0, "orders": [1.0, 1.0]},  # both orders pick x: agree
    {"verdict": 0.5, "orders": [1.0, 0.0]},  # each order picks the first shown: disagree, tie
    {"verdict": 0.0, "orders": [0.0, 0.0]},  # both pick y: agree
    {"verdict": None, "orders": [1.0, None]},  # second order unreadable
    {"verdict": 0.5, "orders": [0.5, 0.5]},  # equal scores: tie, no decided order
]


def test_judge_stats_on_hand_made_judgments():
    s = judge_stats(HAND)
    assert s["n"] == 5
    assert s["unreadable_rate"] == pytest.approx(1 / 5)
    assert s["tie_rate"] == pytest.approx(2 / 5)
    # decided in both orders: items 0, 1, 2; they agree in 0 and 2
    assert s["swap_agreement"] == pytest.approx(2 / 3)
    # first shown picked: item 0 order 1 (x first); item 1 both orders; item 2 order 2 (y first)
    assert s["first_position_rate"] == pytest.approx(4 / 6)
    assert points(HAND) == [1.0, 0.5, 0.0, 0.5, 0.5]


def test_accuracy_and_rates_of_an_order_free_judge():
    pairs = [{"kind": "a"}, {"kind": "a"}, {"kind": "b"}, {"kind": "b"}]
    js = [{"verdict": v, "orders": None} for v in (1.0, 0.0, 1.0, None)]
    q = judge_quality.accuracy(pairs, js)
    assert q["accuracy"]["mean"] == pytest.approx(62.5) and q["accuracy"]["n"] == 4
    assert q["accuracy"]["lo"] <= 62.5 <= q["accuracy"]["hi"]
    assert q["by_kind"] == {"a": 50.0, "b": 75.0}
    assert q["swap_agreement"] is None and q["unreadable_rate"] == 0.25 and q["tie_rate"] == 0


class Scripted(LM):
    """Puts `bias` on "A" and +2 on the letter whose response contains GOOD; its log-likelihood
    of any continuation is 0 after a context containing GOOD, -5 otherwise."""

    fingerprint = "scripted"

    def __init__(self, bias: float = 0.0):
        super().__init__()
        self.bias = bias

    def generate(self, prompts, sampling):
        raise NotImplementedError

    def choose(self, prompts, options):
        out = []
        for p in prompts:
            text = p.messages[-1][1]
            a, b = text.split("Response A:")[1].split("Response B:")
            out.append([self.bias + 2.0 * ("GOOD" in a), 2.0 * ("GOOD" in b)])
        return out

    def loglikelihood(self, pairs):
        return [0.0 if "GOOD" in ctx else -5.0 for ctx, _ in pairs]


ITEMS = [("q1", "GOOD answer", "bad"), ("q2", "bad", "GOOD answer"), ("q3", "meh", "meh")]


def test_modes_keep_track_of_the_order():
    fair = Scripted()
    assert [j["verdict"] for j in judge(fair, ITEMS, "prompt")] == [1.0, 0.0, 0.5]
    assert [j["orders"] for j in judge(fair, ITEMS, "prompt")][:2] == [[1.0, 1.0], [0.0, 0.0]]
    assert [j["verdict"] for j in judge(fair, ITEMS, "reverse")] == [1.0, 0.0, 0.5]
    assert judge_stats(judge(fair, ITEMS, "reverse"))["identical_rate"] == pytest.approx(1 / 3)
    # a judge that always says "A" more strongly than content: prompt mode ties everything,
    # logprob mode cancels the bias in the average of the two orders
    biased = Scripted(bias=3.0)
    prompted = judge(biased, ITEMS, "prompt")
    assert [j["verdict"] for j in prompted] == [0.5, 0.5, 0.5]
    assert judge_stats(prompted)["swap_agreement"] == 0.0
    assert judge_stats(prompted)["first_position_rate"] == 1.0
    debiased = judge(biased, ITEMS, "logprob")
    assert [j["verdict"] for j in debiased] == [1.0, 0.0, 0.5]
    assert [j["margin"] for j in debiased] == [2.0, -2.0, 0.0]
    with pytest.raises(ValueError, match="unknown judge mode"):
        judge(fair, ITEMS, "vibes")


def test_the_obvious_pairs():
    pairs = read_jsonl(judge_quality.default_pairs(), required=("instruction", "better", "worse"))
    assert len(pairs) >= 30 and len({p["id"] for p in pairs}) == len(pairs)
    kinds = {p["kind"] for p in pairs}
    assert kinds == {"off_topic", "truncated", "repetitive", "wrong_fact", "refusal", "empty"}
    assert all(sum(p["kind"] == k for p in pairs) >= 5 for k in kinds)
    assert all(p["better"].strip() and p["better"] != p["worse"] for p in pairs)


def test_option_token_ids_skip_a_bare_space(tokenizer_dir):
    from transformers import AutoTokenizer

    from flame.lm.hf import option_token_ids

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    digits = [set(option_token_ids(tok, str(d))) for d in range(6)]
    assert all(digits[i].isdisjoint(digits[j]) for i in range(6) for j in range(i + 1, 6))
    assert len(option_token_ids(tok, "True")) == 2  # "True" and " True" are tokens of their own


def _gens(path, name, responses):
    recs = [
        {"id": f"i{k}", "instruction": f"Question {k}?", "responses": [r] if r else []}
        for k, r in enumerate(responses)
    ]
    path.write_text("".join(json.dumps({**r, "model": name}) + "\n" for r in recs))
    return f"{name}={path}"


@pytest.mark.parametrize("mode", ["prompt", "logprob", "reverse"])
def test_winrate_and_judge_quality_on_the_tiny_model(tiny_model, tmp_path, mode):
    base = _gens(tmp_path / "base.jsonl", "SFT", ["An answer.", "Another one.", None])
    ours = _gens(tmp_path / "ours.jsonl", "SFT_fact", ["A reply.", "An answer.", "Text."])
    out = tmp_path / "winrate_table2.json"
    spec = json.dumps({"source": str(tiny_model), "dtype": "float32"})
    cache = str(tmp_path / "lm.sqlite")
    winrate.main(
        ["--judge", spec, "--baseline", base, "--models", ours, "--out", str(out)]
        + ["--mode", mode, "--cache", cache]
    )
    result = json.loads(out.read_text())
    assert result["mode"] == mode
    m = result["models"]["SFT_fact"]
    assert m["n_instructions"] == 3 and 0.0 <= m["win_rate"] <= 100.0
    assert m["wins"] + m["losses"] + m["ties_or_unreadable"] == 3
    stats = m["judge_stats"]
    assert stats["unreadable_rate"] == 0.0
    assert (stats["swap_agreement"] is None) == (mode == "reverse")
    table = tmp_path / "t" / "table_judge.md"
    judge_quality.main(
        ["--judge", spec, "--modes", mode, "--selected", mode, "--out", str(tmp_path / "q.json")]
        + ["--table", str(table), "--winrate", str(out), "--cache", cache]
    )
    q = json.loads((tmp_path / "q.json").read_text())["modes"][mode]
    assert q["accuracy"]["n"] == 36 and 0.0 <= q["accuracy"]["mean"] <= 100.0
    md = table.read_text()
    assert f"**{mode}** (used)" in md and "table2: SFT_fact vs SFT" in md
    assert table.with_suffix(".csv").read_text().count("\n") == 3  # header, the mode, SFT_fact
