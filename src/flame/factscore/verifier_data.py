"""Training data for a FactCC-style fact verifier, made from any built knowledge folder.

A page's sentences, shown with the page's own passage (truncated as the scorer truncates it),
are the positives, verbatim. Each negative is one of them with exactly one span changed
(``corrupt``), or a sentence shown with other pages' passages only (``absent``: the verifier must
read the context, not recall the world). Every example is rendered with the scorer's own prompt
(``build_verify_prompt``), so the verifier is trained on exactly what it is asked at scoring
time. Pages are split into train and held-out by a seeded hash of the title (``split_pages``):
examples of a held-out page never reach training.

Corruption kinds (``KINDS``):
  year         a year (1000-2029) shifted by 1-30 years
  number       another number (digits that are not a year, or a number word two...twelve)
  entity       a capitalised name (not the sentence's first word) swapped for a name from
               another page
  negation     "not" added after the first is/was/are/were/has/had/... (or removed where present)
  nationality  a nationality or language adjective swapped for another
  absent       the verbatim sentence, with passages retrieved from other pages only

Example:
    python -c "from flame.factscore.verifier_data import corrupt; import random; \\
        print(corrupt('Curie was born in 1867 in Warsaw.', 'year', random.Random(0)))"
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import TYPE_CHECKING

from flame.factscore.sentences import split_sentences
from flame.factscore.verify import build_verify_prompt, truncate

if TYPE_CHECKING:
    from flame.knowledge import KnowledgeBase

SPAN_KINDS = ("year", "number", "entity", "negation", "nationality")
KINDS = (*SPAN_KINDS, "absent")

_YEAR = re.compile(r"\b(1\d{3}|20[0-2]\d)\b")
_NUMBER = re.compile(r"(?<![\d.,])\d+(?:[.,]\d+)?(?![\d.,]*\d)")
_WORDS = "two three four five six seven eight nine ten eleven twelve".split()
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
_AUX = re.compile(r"\b(is|was|are|were|has|had|have|can|could|will|would|did|does|do)\b")
_NOT = re.compile(r"\b(is|was|are|were|has|had|have|can|could|will|would|did|does|do) not\b")
_NATIONALITIES = (
    "American British English French German Italian Russian Spanish Chinese Japanese Indian "
    "Austrian Dutch Greek Polish Swedish Norwegian Danish Irish Scottish Canadian Mexican "
    "Brazilian Egyptian Persian Roman Portuguese Hungarian Turkish Korean Arab Australian"
).split()
_NATIONALITY = re.compile(r"\b(" + "|".join(_NATIONALITIES) + r")\b")
# a run of capitalised words (with "of", "de", "von"... inside), not at the sentence start
_NAME = re.compile(
    r"(?<=[a-z,;(] )[A-Z][\w'-]+(?: (?:(?:of|de|da|von|van|the|and) )?[A-Z][\w'-]+)*"
)
_MONTHS = {
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
}


def names(sentence: str) -> list[str]:
    """Capitalised name spans of a sentence (its first word excluded), for entity swaps."""
    return [
        m.group(0)
        for m in _NAME.finditer(sentence)
        if m.group(0) not in _MONTHS and not _NATIONALITY.fullmatch(m.group(0))
    ]


def _replace(sentence: str, m: re.Match, new: str) -> str:
    return sentence[: m.start()] + new + sentence[m.end() :]


def corrupt(
    sentence: str, kind: str, rng: random.Random, donors: list[str] | None = None
) -> str | None:
    """``sentence`` with exactly one span changed by ``kind`` (None where the kind does not
    apply). ``donors`` are names from other pages, for ``entity``."""
    if kind == "year":
        ms = list(_YEAR.finditer(sentence))
        if not ms:
            return None
        m = rng.choice(ms)
        return _replace(
            sentence, m, str(int(m.group(0)) + rng.choice([-1, 1]) * rng.randint(1, 30))
        )
    if kind == "number":
        ms = [m for m in _NUMBER.finditer(sentence) if not _YEAR.fullmatch(m.group(0))]
        if ms:
            m = rng.choice(ms)
            old = m.group(0)
            first = rng.choice([d for d in "123456789" if d != old[0]])
            return _replace(sentence, m, first + old[1:])
        ms = list(_NUMBER_WORD.finditer(sentence))
        if not ms:
            return None
        m = rng.choice(ms)
        word = rng.choice([w for w in _WORDS if w != m.group(0).lower()])
        return _replace(sentence, m, word.capitalize() if m.group(0)[0].isupper() else word)
    if kind == "entity":
        spans = names(sentence)
        pool = [d for d in donors or [] if d not in sentence]
        if not spans or not pool:
            return None
        old = rng.choice(spans)
        at = sentence.index(old)
        return sentence[:at] + rng.choice(pool) + sentence[at + len(old) :]
    if kind == "negation":
        m = _NOT.search(sentence)
        if m:
            return _replace(sentence, m, m.group(1))
        m = _AUX.search(sentence)
        return _replace(sentence, m, m.group(1) + " not") if m else None
    if kind == "nationality":
        ms = list(_NATIONALITY.finditer(sentence))
        if not ms:
            return None
        m = rng.choice(ms)
        vowel = m.group(0)[0] in "AEIOU"  # keeps "a"/"an" right
        pool = [x for x in _NATIONALITIES if x != m.group(0) and (x[0] in "AEIOU") == vowel]
        return _replace(sentence, m, rng.choice(pool))
    raise ValueError(f"unknown corruption kind {kind!r} (one of {', '.join(SPAN_KINDS)})")


def held_out(title: str, share: float, seed: int) -> bool:
    """Whether page ``title`` is held out: a seeded hash, so the split is stable and by page."""
    h = hashlib.sha256(f"{seed}:{title.lower()}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < share


def split_pages(titles: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out) page titles; no title is in both."""
    train, held = [], []
    for t in dict.fromkeys(titles):
        (held if held_out(t, share, seed) else train).append(t)
    return train, held


