"""FActScore (Min et al., 2023) as FLAME uses it: the share of a response's atomic facts that the
knowledge source supports.

For each response: detect abstention -> split sentences -> decompose into atomic facts (one
batched generate call for all sentences of all responses) -> retrieve passages -> verify every
fact (one batched choose call). Retrieval modes:

  topic  FActScore: the passages of the topic's own page, ranked by BM25 against "topic fact",
         top k per fact. An item whose topic the knowledge source lacks (or that has none) is
         never checked against other pages: ``unknown_topic="skip"`` (default) leaves it out
         (result ``unknown_topic: true``, no facts, score None, left out of ``aggregate`` and
         counted there as ``n_unknown_topic`` / ``unknown_topics``, and in
         ``counts["unknown_topic_items"]``); ``"fail"`` raises ValueError naming the item (its
         ``where``, e.g. "file:line", when the item has one), as FActScore refuses such a topic.
  open   FLAME: the instruction is the query over the whole corpus, top k once per response;
         every fact of the response is checked against those passages.

The ranking is the knowledge folder's retriever (BM25, or dense: flame.dense). With a
``reranker`` (a cross-encoder folder or hub id) the first stage fetches ``candidates`` passages
(FLAME: 20) and the cross-encoder keeps the best k (FLAME: 10). With a ``cache`` (a flame.cache
Cache or SQLite path; namespace "retrieval") the ranked passage positions and scores are stored,
keyed by the knowledge folder's meta.json hash, retriever, reranker, topic, query and k: a re-run
does no retrieval work. All searches of one ``score`` call are batched per topic. An item may
name its own ``retrieval`` mode (topic or open), so sets scored differently still share one
decomposition and one verification batch.

Score of a response = supported / facts (None with 0 facts or when abstained). ``aggregate``
gives FActScore's summary: the mean over responding items with facts, without and with the
length penalty exp(1 - gamma / #facts) for #facts < gamma (gamma=10 in FActScore, 0 in FLAME).

Example:
    from flame.factscore import FactScorer, aggregate
    scorer = FactScorer(lm, lm, KnowledgeBase.load("results/knowledge/embedded"), k=5)
    print(aggregate(scorer.score([{"id": 1, "prompt": "Tell me a bio of Ada Lovelace.",
                                   "topic": "Ada Lovelace", "response": "Ada Lovelace was ..."}])))
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from statistics import mean
from typing import TYPE_CHECKING

from flame.cache import Cache, make_key
from flame.factscore.decompose import DemoSelector, decompose, load_demos
from flame.factscore.sentences import split_sentences
from flame.factscore.support import check
from flame.factscore.verify import build_verify_prompt, truncate, verify
from flame.lm import LM

if TYPE_CHECKING:
    from flame.knowledge import KnowledgeBase

log = logging.getLogger("flame.factscore")

ABSTAIN_PREFIXES = (
    "i'm sorry", "i am sorry", "sorry,", "i apologize", "i don't know", "i do not know",
    "i cannot", "i can't", "i'm not sure", "i am not sure", "i'm unable", "i am unable",
    "i'm not able", "i am not able", "as an ai",
)  # fmt: skip
ABSTAIN_PHRASES = ("no information", "find any information", "provide more")


UNKNOWN_TOPIC = ("skip", "fail")  # what topic retrieval does with a topic the source lacks


def is_abstained(response: str) -> bool:
    """A refusal: the response opens with "I'm sorry", "I don't know", "I cannot", ... or its
    first sentence says "no information" / "could not find any information" / "provide more"."""
    text = response.strip().lower().replace("’", "'")
    if text.startswith(ABSTAIN_PREFIXES):
        return True
    first = (split_sentences(response) or [""])[0].lower()
    return any(p in first for p in ABSTAIN_PHRASES)


def length_penalty(n_facts: int, gamma: float) -> float:
    """FActScore's penalty for short responses: exp(1 - gamma/n) when n < gamma, else 1."""
    if not gamma or n_facts >= gamma:
        return 1.0
    return math.exp(1 - gamma / n_facts)


