"""Run by tests/test_vllm.py with the vLLM environment's python (vLLM pins its own transformers,
so it cannot share the test process): one vLLM engine answers every check, and the answers go
to a JSON file that the tests compare with the transformers backend's.

    .venv-vllm/bin/python tests/vllm_checks.py MODEL_DIR OUT.json CACHE.sqlite

The prompts are defined here, without importing vLLM, so the tests can import them.
"""

from __future__ import annotations

import json
import sys
import time

# imported before vLLM starts, as in flame.rm_fact / flame.evaluate: bm25s imports numba when it
# is installed, and numba's llvmlite breaks vLLM's worker start-up (the Makefile removes numba)
import flame.retrieval  # noqa: F401

PASSAGES = (
    "Title: Marie Curie\nText: Marie Curie was a Polish and naturalised-French physicist and "
    "chemist who conducted pioneering research on radioactivity. She was the first woman to win "
    "a Nobel Prize and the only person to win Nobel Prizes in two scientific fields.\n\n"
)
FACTS = [
    "Marie Curie was a physicist.",
    "Marie Curie won two Nobel Prizes.",
    "Marie Curie was born in Brazil.",
    "Marie Curie was a famous footballer.",
    "She researched radioactivity.",
    "She was the first woman to win a Nobel Prize.",
]
PEOPLE = ["Ada Lovelace", "Alan Turing", "Marie Curie", "Isaac Newton", "Frida Kahlo", "Pelé"]
MAX_NEW_TOKENS = 32
CHOICE = (
    "Which city is the capital of France?\nA. Berlin\nB. Paris\nC. Rome\n"
    "Answer with A, B or C.\nAnswer:"
)
PAIRS = [
    ("The capital of France is", " Paris"),
    ("The capital of France is", " Berlin"),
    ("Marie Curie won the Nobel Prize in", " physics and chemistry."),
    ("Q: What is two plus two?\nA:", " four"),
]


# the alignment-tax check (Table 9): the embedded MMLU / GSM8K sets, a few items
TAX_SOURCES = {"mmlu": "embedded", "gsm8k": "embedded"}
TAX_SHOTS = {"mmlu": 5, "gsm8k": 8}
TAX_MAX_GEN_TOKS = 32
TAX_LIMIT = 4


def prompts():
    """(greedy chat prompts, True/False verification prompts, a multiple-choice prompt)."""
    from flame.lm import Prompt

    chats = [Prompt.chat(f"Tell me a bio of {p}.") for p in PEOPLE]
    verify = [Prompt(text=f"{PASSAGES}Input: {f} True or False?\nOutput:") for f in FACTS]
    return chats, verify, [Prompt(text=CHOICE)]


def main(model: str, out: str, cache: str) -> None:
    from flame.lm import Sampling, load_lm

    chats, verify, choice = prompts()
    t0 = time.time()
    # one thread: two OpenMP threads on a busy 2-core machine wait on each other at every
    # barrier (measured 12.6 vs 113 tokens/s with other jobs running)
    spec = {"source": model, "backend": "vllm", "dtype": "float32"}
    lm = load_lm(spec, cache=cache, threads=1)
    res: dict = {"fingerprint": lm.fingerprint, "load_s": time.time() - t0}
    import vllm

    res["vllm_version"] = vllm.__version__
    t0 = time.time()
    res["greedy"] = lm.generate(chats, Sampling(max_new_tokens=MAX_NEW_TOKENS))
    res["greedy_s"] = time.time() - t0
    res["greedy_tokens"] = lm.stats.generated_tokens
    res["verify"] = lm.choose(verify, ["True", "False"])
    res["choice"] = lm.choose(choice, ["A", "B", "C"])
    res["loglikelihood"] = lm.loglikelihood(PAIRS)
    sampled = Sampling(max_new_tokens=12, temperature=0.8, top_p=0.95, n=3, seed=1)
    res["sampled"] = lm.generate(chats[:3], sampled)
    # the same request again, past the cache (the engine itself must reproduce it), and in a
    # different batch: seeded samples do not depend on what else is in the batch
    res["sampled_again"] = lm.inner.generate(chats[2::-1], sampled)[::-1]
    res["sampled_seed2"] = lm.inner.generate(chats[:3], Sampling(**{**sampled.__dict__, "seed": 2}))
    res["calls"] = lm.stats.calls
    # Table 9 through lm-eval's own vLLM model (a second engine, after the first is gone)
    del lm
    from flame import alignment_tax

    res["alignment_tax"] = alignment_tax.evaluate(
        spec, TAX_SOURCES, TAX_SHOTS, TAX_MAX_GEN_TOKS, TAX_LIMIT, 8, threads=1
    )
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":  # vLLM spawns its engine processes: keep this guard
    main(*sys.argv[1:4])
