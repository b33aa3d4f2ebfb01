"""Every prompt the workflow sends to a model, in one place, with the parsers of their answers.

Each parser documents what happens to an answer it cannot read; callers count those cases.
"""

from __future__ import annotations

import re

from flame.lm import Prompt

# -- Fact-based instruction classification (FLAME section 3.2) --------------------------------
CLASSIFY = (
    "Given a user's question, decide whether answering it requires factual knowledge, such as "
    "the knowledge found in Wikipedia (people, places, events, science, history, works), or not "
    "(creative writing, advice, opinions, coding, maths, rewriting, planning).\n\n"
    "Question: {instruction}\n\n"
    'Does answering this question need factual knowledge? Reply in the form "Answer: Yes" or '
    '"Answer: No".'
)


def classify_prompt(instruction: str) -> Prompt:
    return Prompt.chat(CLASSIFY.format(instruction=instruction), prefix="Answer:")


def parse_yes_no(text: str) -> bool | None:
    """'Answer: Yes' / 'Answer: No' (or a bare Yes/No first word). None when neither is readable;
    the classifier treats None as not fact-based and counts it."""
    m = re.search(r"answer\s*:\s*(yes|no)\b", text, flags=re.IGNORECASE)
    if not m:
        m = re.match(r"\W*(yes|no)\b", text, flags=re.IGNORECASE)
    return None if not m else m.group(1).lower() == "yes"


# -- Few-shot generation with the pre-trained model (FLAME section 3.2, 5-shot) ---------------
FEWSHOT_HEADER = "Below are instructions paired with high-quality responses.\n\n"
FEWSHOT_DEMO = "### Instruction:\n{instruction}\n\n### Response:\n{response}\n\n"
FEWSHOT_STOP = ("### Instruction", "\n###", "\n\n\n")


FEWSHOT_CONTEXT = "### Context:\n{passages}\n\n"


def fewshot_prompt(
    instruction: str, demos: list[tuple[str, str]], context: list[str] | None = None
) -> Prompt:
    """Raw-text k-shot prompt: works with base (pre-trained) models, which have no chat template.
    `context` (retrieved passages, Table 1's PT+RAG) goes right before the instruction."""
    body = "".join(FEWSHOT_DEMO.format(instruction=i, response=r) for i, r in demos)
    if context:
        body += FEWSHOT_CONTEXT.format(passages="\n\n".join(context))
    return Prompt(
        text=FEWSHOT_HEADER + body + f"### Instruction:\n{instruction}\n\n### Response:\n"
    )


# -- RM_IF: the additive 5-point rubric of Self-Rewarding LMs (Yuan et al., 2024) -------------
RUBRIC = """Review the user's question and the corresponding response using the additive 5-point \
scoring system described below. Points are accumulated based on the satisfaction of each criterion:
- Add 1 point if the response is relevant and provides some information related to the user's \
inquiry, even if it is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user's question, but \
does not completely resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user's question in a \
useful way, regardless of whether it seems to have been written by an AI Assistant or if it has \
elements typically found in blogs or search results.
- Grant a fourth point if the response is clearly written from an AI Assistant's perspective, \
addressing the user's question directly and comprehensively, and is well-organized and helpful, \
even if there is slight room for improvement in clarity, conciseness or focus.
- Bestow a fifth point for a response that is impeccably tailored to the user's question by an \
AI Assistant, without extraneous information, reflecting expert knowledge, and demonstrating a \
high-quality, engaging, and insightful answer.

User: {instruction}
<response>{response}</response>

After examining the user's instruction and the response:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"
Remember to assess from the AI Assistant perspective, utilizing web search knowledge as \
necessary. To evaluate the response in alignment with this additive scoring model, we'll \
systematically attribute points based on the outlined criteria."""


def rubric_prompt(instruction: str, response: str, prefix: str = "") -> Prompt:
    """`prefix="Score:"` asks a small model for the number directly (no justification)."""
    return Prompt.chat(RUBRIC.format(instruction=instruction, response=response), prefix=prefix)


def parse_score(text: str, prefixed: bool = False, lo: int = 0, hi: int = 5) -> int | None:
    """The last 'Score: N' in the text; with a 'Score:' prefill, the leading number. None when no
    score in [lo, hi] is readable (the judgment is then left out of the mean, and counted)."""
    found = re.findall(r"score\s*:?\s*(\d+)", text, flags=re.IGNORECASE)
    if prefixed and not found:
        found = re.findall(r"^\s*(\d+)", text)
    if not found:
        return None
    value = int(found[-1])
    return value if lo <= value <= hi else None


# -- Pairwise judge for win rates (AlpacaEval style, both orders) -----------------------------
PAIRWISE = (
    "You are a careful judge of AI assistants. Compare the two responses to the user's "
    "instruction and decide which one is better: more helpful, more accurate and better "
    "written. Do not let the order or the length of the responses sway you.\n\n"
    "Instruction: {instruction}\n\n"
    "Response A:\n{a}\n\n"
    "Response B:\n{b}\n\n"
    'Which response is better? Reply in the form "Better: A" or "Better: B".'
)


def pairwise_prompt(instruction: str, a: str, b: str) -> Prompt:
    return Prompt.chat(PAIRWISE.format(instruction=instruction, a=a, b=b), prefix="Better:")


# Reverse judge (flame.judge, mode "reverse"): log P(instruction | response), raw text, so any
# backend with log-likelihoods (transformers, vLLM, /completions with echo) can score it.
REVERSE = "Here is an answer written by an assistant:\n{response}\n\nThe user's request was:"
