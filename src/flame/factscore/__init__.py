"""FActScore: split a response into sentences, decompose them into atomic facts with a few-shot
LM, retrieve knowledge passages and verify each fact; the score is the share supported.

Command line: ``python -m flame.factscore --help`` (see flame/factscore/__main__.py).
"""

from flame.factscore.decompose import DemoSelector, decompose, load_demos, parse_facts
from flame.factscore.scorer import FactScorer, aggregate, is_abstained, length_penalty
from flame.factscore.sentences import split_sentences
from flame.factscore.verify import build_verify_prompt, text_verdict, verify

__all__ = [
    "DemoSelector",
    "FactScorer",
    "aggregate",
    "build_verify_prompt",
    "decompose",
    "is_abstained",
    "length_penalty",
    "load_demos",
    "parse_facts",
    "split_sentences",
    "text_verdict",
    "verify",
]
