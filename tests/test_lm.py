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


def test_prefix_groups():
    from flame.lm.hf import prefix_groups

    a = [1] * 60 + [2, 3]
    b = [1] * 60 + [4]
    c = [1] * 60 + [5, 6, 7]
    d = [9, 9, 9]
    groups = prefix_groups([a, b, c, d], min_prefix=48)
    assert sorted((p, sorted(m)) for p, m in groups) == [(0, [3]), (60, [0, 1, 2])]
    # a prompt that is entirely the prefix of another keeps one token of its own
    groups = prefix_groups([[1] * 60, [1] * 70], min_prefix=48)
    assert groups == [(59, [0, 1])]
    # a newcomer that would halve the shared prefix starts its own group
    e, f = [1] * 200 + [2], [1] * 200 + [3]
    g = [1] * 60 + [7] * 150
    plens = sorted(p for p, _ in prefix_groups([e, f, g], min_prefix=48))
    assert plens == [0, 200]


def test_shared_prefix_choose_matches_plain(tiny_model):
    lm = load_lm({"source": str(tiny_model), "min_shared_prefix": 8, "dtype": "float32"})
    context = "Title: Marie Curie\nText: " + "Marie Curie was a Polish physicist. " * 6
    facts = ["She won two Nobel prizes.", "She was born in 1867 in Warsaw, Poland.", "No."]
    prompts = [Prompt(text=f"{context}\n\nInput: {f} True or False?\nOutput:") for f in facts]
    shared = lm.choose(prompts, ["True", "False"])
    lm.min_shared_prefix = 10**6  # forces every prompt through the plain path
    plain = lm.choose(prompts, ["True", "False"])
    for s, p in zip(shared, plain, strict=True):
        assert s == pytest.approx(p, abs=1e-4)


def test_packed_prefix_groups_choose_matches_plain(tiny_model):
    """Several groups with prefixes of different lengths, run as one packed batch."""
    lm = load_lm(
        {"source": str(tiny_model), "min_shared_prefix": 8, "batch_size": 16, "dtype": "float32"}
    )
    contexts = [
        "Title: Marie Curie\nText: " + "Marie Curie was a Polish physicist. " * 6,
        "Title: Rome\nText: " + "Rome is the capital city of Italy and a very old city. " * 9,
    ]
    facts = ["It is old.", "She won two Nobel prizes in physics and chemistry.", "No."]
    prompts = [
        Prompt(text=f"{c}\n\nInput: {f} True or False?\nOutput:") for c in contexts for f in facts
    ]
    prompts.append(Prompt(text="A lone prompt: True or False?"))
    packed = lm.choose(prompts, ["True", "False"])
    lm.min_shared_prefix = 10**6
    plain = lm.choose(prompts, ["True", "False"])
    for s, p in zip(packed, plain, strict=True):
        assert s == pytest.approx(p, abs=1e-4)


def test_stop_criteria_look_only_at_new_text(tiny_model):
    import torch
    from transformers import AutoTokenizer

    from flame.lm.hf import stop_criteria

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompt = tok.encode("Facts:\n\nPlease list them", add_special_tokens=False)  # stop in prompt
    rows = [
        tok.encode(t, add_special_tokens=False) for t in [" one two\n\nthree", " one two three"]
    ]
    width = max(map(len, rows))
    batch = torch.tensor([prompt + [tok.eos_token_id] * (width - len(r)) + r for r in rows])
    crit = stop_criteria(tok, ("\n\n", "Please"), len(prompt))
    assert crit(batch, None).tolist() == [True, False]
    assert stop_criteria(tok, (), len(prompt)) is None


def test_pack_groups():
    from flame.lm.hf import pack_groups

    chunks = [(90, [0, 1, 2]), (10, [3, 4]), (50, [5]), (60, list(range(6, 14)))]
    packs = pack_groups(chunks, max_rows=6)
    assert [[p for p, _ in pack] for pack in packs] == [[10, 50], [60], [90]]
    assert all(sum(len(m) for _, m in pack) <= 6 or len(pack) == 1 for pack in packs)
    assert sorted(i for pack in packs for _, m in pack for i in m) == list(range(14))


