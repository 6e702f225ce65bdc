"""`truncation: "auto"`: which conversation items to drop when the backend says the prompt is too long.

Pure (no I/O): the server calls `truncate_input` after a backend answered `context_length_exceeded`
before any stream, and retries once with what it returns (docs/context-overflow.md).

The rules, in order of precedence:
- system and developer messages stay, wherever they are (they are the instructions), and so do
  `compaction` items (they are the summary every later turn is built on);
- the last user message and everything after it stay: that is the turn being answered, with its tool
  calls and outputs so far;
- what goes, goes in whole turns, oldest first: a turn is a user message and the items up to the next
  one (the assistant's messages, reasoning, tool calls and their outputs), so no tool call is ever
  separated from its output and the conversation still starts with a user turn;
- a call whose output lies in a later turn takes that output with it; a turn whose call has its
  output in the kept last turn cannot go (nor can any turn after it);
- how much goes: when the backend's message states its limit and the request's size ("maximum
  context length is 8192 tokens … resulted in 9500 tokens"), enough to bring the whole input to 85%
  of the limit, measured in JSON bytes of the items as a stand-in for tokens; otherwise half of what
  could go. At least one turn goes, or the answer is None (nothing can be dropped: the error stands).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = ["overflow_ratio", "truncate_input"]

_KEPT_ROLES = frozenset(("system", "developer"))
_KEPT_TYPES = frozenset(("compaction", "compaction_summary"))
_CALL_TYPES = frozenset(("function_call", "custom_tool_call"))
_OUTPUT_TYPES = frozenset(("function_call_output", "custom_tool_call_output"))
#: Share of the backend's stated limit the truncated input aims at (room for the answer and for
#: the error of bytes as a measure of tokens).
TARGET_SHARE = 0.85
#: Share of the droppable items kept when the backend did not say how far over it was.
DEFAULT_KEEP = 0.5

_LIMIT = re.compile(r"(?:maximum context length|context (?:length|size|window)|n_ctx)\D{0,20}?(\d{2,9})", re.I)
_ASKED = re.compile(r"(?:resulted in|requested|you have|n_prompt_tokens|prompt (?:has|is|contains))\D{0,20}?(\d{2,9})",
                    re.I)  # fmt: skip


def overflow_ratio(message: str | None) -> float | None:
    """limit / requested tokens as the backend's message states them, or None when it does not."""
    if not isinstance(message, str):
        return None
    limit, asked = _LIMIT.search(message), _ASKED.search(message)
    if limit is None or asked is None:
        return None
    limit_tokens, asked_tokens = int(limit.group(1)), int(asked.group(1))
    if limit_tokens <= 0 or asked_tokens <= limit_tokens:
        return None
    return limit_tokens / asked_tokens


def _role(item: Any) -> str | None:
    if isinstance(item, dict) and item.get("type", "message") == "message":
        role = item.get("role")
        return role if isinstance(role, str) else None
    return None


def _kept(item: Any) -> bool:
    return _role(item) in _KEPT_ROLES or (isinstance(item, dict) and item.get("type") in _KEPT_TYPES)


def _size(item: Any) -> int:
    try:
        return len(orjson.dumps(item))
    except TypeError:
        return 1


def truncate_input(items: Any, *, ratio: float | None = None) -> list[Any] | None:
    """`items` with the oldest whole turns dropped (see the module docstring), or None.

    `ratio` is `overflow_ratio` of the backend's message (limit / requested), when known."""
    if not isinstance(items, list):
        return None  # a string input is one user turn: nothing to drop
    last_user = max((i for i, item in enumerate(items) if _role(item) == "user"), default=None)
    if last_user is None:
        return None
    # Turns before the last user message: each starts at a user message (items before the first
    # user message ride with the first turn); kept items belong to no turn.
    turns: list[list[int]] = []
    for index in range(last_user):
        item = items[index]
        if _kept(item):
            continue
        if _role(item) == "user" or not turns:
            turns.append([])
        turns[-1].append(index)
    if not turns:
        return None
    calls_at: dict[str, int] = {}  # call_id → turn of the call
    outputs_at: dict[str, list[int]] = {}  # call_id → indexes of its outputs, anywhere
    turn_of = {index: number for number, turn in enumerate(turns) for index in turn}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("call_id"), str):
            continue
        if item.get("type") in _CALL_TYPES and index in turn_of:
            calls_at[item["call_id"]] = turn_of[index]
        elif item.get("type") in _OUTPUT_TYPES:
            outputs_at.setdefault(item["call_id"], []).append(index)

    sizes = [_size(item) for item in items]
    droppable = sum(sizes[i] for turn in turns for i in turn)
    if ratio is not None and 0 < ratio < 1:
        must_drop = sum(sizes) - int(sum(sizes) * ratio * TARGET_SHARE)
    else:
        must_drop = droppable - int(droppable * DEFAULT_KEEP)
    dropped: set[int] = set()
    freed = 0
    for number, turn in enumerate(turns):
        extra: list[int] = []
        blocked = False
        for index in turn:
            call_id = items[index].get("call_id") if isinstance(items[index], dict) else None
            if isinstance(call_id, str) and calls_at.get(call_id) == number:
                for out in outputs_at.get(call_id, []):
                    if out >= last_user:
                        blocked = True  # its output belongs to the turn being answered
                    elif out not in turn:
                        extra.append(out)
        if blocked:
            break
        for index in (*turn, *extra):
            if index not in dropped:
                dropped.add(index)
                freed += sizes[index]
        if freed >= must_drop:
            break
    if not dropped:
        return None
    # An output left without its call (its call went in an earlier turn) goes too.
    gone_calls = {items[i]["call_id"] for i in dropped if isinstance(items[i], dict) and items[i].get("type") in _CALL_TYPES}
    for call_id in gone_calls:
        dropped.update(i for i in outputs_at.get(call_id, []) if i < last_user)
    return [item for index, item in enumerate(items) if index not in dropped]