class FactScorer:
    def __init__(
        self,
        decomposer: LM | None,
        verifier: LM,
        kb: KnowledgeBase,
        unit: str = "atomic",
        retrieval: str = "topic",
        k: int = 5,
        n_fixed: int = 7,
        n_bm25: int = 1,
        passage_chars: int | None = 1000,
        detect_abstention: bool = True,
        demos: list[dict] | None = None,
        max_fact_tokens: int = 128,
        reranker=None,
        candidates: int = 20,
        cache: Cache | str | None = None,
        np_threshold: float | None = None,
        unknown_topic: str = "skip",
    ):
        if unit not in ("atomic", "sentence"):
            raise ValueError(f"unknown unit {unit!r} (atomic or sentence)")
        if retrieval not in ("topic", "open"):
            raise ValueError(f"unknown retrieval {retrieval!r} (topic or open)")
        if unknown_topic not in UNKNOWN_TOPIC:
            raise ValueError(f"unknown unknown_topic {unknown_topic!r} (skip or fail)")
        if unit == "atomic" and decomposer is None:
            raise ValueError("unit='atomic' needs a decomposer LM")
        self.decomposer, self.verifier, self.kb = decomposer, verifier, kb
        self.unit, self.retrieval, self.k = unit, retrieval, k
        self.passage_chars, self.detect_abstention = passage_chars, detect_abstention
        self.max_fact_tokens = max_fact_tokens
        if isinstance(reranker, str):
            from flame.dense import Reranker

            reranker = Reranker(reranker)
        if reranker is not None and candidates < k:
            raise ValueError(f"candidates ({candidates}) must be >= k ({k}) to re-rank")
        self.reranker, self.candidates = reranker, candidates
        if isinstance(cache, (str, os.PathLike)):
            cache = Cache(cache, namespace="retrieval")
        if cache is not None and not getattr(kb, "identity", ""):
            raise ValueError("a retrieval cache needs a KnowledgeBase loaded from its folder")
        self.cache = cache
        if np_threshold is not None and not 0 <= np_threshold <= 1:
            raise ValueError(f"np_threshold must be in [0, 1] (got {np_threshold})")
        self.np_threshold = np_threshold
        self.unknown_topic = unknown_topic
        self._key_base = None
        self.selector = None
        if unit == "atomic":
            self.selector = DemoSelector(demos or load_demos(), n_fixed, n_bm25)
        self.counts: Counter = Counter()

    @staticmethod
    def _normalize(item: dict, i: int) -> dict:
        response = item.get("response")
        if not isinstance(response, str):
            raise ValueError(f"item {item.get('id', i)}: 'response' must be a string")
        prompt = item.get("prompt") or item.get("instruction") or ""
        mode = item.get("retrieval")
        if mode not in (None, "topic", "open"):
            raise ValueError(
                f"item {item.get('id', i)}: unknown retrieval {mode!r} (topic or open)"
            )
        return {"id": item.get("id", i), "prompt": prompt, "topic": item.get("topic") or None,
                "response": response, "retrieval": mode,
                "where": item.get("where") or f"item {item.get('id', i)}"}  # fmt: skip

    def _left_out(self, item: dict) -> bool:
        """Whether topic retrieval cannot score ``item``: its topic is not a page of the
        knowledge source (or it has none). With unknown_topic="fail" that is an error."""
        if (item["retrieval"] or self.retrieval) != "topic" or self.kb.has_topic(item["topic"]):
            return False
        if self.unknown_topic == "fail":
            what = (
                f"topic {item['topic']!r} is not a page of the knowledge source"
                if item["topic"]
                else "no topic (topic retrieval needs the page title)"
            )
            raise ValueError(
                f"{item['where']}: {what} ({getattr(self.kb, 'folder', 'kb')}); FActScore "
                "cannot score it against its own page (unknown_topic: skip, or --unknown-topic "
                "skip, leaves such items out and counts them)"
            )
        return True

    def _key(self, topic: str | None, query: str) -> str:
        if self._key_base is None:
            rr = self.reranker
            self._key_base = (self.kb.identity, self.kb.retriever,
                              rr and rr.fingerprint, rr and self.candidates)  # fmt: skip
        return make_key("retrieval", *self._key_base, topic and topic.lower(), query, self.k)

    def retrieve(self, requests: list[tuple[str | None, str]]) -> list[list[dict]]:
        """Passages (best first) for each (topic, query): topic None = open search over the
        whole corpus, else that page's passages. Cached and re-ranked as the scorer says."""
        c = self.counts
        keys = [self._key(t, q) if self.cache is not None else "" for t, q in requests]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        todo: dict[str | None, dict[str, str]] = {}  # topic -> query -> key
        for (topic, query), key in zip(requests, keys, strict=True):
            if not (self.cache is not None and key in found):
                todo.setdefault(topic, {})[query] = key
        first = self.candidates if self.reranker else self.k
        fresh: dict = {}
        ranked: dict[tuple, list] = {}
        for topic, by_query in todo.items():
            queries = list(by_query)
            if topic is None:
                hits = self.kb.search_many(queries, first)
            else:
                hits = self.kb.search_topic(topic, queries, first)
            if self.reranker is not None:
                hits = self.reranker.rerank(queries, hits, self.k)
            for query, hs in zip(queries, hits, strict=True):
                ranked[topic, query] = pairs = [[h["id"], h["score"]] for h in hs]
                if self.cache is not None:
                    fresh[by_query[query]] = pairs
        c["retrieval_searches"] += sum(len(by_query) for by_query in todo.values())
        if fresh:
            self.cache.put_many(fresh)
        c["retrieval_cache_hits"] += len(found)
        out = []
        for (topic, query), key in zip(requests, keys, strict=True):
            pairs = found[key] if key in found else ranked[topic, query]
            out.append([{**self.kb.passages[i], "score": s} for i, s in pairs])
        return out

    def _passages(self, items: list[dict], facts: list[list[tuple[str, str]]]) -> list[list]:
        """For each item, for each fact, the retrieved passages (best first)."""
        out: list[list] = [[] for _ in items]
        requests: list[tuple[str | None, str]] = []
        owners: list[tuple[int, int]] = []  # (item, how many facts share the request)
        for n, (it, fs) in enumerate(zip(items, facts, strict=True)):
            if not fs:
                continue
            if (it["retrieval"] or self.retrieval) == "open":
                query = it["prompt"] or it["topic"]
                if not query:
                    raise ValueError(f"item {it['id']}: open retrieval needs a prompt")
                requests.append((None, query))
                owners.append((n, len(fs)))
                continue
            topic = it["topic"]
            if not self.kb.has_topic(topic):  # score() leaves these out: never other pages
                raise AssertionError(f"item {it['id']}: topic {topic!r} has no page")
            for _, fact in fs:
                requests.append((topic, f"{topic} {fact}".strip()))
                owners.append((n, 1))
        for (n, copies), hits in zip(owners, self.retrieve(requests), strict=True):
            out[n].extend([hits] * copies)
        return out

    def score(self, items: list[dict]) -> list[dict]:
        """Score responses; an item is {id, prompt|instruction, topic (optional), response,
        retrieval (optional), where (optional: "file:line" for error messages)}."""
        items = [self._normalize(it, i) for i, it in enumerate(items)]
        left_out = [self._left_out(it) for it in items]  # "fail": raises before any work
        c = self.counts
        sentences: list[list[str]] = []
        abstained = []
        for it, out in zip(items, left_out, strict=True):
            c["items"] += 1
            c["unknown_topic_items"] += out
            if out:  # no facts, never retrieved from or verified against any page
                abstained.append(False)
                sentences.append([])
                continue
            gave_up = self.detect_abstention and is_abstained(it["response"])
            abstained.append(gave_up)
            c["abstained"] += gave_up
            c["empty_responses"] += not it["response"].strip()
            sentences.append([] if gave_up else split_sentences(it["response"]))
        if any(left_out):
            names = left_out_topics([it for it, out in zip(items, left_out, strict=True) if out])
            more = " ..." if len(names) > 10 else ""
            log.warning(
                "%d of %d items left out of FActScore: topic not in the knowledge source (%s)",
                sum(left_out), len(items), ", ".join(names[:10]) + more,
            )  # fmt: skip
        flat = [s for ss in sentences for s in ss]
        c["sentences"] += len(flat)
        per_sentence, fallbacks = decompose(
            flat, self.decomposer, self.selector, self.unit, self.max_fact_tokens
        )
        c["decompose_fallbacks"] += fallbacks
        facts: list[list[tuple[str, str]]] = []
        pos = 0
        for ss in sentences:
            facts.append(
                [(s, f) for s, fs in zip(ss, per_sentence[pos:], strict=False) for f in fs]
            )
            pos += len(ss)
        passages = self._passages(items, facts)
        prompts = [
            build_verify_prompt(it["topic"], fact, ps, self.passage_chars)
            for it, fs, pss in zip(items, facts, passages, strict=True)
            for (_, fact), ps in zip(fs, pss, strict=True)
        ]
        c["facts"] += len(prompts)
        supported, margins, n_text = verify(prompts, self.verifier)
        c["text_verdicts"] += n_text
        results, j = [], 0
        for it, out, gave_up, fs, pss in zip(
            items, left_out, abstained, facts, passages, strict=True
        ):
            rows = []
            for (sentence, fact), ps in zip(fs, pss, strict=True):
                row = {"sentence": sentence, "fact": fact, "passages": [p["id"] for p in ps],
                       "supported": supported[j], "verifier_score": margins[j]}  # fmt: skip
                if self.np_threshold is not None:
                    row.update(self._np(fact, ps, row["supported"]))
                rows.append(row)
                j += 1
            n_sup = sum(r["supported"] for r in rows)
            results.append({
                "id": it["id"], "topic": it["topic"], "abstained": gave_up,
                "unknown_topic": out, "n_facts": len(rows), "n_supported": n_sup,
                "score": n_sup / len(rows) if rows and not gave_up else None, "facts": rows,
            })  # fmt: skip
        return results

    def _np(self, fact: str, passages: list[dict], says_true: bool) -> dict:
        """FActScore's ensemble: supported = the verifier says True AND the NP check passes
        (flame.factscore.support) on the passages as the verifier saw them."""
        shown = [f"{p['title']} {truncate(p['text'], self.passage_chars)}" for p in passages]
        np = check(fact, shown, self.np_threshold)
        self.counts["np_rejected"] += says_true and not np.passed
        return {"supported": says_true and np.passed, "verifier_supported": says_true,
                "np_support": round(np.support, 4), "np_missing": np.missing}  # fmt: skip


