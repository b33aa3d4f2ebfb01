"""The embedded default: every split built offline from shipped resources and Wikipedia summaries.

Entities are drawn without replacement in a fixed order (Bio people first, then FAVA, seed, DPO
and Alpaca fact-seeking items), so no entity and no instruction is ever shared by two splits.
Non-fact instructions (hand-written, with human responses) are dealt round-robin over their
categories into the seed set, the DPO prompts and the Alpaca-style evaluation set.
"""

from __future__ import annotations

import functools
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from flame.data.schema import (
    NONFACT_FILE,
    load_classifier_labels,
    load_nonfact,
    make_record,
    norm,
)
from flame.data.wiki import (
    BIO,
    entities,
    load_wiki_summaries,
    mentioned_titles,
    wiki_summaries_path,
)

log = logging.getLogger("flame.data")


@dataclass
class EmbeddedOptions:
    seed: int = 0
    n_seed_fact: int = 19  # 19 / 60 = 31.7 % fact-based, as in the paper's 3,200 OASST1 pairs
    n_seed_nonfact: int = 41
    n_dpo_fact: int = 16
    n_dpo_nonfact: int = 16
    n_eval_bio: int = 16
    n_eval_alpaca: int = 24
    n_eval_fava: int = 16
    alpaca_fact_share: float = 0.3  # AlpacaEval: 241 of 805 instructions are fact-based
    min_extract_chars: int = 300
    wiki: str | None = None  # summaries JSON; default: the installed wheel's file
    nonfact: str | None = None  # default: resources/nonfact_instructions.jsonl


COUNT_OPTIONS = (
    "n_seed_fact",
    "n_seed_nonfact",
    "n_dpo_fact",
    "n_dpo_nonfact",
    "n_eval_bio",
    "n_eval_alpaca",
    "n_eval_fava",
)


class CountError(ValueError):
    """A requested count exceeds what the source holds; the message names the option."""


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Draw:
    """Take items without replacement, skipping any whose instruction is already used."""

    def __init__(self, items, what: str, used: set[str]):
        self.items, self.what, self.used = list(items), what, used

    def take(self, n: int, option: str, make, fits=lambda item: True) -> list[dict]:
        out, left = [], []
        for item in self.items:
            rec = make(item) if len(out) < n and fits(item) else None
            if rec is None or norm(rec["instruction"]) in self.used:
                left.append(item)
                continue
            self.used.add(norm(rec["instruction"]))
            out.append(rec)
        if len(out) < n:
            raise CountError(
                f"{_option(option)}={n} exceeds the {len(out)} {self.what} left for it "
                f"(after the splits drawn before it)"
            )
        self.items = left
        return out


def _deal(nonfact: list[dict], rng: random.Random) -> list[dict]:
    """Shuffle within each category, then deal round-robin so every split mixes categories."""
    by_cat = defaultdict(list)
    for item in sorted(nonfact, key=lambda r: r["id"]):
        by_cat[item["category"]].append(item)
    queues = [rng.sample(items, len(items)) for _, items in sorted(by_cat.items())]
    rng.shuffle(queues)
    dealt = []
    while any(queues):
        for q in queues:
            if q:
                dealt.append(q.pop())
    return dealt


@functools.lru_cache(maxsize=4)
def _entity_pool(wiki: str, mtime_ns: int, min_chars: int, texts: tuple[str, ...]):
    """(number of summaries, titles the resources mention, eligible entities): cached, as
    repeated builds in one process (tests, notebooks) would otherwise redo ~1 s of parsing."""
    entries = load_wiki_summaries(wiki)
    reserved = frozenset(mentioned_titles(entries, texts))
    return len(entries), reserved, tuple(entities(entries, min_chars, exclude=reserved))


