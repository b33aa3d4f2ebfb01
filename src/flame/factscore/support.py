"""The non-parametric (NP) check of FActScore's ensemble, with exact matching in place of NPM.

FActScore (Min et al., 2023, Sec. 3.3) ensembles its LM verifier with NPM, a non-parametric
masked LM: each token of the atomic fact is masked in turn and predicted by similarity to the
tokens of the retrieved passages; a fact whose mean token probability is below 0.3 is not
supported even when the LM says True. A token that does not occur in the passages gets almost no
probability from NPM. This check keeps that signal and drops the learned similarity, so it needs
no model and runs on any knowledge source:

  salient tokens  numbers (digits, thousands separators ignored), capitalised words other than
                  the fact's first word, and the negations not / never / no: each must occur in
                  the passages exactly (case-insensitive). A wrong year, number, name, place or
                  nationality, or an inserted negation, is a salient token the page does not have.
  content tokens  the other words of 3+ letters that are not stopwords: ``support`` is the share
                  found in the passages (a word counts as found when a passage word shares its
                  first 5 letters, so "directed" finds "director").

A fact passes when every salient token is found and ``support >= threshold``. With the check on,
the scorer calls a fact supported only where the verifier says True AND the check passes
(FActScore's "retrieval + LM + NP"). What it cannot see: an error made of words that all occur
in the passages (a birthplace given as the place someone died, a removed negation), and a true
fact worded with a salient word the passages spell differently (numbers as words, "U.S." for
"United States"). The passages are those shown to the verifier, cut as they are cut there.

Example:
    python -c "from flame.factscore.support import check; \\
        print(check('Curie was born in 1868.', ['Marie Curie was born in 1867 in Warsaw.']))"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:'[^\W\d_]+)?")
NEGATIONS = frozenset({"not", "never", "no", "n't"})
PREFIX = 5
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself nor of off on once only or other our ours ourselves
    out over own same she should so some such than that the their theirs them themselves then
    there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours yourself yourselves one many known
    well became become including include includes later since among within without however
    although though also first us may might must shall
    """.split()
)


@dataclass
class Support:
    """The check's verdict on one fact."""

    passed: bool
    support: float  # share of content tokens found (1.0 when the fact has none)
    missing: list[str] = field(default_factory=list)  # salient tokens not in the passages


def tokens(text: str) -> list[str]:
    """Word and number tokens; "n't" is split off as its own token, thousands separators go."""
    out = []
    for t in _TOKEN.findall(text.replace("’", "'")):
        if t.lower().endswith("n't"):
            out += [t[:-3], "n't"]
        elif t[0].isdigit():
            out.append(re.sub(r"(?<=\d),(?=\d{3}\b)", "", t).rstrip(".,"))
        else:
            out.append(t.split("'")[0] if t.lower().endswith("'s") else t)
    return [t for t in out if t]


def check(fact: str, passages: list[str], threshold: float = 0.5) -> Support:
    """Whether the passages carry every salient token of ``fact`` and at least ``threshold`` of
    its content tokens."""
    seen = {t.lower() for p in passages for t in tokens(p)}
    prefixes = {t[:PREFIX] for t in seen if len(t) >= PREFIX}
    missing, content, found = [], 0, 0
    for i, tok in enumerate(tokens(fact)):
        low = tok.lower()
        salient = (
            tok[0].isdigit()
            or low in NEGATIONS
            or (i > 0 and tok[0].isupper() and low not in STOPWORDS)
        )
        if salient:
            if low not in seen and low not in missing:
                missing.append(low)
        elif len(low) >= 3 and low not in STOPWORDS:
            content += 1
            found += low in seen or (len(low) >= PREFIX and low[:PREFIX] in prefixes)
    support = found / content if content else 1.0
    return Support(passed=not missing and support >= threshold, support=support, missing=missing)
