"""The chat completion chunk grammar: what a `/v1/chat/completions` stream must look like to the
clients that parse it (the openai SDK's `ChatCompletionStreamState`, LangChain, LlamaIndex).

`validate_chat_stream(raw, request)` takes the SSE bytes and the request that produced them and
returns the broken rules (`CHAT_RULES`, docs/reverse.md §2 gives the reasons); `validate_chat_completion`
does the same for a whole body. `accumulate_chunks` assembles the chunks as a client does, so a
check can compare what a stream said with what it should have said. Imports only `conformance.rules`
(never the bridge's server or translator: the kit judges any endpoint, the bridge included).
"""

from __future__ import annotations

from typing import Any

import orjson

from conformance.rules import Violation

__all__ = ["CHAT_RULES", "FINISH_REASONS", "accumulate_chunks", "parse_chat_sse", "validate_chat_completion",
           "validate_chat_stream"]

CHAT_RULES: dict[str, str] = {
    "chat-sse-json": "every `data:` payload but [DONE] is one JSON object",
    "chat-done": "the stream ends with `data: [DONE]`, and nothing follows it",
    "chat-object": "every chunk has object chat.completion.chunk, an id, created and model",
    "chat-stable-id": "id and model are the same on every chunk",
    "chat-first-role": "the first chunk with a choice carries delta.role 'assistant'",
    "chat-choice": "choices is a list of objects with an integer index and a delta object",
    "chat-tool-call-first": "a tool call's first delta has its index, id, type and function.name",
    "chat-tool-call-index": "tool-call indexes start at 0 and each new call takes the next one",
    "chat-tool-call-stable": "later deltas of a call keep its index and id (and name, if repeated)",
    "chat-one-finish": "exactly one finish_reason per choice (none when the stream ends in an error chunk)",
    "chat-finish-value": "finish_reason is stop, length, tool_calls, content_filter or function_call",
    "chat-after-finish": "no content, reasoning or tool-call delta for a choice after its finish_reason",
    "chat-finish-tool-calls": "a choice that streamed tool calls finishes with tool_calls, not stop "
                              "(length and content_filter may cut a call)",
    "chat-usage": "a usage chunk (choices: []) comes only when stream_options.include_usage asked, "
                  "exactly once then, after the finish, with integer token counts",
    "chat-error-chunk": "an error chunk is {error: {message, …}} and only [DONE] follows it",
    "chat-completion": "a whole answer is a chat.completion with choices[].message and finish_reason",
}
FINISH_REASONS = frozenset(("stop", "length", "tool_calls", "content_filter", "function_call"))
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def parse_chat_sse(raw: bytes) -> tuple[list[Any], bool, list[Violation]]:
    """The data payloads (parsed; None for one that is not JSON), whether `[DONE]` ended the stream."""
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    payloads: list[Any] = []
    violations: list[Violation] = []
    done = False
    for block in text.split("\n\n"):
        data = [line[5:].lstrip(" ") if line.startswith("data:") else None
                for line in block.split("\n") if line and not line.startswith(":")]
        data = [d for d in data if d is not None]
        if not data:
            continue
        payload = "\n".join(data)
        if done:
            violations.append(Violation(len(payloads), "chat-done", "a frame follows data: [DONE]"))
            continue
        if payload == "[DONE]":
            done = True
            continue
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            violations.append(Violation(len(payloads), "chat-sse-json", f"data is not a JSON object: {payload[:80]!r}"))
            value = None
        payloads.append(value)
    if not done:
        violations.append(Violation(None, "chat-done", "the stream does not end with data: [DONE]"))
    return payloads, done, violations


class _Choice:
    def __init__(self) -> None:
        self.finishes = 0
        self.finish_reason: str | None = None
        self.calls: dict[int, dict[str, Any]] = {}