def _mean(values: list[float]) -> float | None:
    return mean(values) if values else None


def left_out_topics(results: list[dict]) -> list[str]:
    """The topics (once each, in order; "(no topic)" for none) of ``results``."""
    return list(dict.fromkeys(r["topic"] or "(no topic)" for r in results))


def aggregate(results: list[dict], gamma: float = 10) -> dict:
    """FActScore's summary of scored responses. ``factscore`` = mean score over responding
    items with >= 1 fact (no length penalty); ``factscore_gamma`` applies the penalty
    (gamma=0 disables it); counts are means over responding items. Items left out for a topic
    the knowledge source lacks take part in nothing but ``n_unknown_topic`` / ``unknown_topics``
    (``n_items`` counts every item, ``respond_ratio`` is over the others)."""
    unknown = [r for r in results if r.get("unknown_topic")]
    results = [r for r in results if not r.get("unknown_topic")]
    responding = [r for r in results if not r["abstained"]]
    scored = [r for r in responding if r["n_facts"] > 0]
    return {
        "factscore": _mean([r["score"] for r in scored]),
        "factscore_gamma": _mean(
            [r["score"] * length_penalty(r["n_facts"], gamma) for r in scored]
        ),
        "gamma": gamma,
        "respond_ratio": len(responding) / len(results) if results else None,
        "mean_facts": _mean([r["n_facts"] for r in responding]),
        "mean_correct": _mean([r["n_supported"] for r in responding]),
        "mean_erroneous": _mean([r["n_facts"] - r["n_supported"] for r in responding]),
        "n_items": len(results) + len(unknown),
        "n_responding": len(responding),
        "n_scored": len(scored),
        "n_unknown_topic": len(unknown),
        "unknown_topics": left_out_topics(unknown),
    }