def test_shared_prefix_generate_matches_plain(tiny_model):
    lm = load_lm({"source": str(tiny_model), "min_shared_prefix": 8, "batch_size": 8})
    demos = "Question: what is two plus two?\nAnswer: four.\n\n" * 4
    prompts = [Prompt(text=f"{demos}Question: {q}\nAnswer:") for q in ["hi?", "a longer one?", "x"]]
    greedy = Sampling(max_new_tokens=6, temperature=0.0, n=2)
    shared = lm.generate(prompts, greedy)
    lm.min_shared_prefix = 10**6
    assert lm.generate(prompts, greedy) == shared
    assert all(len(o) == 2 and o[0] == o[1] for o in shared)  # greedy: samples agree


def test_int8_quantization_has_its_own_fingerprint_and_close_scores(tiny_model):
    plain = load_lm({"source": str(tiny_model), "dtype": "float32"})
    q = load_lm({"source": str(tiny_model), "quantize": "int8"})
    assert q.fingerprint == plain.fingerprint + "+int8"  # cached fp32 answers are not reused
    assert "DynamicQuantizedLinear" in repr(q.model.model.layers[0].mlp.up_proj)
    prompts = [Prompt(text=f"Input: fact {i} True or False?\nOutput:") for i in range(3)]
    opts = ["True", "False"]
    for a, b in zip(q.choose(prompts, opts), plain.choose(prompts, opts), strict=True):
        assert a == pytest.approx(b, abs=0.5)
    with pytest.raises(ValueError, match="quantize"):
        load_lm({"source": str(tiny_model), "quantize": "int4"})


def test_n_samples_prefill_each_prompt_once_and_match_single_greedy(tiny_model):
    lm = load_lm({"source": str(tiny_model), "min_shared_prefix": 10**6, "batch_size": 8})
    texts = ["Question: hi?\nAnswer:", "A much longer prompt here, yes:", "x"]
    prompts = [Prompt(text=t) for t in texts]
    one = lm.generate(prompts, Sampling(max_new_tokens=6, temperature=0.0, n=1))
    two = lm.generate(prompts, Sampling(max_new_tokens=6, temperature=0.0, n=2))
    assert two == [[o[0], o[0]] for o in one]
    sampled = lm.generate(prompts, Sampling(max_new_tokens=6, temperature=1.0, n=3, seed=1))
    assert all(len(o) == 3 for o in sampled)


def test_dtype_auto_follows_the_cpus_bf16_support(tmp_path, monkeypatch):
    import torch

    from flame import cpu
    from flame.lm import hf

    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    model, flags = cpu.cpu_model_and_flags(str(info))
    assert model == "Some Xeon" and cpu.native_bf16(flags)
    assert not cpu.native_bf16(frozenset({"avx2", "avx512f"}))  # AVX-512 without BF16
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    assert hf.resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    assert hf.resolve_dtype("auto", "cpu") == torch.float32
    assert hf.resolve_dtype("auto", "cuda") == torch.bfloat16
    assert hf.resolve_dtype("float16", "cpu") == torch.float16


def test_fingerprint_includes_dtype(tiny_model):
    fp32 = load_lm({"source": str(tiny_model), "dtype": "float32"})
    bf16 = load_lm({"source": str(tiny_model), "dtype": "bfloat16"})
    assert fp32.fingerprint.endswith(":float32") and bf16.fingerprint.endswith(":bfloat16")
    assert fp32.fingerprint.rsplit(":", 1)[0] == bf16.fingerprint.rsplit(":", 1)[0]


def test_loglikelihood_sums_continuation_token_logprobs(tiny_model):
    import torch

    lm = load_lm({"source": str(tiny_model), "dtype": "float32", "batch_size": 4})
    pairs = [
        ("The capital of France is", " Paris"),
        ("The capital of France is", " a city on the Seine."),
        ("Q: 2+2?\nA:", " 4"),
        ("x", ""),
        ("A much longer context that needs more tokens than the others, surely", " yes"),
    ]
    batched = lm.loglikelihood(pairs)
    assert batched[3] == 0.0 and all(v < 0 for i, v in enumerate(batched) if i != 3)
    tok = lm.tokenizer
    for (context, continuation), value in zip(pairs, batched, strict=True):
        start = len(tok.encode(context, add_special_tokens=False))
        ids = tok.encode(context + continuation, add_special_tokens=False)
        with torch.inference_mode():
            logp = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1)
        expected = sum(float(logp[j - 1, ids[j]]) for j in range(start, len(ids)))
        assert value == pytest.approx(expected, abs=1e-4)
    # an empty context is conditioned on the end-of-text token, as lm-eval does
    eos = lm.tokenizer.eos_token
    empty, on_eos = lm.loglikelihood([("", " text"), (eos, " text")])
    assert empty == pytest.approx(on_eos, abs=1e-4) and empty < 0
