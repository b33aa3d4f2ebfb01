"""The OpenAI-compatible HTTP backend: judges and verifiers behind vLLM, TGI, llama.cpp or an API.

Spec keys: base_url (e.g. http://localhost:8000/v1), model, api_key_env (the NAME of the
environment variable holding the key; the key itself never goes in config, logs or results),
max_concurrency, timeout, max_retries. Chat prompts go to /chat/completions, raw text to
/completions. `choose` reads top log-probs when the server returns them and otherwise parses the
answer's text: the option named first wins (FActScore's rule for API verifiers). `loglikelihood`
needs a server that echoes prompt log-probs on /completions (vLLM serve, llama.cpp server, TGI's
OpenAI route): it sends context + continuation with echo, logprobs 1, max_tokens 1, and sums
the log-probs of the tokens that end after the context's last character.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from flame.lm import LM, Prompt, Sampling, truncate_at_stop

log = logging.getLogger("flame.lm.openai")


def first_option_in_text(text: str, options: list[str]) -> int | None:
    """Index of the option named first in `text` (whole words, case-insensitive), else None."""
    best = None
    for i, opt in enumerate(options):
        m = re.search(rf"\b{re.escape(opt)}\b", text, flags=re.IGNORECASE)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), i)
    return None if best is None else best[1]


class OpenAILM(LM):
    def __init__(self, spec: dict):
        super().__init__()
        self.base_url = spec.get("base_url", "http://localhost:8000/v1").rstrip("/")
        self.model = spec.get("model") or spec.get("source")
        if not self.model:
            raise ValueError("backend 'openai' needs 'model' (the served model's name)")
        key_env = spec.get("api_key_env", "OPENAI_API_KEY")
        self._key = os.environ.get(key_env, "")
        self.concurrency = int(spec.get("max_concurrency", 8))
        self.timeout = float(spec.get("timeout", 120))
        self.retries = int(spec.get("max_retries", 5))
        self.fingerprint = f"openai:{self.base_url}:{self.model}"

    def _post(self, route: str, body: dict) -> dict:
        data = json.dumps({"model": self.model, **body}).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(self.base_url + route, data=data, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as err:
                retryable = err.code in (429, 500, 502, 503, 504)
                if not retryable or attempt == self.retries:
                    detail = err.read().decode(errors="replace")[:300]
                    raise RuntimeError(
                        f"{self.base_url}{route}: HTTP {err.code}: {detail}"
                    ) from None
            except (urllib.error.URLError, TimeoutError) as err:
                if attempt == self.retries:
                    raise RuntimeError(f"{self.base_url}{route}: {err}") from None
            time.sleep(min(30.0, 2.0**attempt))
        raise AssertionError("unreachable")

    def _request(self, prompt: Prompt, sampling: Sampling, extra: dict | None = None) -> dict:
        body = {
            "max_tokens": sampling.max_new_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "n": sampling.n,
            "seed": sampling.seed,
            **({"stop": list(sampling.stop)} if sampling.stop else {}),
            **(extra or {}),
        }
        if prompt.messages is None:
            return self._post(
                "/completions", {"prompt": (prompt.text or "") + prompt.prefix, **body}
            )
        return self._post("/chat/completions", {"messages": prompt.as_messages(), **body})

    def plan(self, prompts: list[Prompt], sampling: Sampling) -> dict:
        """What a call will cost, announced before it is made: requests, prompt tokens (estimated
        at 4 characters a token) and the most completion tokens it can return."""
        chars = sum(
            len(p.text or "") + len(p.prefix) + sum(len(c) for _, c in p.messages or ())
            for p in prompts
        )
        return {
            "requests": len(prompts),
            "prompt_tokens_estimate": chars // 4,
            "max_completion_tokens": len(prompts) * sampling.n * sampling.max_new_tokens,
        }

    def _map(self, fn, prompts: list[Prompt], sampling: Sampling):
        self.plan_log(prompts, sampling)
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(fn, prompts))

    def plan_log(self, prompts: list[Prompt], sampling: Sampling) -> None:
        plan = self.plan(prompts, sampling)
        log.info(
            "openai: about to make %d requests to %s (model %s): ~%d prompt tokens, at most %d "
            "completion tokens",
            plan["requests"], self.base_url, self.model, plan["prompt_tokens_estimate"],
            plan["max_completion_tokens"],
        )  # fmt: skip

    @staticmethod
    def _text(choice: dict) -> str:
        return choice.get("message", {}).get("content") or choice.get("text") or ""

    def _count(self, resp: dict) -> None:
        usage = resp.get("usage") or {}
        self.stats.calls += 1
        self.stats.prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.stats.generated_tokens += int(usage.get("completion_tokens", 0))

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[str]]:
        t0 = time.time()

        def one(p: Prompt) -> list[str]:
            resp = self._request(p, sampling)
            self._count(resp)
            return [truncate_at_stop(self._text(c), sampling.stop) for c in resp["choices"]]

        out = self._map(one, prompts, sampling)
        self.stats.seconds += time.time() - t0
        return out

    def choose(self, prompts: list[Prompt], options: list[str]) -> list[list[float] | None]:
        sampling = Sampling(max_new_tokens=8, temperature=0.0)
        t0 = time.time()

        def one(p: Prompt) -> list[float] | None:
            chat = p.messages is not None
            extra = {"logprobs": True, "top_logprobs": 20} if chat else {"logprobs": 20}
            resp = self._request(p, sampling, extra)
            self._count(resp)
            choice = resp["choices"][0]
            scores = _scores_from_logprobs(choice.get("logprobs"), options)
            if scores is not None:
                return scores
            i = first_option_in_text(self._text(choice), options)
            return (
                None if i is None else [0.0 if j == i else -math.inf for j in range(len(options))]
            )

        out = self._map(one, prompts, sampling)
        self.stats.seconds += time.time() - t0
        return out

    def loglikelihood(self, pairs) -> list[float]:
        sampling = Sampling(max_new_tokens=1, temperature=0.0)
        t0 = time.time()

        def one(pair: tuple[str, str]) -> float:
            context, continuation = pair
            text = context + continuation
            resp = self._post(
                "/completions",
                {"prompt": text, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1},
            )
            self._count(resp)
            lp = resp["choices"][0].get("logprobs")
            if not lp or "text_offset" not in lp:
                raise RuntimeError(
                    f"{self.base_url}/completions returned no echoed prompt log-probs: the "
                    "server must support echo=true with logprobs for loglikelihood"
                )
            return continuation_logprob(lp, len(context), len(text))

        pairs = list(pairs)
        self.plan_log([Prompt(text=c + x) for c, x in pairs], sampling)
        with ThreadPoolExecutor(self.concurrency) as pool:
            out = list(pool.map(one, pairs))
        self.stats.seconds += time.time() - t0
        return out


def continuation_logprob(lp: dict, context_chars: int, total_chars: int) -> float:
    """Sum of the echoed prompt tokens' log-probs over the continuation: the tokens that end
    after the context's `context_chars` characters and start before `total_chars` (the end of
    the prompt; the one generated token is left out)."""
    tokens, offsets, logprobs = lp["tokens"], lp["text_offset"], lp["token_logprobs"]
    total = 0.0
    for tok, start, value in zip(tokens, offsets, logprobs, strict=True):
        if start + len(tok) <= context_chars or start >= total_chars:
            continue
        if value is None:
            raise ValueError(f"the server returned no log-prob for prompt token {tok!r}")
        total += value
    return total


def _scores_from_logprobs(lp: dict | None, options: list[str]) -> list[float] | None:
    """Option scores from the first generated token's top log-probs (chat or completions shape)."""
    if not lp:
        return None
    if lp.get("content"):  # chat: content[0].top_logprobs = [{token, logprob}]
        top = {t["token"].strip().lower(): t["logprob"] for t in lp["content"][0]["top_logprobs"]}
    elif lp.get("top_logprobs"):  # completions: top_logprobs[0] = {token: logprob}
        top = {k.strip().lower(): v for k, v in lp["top_logprobs"][0].items()}
    else:
        return None
    scores = [top.get(o.lower(), -math.inf) for o in options]
    return None if all(s == -math.inf for s in scores) else scores
