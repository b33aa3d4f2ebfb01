"""Fact verification: FActScore's retrieve-then-ask "True or False?" check.

The prompt is FActScore's, with the retrieved passages placed best-LAST (nearest the question)::

    Answer the question about {topic} based on the given context.

    Title: {title}
    Text: {passage text, truncated to passage_chars}

    ...

    Input: {fact} True or False?
    Output:

(without a topic the first line reads "Answer the question based on the given context.").
A fact is supported iff the verifier puts more next-token probability on "True" than on "False"
(``LM.choose``); the margin logP(True) - logP(False), clipped to [-100, 100], is kept as
``verifier_score``. Where a text-only backend's answer names neither option (``choose`` gives
None), the answer text is read with FActScore's rule (``text_verdict``) and the score is None.

Example:
    python -c "from flame.factscore.verify import text_verdict; print(text_verdict('Unknown.'))"
"""

from __future__ import annotations

import logging
import math
import re
import string

from flame.lm import LM, Prompt, Sampling

log = logging.getLogger("flame.factscore")

OPTIONS = ["True", "False"]
REFUSAL_WORDS = ("not", "cannot", "unknown", "information")
_PUNCT = str.maketrans("", "", string.punctuation)
MAX_MARGIN = 100.0


def truncate(text: str, max_chars: int | None) -> str:
    """``text`` cut to at most ``max_chars`` characters, at a word boundary where possible."""
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    head = cut.rsplit(" ", 1)[0]
    return (head if len(head) > max_chars // 2 else cut).rstrip() + " ..."


def build_verify_prompt(
    topic: str | None, fact: str, passages: list[dict], passage_chars: int | None = None
) -> str:
    """FActScore's verification prompt; ``passages`` are given best first."""
    about = f" about {topic}" if topic else ""
    definition = f"Answer the question{about} based on the given context.\n\n"
    context = "".join(
        f"Title: {p['title']}\nText: {truncate(p['text'], passage_chars)}\n\n"
        for p in reversed(passages)
    )
    definition = (definition + context.strip()).strip()
    if definition[-1] not in string.punctuation:
        definition += "."
    return f"{definition}\n\nInput: {fact.strip()} True or False?\nOutput:"


def text_verdict(answer: str) -> bool:
    """FActScore's reading of a generated answer: "true" only -> supported; "false" only ->
    not; both -> the one named first; neither -> supported unless the answer contains one of
    the words not / cannot / unknown / information."""
    low = answer.lower()
    t = re.search(r"\btrue\b", low)
    f = re.search(r"\bfalse\b", low)
    if t and f:
        return t.start() < f.start()
    if t or f:
        return bool(t)
    words = low.translate(_PUNCT).split()
    return not any(w in words for w in REFUSAL_WORDS)


def margin(scores: list[float]) -> float:
    """logP(True) - logP(False), clipped so the JSON output stays finite."""
    m = scores[0] - scores[1]
    if math.isnan(m):
        return 0.0
    return max(-MAX_MARGIN, min(MAX_MARGIN, m))


def verify(prompts: list[str], lm: LM) -> tuple[list[bool], list[float | None], int]:
    """Verdicts and margins for verification prompts, in one batched ``choose`` call; answers
    that name no option are generated (one more batched call) and read by ``text_verdict``.
    Returns (supported, verifier_score, number decided by the text rule)."""
    if not prompts:
        return [], [], 0
    ps = [Prompt(text=p) for p in prompts]
    scores = lm.choose(ps, OPTIONS)
    supported: list[bool] = [False] * len(ps)
    margins: list[float | None] = [None] * len(ps)
    unread = []
    for i, s in enumerate(scores):
        if s is None:
            unread.append(i)
        else:
            margins[i] = margin(s)
            supported[i] = s[0] > s[1]
    if unread:
        outs = lm.generate([ps[i] for i in unread], Sampling(max_new_tokens=16, temperature=0.0))
        for i, out in zip(unread, outs, strict=True):
            supported[i] = text_verdict(out[0])
    log.info(
        "verified %d facts: %d supported, %d read from answer text",
        len(ps), sum(supported), len(unread),
    )  # fmt: skip
    return supported, margins, len(unread)
