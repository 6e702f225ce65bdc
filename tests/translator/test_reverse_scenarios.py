"""The reverse translator over the native-Responses corpus (fixtures/responses_scenarios/): every
backend quirk there gives the chat answer its expected.json names, and a stream that passes the
chunk grammar (conformance/chat.py); the Response received whole gives the same answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from conformance.chat import accumulate_chunks, validate_chat_stream
from fixtures.responses_backend import SCENARIOS_DIR, events_of, scenario_names
from translator import ResponsesStreamTranslator, UpstreamError, response_to_chat_completion

NAMES = scenario_names()


def load(name: str) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    folder: Path = SCENARIOS_DIR / name
    return (events_of((folder / "events.sse").read_bytes()), orjson.loads((folder / "expected.json").read_bytes()),
            orjson.loads((folder / "request.json").read_bytes()))


def translate(events: list[dict[str, Any]], request: dict[str, Any]) -> list[dict[str, Any]]:
    tr = ResponsesStreamTranslator(request)
    chunks: list[dict[str, Any]] = []
    for event in events:
        chunks += tr.feed(event)
    chunks += tr.finish()
    assert tr.finished
    return chunks


def sse(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def test_corpus_is_there() -> None:
    assert len(NAMES) >= 10
    assert {"no_done_deepseek", "reasoning_text_vllm", "reasoning_custom_events", "no_sequence_number_ollama"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_stream_gives_the_expected_answer(name: str) -> None:
    events, expected, request = load(name)
    request = {**request, "stream": True, "stream_options": {"include_usage": True}}
    chunks = translate(events, request)
    got = accumulate_chunks(chunks)
    assert got["content"] == (expected["content"] or "")
    assert got["reasoning_content"] == (expected["reasoning_content"] or "")
    assert got["tool_calls"] == expected["tool_calls"]
    assert got["finish_reason"] == expected["finish_reason"]
    assert got["usage"] == expected["usage"]
    if "error" in expected:
        assert got["error"]["code"] == expected["error"]["code"]
        assert chunks[-1] == {"error": got["error"]}
    else:
        assert got["error"] is None
    assert validate_chat_stream(sse(chunks), request) == []


@pytest.mark.parametrize("name", NAMES)
def test_whole_response_gives_the_same_answer(name: str) -> None:
    events, expected, _request = load(name)
    terminal = next((e for e in events if e["type"] in ("response.completed", "response.incomplete",
                                                        "response.failed")), None)
    if terminal is None or terminal["type"] == "response.failed":
        with pytest.raises(UpstreamError):
            response_to_chat_completion(terminal["response"] if terminal else {"error": {"message": "x"}})
        return
    completion = response_to_chat_completion(terminal["response"])
    choice = completion["choices"][0]
    assert choice["message"]["content"] == expected["content"]
    assert choice["message"].get("reasoning_content") == expected["reasoning_content"]
    calls = [{"id": c["id"], "name": c["function"]["name"], "arguments": c["function"]["arguments"]}
             for c in choice["message"].get("tool_calls", [])]
    assert calls == expected["tool_calls"]
    assert choice["finish_reason"] == expected["finish_reason"]
    assert completion["usage"] == expected["usage"]


def test_usage_chunk_only_when_asked() -> None:
    events, _expected, request = load("text_openai")
    chunks = translate(events, request)
    assert all("usage" not in c for c in chunks)
    assert validate_chat_stream(sse(chunks), request) == []
    asked = translate(events, {**request, "stream_options": {"include_usage": True}})
    assert asked[-1]["choices"] == [] and asked[-1]["usage"]["total_tokens"] == 14


def test_parallel_calls_have_stable_index_and_id() -> None:
    events, _expected, request = load("parallel_calls_openai")
    deltas = [call for c in translate(events, request) for ch in c.get("choices", [])
              for call in ch["delta"].get("tool_calls", [])]
    firsts = [d for d in deltas if "id" in d]
    assert [(d["index"], d["id"], d["function"]["name"]) for d in firsts] == [
        (0, "call_Wq1", "get_weather"), (1, "call_Wq2", "get_weather")]
    # every later delta names only its index and an argument fragment
    assert all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in deltas if "id" not in d)


def test_first_chunk_carries_the_role_and_ids_stay() -> None:
    events, _expected, request = load("reasoning_text_vllm")
    chunks = translate(events, request)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {c["id"] for c in chunks} == {"chatcmpl-vllm01"}
    assert sum(1 for c in chunks if "role" in c["choices"][0]["delta"]) == 1


def test_summary_and_raw_reasoning_of_one_item_are_not_doubled() -> None:
    tr = ResponsesStreamTranslator({})
    out = tr.feed({"type": "response.created", "response": {"id": "resp_x"}})
    out += tr.feed({"type": "response.reasoning_text.delta", "output_index": 0, "delta": "raw"})
    out += tr.feed({"type": "response.reasoning_summary_text.delta", "output_index": 0, "delta": "sum"})
    out += tr.feed({"type": "response.completed", "response": {"id": "resp_x", "status": "completed", "output": [
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "sum"}],
         "content": [{"type": "reasoning_text", "text": "raw"}]}]}})
    assert accumulate_chunks(out)["reasoning_content"] == "raw"


def test_logprobs_pass_through() -> None:
    lp = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}
    tr = ResponsesStreamTranslator({})
    out = tr.feed({"type": "response.output_text.delta", "output_index": 0, "delta": "Hi", "logprobs": [lp]})
    assert out[-1]["choices"][0]["logprobs"] == {"content": [lp], "refusal": None}
    whole = response_to_chat_completion({"id": "resp_l", "status": "completed", "output": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi", "logprobs": [lp]}]}]})
    assert whole["choices"][0]["logprobs"] == {"content": [lp], "refusal": None}


def test_foreign_encrypted_reasoning_is_handed_out_and_replayed() -> None:
    from translator import chat_to_responses_request

    response = {"id": "resp_e", "status": "completed", "output": [
        {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "t"}],
         "encrypted_content": "gAAAAopaque"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}]}
    message = response_to_chat_completion(response)["choices"][0]["message"]
    assert message["reasoning_details"] == [{"type": "reasoning.encrypted", "data": "gAAAAopaque",
                                             "format": "openai-responses-v1", "id": "rs_1"}]
    follow = chat_to_responses_request({"model": "m", "messages": [
        {"role": "user", "content": "q"}, message, {"role": "user", "content": "again"}]})
    reasoning = [i for i in follow["input"] if i["type"] == "reasoning"]
    assert reasoning == [{"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAAopaque",
                          "summary": [{"type": "summary_text", "text": "t"}]}]