def validate_chat_stream(raw: bytes, request: dict[str, Any] | None = None) -> list[Violation]:
    """Every broken rule of `CHAT_RULES` in one streamed answer to `request`."""
    request = request or {}
    options = request.get("stream_options")
    asked_usage = isinstance(options, dict) and options.get("include_usage") is True
    chunks, _done, out = parse_chat_sse(raw)
    first_id = first_model = None
    role_checked = False
    choices: dict[int, _Choice] = {}
    usage_chunks = 0
    errored = False
    for i, chunk in enumerate(chunks):
        if chunk is None:
            continue
        if errored:
            out.append(Violation(i, "chat-error-chunk", "a chunk follows the error chunk"))
            continue
        if "error" in chunk and "choices" not in chunk:
            error = chunk.get("error")
            if not isinstance(error, dict) or not isinstance(error.get("message"), str) or not error["message"]:
                out.append(Violation(i, "chat-error-chunk", "the error chunk has no error.message"))
            errored = True
            continue
        if chunk.get("object") != "chat.completion.chunk" or not all(k in chunk for k in ("id", "created", "model")):
            out.append(Violation(i, "chat-object", f"object {chunk.get('object')!r}, keys {sorted(chunk)[:8]}"))
        if first_id is None:
            first_id, first_model = chunk.get("id"), chunk.get("model")
        elif chunk.get("id") != first_id or chunk.get("model") != first_model:
            out.append(Violation(i, "chat-stable-id", f"id/model {chunk.get('id')!r}/{chunk.get('model')!r} "
                                                      f"after {first_id!r}/{first_model!r}"))
        usage = chunk.get("usage")
        listed = chunk.get("choices")
        if not isinstance(listed, list):
            out.append(Violation(i, "chat-choice", "choices is not a list"))
            continue
        if usage is not None:
            if not asked_usage:
                out.append(Violation(i, "chat-usage", "usage sent, but the request did not ask for it"))
            elif listed:
                out.append(Violation(i, "chat-usage", "usage on a chunk with choices (it goes in a choices: [] chunk)"))
            elif not isinstance(usage, dict) or not all(isinstance(usage.get(k), int) for k in _USAGE_KEYS):
                out.append(Violation(i, "chat-usage", f"usage lacks integer {', '.join(_USAGE_KEYS)}"))
            if not listed:
                usage_chunks += 1
                if not choices or any(c.finishes == 0 for c in choices.values()):
                    out.append(Violation(i, "chat-usage", "the usage chunk comes before the finish_reason"))
        for choice in listed:
            if not isinstance(choice, dict) or not isinstance(choice.get("index"), int) or \
                    not isinstance(choice.get("delta"), dict):
                out.append(Violation(i, "chat-choice", "a choice without an integer index and a delta object"))
                continue
            state = choices.setdefault(choice["index"], _Choice())
            delta = choice["delta"]
            if not role_checked:
                role_checked = True
                if delta.get("role") != "assistant":
                    out.append(Violation(i, "chat-first-role", f"the first delta's role is {delta.get('role')!r}"))
            said = any(delta.get(k) for k in ("content", "reasoning_content", "refusal", "tool_calls"))
            if said and state.finishes:
                out.append(Violation(i, "chat-after-finish", "a delta after this choice's finish_reason"))
            _check_calls(i, delta.get("tool_calls"), state, out)
            reason = choice.get("finish_reason")
            if reason is not None:
                state.finishes += 1
                state.finish_reason = reason
                if state.finishes > 1:
                    out.append(Violation(i, "chat-one-finish", f"a second finish_reason ({reason!r})"))
                if reason not in FINISH_REASONS:
                    out.append(Violation(i, "chat-finish-value", f"finish_reason {reason!r}"))
    if asked_usage and usage_chunks != 1 and not errored:
        out.append(Violation(None, "chat-usage", f"include_usage asked for one usage chunk; got {usage_chunks}"))
    if not errored:
        if not choices:
            out.append(Violation(None, "chat-one-finish", "no choice and no finish_reason in the stream"))
        for index, state in choices.items():
            if state.finishes == 0:
                out.append(Violation(None, "chat-one-finish", f"choice {index} never got a finish_reason"))
            elif state.calls and state.finish_reason == "stop":
                out.append(Violation(None, "chat-finish-tool-calls",
                                     f"choice {index} streamed tool calls but finished with {state.finish_reason!r}"))
    return out


