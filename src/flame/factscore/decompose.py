"""Atomic facts: FActScore's few-shot decomposition of a sentence into independent facts.

Each prompt holds the first ``n_fixed`` demos of the demo set (default 7), then the ``n_bm25``
demos (default 1) of the remaining ones whose sentence is most similar to the target sentence
by BM25, then the target sentence, as a raw-text continuation (works with small base and instruct
models alike)::

    Please breakdown the following sentence into independent facts: {sentence}
    - {fact}
    - {fact}

    Please breakdown the following sentence into independent facts: {target}

Generation is greedy, stops on a blank line or on "Please breakdown", and every "- " line of the
output is a fact (a final period is added where missing; repeated facts are dropped; a last line
cut off by the token limit is dropped). Fallback:
when the output has no "- " line, the sentence itself is the one fact (counted as a fallback).
``unit="sentence"`` skips the LM: every sentence is a fact (FLAME's cheaper ablation).

The demo set (resources/factscore_demos.jsonl, {sentence, facts}) is this project's own:
biographies and general knowledge (science, places, events, works).

Example:
    python -c "from flame.factscore.decompose import *; d = DemoSelector(load_demos()); \
print(build_prompt('Ada Lovelace was an English mathematician.', d.select(['Ada'])[0]))"
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from flame.io import RecordError, read_jsonl
from flame.lm import LM, Prompt, Sampling
from flame.retrieval import BM25Index

log = logging.getLogger("flame.factscore")

INSTRUCTION = "Please breakdown the following sentence into independent facts: "
STOP = ("\n\n", "Please breakdown")
BULLETS = ("- ", "* ", "• ")
END = tuple(".!?\"')")


def load_demos(path: str | Path | None = None) -> list[dict]:
    """Demos {sentence, facts: [str, ...]}; the packaged set when ``path`` is None."""
    if path is None:
        path = resources.files("flame") / "resources" / "factscore_demos.jsonl"
    demos = read_jsonl(path, required={"sentence": str, "facts": list[str]})
    for i, d in enumerate(demos, 1):
        if not d["facts"]:
            raise RecordError(f"{path}: demo {i}: 'facts' must be a non-empty list of strings")
    return demos


def format_demo(demo: dict) -> str:
    lines = "".join(f"- {f}\n" for f in demo["facts"])
    return f"{INSTRUCTION}{demo['sentence']}\n{lines}\n"


def build_prompt(sentence: str, demos: list[dict]) -> str:
    return "".join(format_demo(d) for d in demos) + f"{INSTRUCTION}{sentence}\n"


def parse_facts(text: str) -> list[str]:
    """The "- " lines of a completion, each ending in punctuation, duplicates removed. A last
    line that lacks the final punctuation all other lines have was cut by the token limit and
    is dropped."""
    lines = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(INSTRUCTION.strip()):
            break
        if line.startswith(BULLETS) and any(c.isalnum() for c in line[2:]):
            lines.append(line[2:].strip())
    if len(lines) > 1 and not lines[-1].endswith(END) and all(x.endswith(END) for x in lines[:-1]):
        lines.pop()
    facts, seen = [], set()
    for fact in lines:
        fact = fact if fact.endswith(END) else fact + "."
        if fact.lower() not in seen:
            seen.add(fact.lower())
            facts.append(fact)
    return facts


class DemoSelector:
    """The fixed demos plus, per sentence, the ``n_bm25`` most similar of the other demos."""

    def __init__(self, demos: list[dict], n_fixed: int = 7, n_bm25: int = 1):
        if n_fixed < 0 or n_bm25 < 0:
            raise ValueError("n_fixed and n_bm25 must be >= 0")
        self.fixed = demos[:n_fixed]
        self.pool = demos[n_fixed:]
        self.n_bm25 = min(n_bm25, len(self.pool))
        self.index = BM25Index.build([d["sentence"] for d in self.pool]) if self.n_bm25 else None

    def select(self, sentences: list[str]) -> list[list[dict]]:
        if self.index is None:
            return [list(self.fixed) for _ in sentences]
        ranked = self.index.search(sentences, self.n_bm25)
        return [self.fixed + [self.pool[i] for i, _ in r] for r in ranked]


def decompose(
    sentences: list[str],
    lm: LM | None,
    selector: DemoSelector | None = None,
    unit: str = "atomic",
    max_new_tokens: int = 128,
) -> tuple[list[list[str]], int]:
    """Facts of each sentence, and how many sentences fell back to being their own fact.
    All sentences go to the LM in one ``generate`` call (identical sentences are asked once)."""
    if unit == "sentence":
        return [[s] for s in sentences], 0
    if unit != "atomic":
        raise ValueError(f"unknown unit {unit!r} (atomic or sentence)")
    if lm is None or selector is None:
        raise ValueError("atomic decomposition needs a decomposer LM and a DemoSelector")
    unique = list(dict.fromkeys(sentences))
    if not unique:
        return [], 0
    prompts = [
        Prompt(text=build_prompt(s, demos))
        for s, demos in zip(unique, selector.select(unique), strict=True)
    ]
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=0.0, stop=STOP)
    outputs = lm.generate(prompts, sampling)
    facts_of, fell_back = {}, set()
    for s, out in zip(unique, outputs, strict=True):
        facts_of[s] = parse_facts(out[0])
        if not facts_of[s]:
            facts_of[s] = [s]
            fell_back.add(s)
    fallbacks = sum(s in fell_back for s in sentences)
    log.info(
        "decomposed %d sentences (%d distinct) into %d facts; %d fell back to the sentence",
        len(sentences), len(unique), sum(len(facts_of[s]) for s in sentences), fallbacks,
    )  # fmt: skip
    return [facts_of[s] for s in sentences], fallbacks
