import math

import pytest

from flame.cache import Cache
from flame.lm import CachedLM, Prompt, Sampling, load_lm, parse_spec, pick, truncate_at_stop
from flame.lm.openai import _scores_from_logprobs, first_option_in_text


def test_generate_shapes_and_cache_roundtrip(tiny_model, tmp_path):
    lm = load_lm({"source": str(tiny_model), "batch_size": 4}, cache=tmp_path / "c.sqlite")
    prompts = [Prompt.chat("Hello"), Prompt(text="Once upon a time"), Prompt.chat("Hello")]
    s = Sampling(max_new_tokens=5, temperature=0.7, top_p=0.9, n=3, seed=1)
    out = lm.generate(prompts, s)
    assert [len(o) for o in out] == [3, 3, 3]
    assert out[0] == out[2]  # identical prompts share cache entries
    calls = lm.stats.calls
    again = lm.generate(prompts, s)
    assert again == out and lm.stats.calls == calls  # zero new model calls
    # asking for more samples computes only the missing ones and keeps the old ones
    more = lm.generate(prompts[:1], Sampling(**{**s.__dict__, "n": 5}))
    assert more[0][:3] == out[0] and len(more[0]) == 5
    assert lm.stats.calls == calls + 1


def test_choose_returns_logprobs(tiny_model):
    lm = load_lm({"source": str(tiny_model)})
    scores = lm.choose([Prompt.chat("Is the sky blue?", prefix="Answer:")], ["Yes", "No"])
    assert len(scores[0]) == 2 and all(s <= 0 for s in scores[0])


def test_cache_survives_reopen_and_separates_models(tmp_path):
    c = Cache(tmp_path / "x.sqlite")
    c.put("k", {"a": 1})
    c.close()
    c2 = Cache(tmp_path / "x.sqlite")
    assert c2.get("k") == {"a": 1} and c2.get("other") is None
    assert Cache(tmp_path / "x.sqlite", namespace="other").get("k") is None


def test_pick_and_stop_and_spec():
    assert pick([-1.0, -2.0], ["Yes", "No"]) == "Yes"
    assert pick([-1.0, -1.0], ["Yes", "No"]) is None
    assert pick(None, ["Yes", "No"]) is None
    assert truncate_at_stop("a fact\n\nnext", ("\n\n",)) == "a fact"
    assert parse_spec("some/model") == {"source": "some/model", "backend": "transformers"}
    with pytest.raises(ValueError, match="unknown backend"):
        parse_spec({"source": "x", "backend": "tgi"})


def test_openai_text_and_logprob_rules():
    assert first_option_in_text("False. It is not true.", ["True", "False"]) == 1
    assert first_option_in_text("true, although false in part", ["True", "False"]) == 0
    assert first_option_in_text("I cannot say", ["True", "False"]) is None
    chat = {
        "content": [
            {"top_logprobs": [{"token": " Yes", "logprob": -0.1}, {"token": "No", "logprob": -2.3}]}
        ]
    }
    assert _scores_from_logprobs(chat, ["Yes", "No"]) == [-0.1, -2.3]
    comp = {"top_logprobs": [{"A": -0.5}]}
    s = _scores_from_logprobs(comp, ["A", "B"])
    assert s[0] == -0.5 and math.isinf(s[1])
    assert _scores_from_logprobs({"top_logprobs": [{"C": -0.5}]}, ["A", "B"]) is None


def test_cached_lm_wraps_fingerprint(tiny_model, tmp_path):
    lm = load_lm({"source": str(tiny_model)}, cache=tmp_path / "c.sqlite")
    assert isinstance(lm, CachedLM) and lm.fingerprint.startswith("hf:sha256:")
