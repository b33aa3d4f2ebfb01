"""The transformers backend: any causal LM folder or hub id, on CPU or GPU.

Batched generation with left padding, prompts sorted by length so batches waste little padding;
dtype 'auto' (fp32 on CPU, bf16 on GPU). `choose` reads the next-token
log-probabilities of each option's first token (FActScore's True/False comparison).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from flame.lm import LM, Prompt, Sampling, truncate_at_stop

log = logging.getLogger("flame.lm.hf")

FINGERPRINT_FILE = "flame_fingerprint.json"


def model_fingerprint(source: str, revision: str | None = None) -> str:
    """Identifies the weights: our own checkpoints carry a fingerprint file; other local folders
    are identified by their config and weight files' sizes and mtimes; hub ids by id@revision."""
    path = Path(source)
    if path.is_dir():
        fp = path / FINGERPRINT_FILE
        if fp.exists():
            return json.loads(fp.read_text())["fingerprint"]
        h = hashlib.sha256()
        for f in sorted(path.iterdir()):
            if f.suffix in (".json", ".safetensors", ".bin", ".gguf"):
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return f"dir:{path.resolve()}:{h.hexdigest()[:16]}"
    return f"hub:{source}@{revision or 'main'}"


def resolve_dtype(name: str, device: str):
    """'auto' is float32 on CPU (bf16 matmuls are ~3x slower on CPUs without AVX512-BF16, such as
    the AMD Zen3 machines this project is tested on) and bfloat16 on GPUs."""
    import torch

    if name == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    return getattr(torch, name)


def render(tokenizer, prompt: Prompt) -> str:
    """The exact text the model sees: raw text, or the chat template plus the assistant prefill."""
    if prompt.messages is None:
        return prompt.text or ""
    msgs = prompt.as_messages()
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    else:  # base models have no template: a plain transcript
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in msgs) + "Assistant:"
        if prompt.prefix:
            text += " "
    return text + prompt.prefix


def option_token_ids(tokenizer, option: str) -> list[int]:
    """First-token ids under which `option` may appear next ("True" and " True")."""
    ids = set()
    for variant in (option, " " + option):
        toks = tokenizer.encode(variant, add_special_tokens=False)
        if toks:
            ids.add(toks[0])
    return sorted(ids)


class TransformersLM(LM):
    def __init__(self, spec: dict, threads: int | None = None):
        super().__init__()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.source = str(spec["source"])
        self.batch_size = int(spec.get("batch_size", 16))
        device = spec.get("device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        dtype = resolve_dtype(spec.get("dtype", "auto"), device)
        t0 = time.time()
        kw = {"revision": spec["revision"]} if spec.get("revision") else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.source, **kw)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.source, dtype=dtype, **kw)
        self.model.to(device).eval()
        self.fingerprint = "hf:" + model_fingerprint(self.source, spec.get("revision"))
        log.info("loaded %s (%s, %s) in %.1fs", self.source, device, dtype, time.time() - t0)

    def _batches(self, texts: list[str], size: int):
        """Indices grouped into batches of similar length (longest first)."""
        lengths = [len(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        for start in range(0, len(order), size):
            yield order[start : start + size]

    def _encode(self, texts: list[str]):
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def generate(self, prompts: list[Prompt], sampling: Sampling) -> list[list[str]]:
        torch = self.torch
        texts = [render(self.tokenizer, p) for p in prompts]
        out: list[list[str]] = [[] for _ in prompts]
        per_batch = max(1, self.batch_size // max(1, sampling.n))
        sample = sampling.temperature > 0
        for b, idx in enumerate(self._batches(texts, per_batch)):
            enc = self._encode([texts[i] for i in idx])
            torch.manual_seed(sampling.seed + b)
            t0 = time.time()
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc,
                    max_new_tokens=sampling.max_new_tokens,
                    do_sample=sample,
                    temperature=sampling.temperature if sample else None,
                    top_p=sampling.top_p if sample else None,
                    top_k=None,
                    num_return_sequences=sampling.n,
                    stop_strings=list(sampling.stop) or None,
                    tokenizer=self.tokenizer if sampling.stop else None,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new = gen[:, enc["input_ids"].shape[1] :]
            self.stats.seconds += time.time() - t0
            self.stats.calls += len(idx)
            self.stats.prompt_tokens += int(enc["attention_mask"].sum()) * sampling.n
            pad = self.tokenizer.pad_token_id
            self.stats.generated_tokens += int((new != pad).sum())
            decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            for j, i in enumerate(idx):
                chunk = decoded[j * sampling.n : (j + 1) * sampling.n]
                out[i] = [truncate_at_stop(t, sampling.stop) for t in chunk]
        return out

    def choose(self, prompts: list[Prompt], options: list[str]) -> list[list[float] | None]:
        torch = self.torch
        texts = [render(self.tokenizer, p) for p in prompts]
        ids = [option_token_ids(self.tokenizer, o) for o in options]
        out: list[list[float] | None] = [None] * len(prompts)
        for idx in self._batches(texts, self.batch_size):
            enc = self._encode([texts[i] for i in idx])
            t0 = time.time()
            with torch.inference_mode():
                # only the last position's logits: the LM head over every position would cost
                # a fifth of the forward pass and a vocab-sized tensor per token
                logits = self.model(**enc, logits_to_keep=1).logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            self.stats.seconds += time.time() - t0
            self.stats.calls += len(idx)
            self.stats.prompt_tokens += int(enc["attention_mask"].sum())
            for j, i in enumerate(idx):
                out[i] = [float(torch.logsumexp(logp[j, tok_ids], dim=0)) for tok_ids in ids]
        return out
