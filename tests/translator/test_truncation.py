"""Property tests of `translator.truncation`: the trimming invariants hold for random conversations
(messages of every role, reasoning, single and parallel tool calls answered later), any budget."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import translator
from translator.truncation import estimate_tokens, input_budget, item_blocks, truncate_items

_text = st.text(alphabet="abcdefghij klmnop\u00e9\u4e2d", min_size=0, max_size=120)


@st.composite
def conversations(draw: Any) -> list[dict[str, Any]]:
    """A conversation as a client builds one: turns of user text, assistant text, reasoning, and
    tool calls whose outputs come after all the calls of that turn (parallel calls)."""
    items: list[dict[str, Any]] = []
    calls = 0
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["user", "assistant", "system", "developer", "tools", "reasoning_tools"]))
        if kind in ("user", "assistant", "system", "developer"):
            items.append({"type": "message", "role": kind, "content": draw(_text)})
            continue
        if kind == "reasoning_tools":
            items.append({"type": "reasoning", "summary": [{"type": "summary_text", "text": draw(_text)}]})
        ids = []
        for _ in range(draw(st.integers(1, 3))):
            calls += 1
            ids.append(f"call_{calls}")
            items.append({"type": "function_call", "call_id": ids[-1], "name": "f", "arguments": draw(_text)})
        for call_id in draw(st.permutations(ids)):
            items.append({"type": "function_call_output", "call_id": call_id, "output": draw(_text)})
    if draw(st.booleans()):
        items.append({"type": "message", "role": "user", "content": draw(_text)})
    return items


def _pinned(item: dict[str, Any]) -> bool:
    return item.get("type") == "message" and item.get("role") in ("system", "developer")


def _latest_user(items: list[dict[str, Any]]) -> int:
    users = [i for i, item in enumerate(items) if item.get("type") == "message" and item.get("role") == "user"]
    return users[-1] if users else max(len(items) - 1, 0)


def _kept_indexes(items: list[dict[str, Any]], kept: list[dict[str, Any]]) -> list[int]:
    """Positions of the kept items in the input (they are the same objects, in order)."""
    out, start = [], 0
    for item in kept:
        index = next(i for i in range(start, len(items)) if items[i] is item)
        out.append(index)
        start = index + 1
    return out


@settings(max_examples=400, deadline=None)
@given(conversations(), st.integers(0, 4000))
def test_trimming_invariants(items: list[dict[str, Any]], budget: int) -> None:
    result = truncate_items(items, budget)
    kept_at = _kept_indexes(items, result.items)  # raises if not a subsequence in order
    kept = set(kept_at)
    assert result.dropped == len(items) - len(kept)
    assert result.estimated_tokens == sum(estimate_tokens(items[i]) for i in kept)
    assert result.fits == (result.estimated_tokens <= budget)

    # instructions and the latest user turn are never dropped
    assert all(i in kept for i, item in enumerate(items) if _pinned(item))
    assert all(i in kept for i in range(_latest_user(items), len(items)))
    # a tool call and its outputs go together
    by_call: dict[str, set[bool]] = {}
    for i, item in enumerate(items):
        if "call_id" in item:
            by_call.setdefault(item["call_id"], set()).add(i in kept)
    assert all(len(states) == 1 for states in by_call.values()), by_call
    # a reasoning item is kept only with the item after it
    for i, item in enumerate(items[:-1]):
        if item["type"] == "reasoning" and i in kept:
            assert i + 1 in kept

    # oldest first: every dropped item comes before every kept droppable one
    droppable_kept = [i for i in kept if not _pinned(items[i]) and i < _latest_user(items)]
    dropped = [i for i in range(len(items)) if i not in kept]
    if dropped and droppable_kept:
        assert max(dropped) < min(droppable_kept)
    # whole turns go: the kept history (before the latest turn) starts with a user message
    if dropped and droppable_kept:
        first = min(droppable_kept)
        block = next(b for b in item_blocks(items) if b[0] <= first < b[1])
        always_kept = block[1] > _latest_user(items) or any(_pinned(items[i]) for i in range(*block))
        assert always_kept or items[first].get("role") == "user", items[first]
    # no more than needed: putting the last dropped block back would not fit, or would leave the
    # kept history starting with something other than a user message
    if dropped:
        block = next(b for b in item_blocks(items) if b[0] <= max(dropped) < b[1])
        back = sum(estimate_tokens(items[i]) for i in range(*block))
        assert result.estimated_tokens + back > budget or items[block[0]].get("role") != "user"
    # over budget only when nothing more could go
    if not result.fits and droppable_kept:
        first = min(droppable_kept)
        block = next(b for b in item_blocks(items) if b[0] <= first < b[1])
        assert block[1] > _latest_user(items) or any(_pinned(items[i]) for i in range(*block))


@settings(max_examples=200, deadline=None)
@given(conversations(), st.integers(0, 4000))
def test_what_is_kept_still_translates(items: list[dict[str, Any]], budget: int) -> None:
    """The chat backend accepts what is left whenever it accepted the whole (no orphan tool output,
    no call without its answer)."""
    if not items:
        return
    translator.responses_to_chat_request({"model": "m", "input": items})
    kept = truncate_items(items, budget).items
    translator.responses_to_chat_request({"model": "m", "input": kept})


@given(conversations())
def test_a_budget_that_fits_changes_nothing(items: list[dict[str, Any]]) -> None:
    total = sum(estimate_tokens(item) for item in items)
    result = truncate_items(items, total)
    assert result.items == items and result.dropped == 0 and result.fits


@given(conversations())
def test_blocks_cover_the_input_in_order(items: list[dict[str, Any]]) -> None:
    blocks = item_blocks(items)
    assert [i for start, end in blocks for i in range(start, end)] == list(range(len(items)))
    assert all(start < end for start, end in blocks)


def test_estimate_is_bytes_over_four_plus_overhead() -> None:
    item = {"role": "user", "content": "x" * 400}
    size = len(b'{"role":"user","content":"' + b"x" * 400 + b'"}')
    assert estimate_tokens(item) == -(-size // 4) + 4
    assert estimate_tokens({"content": "\u4e2d" * 100}) > estimate_tokens({"content": "a" * 100})


def test_input_budget_reserves_the_answer_and_the_fixed_parts() -> None:
    assert input_budget(8000, {}) == 8000 - 2000
    assert input_budget(100_000, {}) == 100_000 - 4096
    assert input_budget(8000, {"max_output_tokens": 500}) == 7500
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    assert input_budget(8000, {"instructions": "be brief", "tools": tools}) == (
        8000 - 2000 - estimate_tokens("be brief") - estimate_tokens(tools)
    )
    assert input_budget(100, {"max_output_tokens": 500}) == 0
