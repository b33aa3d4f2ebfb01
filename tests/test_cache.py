"""The call cache: concurrent writers, and a run killed mid-way keeps what it had finished."""

import multiprocessing as mp

import pytest

from flame.cache import Cache, make_key
from flame.lm import LM, CachedLM, Prompt, Sampling


def _writer(path: str, worker: int, n: int) -> None:
    cache = Cache(path)
    for i in range(n):
        cache.put_many({f"w{worker}-{i}": {"worker": worker, "i": i}, "shared": worker})


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "c.sqlite")
    Cache(path)  # create the table once
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 150)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    cache = Cache(path)
    found = cache.get_many(f"w{w}-{i}" for w in range(4) for i in range(150))
    assert len(found) == 600 and found["w3-149"] == {"worker": 3, "i": 149}
    assert cache.get("shared") in range(4)
    assert len(cache) == 601


def test_make_key_is_canonical():
    assert make_key({"a": 1, "b": 2}) == make_key({"b": 2, "a": 1})
    assert make_key("gen", "m", [1]) != make_key("gen", "m", [2])


class Counting(LM):
    """A deterministic scripted backend: echoes prompts, fails after `fail_after` calls."""

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.fingerprint = "counting"
        self.fail_after = fail_after
        self.seen: list[str] = []

    def generate(self, prompts, sampling):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise RuntimeError("killed")
        self.seen += [p.text for p in prompts]
        return [[f"{p.text}#{i}" for i in range(sampling.n)] for p in prompts]

    def choose(self, prompts, options):
        self.seen += [p.text for p in prompts]
        return [[0.0, -1.0] for _ in prompts]

    def loglikelihood(self, pairs):
        self.seen += [c + x for c, x in pairs]
        return [-float(len(x)) for _, x in pairs]


def test_loglikelihood_is_cached_per_pair(tmp_path):
    inner = Counting()
    lm = CachedLM(inner, Cache(tmp_path / "c.sqlite"), chunk=2)
    pairs = [("Paris is in", " France"), ("Paris is in", " Spain!"), ("a", "b")]
    assert lm.loglikelihood(pairs) == [-7.0, -7.0, -1.0]
    assert lm.loglikelihood([pairs[2], ("a", "bc")]) == [-1.0, -2.0]
    assert inner.seen == ["Paris is in France", "Paris is in Spain!", "ab", "abc"]


def test_killed_run_keeps_finished_chunks(tmp_path):
    prompts = [Prompt(text=f"p{i}") for i in range(10)]
    crashing = CachedLM(Counting(fail_after=4), Cache(tmp_path / "c.sqlite"), chunk=4)
    with pytest.raises(RuntimeError, match="killed"):
        crashing.generate(prompts, Sampling(n=2))
    resumed = Counting()
    lm = CachedLM(resumed, Cache(tmp_path / "c.sqlite"), chunk=4)
    out = lm.generate(prompts, Sampling(n=2))
    assert out[9] == ["p9#0", "p9#1"]
    assert len(resumed.seen) == 6  # the first chunk of 4 was not asked again
    lm.generate(prompts, Sampling(n=2))
    assert len(resumed.seen) == 6  # and a full re-run asks nothing


def test_choose_cache_and_changed_prompt(tmp_path):
    inner = Counting()
    lm = CachedLM(inner, Cache(tmp_path / "c.sqlite"))
    lm.choose([Prompt(text="a"), Prompt(text="b")], ["True", "False"])
    lm.choose([Prompt(text="a"), Prompt(text="c")], ["True", "False"])
    assert inner.seen == ["a", "b", "c"]
    lm.choose([Prompt(text="a")], ["Yes", "No"])  # other options: another question
    assert inner.seen[-1] == "a"


def test_choose_scores_of_an_older_option_rule_are_not_reused(tmp_path):
    """A backend whose way of reading option scores changed (LM.choose_rule) recomputes."""
    cache = Cache(tmp_path / "c.sqlite")
    old = Counting()
    old.choose_rule = 1
    CachedLM(old, cache).choose([Prompt(text="a")], ["1", "2"])
    new = Counting()
    CachedLM(new, cache).choose([Prompt(text="a")], ["1", "2"])
    assert new.seen == ["a"]
    again = Counting()
    CachedLM(again, cache).choose([Prompt(text="a")], ["1", "2"])
    assert again.seen == []
