"""Offline sentence splitting for FActScore (no nltk download needed).

As FActScore does, a response is first cut into lines (each non-empty line is a paragraph or a
list item), then each line into sentences. A sentence ends at ``.``, ``!`` or ``?`` (plus any
closing quotes or brackets) followed by white space and an upper-case letter, a digit or an
opening quote. The period does NOT end a sentence after:

- titles and fixed abbreviations (Dr., Mr., St., Prof., e.g., i.e., vs., et al., approx. ...);
- month names and "No."/"p." before a number (Jan. 5, No. 9);
- initials and dotted acronyms (J. R. R. Tolkien, U.S., Ph.D.) or etc./Inc./Jr., unless the next
  word is a common sentence opener ("He", "The", "In" ...): "He moved to the U.S. He then ...".

Decimals (3.14) and dotted dates (4.7.1776) never split, having no space after the period.
List bullets ("- ", "* ", "• ", "1. ", "2) ") and markdown heading marks are removed.

Example:
    python -c "from flame.factscore import split_sentences as s; print(s('Dr. J. R. R. Tolkien \
wrote it. It sold well.'))"
"""

from __future__ import annotations

import re

NEVER = frozenset(
    "mr mrs ms dr prof st mt ft gen col capt lt sgt rev hon sen rep gov pres fr sr jr "
    "e.g i.e cf vs al approx ca fig figs vol eds".split()
)
BEFORE_NUMBER = frozenset(
    "jan feb mar apr jun jul aug sep sept oct nov dec no nos p pp ch sec art op".split()
)
AMBIGUOUS = frozenset("etc inc ltd co corp bros jr sr".split())
OPENERS = frozenset(
    """he she it they we i you this that these those there the a an in on at after before
    during his her its their our my as when while however although but also then later since
    from by for with one many some most both each today currently born his""".split()
)

_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*\s+")
_NEXT = re.compile(r"[\"'“‘(\[]*(\S*)")
_BULLET = re.compile(r"^\s*(?:[-*•‣◦–]|\d{1,3}[.)]|#{1,6})\s+")
_ACRONYM = re.compile(r"^(?:[A-Za-z]{1,2}\.)+[A-Za-z]{1,2}$")


def _starts_sentence(next_word: str) -> bool:
    """A capitalised word, a digit or an opening quote can start a sentence."""
    return bool(next_word) and (next_word[0].isupper() or next_word[0].isdigit())


def _is_opener(next_word: str) -> bool:
    word = next_word.rstrip(",;:")
    return not word.endswith(".") and word.lower() in OPENERS


def is_boundary(before: str, punct: str, after: str) -> bool:
    """Does the text ``before`` + ``punct`` end a sentence, given the ``after`` text?"""
    m = _NEXT.match(after)
    next_word = m.group(1) if m else ""
    if not _starts_sentence(next_word) and not re.match(r"[\"'“‘(\[]", after):
        return False
    if "!" in punct or "?" in punct or punct.count(".") > 1:
        return True
    prev = before.split()[-1].lstrip("\"'“‘([") if before.split() else ""
    low = prev.lower()
    if low in NEVER:
        return False
    if low in BEFORE_NUMBER and next_word[:1].isdigit():
        return False
    single_initial = len(prev) == 1 and prev.isupper()
    if single_initial or _ACRONYM.match(prev) or low in AMBIGUOUS:
        return _is_opener(next_word)
    return True


def split_line(line: str) -> list[str]:
    out, start = [], 0
    for m in _BOUNDARY.finditer(line):
        punct = m.group(0).rstrip()
        if is_boundary(line[start : m.start()], punct, line[m.end() :]):
            out.append(line[start : m.end()].strip())
            start = m.end()
    tail = line[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if any(c.isalnum() for c in s)]


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` in order; lines are split separately, bullets removed."""
    sentences: list[str] = []
    for raw in text.splitlines():
        line = _BULLET.sub("", raw).strip()
        if line:
            sentences.extend(split_line(line))
    return sentences
