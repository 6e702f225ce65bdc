"""translator/compaction.py: sealing, the trigger rule, the summary request, expansion, events.

Property tests: for random conversations, a compaction item produced by the bridge, sent back and
expanded puts the summary (verbatim) before the items after it and keeps the user's words; any
tampering with ``encrypted_content`` is refused with a 400 naming the item.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from translator import InvalidRequest, UpstreamError, responses_to_chat_request
from translator.compaction import (
    SUMMARY_INSTRUCTIONS,
    check_compaction_trigger,
    compaction_item,
    compaction_output,
    compaction_resource,
    expand_compaction_items,
    open_compaction,
    render_transcript,
    retained_user_messages,
    seal_summary,
    split_compaction_trigger,
    summary_from_response,
    summary_request,
    trigger_events,
    trigger_response,
)
from translator.reasoning import pack_reasoning

KEYS = [None, "a-bridge-encryption-key"]

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80)
role = st.sampled_from(["user", "assistant", "system", "developer"])
message = st.builds(lambda r, t: {"type": "message", "role": r, "content": t}, role, text)
parts_message = st.builds(
    lambda t: {"type": "message", "role": "user", "content": [{"type": "input_text", "text": t}]}, text
)
call = st.builds(
    lambda n, a: {"type": "function_call", "call_id": f"call_{n}", "name": "exec_command", "arguments": a},
    st.integers(0, 999), text,
)  # fmt: skip
output = st.builds(lambda n, o: {"type": "function_call_output", "call_id": f"call_{n}", "output": o},
                   st.integers(0, 999), text)  # fmt: skip
conversation = st.lists(st.one_of(message, parts_message, call, output), min_size=1, max_size=12)
# What follows a compaction item must be a valid turn on its own: messages, and calls with their outputs.
call_pair = st.builds(
    lambda n, a, o: [{"type": "function_call", "call_id": f"call_{n}", "name": "f", "arguments": a},
                     {"type": "function_call_output", "call_id": f"call_{n}", "output": o}],
    st.integers(0, 999), text, text,
)  # fmt: skip
later = st.lists(st.one_of(message.map(lambda m: [m]), call_pair), max_size=4).map(
    lambda xs: [i for x in xs for i in x]
)


def _chat_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _text(item: dict[str, Any]) -> str:
    content = item["content"]
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


@settings(max_examples=150, deadline=None)
@given(conversation, text, later, st.sampled_from(KEYS))
def test_compaction_round_trips(items: list[dict[str, Any]], summary: str, after: list[dict[str, Any]],
                                key: str | None) -> None:  # fmt: skip
    window = compaction_output(items, summary, key=key, model="m")
    assert window[-1]["type"] == "compaction" and window[-1]["id"].startswith("cmp_")
    users = [i for i in items if i["type"] == "message" and i["role"] == "user"]
    assert [_text(m) for m in window[:-1]] == [_text(u) for u in users]
    assert all(m["status"] == "completed" and m["role"] == "user" and m["id"] for m in window[:-1])

    expanded = expand_compaction_items([*window, *after], key=key)
    assert all(i.get("type") != "compaction" for i in expanded)
    summary_at = len(window) - 1
    assert [_text(m) for m in expanded[:summary_at]] == [_text(u) for u in users]
    assert f"<summary>\n{summary}\n</summary>" in _text(expanded[summary_at])
    assert expanded[summary_at]["role"] == "user"
    assert expanded[summary_at + 1 :] == after
    # What the chat backend gets: the translator takes the expanded input as it is.
    chat = responses_to_chat_request({"model": "m", "input": expanded})
    assert any(summary in _chat_text(m) for m in chat["messages"])


def _tamper(token: str, position: int, replacement: str) -> str:
    index = position % len(token)
    if token[index] == replacement:
        replacement = "B" if replacement != "B" else "C"
    return token[:index] + replacement + token[index + 1 :]


@settings(max_examples=300, deadline=None)
@given(
    text, st.integers(0, 10_000), st.sampled_from("AZaz09-_=.+/x"), st.sampled_from(KEYS), st.integers(0, 5)
)
def test_a_tampered_compaction_item_is_refused(summary: str, position: int, replacement: str,
                                               key: str | None, index: int) -> None:  # fmt: skip
    item = compaction_item(summary, key=key)
    item["encrypted_content"] = _tamper(item["encrypted_content"], position, replacement)
    items = [{"type": "message", "role": "user", "content": "x"}] * index + [item]
    with pytest.raises(InvalidRequest) as caught:
        expand_compaction_items(items, key=key)
    assert caught.value.param == f"input[{index}].encrypted_content"
    assert caught.value.status == 400


@pytest.mark.parametrize("key", KEYS)
def test_forged_payloads_are_refused(key: str | None) -> None:
    # A well-formed token without our tag, a reasoning token, another kind, truncations, junk.
    forged = [
        pack_reasoning({"kind": "compaction", "v": 1, "summary": "evil", "model": "", "created_at": 0}, key),
        pack_reasoning({"text": "some reasoning"}, key),
        seal_summary("s", key=key)[:-4],
        "",
        "rb1.",
        "gAAAAABsomething",
        "x" * 100,
    ]
    for token in forged:
        with pytest.raises(InvalidRequest) as caught:
            open_compaction(token, key=key, param="input[0].encrypted_content")
        assert caught.value.param == "input[0].encrypted_content"
    with pytest.raises(InvalidRequest):
        open_compaction(None, key=key)
    with pytest.raises(InvalidRequest) as too_long:
        open_compaction("rb1." + "A" * 10_485_761, key=key)
    assert too_long.value.code == "string_above_max_length"


def test_keys_do_not_mix() -> None:
    sealed = seal_summary("s", key="k1")
    assert sealed.startswith("rb1f.") and "s" not in sealed[5:6]
    assert open_compaction(sealed, key="k1")["summary"] == "s"
    for other in ("k2", None):
        with pytest.raises(InvalidRequest):
            open_compaction(sealed, key=other)
    plain = seal_summary("s")
    with pytest.raises(InvalidRequest):  # with a key set, an unsealed token could be forged
        open_compaction(plain, key="k1")


def test_tokens_survive_a_restart() -> None:
    """No per-process secret: a token made earlier (another process, another replica) still opens."""
    token = (
        "rb1.eyJraW5kIjoiY29tcGFjdGlvbiIsInYiOjEsInN1bW1hcnkiOiJoZWxsbyIsIm1vZGVsIjoiIiwiY3JlYXRlZF9hdCI6MTc5"
        "NjExNzUzNywidGFnIjoidlVKak1TdmxlQUROMHYxMUZWbmpDUSJ9"
    )
    assert open_compaction(token)["summary"] == "hello"


# ---------------------------------------------------------------------------------------- trigger


def test_trigger_must_be_last() -> None:
    trigger = {"type": "compaction_trigger"}
    user = {"type": "message", "role": "user", "content": "hi"}
    assert split_compaction_trigger([user, trigger]) == ([user], True)
    assert split_compaction_trigger([user]) == ([user], False)
    assert split_compaction_trigger("hi") == ("hi", False)
    assert split_compaction_trigger([trigger]) == ([], True)
    for items, index in (([trigger, user], 0), ([user, trigger, user], 1), ([trigger, trigger], 0)):
        with pytest.raises(InvalidRequest) as caught:
            split_compaction_trigger(items)
        assert caught.value.param == f"input[{index}]"
        assert "must be the final input item" in caught.value.message
    check_compaction_trigger(None)


def test_trigger_response_has_exactly_one_compaction_item() -> None:
    request = {
        "model": "m",
        "input": [{"type": "compaction_trigger"}],
        "store": False,
        "prompt_cache_key": "t",
    }
    usage = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
    response = trigger_response(request, "the summary", usage, key=None, model="m")
    assert response["status"] == "completed" and response["id"].startswith("resp_")
    assert [i["type"] for i in response["output"]] == ["compaction"]
    assert open_compaction(response["output"][0]["encrypted_content"])["summary"] == "the summary"
    assert response["usage"]["input_tokens"] == 120 and response["usage"]["output_tokens"] == 30
    assert response["prompt_cache_key"] == "t" and response["store"] is False

    events = trigger_events(response)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [e["sequence_number"] for e in events] == list(range(5))
    assert events[0]["response"]["output"] == [] and events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["id"] == response["id"] == events[-1]["response"]["id"]
    for event in events[2:4]:
        assert event["output_index"] == 0 and event["item"] == response["output"][0]
    assert events[-1]["response"] is response


# ------------------------------------------------------------------------- summary request/answer


def test_summary_request_is_a_plain_responses_body() -> None:
    items = [
        {"type": "message", "role": "user", "content": "fix the build"},
        {"type": "reasoning", "summary": [], "encrypted_content": "rb1.xx"},
        {"type": "function_call", "call_id": "c1", "name": "exec_command", "arguments": '{"cmd":"make"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "error: missing foo.h"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Adding foo.h"}],
        },
    ]
    body = summary_request(items, model="m", prompt_cache_key="thread-1")
    assert body["instructions"] == SUMMARY_INSTRUCTIONS and body["store"] is False
    assert body["prompt_cache_key"] == "thread-1" and "tools" not in body
    text = body["input"][0]["content"][0]["text"]
    assert "### user\nfix the build" in text
    assert '### tool call exec_command (c1)\n{"cmd":"make"}' in text
    assert "### tool result (c1)\nerror: missing foo.h" in text
    assert "### assistant\nAdding foo.h" in text
    assert "rb1.xx" not in text  # reasoning is private and left out
    for heading in (
        "## Goal",
        "## Decisions",
        "## Files and state",
        "## Tool results that matter",
        "## Open tasks",
    ):
        assert heading in SUMMARY_INSTRUCTIONS
    chat = responses_to_chat_request(body)
    assert chat["messages"][0]["role"] == "system" and chat["max_tokens"] == body["max_output_tokens"]


def test_transcript_budget_keeps_first_user_message_and_latest() -> None:
    items = [{"type": "message", "role": "user", "content": "THE TASK"}]
    items += [
        {"type": "function_call_output", "call_id": f"c{i}", "output": f"out{i} " + "x" * 900}
        for i in range(50)
    ]
    items += [{"type": "message", "role": "user", "content": "LATEST"}]
    transcript = render_transcript(items, budget=10_000)
    assert len(transcript) <= 10_500
    assert transcript.startswith("### user\nTHE TASK")
    assert transcript.endswith("### user\nLATEST")
    assert "earlier entries omitted" in transcript and "out49" in transcript and "out0 " not in transcript


def test_long_tool_output_is_clipped_head_and_tail() -> None:
    items = [{"type": "function_call_output", "call_id": "c", "output": "HEAD" + "y" * 50_000 + "TAIL"}]
    transcript = render_transcript(items)
    assert "HEAD" in transcript and "TAIL" in transcript and "characters omitted" in transcript
    assert len(transcript) < 7_000


def test_summary_from_response() -> None:
    answer = {"output": [{"type": "reasoning", "summary": []},
                         {"type": "message", "content": [{"type": "output_text", "text": " S \n"}]}]}  # fmt: skip
    assert summary_from_response(answer) == "S"
    for empty in ({"output": []}, {"output": [{"type": "function_call"}]}, None):
        with pytest.raises(UpstreamError):
            summary_from_response(empty)


def test_retained_user_messages_budget_keeps_newest() -> None:
    items = [{"type": "message", "role": "user", "content": f"m{i} " + "z" * 100} for i in range(10)]
    kept = retained_user_messages(items, budget=350)
    assert [m["content"][0]["text"][:2] for m in kept] == ["m7", "m8", "m9"]
    assert retained_user_messages("just text")[0]["content"] == [{"type": "input_text", "text": "just text"}]


def test_compaction_resource_shape() -> None:
    resource = compaction_resource([{"type": "compaction"}], {"prompt_tokens": 3, "completion_tokens": 2})
    assert set(resource) == {"id", "object", "created_at", "output", "usage"}
    assert resource["object"] == "response.compaction"
    assert resource["usage"]["total_tokens"] == 5
    assert compaction_resource([], None)["usage"]["input_tokens"] == 0


def test_expansion_drops_earlier_compactions_and_non_user_items_before_the_latest() -> None:
    first, second = compaction_item("old"), compaction_item("new")
    items = [
        {"type": "message", "role": "developer", "content": "rules"},
        {"type": "message", "role": "user", "content": "u1"},
        first,
        {"type": "message", "role": "assistant", "content": "a1"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        second,
        {"type": "message", "role": "assistant", "content": "a2"},
    ]
    expanded = expand_compaction_items(items)
    assert [i.get("role") for i in expanded] == ["developer", "user", "user", "assistant"]
    assert "new" in _text(expanded[2]) and "old" not in _text(expanded[2])
    assert expand_compaction_items("plain") == "plain"
    # A bad earlier item is refused too, named by its index; stored history is named as such.
    broken = {**first, "encrypted_content": "rb1.bad"}
    with pytest.raises(InvalidRequest) as caught:
        expand_compaction_items([broken, second])
    assert caught.value.param == "input[0].encrypted_content"
    with pytest.raises(InvalidRequest) as stored:
        expand_compaction_items([broken, second], first_client_index=1)
    assert stored.value.param == "previous_response_id"


@pytest.mark.parametrize("key", KEYS)
def test_a_second_spelling_of_the_same_bytes_is_refused(key: str | None) -> None:
    """base64 leaves spare bits in a final partial group: flipping them decodes to the same bytes.
    Such a token is not one the bridge wrote, so it is refused (no token has two spellings)."""
    import base64

    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for n in range(40):
        token = seal_summary("s" * n, key=key)
        body = token.split(".", 1)[1].rstrip("=")
        if len(body) % 4 in (2, 3):
            break
    else:  # pragma: no cover
        pytest.fail("no token with a partial final group")
    pad = "=" * (len(token) - len(token.rstrip("=")))
    last = alphabet.index(body[-1])
    twin_body = body[:-1] + alphabet[last ^ 1]
    twin = token.split(".", 1)[0] + "." + twin_body + pad
    assert base64.urlsafe_b64decode(twin_body + "=" * (-len(twin_body) % 4)) == base64.urlsafe_b64decode(
        body + "=" * (-len(body) % 4)
    )
    with pytest.raises(InvalidRequest):
        open_compaction(twin, key=key)
