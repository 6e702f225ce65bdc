"""`translator.truncation`: what `truncation: "auto"` drops (docs/context-overflow.md), for random
conversations (hypothesis) and for the backends' wordings of the limit."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from translator.truncation import overflow_ratio, truncate_input


def message(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


@st.composite
def conversations(draw: Any) -> list[dict[str, Any]]:
    """System/developer messages, then turns: a user message, then assistant messages, reasoning and
    tool calls with their outputs (an output sometimes a turn late); a compaction item now and then."""
    items: list[dict[str, Any]] = [message(draw(st.sampled_from(["system", "developer"])), "rules")
                                   for _ in range(draw(st.integers(0, 2)))]  # fmt: skip
    pending: list[str] = []
    serial = 0
    for turn in range(draw(st.integers(1, 7))):
        items.append(message("user", "u" * draw(st.integers(1, 300)) + str(turn)))
        for call_id in pending:  # outputs of last turn's calls, arriving after the next user message
            items.append({"type": "function_call_output", "call_id": call_id, "output": "late"})
        pending = []
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["assistant", "reasoning", "call", "late_call", "developer", "compaction"]))
            serial += 1
            if kind == "assistant":
                items.append(message("assistant", "a" * draw(st.integers(1, 300))))
            elif kind == "reasoning":
                items.append({"type": "reasoning", "id": f"rs_{serial}", "summary": []})
            elif kind == "developer":
                items.append(message("developer", "mid-conversation note"))
            elif kind == "compaction":
                items.append({"type": "compaction", "id": f"cmp_{serial}", "encrypted_content": "x"})
            else:
                call_id = f"call_{serial}"
                items.append({"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"})
                if kind == "call":
                    items.append({"type": "function_call_output", "call_id": call_id, "output": "o" * draw(st.integers(1, 200))})
                else:
                    pending.append(call_id)
    for call_id in pending:
        items.append({"type": "function_call_output", "call_id": call_id, "output": "last"})
    return items


def _last_user(items: list[dict[str, Any]]) -> int:
    return max(i for i, item in enumerate(items) if item.get("role") == "user")


@settings(max_examples=300, deadline=None)
@given(conversations(), st.one_of(st.none(), st.floats(0.05, 0.99)))
def test_truncation_keeps_what_must_stay_and_drops_whole_turns(items: list[dict[str, Any]], ratio: float | None) -> None:
    result = truncate_input(items, ratio=ratio)
    if result is None:
        return
    assert len(result) < len(items)
    kept_ids = {id(item) for item in result}
    # a subsequence, in order
    positions = [next(i for i, item in enumerate(items) if item is kept) for kept in result]
    assert positions == sorted(positions)
    # instructions and compaction items stay
    for item in items:
        if item.get("role") in ("system", "developer") or item.get("type") == "compaction":
            assert id(item) in kept_ids, item
    # the turn being answered stays whole
    last = _last_user(items)
    assert all(id(item) in kept_ids for item in items[last:])
    # no call without its output, no output without its call
    calls = {i["call_id"] for i in result if i.get("type") == "function_call"}
    outputs = {i["call_id"] for i in result if i.get("type") == "function_call_output"}
    assert calls == outputs, (calls, outputs)
    # what remains of the conversation starts with a user message
    first = next(i for i in result if i.get("role") not in ("system", "developer") and i.get("type") != "compaction")
    assert first.get("role") == "user", first


@settings(max_examples=100, deadline=None)
@given(conversations())
def test_without_a_stated_limit_about_half_goes(items: list[dict[str, Any]]) -> None:
    result = truncate_input(items)
    turns_before_last = sum(1 for i in items[: _last_user(items)] if i.get("role") == "user")
    if turns_before_last == 0:
        return
    if result is None:  # only when the oldest turn's call has its output in the last turn
        assert any(i.get("type") == "function_call_output" for i in items[_last_user(items):])
        return
    assert len(result) < len(items)


def test_a_single_turn_or_a_string_cannot_be_truncated() -> None:
    assert truncate_input("just a string") is None
    assert truncate_input([message("system", "s"), message("user", "only turn")]) is None
    assert truncate_input([message("assistant", "no user at all")]) is None


def test_the_stated_limit_decides_how_much_goes() -> None:
    items = [message("system", "s")]
    for turn in range(10):
        items += [message("user", f"question {turn} " + "x" * 1000), message("assistant", "answer " + "y" * 1000)]
    items.append(message("user", "the last question"))
    gentle = truncate_input(items, ratio=0.9)
    harsh = truncate_input(items, ratio=0.2)
    assert gentle is not None and harsh is not None
    assert len(harsh) < len(gentle) < len(items)
    assert gentle[0]["role"] == "system" and gentle[-1]["content"][0]["text"] == "the last question"
    assert harsh[1]["role"] == "user"


@pytest.mark.parametrize(
    ("message_text", "ratio"),
    [
        ("This model's maximum context length is 8192 tokens. However, your messages resulted in 9500 tokens.",
         8192 / 9500),
        ("This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
         "(4000 in the messages, 1000 in the completion).", 4096 / 5000),
        ("the request exceeds the available context size, try increasing it", None),
        ("prompt too long", None),
        (None, None),
    ],
)  # fmt: skip
def test_overflow_ratio_reads_the_backends_numbers(message_text: str | None, ratio: float | None) -> None:
    assert overflow_ratio(message_text) == pytest.approx(ratio) if ratio is not None else overflow_ratio(message_text) is None