def build_embedded(
    opts: EmbeddedOptions, labels: list[dict] | None = None
) -> tuple[dict[str, list[dict]], dict]:
    """Returns ({split: records}, {"info": ...}); `labels` (default: the shipped classifier
    labels) are kept out of every split, and so are the entities they mention."""
    for name in COUNT_OPTIONS:
        if getattr(opts, name) < 0:
            raise CountError(f"{_option(name)} must be >= 0")
    if not 0.0 <= opts.alpaca_fact_share <= 1.0:
        raise CountError("--alpaca-fact-share must be between 0 and 1")
    if opts.min_extract_chars < 0:
        raise CountError("--min-extract-chars must be >= 0")
    rng = random.Random(opts.seed)
    nonfact = load_nonfact(opts.nonfact or NONFACT_FILE)
    labels = load_classifier_labels() if labels is None else labels
    texts = tuple(r["instruction"] for r in labels + nonfact)
    wiki_path = Path(opts.wiki) if opts.wiki else wiki_summaries_path()
    n_wiki, reserved_titles, pool = _entity_pool(
        str(wiki_path), wiki_path.stat().st_mtime_ns, opts.min_extract_chars, texts
    )
    used = {norm(t) for t in texts}  # classifier items and non-fact texts are never regenerated
    people = [e for e in pool if e.style == "person"]
    rng.shuffle(people)
    bio_draw = _Draw(people, "eligible people (Wikipedia topic 'People')", used)
    bio = bio_draw.take(
        opts.n_eval_bio,
        "n_eval_bio",
        lambda e: make_record("eval/bio", e.fill(BIO), e.extract, e.title, "fact", "embedded"),
    )
    rest = bio_draw.items + [e for e in pool if e.style != "person"]
    rest.sort(key=lambda e: e.title)
    rng.shuffle(rest)
    facts = _Draw(rest, "eligible Wikipedia entities", used)

    def fact(split, fava=False, with_response=True):
        def make(e):
            instruction = e.fill(rng.choice(e.templates(fava)))
            response = e.extract if with_response else None
            return make_record(split, instruction, response, e.title, "fact", "embedded")

        return make

    n_alpaca_fact = round(opts.n_eval_alpaca * opts.alpaca_fact_share)
    named = lambda e: e.style in ("person", "proper")  # noqa: E731  FAVA asks about named things
    fava = facts.take(opts.n_eval_fava, "n_eval_fava", fact("eval/fava", fava=True), fits=named)
    seed_fact = facts.take(opts.n_seed_fact, "n_seed_fact", fact("seed"))
    dpo_fact = facts.take(opts.n_dpo_fact, "n_dpo_fact", fact("dpo", with_response=False))
    alpaca_fact = facts.take(n_alpaca_fact, "n_eval_alpaca", fact("eval/alpaca"))

    where = opts.nonfact or "resources/nonfact_instructions.jsonl"
    nf = _Draw(_deal(nonfact, rng), f"hand-written non-fact instructions in {where}", set())

    def nonfact_rec(split, with_response=True):
        def make(item):
            response = item["response"] if with_response else None
            return make_record(split, item["instruction"], response, None, "nonfact", "embedded")

        return make

    seed_nf = nf.take(opts.n_seed_nonfact, "n_seed_nonfact", nonfact_rec("seed"))
    dpo_nf = nf.take(opts.n_dpo_nonfact, "n_dpo_nonfact", nonfact_rec("dpo", False))
    alpaca_nf = nf.take(
        opts.n_eval_alpaca - n_alpaca_fact, "n_eval_alpaca", nonfact_rec("eval/alpaca")
    )

    seed, dpo, alpaca = seed_fact + seed_nf, dpo_fact + dpo_nf, alpaca_fact + alpaca_nf
    for records in (seed, dpo, alpaca):
        rng.shuffle(records)
    splits = {"seed": seed, "dpo": dpo, "eval/bio": bio, "eval/alpaca": alpaca, "eval/fava": fava}
    info = {
        "wiki_entries": n_wiki,
        "eligible_entities": len(pool),
        "eligible_people": len(people),
        "titles_reserved_by_resources": len(reserved_titles),
        "nonfact_resource_items": len(nonfact),
    }
    log.info("embedded pool: %s", info)
    return splits, {"info": info}
