"""OASST1 seed pairs: message trees rebuilt from parent_id, first turns with their rank-0 reply.

OASST1 (HF OpenAssistant/oasst1, or the release's *.messages.jsonl.gz) has one row per message:
message_id, parent_id (null for a tree's root prompt), role (prompter | assistant), text, lang,
rank (null, or 0..n among ranked siblings; 0 = best), deleted, synthetic, review_result,
message_tree_id (the root's message_id), and more fields this loader ignores. The release's
*.trees.jsonl.gz (one nested tree a line, replies under each message) is flattened to the same.

A seed pair is a root prompt in `lang` and its rank-0 assistant reply. How the quirks are handled:
- deleted, synthetic (model-written) and review-failed (review_result false) messages are not
  used, and neither is anything below them in the tree;
- a reply with rank null was never ranked: it is not a rank-0 reply, so a prompt whose usable
  replies are all unranked gives no pair (the paper takes rank-0 replies only);
- rank-0 is looked for among the usable replies, in file order;
- later turns (prompts below a reply) are not seed prompts;
- a message whose parent is not in the file (another split) is skipped and counted.
Every prompt left out is counted by reason (prompt_*), and so is every first-turn reply that
cannot be used (reply_*); the manifest records the counts.
"""

from __future__ import annotations

import logging
from collections import Counter

from flame.io import RecordError

log = logging.getLogger("flame.data")
NEEDED = ("message_id", "parent_id", "role", "text")


def _unusable(row: dict) -> str | None:
    """Why a message cannot be used by itself (None: it can)."""
    if row.get("deleted"):  # bools may be numpy's (from Parquet)
        return "deleted"
    if row.get("synthetic"):
        return "synthetic"
    if row.get("review_result") is not None and not row["review_result"]:
        return "review_failed"
    return None


def flatten_trees(rows: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Message rows from the release's *.trees.jsonl(.gz) layout ({message_tree_id, tree_state,
    prompt: {message fields, replies: [...]}}); message rows pass through unchanged."""
    out = []
    for where, row in rows:
        if not isinstance(row.get("prompt"), dict) or "message_id" in row:
            out.append((where, row))
            continue
        stack = [(row["prompt"], None)]
        while stack:
            node, parent = stack.pop()
            msg = {"parent_id": parent, "message_tree_id": row.get("message_tree_id"), **node}
            out.append((f"{where} (message {node.get('message_id')})", msg))
            replies = node.get("replies") or []
            stack.extend((r, node.get("message_id")) for r in reversed(replies))
    return out


def read_messages(rows: list[tuple[str, dict]]) -> dict[str, tuple[str, dict]]:
    """{message_id: (where, row)} with the fields checked; errors name file:line."""
    messages: dict[str, tuple[str, dict]] = {}
    for where, row in flatten_trees(rows):
        missing = [k for k in NEEDED if k not in row]
        if missing:
            raise RecordError(f"{where}: missing field(s) {', '.join(missing)}")
        if row["role"] not in ("prompter", "assistant"):
            raise RecordError(f"{where}: role must be prompter or assistant, not {row['role']!r}")
        mid = row["message_id"]
        if mid in messages:
            raise RecordError(
                f"{where}: duplicate message_id {mid!r} (first at {messages[mid][0]})"
            )
        messages[mid] = (where, row)
    return messages


def _check_tree_ids(messages: dict[str, tuple[str, dict]]) -> None:
    """message_tree_id (when given) is the root's message_id, and every reply's is its parent's:
    a file that mixes trees up fails here, naming the line."""
    for where, row in messages.values():
        tree, parent = row.get("message_tree_id"), messages.get(row["parent_id"])
        if tree is None or (row["parent_id"] is not None and parent is None):
            continue
        expected = row["message_id"] if parent is None else parent[1].get("message_tree_id", tree)
        if tree != expected:
            raise RecordError(f"{where}: message_tree_id {tree!r} is not its tree's {expected!r}")


def first_turn_pairs(
    rows: list[tuple[str, dict]], lang: str = "en", drops: Counter | None = None
) -> list[tuple[str, str]]:
    """(root prompt, rank-0 reply) pairs in message-id order; `drops` counts what was left out."""
    drops = Counter() if drops is None else drops
    messages = read_messages(rows)
    _check_tree_ids(messages)
    children: dict[str, list[dict]] = {}
    for _, row in messages.values():
        parent = row["parent_id"]
        if parent is not None:
            if parent not in messages:
                drops["messages_without_parent"] += 1
            children.setdefault(parent, []).append(row)
    pairs = []
    for mid in sorted(m for m, (_, r) in messages.items() if r["parent_id"] is None):
        where, root = messages[mid]
        reason = _unusable(root)
        if root["role"] != "prompter":
            reason = "root_not_a_prompt"
        elif reason is None and root.get("lang") != lang:
            reason = "other_language"
        replies = [c for c in children.get(mid, []) if c["role"] == "assistant"]
        for c in replies:
            why = _unusable(c)
            drops.update([f"reply_{why}"] if why else [])
        usable = [c for c in replies if _unusable(c) is None and str(c["text"]).strip()]
        best = [c for c in usable if c.get("rank") is not None and int(c["rank"]) == 0]
        if reason is None and not usable:
            reason = "no_usable_reply"
        elif reason is None and not best:
            ranked = any(c.get("rank") is not None for c in usable)
            reason = "no_usable_rank0_reply" if ranked else "replies_unranked"
        if reason is None and not str(root["text"]).strip():
            raise RecordError(f"{where}: empty prompt text")
        if reason is not None:
            drops[f"prompt_{reason}"] += 1
            continue
        pairs.append((root["text"].strip(), best[0]["text"].strip()))
    log.info("OASST1: %d first-turn %s pairs; left out: %s", len(pairs), lang, dict(drops))
    return pairs
