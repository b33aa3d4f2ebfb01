"""Shared by the benchmark scripts: a knowledge base and test responses from real Wikipedia
summaries (the embedded knowledge source)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from flame.factscore import split_sentences


def knowledge_base(folder: Path | None):
    """A built knowledge folder (built into a temp folder from the embedded source if None)."""
    from flame.knowledge import KnowledgeBase, build

    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="flame-kb-")) / "kb"
        build("embedded", folder)
    return KnowledgeBase.load(folder)


def people_responses(
    kb, n: int, sentences: int = 3, min_chars: int = 400, per_person: int = 1
) -> list[dict]:
    """n responses made of consecutive sentences of people's summaries (their facts are true).
    With per_person m, each person answers the same prompt m times (sentence windows starting
    at sentence 0, 1, ...), the shape of RM_fact's m samples per DPO prompt."""
    from flame.data import load_wiki_summaries

    people = [
        s
        for s in load_wiki_summaries()
        if s.get("topic") == "People"
        and len(s["extract"]) >= min_chars
        and kb.has_topic(s["title"])
    ]
    people.sort(key=lambda s: s["title"])
    n_people = max(1, n // per_person)
    step = max(1, len(people) // n_people)
    items = []
    for s in people[::step][:n_people]:
        all_sents = split_sentences(s["extract"])
        for j in range(per_person):
            start = j % max(1, len(all_sents) - sentences + 1)
            sents = all_sents[start : start + sentences]
            items.append({
                "id": s["title"] if per_person == 1 else f"{s['title']}#{j}",
                "topic": s["title"], "prompt": f"Tell me a bio of {s['title']}.",
                "response": " ".join(sents), "sentences": sents,
            })  # fmt: skip
    return items


_YEAR = re.compile(r"\b(1[5-9]\d\d|20[0-2]\d)\b")
_NATIONALITIES = [
    "American",
    "British",
    "French",
    "German",
    "Italian",
    "Russian",
    "Spanish",
    "Chinese",
    "Japanese",
    "Indian",
    "English",
    "Austrian",
    "Dutch",
    "Greek",
]


def corrupt(sentence: str, k: int) -> str | None:
    """One factual change: a year shifted, or a nationality swapped (None if neither applies)."""
    m = _YEAR.search(sentence)
    if m:
        year = int(m.group(1)) + (7 + k % 23) * (1 if k % 2 else -1)
        return sentence[: m.start()] + str(year) + sentence[m.end() :]
    for i, nat in enumerate(_NATIONALITIES):
        if re.search(rf"\b{nat}\b", sentence):
            other = _NATIONALITIES[(i + 1 + k % 5) % len(_NATIONALITIES)]
            return re.sub(rf"\b{nat}\b", other, sentence, count=1)
    return None


def print_machine() -> None:
    """The CPU model and flags (AVX2, AVX-512, AVX512-BF16, AMX) the numbers below come from."""
    import os

    from flame.cpu import describe

    print(describe() + f"; {os.cpu_count()} logical CPUs; load average {os.getloadavg()[0]:.1f}")