def page_sentences(
    kb: KnowledgeBase, title: str, passage_chars: int | None
) -> tuple[dict, list[str]]:
    """The page's first passage and its sentences that are fully visible once the passage is
    truncated to ``passage_chars`` (the scorer's view)."""
    passage = kb.topic_passages(title)[0]
    shown = truncate(passage["text"], passage_chars)
    sents = [
        s for s in split_sentences(shown) if s in shown and not s.endswith("...") and len(s) > 20
    ]
    return passage, sents


def make_examples(
    kb: KnowledgeBase,
    titles: list[str],
    n: int,
    kinds: tuple[str, ...] = KINDS,
    k: int = 2,
    passage_chars: int | None = 300,
    seed: int = 0,
    per_page: int = 3,
    left_out: dict | None = None,
) -> list[dict]:
    """About ``n`` balanced examples from the pages ``titles``: half verbatim positives, half
    negatives spread over ``kinds`` (the rarest kind that applies to the sentence), from up to
    ``per_page`` sentences per page visit, consecutive in the output and sharing one context.
    Each: {prompt, label (bool), kind, title, claim, sentence}. The context is the page's
    passage, with up to k-1 passages of other pages (retrieved with its first sentence) as
    distractors; ``absent`` negatives show the other pages' passages only.

    A title that is not a page of ``kb`` is left out (never matched to another page), as is a
    page without a usable sentence; ``left_out``, when given, is filled with
    {"not_in_knowledge": [titles], "no_usable_sentence": [titles]}."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown corruption kinds {sorted(unknown)} (one of {', '.join(KINDS)})")
    rng = random.Random(seed)
    titles = list(dict.fromkeys(titles))
    missing = [t for t in titles if not kb.has_topic(t)]
    pages = [(t, *page_sentences(kb, t, passage_chars)) for t in titles if kb.has_topic(t)]
    unusable = [p[0] for p in pages if not p[2]]
    pages = [p for p in pages if p[2]]
    if left_out is not None:
        left_out.update(not_in_knowledge=missing, no_usable_sentence=unusable)
    if not pages:
        raise ValueError(
            f"no page with a usable sentence among the verifier's {len(titles)} pages "
            f"({len(missing)} not in the knowledge source, {len(unusable)} without a sentence)"
        )
    donors = sorted({x for _, _, ss in pages for s in ss for x in names(s)})
    out: list[dict] = []
    counts = dict.fromkeys(kinds, 0)
    while len(out) < n:
        title, passage, sents = rng.choice(pages)
        # one context per page visit, shared by its claims (the scorer shares it the same way,
        # and training runs it once: flame.train_verifier)
        topic = title if rng.random() < 0.5 else None
        first = sents[0]
        others = [h for h in kb.search(first, k + 2) if h["title"].lower() != title.lower()]
        own = [passage, *others[: rng.randint(0, k - 1)]]
        rng.shuffle(own)
        for sentence in rng.sample(sents, min(per_page, len(sents))):
            pool = [d for d in donors if d not in names(sentence)]
            made = {}  # kind -> (claim, passages) for every kind that applies to this sentence
            for kind in kinds:
                if kind == "absent":
                    if others:
                        made[kind] = (sentence, others[:k])
                else:
                    bad = corrupt(sentence, kind, rng, pool)
                    if bad and bad != sentence:
                        made[kind] = (bad, own)
            if not made:
                continue
            kind = min(made, key=lambda x: (counts[x], rng.random()))  # the rarest so far
            counts[kind] += 1
            claim, ctx = made[kind]
            out.append(_example(topic, sentence, own, True, "true", title, sentence, passage_chars))
            out.append(_example(topic, claim, ctx, False, kind, title, sentence, passage_chars))
    return out[:n]


def _example(topic, claim, passages, label, kind, title, sentence, passage_chars) -> dict:
    return {
        "prompt": build_verify_prompt(topic, claim, passages, passage_chars),
        "label": label,
        "kind": kind,
        "title": title,
        "claim": claim,
        "sentence": sentence,
    }