def _check_calls(i: int, calls: Any, state: _Choice, out: list[Violation]) -> None:
    if calls is None:
        return
    if not isinstance(calls, list):
        out.append(Violation(i, "chat-tool-call-first", "delta.tool_calls is not a list"))
        return
    for call in calls:
        if not isinstance(call, dict) or not isinstance(call.get("index"), int):
            out.append(Violation(i, "chat-tool-call-index", "a tool-call delta without an integer index"))
            continue
        index = call["index"]
        fn = call.get("function") if isinstance(call.get("function"), dict) else call.get("custom")
        fn = fn if isinstance(fn, dict) else {}
        known = state.calls.get(index)
        if known is None:
            if index != len(state.calls):
                out.append(Violation(i, "chat-tool-call-index", f"new tool call at index {index}, expected "
                                                                 f"{len(state.calls)}"))
            if not (isinstance(call.get("id"), str) and call["id"] and call.get("type") in ("function", "custom")
                    and isinstance(fn.get("name"), str) and fn["name"]):
                out.append(Violation(i, "chat-tool-call-first", f"call {index}'s first delta lacks id, type or name"))
            state.calls[index] = {"id": call.get("id"), "name": fn.get("name")}
            continue
        if call.get("id") not in (None, "", known["id"]):
            out.append(Violation(i, "chat-tool-call-stable", f"call {index} changed id to {call.get('id')!r}"))
        if fn.get("name") not in (None, "", known["name"]):
            out.append(Violation(i, "chat-tool-call-stable", f"call {index} changed name to {fn.get('name')!r}"))


def validate_chat_completion(body: Any) -> list[Violation]:
    """The shape of a whole chat completion body."""
    if not isinstance(body, dict) or body.get("object") != "chat.completion":
        return [Violation(None, "chat-completion", "the body is not a chat.completion object")]
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        return [Violation(None, "chat-completion", "choices is empty or not a list")]
    out = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or message.get("role") != "assistant":
            out.append(Violation(None, "chat-completion", "a choice without an assistant message"))
            continue
        if choice.get("finish_reason") not in FINISH_REASONS:
            out.append(Violation(None, "chat-finish-value", f"finish_reason {choice.get('finish_reason')!r}"))
        calls = message.get("tool_calls")
        if calls and choice.get("finish_reason") == "stop":
            out.append(Violation(None, "chat-finish-tool-calls", f"tool calls with {choice.get('finish_reason')!r}"))
    usage = body.get("usage")
    if usage is not None and not (isinstance(usage, dict) and all(isinstance(usage.get(k), int) for k in _USAGE_KEYS)):
        out.append(Violation(None, "chat-usage", "usage lacks integer token counts"))
    return out


def accumulate_chunks(chunks: list[Any]) -> dict[str, Any]:
    """Choice 0 of a stream as a client assembles it: content, reasoning, calls, finish, usage, error."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    out: dict[str, Any] = {"finish_reason": None, "usage": None, "error": None}
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        if isinstance(chunk.get("error"), dict):
            out["error"] = chunk["error"]
        if isinstance(chunk.get("usage"), dict):
            out["usage"] = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            if isinstance(delta.get("content"), str):
                content.append(delta["content"])
            if isinstance(delta.get("reasoning_content"), str):
                reasoning.append(delta["reasoning_content"])
            for call in delta.get("tool_calls") or ():
                if not isinstance(call, dict) or not isinstance(call.get("index"), int):
                    continue
                slot = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                fn = call.get("function") if isinstance(call.get("function"), dict) else {}
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] = fn.get("name") or slot["name"]
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                out["finish_reason"] = choice["finish_reason"]
    out["content"] = "".join(content)
    out["reasoning_content"] = "".join(reasoning)
    out["tool_calls"] = [calls[i] for i in sorted(calls)]
    return out
