"""The transformers backend: any causal LM folder or hub id, on CPU or GPU.

Batched generation with left padding, prompts sorted by length so batches waste little padding;
dtype 'auto' (bf16 on GPUs and on CPUs with native bf16, fp32 on other CPUs). `choose` reads
the next-token log-probabilities of each option's first token (FActScore's True/False comparison).
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
    """'auto' is bfloat16 on GPUs and on CPUs that compute bf16 natively (AVX512-BF16 or AMX:
    1.5-2x faster than fp32 there), float32 on other CPUs (bf16 is emulated on AVX2-only CPUs
    such as AMD Zen3: ~3x slower)."""
    import torch

    from flame.cpu import native_bf16

    if name == "auto":
        return torch.float32 if device == "cpu" and not native_bf16() else torch.bfloat16
    return getattr(torch, name)


def quantize_int8(model, device: str):
    """Dynamic int8 quantization of every Linear layer (weights int8, activations quantized per
    batch): ~1.5-2x faster CPU inference for small models, at a small cost in accuracy. CPU only."""
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    if device != "cpu":
        raise ValueError("model spec key 'quantize: int8' is for CPU inference (device cpu)")
    with warnings.catch_warnings():  # torch's notice that quantized tensors are deprecated
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


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
    """First-token ids under which `option` may appear next ("True" and " True"). A variant
    whose first token is bare whitespace (SmolLM2 splits " 3" into " " + "3") is left out: that
    token starts every option alike, and would give each the same score."""
    ids = set()
    for variant in (option, " " + option):
        toks = tokenizer.encode(variant, add_special_tokens=False)
        if toks and tokenizer.decode(toks[:1]).strip():
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
        self.min_shared_prefix = int(spec.get("min_shared_prefix", 48))
        device = spec.get("device", "auto")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        quantize = spec.get("quantize", "none")
        dtype_name = spec.get("dtype", "auto")
        if quantize == "int8":  # dynamic int8 quantization replaces fp32 Linear layers
            if dtype_name not in ("auto", "float32"):
                raise ValueError(
                    f"model spec: 'quantize: int8' needs dtype float32, not {dtype_name}"
                )
            dtype_name = "float32"
        dtype = resolve_dtype(dtype_name, device)
        t0 = time.time()
        kw = {"revision": spec["revision"]} if spec.get("revision") else {}
        self.tokenizer = AutoTokenizer.from_pretrained(self.source, **kw)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(self.source, dtype=dtype, **kw)
        self.model.to(device).eval()
        # the dtype changes outputs: calls cached under another dtype must not be reused
        self.dtype = str(dtype).removeprefix("torch.")
        self.fingerprint = f"hf:{model_fingerprint(self.source, spec.get('revision'))}:{self.dtype}"
        if quantize == "int8":
            self.model = quantize_int8(self.model, device)
            self.fingerprint += "+int8"  # other outputs: cached calls must not be shared
        elif quantize != "none":
            raise ValueError(f"model spec key 'quantize': unknown value {quantize!r} (none, int8)")
        log.info(
            "loaded %s (%s, %s, quantize %s) in %.1fs",
            self.source, device, dtype, quantize, time.time() - t0,
        )  # fmt: skip

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
        """`sampling.n` completions per prompt. Prompts sharing a long token prefix (few-shot
        demos, a judge's rubric) are grouped: the prefix is run once, its KV cache is repeated
        over the batch, and only the rest of each prompt is prefilled."""
        texts = [render(self.tokenizer, p) for p in prompts]
        ids = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        out: list[list[str]] = [[] for _ in prompts]
        per_batch = max(1, self.batch_size // max(1, sampling.n))
        singles = []
        for plen, members in prefix_groups(ids, self.min_shared_prefix):
            if not plen or len(members) < 2:
                singles.extend(members)
                continue
            members = sorted(members, key=lambda i: len(ids[i]))
            for start in range(0, len(members), per_batch):
                part = members[start : start + per_batch]
                outs = self._generate_rows(ids, part, sampling, plen, seed=sampling.seed + start)
                for i, texts_i in zip(part, outs, strict=True):
                    out[i] = texts_i
        order = sorted(singles, key=lambda i: -len(ids[i]))
        for b, start in enumerate(range(0, len(order), per_batch)):
            part = order[start : start + per_batch]
            outs = self._generate_rows(ids, part, sampling, 0, seed=sampling.seed + b)
            for i, texts_i in zip(part, outs, strict=True):
                out[i] = texts_i
        return out

    def _generate_rows(self, ids, part: list[int], sampling: Sampling, plen: int, seed: int):
        """Generate for prompts `part` (n rows each); with plen > 0 their first plen tokens are
        shared and prefilled once. Rows are [prefix][left padding][rest of the prompt]: the
        attention mask hides the padding and position ids follow the mask, so each row sees
        exactly its own prompt."""
        torch = self.torch
        n = sampling.n
        rows = [ids[i][plen:] for i in part for _ in range(n)]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        inp = torch.full((len(rows), plen + width), pad)
        mask = torch.zeros((len(rows), plen + width), dtype=torch.long)
        if plen:
            inp[:, :plen] = torch.tensor(ids[part[0]][:plen])
            mask[:, :plen] = 1
        for r, rest in enumerate(rows):
            inp[r, plen + width - len(rest) :] = torch.tensor(rest)
            mask[r, plen + width - len(rest) :] = 1
        inp, mask = inp.to(self.device), mask.to(self.device)
        sample = sampling.temperature > 0
        t0 = time.time()
        with torch.inference_mode():
            kw = {}
            if plen:
                prefix = inp[:1, :plen]
                cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1)
                kw["past_key_values"] = cache.past_key_values
                kw["past_key_values"].batch_repeat_interleave(len(rows))
            elif n > 1 and width > 1:
                # n samples of one prompt: prefill each prompt once (all but its last token,
                # position ids following the mask as generate's do), then repeat the cache
                one, m1 = inp[::n, :-1], mask[::n, :-1]
                pos = (m1.cumsum(-1) - 1).clamp(min=0)
                cache = self.model(
                    input_ids=one, attention_mask=m1, position_ids=pos, use_cache=True,
                    logits_to_keep=1,
                ).past_key_values  # fmt: skip
                cache.batch_repeat_interleave(n)
                kw["past_key_values"] = cache
            torch.manual_seed(seed)
            gen = self.model.generate(
                input_ids=inp,
                attention_mask=mask,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sample,
                temperature=sampling.temperature if sample else None,
                top_p=sampling.top_p if sample else None,
                top_k=None,
                stopping_criteria=stop_criteria(self.tokenizer, sampling.stop, inp.shape[1]),
                pad_token_id=pad,
                **kw,
            )
        new = gen[:, inp.shape[1] :]
        self.stats.seconds += time.time() - t0
        self.stats.calls += len(part)
        self.stats.prompt_tokens += (plen + sum(len(r) for r in rows)) if plen else int(mask.sum())
        self.stats.generated_tokens += int((new != pad).sum())
        decoded = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [
            [truncate_at_stop(t, sampling.stop) for t in decoded[j * n : (j + 1) * n]]
            for j in range(len(part))
        ]

    def choose(self, prompts: list[Prompt], options: list[str]) -> list[list[float] | None]:
        """Next-token log-probs of each option. Prompts that share a long token prefix (FActScore
        verification: the same passages, a different fact) are grouped; each prefix is run once
        and only the suffixes are run against copies of its KV cache. Groups are packed together
        (up to batch_size rows), so many small groups cost two forward passes, not two each."""
        texts = [render(self.tokenizer, p) for p in prompts]
        ids = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        option_ids = [option_token_ids(self.tokenizer, o) for o in options]
        out: list[list[float] | None] = [None] * len(prompts)
        chunks, singles = [], []
        for plen, members in prefix_groups(ids, self.min_shared_prefix):
            if plen and len(members) > 1:
                step = self.batch_size
                chunks.extend((plen, members[s : s + step]) for s in range(0, len(members), step))
            else:
                singles.extend(members)
        for pack in pack_groups(chunks, self.batch_size):
            rows = [i for _, members in pack for i in members]
            for i, row in zip(rows, self._choose_shared(ids, pack), strict=True):
                out[i] = self._option_scores(row, option_ids)
        for idx in self._batches([texts[i] for i in singles], self.batch_size):
            part = [singles[j] for j in idx]
            for i, row in zip(part, self._choose_plain([texts[i] for i in part]), strict=True):
                out[i] = self._option_scores(row, option_ids)
        return out

    def features(self, prompts: list[Prompt]) -> list[list[float]]:
        """The mean over each prompt's tokens of the last and of the middle layer's hidden
        states, concatenated (fp32; padding excluded)."""
        torch = self.torch
        texts = [render(self.tokenizer, p) for p in prompts]
        out: list[list[float]] = [[] for _ in prompts]
        for idx in self._batches(texts, self.batch_size):
            enc = self._encode([texts[i] for i in idx])
            with torch.inference_mode():
                hs = self.model(**enc, output_hidden_states=True, logits_to_keep=1).hidden_states
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = [(hs[n].float() * mask).sum(1) / mask.sum(1) for n in (-1, len(hs) // 2)]
            for i, row in zip(idx, torch.cat(pooled, dim=-1).cpu().tolist(), strict=True):
                out[i] = row
        return out

    def _option_scores(self, logp, option_ids: list[list[int]]) -> list[float]:
        torch = self.torch
        return [float(torch.logsumexp(logp[tok_ids], dim=0)) for tok_ids in option_ids]

    def _choose_plain(self, texts: list[str]):
        """Log-softmax of the next token after each text (left-padded batch)."""
        torch = self.torch
        enc = self._encode(texts)
        t0 = time.time()
        with torch.inference_mode():
            # only the last position's logits: the LM head over every position would cost
            # a fifth of the forward pass and a vocab-sized tensor per token
            logits = self.model(**enc, logits_to_keep=1).logits[:, -1, :].float()
        self.stats.seconds += time.time() - t0
        self.stats.calls += len(texts)
        self.stats.prompt_tokens += int(enc["attention_mask"].sum())
        return torch.log_softmax(logits, dim=-1)

    def _choose_shared(self, ids: list[list[int]], pack: list[tuple[int, list[int]]]):
        """Log-softmax of the next token for groups of prompts, each group sharing its first
        plen tokens. The G prefixes run as one left-padded batch; their KV caches are copied to
        their members' rows, which are [prefix][left padding][suffix]: every row ends at the last
        position, so the LM head runs once per row; the mask hides the padding and position ids
        skip it."""
        torch = self.torch
        t0 = time.time()
        pad = self.tokenizer.pad_token_id
        pmax = max(plen for plen, _ in pack)
        pre = torch.full((len(pack), pmax), pad)
        pmask = torch.zeros((len(pack), pmax), dtype=torch.long)
        ppos = torch.zeros((len(pack), pmax), dtype=torch.long)
        owner, suffixes = [], []
        for g, (plen, members) in enumerate(pack):
            pre[g, pmax - plen :] = torch.tensor(ids[members[0]][:plen])
            pmask[g, pmax - plen :] = 1
            ppos[g, pmax - plen :] = torch.arange(plen)
            owner += [g] * len(members)
            suffixes += [ids[i][plen:] for i in members]
        width = max(len(x) for x in suffixes)
        inp = torch.full((len(suffixes), width), pad)
        smask = torch.zeros((len(suffixes), width), dtype=torch.long)
        pos = torch.zeros((len(suffixes), width), dtype=torch.long)
        for row, (suffix, g) in enumerate(zip(suffixes, owner, strict=True)):
            plen, n = pack[g][0], len(suffix)
            inp[row, width - n :] = torch.tensor(suffix)
            smask[row, width - n :] = 1
            pos[row, width - n :] = torch.arange(plen, plen + n)
        index = torch.tensor(owner)
        mask = torch.cat([pmask[index], smask], dim=1)
        dev = self.device
        with torch.inference_mode():
            cache = self.model(
                input_ids=pre.to(dev), attention_mask=pmask.to(dev), position_ids=ppos.to(dev),
                use_cache=True, logits_to_keep=1,
            ).past_key_values  # fmt: skip
            cache.batch_select_indices(index.to(dev))  # each row gets its group's prefix
            logits = self.model(
                input_ids=inp.to(dev),
                attention_mask=mask.to(dev),
                position_ids=pos.to(dev),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits
            logp = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
        self.stats.seconds += time.time() - t0
        self.stats.calls += len(suffixes)
        self.stats.prompt_tokens += sum(p for p, _ in pack) + sum(len(x) for x in suffixes)
        return logp

    def loglikelihood(self, pairs) -> list[float]:
        """Sum of the continuation's token log-probs per (context, continuation). Pairs whose
        contexts share a long token prefix (TruthfulQA's QA primer) are grouped: the prefix is
        run once per batch and only the rest of each sequence against copies of its KV cache.
        A shared prefix stops one token before the shortest context in its group, so every
        continuation token is predicted inside the suffix pass."""
        ids, ctx = [], []
        for context, continuation in pairs:
            c = self.tokenizer.encode(context, add_special_tokens=False)
            if not c:  # nothing to condition on: the end-of-text token, as lm-eval does
                c = [self.tokenizer.eos_token_id]
                context = self.tokenizer.eos_token
            full = self.tokenizer.encode(context + continuation, add_special_tokens=False)
            ids.append(full)
            ctx.append(len(c))
        out = [0.0] * len(pairs)
        chunks, singles = [], []
        for plen, members in prefix_groups(ids, self.min_shared_prefix):
            plen = min([plen, *(ctx[i] - 1 for i in members)])
            if plen > 0 and len(members) > 1:
                step = self.batch_size
                chunks.extend((plen, members[s : s + step]) for s in range(0, len(members), step))
            else:
                singles.extend(members)
        for plen, members in chunks:
            for i, v in zip(members, self._loglik_rows(ids, ctx, members, plen), strict=True):
                out[i] = v
        order = sorted(singles, key=lambda i: -len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            part = order[start : start + self.batch_size]
            for i, v in zip(part, self._loglik_rows(ids, ctx, part, 0), strict=True):
                out[i] = v
        return out

    def _loglik_rows(self, ids, ctx, part: list[int], plen: int) -> list[float]:
        """Continuation log-likelihoods of rows `part` sharing their first `plen` tokens (0: none).
        Rows are [prefix][left padding][rest]; position ids skip the padding."""
        torch = self.torch
        pad = self.tokenizer.pad_token_id
        rest = [ids[i][plen:] for i in part]
        width = max(len(r) for r in rest)
        inp = torch.full((len(part), width), pad)
        smask = torch.zeros((len(part), width), dtype=torch.long)
        pos = torch.zeros((len(part), width), dtype=torch.long)
        for row, r in enumerate(rest):
            inp[row, width - len(r) :] = torch.tensor(r)
            smask[row, width - len(r) :] = 1
            pos[row, width - len(r) :] = torch.arange(plen, plen + len(r))
        dev = self.device
        t0 = time.time()
        with torch.inference_mode():
            kw = {}
            mask = smask
            if plen:
                prefix = torch.tensor([ids[part[0]][:plen]], device=dev)
                cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1)
                cache = cache.past_key_values
                cache.batch_repeat_interleave(len(part))
                kw["past_key_values"] = cache
                mask = torch.cat([torch.ones((len(part), plen), dtype=torch.long), smask], dim=1)
            # rows end at the last column, so every continuation is predicted within the last
            # (longest continuation + 1) columns: only those go through the LM head
            keep = max(len(ids[i]) - ctx[i] for i in part) + 1
            logits = self.model(
                input_ids=inp.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                use_cache=bool(plen), logits_to_keep=keep, **kw,
            ).logits.float()  # fmt: skip
            lse = torch.logsumexp(logits, dim=-1)
        result = []
        for row, i in enumerate(part):
            n = len(ids[i])
            # position a (absolute) predicts token a + 1; its column among the kept ones
            first = width - (n - plen) - (width - keep)
            cols = torch.arange(first + ctx[i] - 1 - plen, first + n - 1 - plen)
            targets = torch.tensor(ids[i][ctx[i] :])
            lp = logits[row, cols].gather(-1, targets[:, None].to(dev))[:, 0] - lse[row, cols]
            result.append(float(lp.sum()))
        self.stats.seconds += time.time() - t0
        self.stats.calls += len(part)
        self.stats.prompt_tokens += plen + sum(len(r) for r in rest)
        return result


def pack_groups(
    chunks: list[tuple[int, list[int]]], max_rows: int
) -> list[list[tuple[int, list[int]]]]:
    """Prefix groups (plen, members) packed into batches of at most `max_rows` members (a
    larger group is a batch of its own); groups of similar prefix length go together, so
    the prefixes' left padding stays small."""
    packs: list[list[tuple[int, list[int]]]] = []
    rows = 0
    for chunk in sorted(chunks, key=lambda c: c[0]):
        if packs and rows + len(chunk[1]) <= max_rows:
            packs[-1].append(chunk)
            rows += len(chunk[1])
        else:
            packs.append([chunk])
            rows = len(chunk[1])
    return packs


def stop_criteria(tokenizer, stop: tuple[str, ...], start: int):
    """Stops a row once its new text (tokens after position `start`) contains a stop string.

    transformers' own `stop_strings` builds a table over the whole vocabulary on every
    `generate` call (about 1.2 s on CPU for a 49k vocabulary, paid in every job); decoding the
    new tokens of each row per step costs well under a millisecond here. The text is cut at the
    stop afterwards by `truncate_at_stop`, as for every backend."""
    if not stop:
        return None
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnText(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            done = [any(s in t for s in stop) for t in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnText()])


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def prefix_groups(ids: list[list[int]], min_prefix: int) -> list[tuple[int, list[int]]]:
    """Indices grouped by a shared token prefix of at least `min_prefix` tokens, as
    (prefix length, members); every member keeps at least one token after the prefix.
    Prompts sharing nothing long enough come in groups of one with prefix length 0. Grouping is
    greedy over the sorted prompts; a prompt that would halve a group's prefix starts a new one."""
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    groups: list[tuple[int, list[int]]] = []
    i = 0
    while i < len(order):
        head = ids[order[i]]
        members, plen = [order[i]], len(head) - 1
        j = i + 1
        while j < len(order):
            shared = min(plen, common_prefix(head, ids[order[j]]), len(ids[order[j]]) - 1)
            # a newcomer may not cut the group's shared prefix by more than half
            if shared < max(min_prefix, plen // 2):
                break
            plen = shared
            members.append(order[j])
            j += 1
        groups.append((plen if len(members) > 1 else 0, members))
        i = j
    return groups
