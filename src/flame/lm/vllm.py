"""The vLLM backend (GPUs): offline batched inference with `vllm.LLM`.

Install the `gpu` extra (or envs/vllm.yaml). vLLM is imported only here, so CPU machines never
need it. Spec keys: source, dtype, tensor_parallel_size, gpu_memory_utilization, max_model_len.
"""

from __future__ import annotations

import logging
import math
import time

from flame.lm import LM, Prompt, Sampling, truncate_at_stop
from flame.lm.hf import model_fingerprint, option_token_ids, render

log = logging.getLogger("flame.lm.vllm")


class VLLMLM(LM):
    def __init__(self, spec: dict):
        super().__init__()
        try:
            from vllm import LLM
        except ImportError as err:  # pragma: no cover - GPU machines only
            raise ImportError(
                "backend 'vllm' needs vLLM: pip install -e '.[gpu]' or use envs/vllm.yaml"
            ) from err
        t0 = time.time()
        kw = {
            k: spec[k]
            for k in ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "revision")
            if spec.get(k) is not None
        }
        self.llm = LLM(model=str(spec["source"]), dtype=spec.get("dtype", "bfloat16"), **kw)
        self.tokenizer = self.llm.get_tokenizer()
        self.fingerprint = "vllm:" + model_fingerprint(str(spec["source"]), spec.get("revision"))
        log.info("loaded %s with vLLM in %.1fs", spec["source"], time.time() - t0)

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
        t0 = time.time()
        outs = self.llm.generate([render(self.tokenizer, p) for p in prompts], params)
        self.stats.seconds += time.time() - t0
        self.stats.calls += len(prompts)
        result = []
        for o in outs:
            self.stats.prompt_tokens += len(o.prompt_token_ids) * sampling.n
            self.stats.generated_tokens += sum(len(c.token_ids) for c in o.outputs)
            result.append([truncate_at_stop(c.text, sampling.stop) for c in o.outputs])
        return result

    def choose(self, prompts: list[Prompt], options: list[str]) -> list[list[float] | None]:
        from vllm import SamplingParams

        ids = [option_token_ids(self.tokenizer, o) for o in options]
        wanted = sorted({i for group in ids for i in group})
        # ask for the log-probs of the option tokens whether or not they are in the top-k
        params = SamplingParams(
            max_tokens=1, temperature=0.0, logprobs=20, allowed_token_ids=wanted
        )
        t0 = time.time()
        outs = self.llm.generate([render(self.tokenizer, p) for p in prompts], params)
        self.stats.seconds += time.time() - t0
        self.stats.calls += len(prompts)
        result: list[list[float] | None] = []
        for o in outs:
            lp = o.outputs[0].logprobs[0] if o.outputs[0].logprobs else {}
            scores = []
            for group in ids:
                vals = [lp[t].logprob for t in group if t in lp]
                scores.append(math.log(sum(math.exp(v) for v in vals)) if vals else -math.inf)
            result.append(scores)
        return result
