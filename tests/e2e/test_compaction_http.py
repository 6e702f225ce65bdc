"""`POST /v1/responses/compact` over a real uvicorn bridge in front of the fixture backend.

The rules are the Open Responses compliance suite's compaction checks, written here in our words
(its source is on GitHub only, so CI cannot fetch it; docs/compaction.md): a compact request with
``prompt_cache_key`` answers a ``response.compaction`` whose output holds a ``compaction`` item; one
without ``model`` is a 400; the window, sent back as the input of a new chain, works. On top:
what the backend is asked, that the summary reaches the backend on the next turn, and that a
forged or corrupted item is a 400 naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import BridgeHandle

MODEL = "fixture-scripted"


def _compact(url: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(url + "/responses/compact", json=body, timeout=30, **kwargs)


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def _summary_call(requests: list[dict[str, Any]]) -> dict[str, Any]:
    calls = [r for r in requests if "handoff summary" in str(r.get("messages", [{}])[0].get("content"))]
    assert len(calls) == 1, f"expected one summarisation request, saw {len(calls)}"
    return calls[0]


CONVERSATION = [
    {"type": "message", "role": "user", "content": "We agreed to launch on Tuesday and notify support first."},
    {"type": "message", "role": "assistant",
     "content": "Understood. The launch is Tuesday, with support notified beforehand."},
]  # fmt: skip


def test_compact_answers_a_compaction_resource(
    bridge_url: str,
    backend_requests: Callable[[], list[dict[str, Any]]],
    clear_backend_requests: Callable[[], None],
) -> None:
    clear_backend_requests()
    response = _compact(bridge_url, {"model": MODEL, "prompt_cache_key": "openresponses-compact-test",
                                     "input": CONVERSATION})  # fmt: skip
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id", "object", "created_at", "output", "usage"}
    assert body["object"] == "response.compaction"
    assert isinstance(body["id"], str) and body["id"]
    assert isinstance(body["created_at"], int)
    # The window: the user's message (as an output message with id and status), then one compaction item.
    output = body["output"]
    assert [i["type"] for i in output] == ["message", "compaction"]
    user = output[0]
    assert user["role"] == "user" and user["status"] == "completed" and user["id"]
    assert user["content"] == [{"type": "input_text", "text": CONVERSATION[0]["content"]}]
    item = output[1]
    assert item["id"].startswith("cmp_")
    assert isinstance(item["encrypted_content"], str) and item["encrypted_content"]
    assert "Tuesday" not in item["encrypted_content"]  # opaque: not the summary in clear text
    usage = body["usage"]
    for field in ("input_tokens", "output_tokens", "total_tokens"):
        assert isinstance(usage[field], int)
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert usage["output_tokens_details"]["reasoning_tokens"] == 0

    # What the backend was asked: our summariser instructions, then the transcript, no tools, no stream.
    call = _summary_call(backend_requests())
    assert call["model"] == MODEL and call.get("stream") is False and not call.get("tools")
    messages = call["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    transcript = (
        messages[1]["content"]
        if isinstance(messages[1]["content"], str)
        else messages[1]["content"][0]["text"]
    )
    assert "### user\nWe agreed to launch on Tuesday" in transcript
    assert "### assistant\nUnderstood." in transcript


def test_compact_without_model_is_400(bridge_url: str) -> None:
    response = _compact(
        bridge_url, {"input": [{"type": "message", "role": "user", "content": "Compact this."}]}
    )
    assert response.status_code == 400
    error = _error(response)
    assert error["param"] == "model" and error["code"] == "missing_required_parameter"
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "input": 5}, "input"),
        ({"model": MODEL, "input": "x", "prompt_cache_key": 3}, "prompt_cache_key"),
        ({"model": MODEL}, "input"),
        ([1, 2], None),
    ],
)
def test_compact_bad_bodies_are_400(bridge_url: str, body: Any, param: str | None) -> None:
    response = _compact(bridge_url, body)
    assert response.status_code == 400, response.text
    assert _error(response)["param"] == param


def test_compact_unknown_model_is_404(make_bridge: Callable[..., BridgeHandle]) -> None:
    handle = make_bridge(upstream={"models": (MODEL,)})
    response = _compact(handle.url, {"model": "no-such-model", "input": "hi"})
    assert response.status_code == 404
    assert _error(response)["code"] == "model_not_found"


def test_compact_accepts_the_fields_codex_sends(bridge_url: str) -> None:
    body = {"model": MODEL, "input": CONVERSATION, "instructions": "You are Codex.", "tools": [],
            "parallel_tool_calls": True, "reasoning": {"effort": "low"}, "text": {"verbosity": "low"}}  # fmt: skip
    response = _compact(bridge_url, body)
    assert response.status_code == 200, response.text
    assert response.json()["output"][-1]["type"] == "compaction"


def test_window_starts_a_new_chain_and_the_summary_reaches_the_backend(
    bridge_url: str,
    backend_requests: Callable[[], list[dict[str, Any]]],
    clear_backend_requests: Callable[[], None],
) -> None:
    conversation = [
        {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                          "text": "Remember the compaction code word: slate."}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "OK."}]},
        {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": '{"cmd": "ls"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "README.md\nsrc"},
        {"type": "message", "role": "user", "content": [{"type": "input_text",
                                                          "text": "Compress this conversation for later."}]},
    ]  # fmt: skip
    compacted = _compact(bridge_url, {"model": MODEL, "input": conversation})
    assert compacted.status_code == 200, compacted.text
    window = compacted.json()["output"]
    assert [i["type"] for i in window] == ["message", "message", "compaction"]

    clear_backend_requests()
    client = openai.OpenAI(base_url=bridge_url, api_key="x", max_retries=0)
    follow_up = {
        "type": "message",
        "role": "user",
        "content": "Continue from here. Reply with exactly: compacted",
    }
    response = client.responses.create(model=MODEL, store=False, input=[*window, follow_up])
    assert response.status == "completed"
    (chat,) = backend_requests()
    texts = [m["content"] if isinstance(m["content"], str) else " ".join(p.get("text", "") for p in m["content"])
             for m in chat["messages"]]  # fmt: skip
    assert any("<summary>" in t and "slate" in t for t in texts), texts
    assert texts[-1].endswith("Reply with exactly: compacted")


def _window(url: str) -> list[dict[str, Any]]:
    response = _compact(url, {"model": MODEL, "input": CONVERSATION})
    assert response.status_code == 200, response.text
    return response.json()["output"]


def test_forged_compaction_item_in_a_compact_request_is_400_naming_it(bridge_url: str) -> None:
    window = _window(bridge_url)
    token = window[-1]["encrypted_content"]
    forged = {**window[-1], "encrypted_content": token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")}
    extra = {"type": "message", "role": "user", "content": "more"}
    response = _compact(bridge_url, {"model": MODEL, "input": [window[0], extra, forged]})
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["param"] == "input[2].encrypted_content"
    assert error["code"] == "invalid_encrypted_content"


def test_compacting_a_window_again_folds_the_earlier_summary_in(
    bridge_url: str,
    backend_requests: Callable[[], list[dict[str, Any]]],
    clear_backend_requests: Callable[[], None],
) -> None:
    window = _window(bridge_url)
    clear_backend_requests()
    response = _compact(
        bridge_url, {"model": MODEL, "input": [*window, {"role": "user", "content": "and more"}]}
    )
    assert response.status_code == 200, response.text
    transcript = _summary_call(backend_requests())["messages"][1]
    text = (
        transcript["content"] if isinstance(transcript["content"], str) else transcript["content"][0]["text"]
    )
    assert "### earlier summary" in text and "launch on Tuesday" in text


def test_sealed_with_a_key_and_refused_by_a_bridge_with_another(
    make_bridge: Callable[..., BridgeHandle],
) -> None:
    first = make_bridge(encryption_key="key-one-0123456789")
    window = _window(first.url)
    assert window[-1]["encrypted_content"].startswith("rb1f.")
    again = _compact(first.url, {"model": MODEL, "input": window})
    assert again.status_code == 200, again.text

    other = make_bridge(encryption_key="key-two-0123456789")
    refused = _compact(other.url, {"model": MODEL, "input": window})
    assert refused.status_code == 400
    assert _error(refused)["param"] == f"input[{len(window) - 1}].encrypted_content"

    plain = make_bridge()
    refused_plain = _compact(plain.url, {"model": MODEL, "input": window})
    assert refused_plain.status_code == 400


def test_compact_with_previous_response_id(
    bridge: BridgeHandle,
    backend_requests: Callable[[], list[dict[str, Any]]],
    clear_backend_requests: Callable[[], None],
) -> None:
    if bridge.config.store == "none":
        pytest.skip("needs the response store (server.store)")
    client = openai.OpenAI(base_url=bridge.url, api_key="x", max_retries=0)
    first = client.responses.create(model=MODEL, input="@text The deploy key lives in vault/prod.")
    clear_backend_requests()
    response = _compact(bridge.url, {"model": MODEL, "previous_response_id": first.id,
                                     "input": "What did we say?"})  # fmt: skip
    assert response.status_code == 200, response.text
    users = [i for i in response.json()["output"] if i["type"] == "message"]
    assert [u["content"][0]["text"] for u in users] == [
        "@text The deploy key lives in vault/prod.",
        "What did we say?",
    ]
    text = _summary_call(backend_requests())["messages"][1]
    body = text["content"] if isinstance(text["content"], str) else text["content"][0]["text"]
    assert "### assistant\nThe deploy key lives in vault/prod." in body

    missing = _compact(bridge.url, {"model": MODEL, "previous_response_id": "resp_nope", "input": "x"})
    assert missing.status_code == 404
    assert _error(missing)["code"] == "previous_response_not_found"


def test_compaction_trigger_not_last_is_400_naming_its_index(bridge_url: str) -> None:
    body = {"model": MODEL, "input": [{"type": "compaction_trigger"}, {"role": "user", "content": "hi"}]}
    response = _compact(bridge_url, body)
    assert response.status_code == 400
    assert _error(response)["param"] == "input[0]"
