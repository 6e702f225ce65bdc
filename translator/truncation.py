"""`truncation: "auto"`: trim a request's input items, oldest first, to fit a token budget.

Pure: items in, items out, no I/O. The server decides the budget (a configured context window, or
one learned from a backend's `context_length_exceeded` answer) and what is sent upstream; what is
stored is never trimmed (docs/conversations.md, "Truncation").

The rules, as the Responses API states them for `truncation: "auto"` and as a chat backend needs
them to accept what is left:

- the oldest items go first;
- system and developer messages are never dropped (instructions, wherever they are in the input);
- the latest user turn is never dropped: the last user message and every item after it (the tool
  calls and outputs of the turn in progress);
- a tool call and its output(s) go together (a chat backend refuses a `tool` message whose call is
  missing, and an assistant tool call without its answer), and so does a reasoning item with the
  item after it (it is replayed on the assistant message that follows it);
- when nothing more may be dropped the rest is returned even if it is still over budget: the
  backend's own `context_length_exceeded` then stands.

Token counts are an estimate, not a tokenizer: `estimate_tokens` is the UTF-8 length of the item's
compact JSON divided by `BYTES_PER_TOKEN` (4, the usual figure for English text with BPE
vocabularies), rounded up, plus `ITEM_OVERHEAD` per item for the chat message framing. It
overestimates plain English (JSON syntax counts too) and underestimates scripts with few bytes per
token; the server's retry on `context_length_exceeded` covers the error either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "BYTES_PER_TOKEN",
    "DEFAULT_OUTPUT_RESERVE",
    "ITEM_OVERHEAD",
    "Truncated",
    "estimate_tokens",
    "input_budget",
    "item_blocks",
    "truncate_items",
]

#: Bytes of compact JSON per estimated token.
BYTES_PER_TOKEN = 4
#: Estimated tokens of chat framing per item (role markers, separators).
ITEM_OVERHEAD = 4
#: Tokens kept free for the answer when the request sets no `max_output_tokens`: a quarter of the
#: window, at most this many.
DEFAULT_OUTPUT_RESERVE = 4096

#: Item types that answer a tool call, and the call types they answer (matched by `call_id`).
_CALL_TYPES = frozenset({"function_call", "custom_tool_call", "local_shell_call", "computer_call",
                         "mcp_call", "apply_patch_call", "shell_call"})  # fmt: skip
_OUTPUT_TYPES = frozenset({"function_call_output", "custom_tool_call_output", "local_shell_call_output",
                           "computer_call_output", "apply_patch_call_output", "shell_call_output"})  # fmt: skip
_PINNED_ROLES = frozenset({"system", "developer"})


def estimate_tokens(value: Any) -> int:
    """Estimated tokens of one item (or any JSON value): ceil(bytes / 4) + the per-item overhead."""
    try:
        size = len(orjson.dumps(value))
    except TypeError:  # not JSON (never from a parsed request): count its text form
        size = len(str(value).encode("utf-8", "replace"))
    return -(-size // BYTES_PER_TOKEN) + ITEM_OVERHEAD


def input_budget(context_window: int, request: dict[str, Any]) -> int:
    """Estimated tokens the input items may take in a window of `context_window` tokens: the window
    less the answer's room (`max_output_tokens`, else a quarter of the window up to
    `DEFAULT_OUTPUT_RESERVE`) and less the instructions and tool definitions, which are always sent."""
    max_output = request.get("max_output_tokens")
    if isinstance(max_output, int) and not isinstance(max_output, bool) and max_output > 0:
        reserve = max_output
    else:
        reserve = min(context_window // 4, DEFAULT_OUTPUT_RESERVE)
    fixed = 0
    for name in ("instructions", "tools", "text"):
        if request.get(name) is not None:
            fixed += estimate_tokens(request[name])
    return max(context_window - reserve - fixed, 0)


def _role(item: Any) -> str | None:
    if isinstance(item, dict) and item.get("type", "message") == "message":
        role = item.get("role")
        return role if isinstance(role, str) else None
    return None


def _scan(items: Sequence[Any]) -> tuple[list[str | None], list[bool]]:
    """Each item's type (a message without one is a message) and whether it is a pinned
    (system/developer) message, in one pass: the per-item work of a 10,000-item history."""
    kinds: list[str | None] = []
    pinned: list[bool] = []
    for item in items:
        if not isinstance(item, dict):
            kinds.append(None)
            pinned.append(False)
            continue
        kind = item.get("type")
        if kind is None and "role" in item:
            kind = "message"
        kinds.append(kind if isinstance(kind, str) else None)
        pinned.append(kind == "message" and item.get("role") in _PINNED_ROLES)
    return kinds, pinned


def item_blocks(items: Sequence[Any], kinds: list[str | None] | None = None) -> list[tuple[int, int]]:
    """The input cut into blocks that are dropped whole, as `(start, end)` index ranges in order.

    A block is one item, widened so that every item sharing a `call_id` with a call or an output in
    it is inside it too (parallel calls answered after each other make one block), and a reasoning
    item joins the block after it. Blocks are contiguous and cover the input, so dropping a prefix
    of blocks drops a prefix of items."""
    n = len(items)
    if n == 0:
        return []
    # The furthest index each item must stay with: the last item with the same call_id.
    if kinds is None:
        kinds = _scan(items)[0]
    paired = _CALL_TYPES | _OUTPUT_TYPES
    last_with: dict[str, int] = {}
    for index, kind in enumerate(kinds):
        if kind in paired:
            call_id = items[index].get("call_id")
            if isinstance(call_id, str):
                last_with[call_id] = index
    blocks: list[tuple[int, int]] = []
    start = 0
    reach = -1
    for index, kind in enumerate(kinds):
        if kind in paired:
            call_id = items[index].get("call_id")
            if isinstance(call_id, str):
                reach = max(reach, last_with[call_id])
        elif kind == "reasoning" and index + 1 < n:
            reach = max(reach, index + 1)
        if index >= reach:
            blocks.append((start, index + 1))
            start = index + 1
            reach = -1
    if start < n:
        blocks.append((start, n))
    return blocks


def _latest_turn_start(items: Sequence[Any]) -> int:
    """Index of the last user message (its turn runs to the end); the last item when none."""
    for index in range(len(items) - 1, -1, -1):
        if _role(items[index]) == "user":
            return index
    return max(len(items) - 1, 0)


@dataclass(frozen=True)
class Truncated:
    """What `truncate_items` kept, and how much it dropped."""

    items: list[Any]
    dropped: int  # items removed
    estimated_tokens: int  # estimate of what is kept
    fits: bool  # whether the kept items are within the budget


def truncate_items(items: Sequence[Any], budget: int) -> Truncated:
    """Drop the oldest droppable blocks of `items` until their estimate is within `budget` (see the
    module docstring for what is never dropped). Returns the items unchanged when they fit.

    Dropping the fewest oldest blocks is keeping the most newest ones, so the walk goes from the
    newest block back and stops at the first that does not fit: only the kept items (and one block
    more) are estimated, not a long conversation's whole history."""
    protected_from = _latest_turn_start(items)
    kinds, pinned = _scan(items)
    droppable: list[tuple[int, int]] = []
    fixed = 0  # what is always kept: blocks holding a pinned message, and the latest turn
    for start, end in item_blocks(items, kinds):
        if end > protected_from or (True in pinned[start:end]):
            fixed += sum(estimate_tokens(items[i]) for i in range(start, end))
        else:
            droppable.append((start, end))
    total = fixed
    first_kept = len(droppable)
    for position in range(len(droppable) - 1, -1, -1):
        start, end = droppable[position]
        cost = sum(estimate_tokens(items[i]) for i in range(start, end))
        if total + cost > budget:
            break
        total += cost
        first_kept = position
    if first_kept == 0:
        return Truncated(list(items), 0, total, total <= budget)
    # Whole turns go: what is kept of the history starts with a user message, as chat templates
    # that alternate roles (and the model) expect, never with an orphaned answer or tool result.
    while first_kept < len(droppable) and _role(items[droppable[first_kept][0]]) != "user":
        start, end = droppable[first_kept]
        total -= sum(estimate_tokens(items[i]) for i in range(start, end))
        first_kept += 1
    drop = [False] * len(items)
    for start, end in droppable[:first_kept]:
        for i in range(start, end):
            drop[i] = True
    kept = [item for item, dropped in zip(items, drop, strict=True) if not dropped]
    return Truncated(kept, len(items) - len(kept), total, total <= budget)
