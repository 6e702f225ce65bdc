"""The reverse direction as a state machine: Responses stream events → chat completion chunks.

For chat clients (LangChain, LlamaIndex, scripts, IDE plugins) in front of a backend that speaks
only Responses. Chat clients are strict in their own way (docs/reverse.md §2, the chunk grammar):
the first chunk carries ``role: "assistant"``; a tool call's first delta carries its ``index``,
``id``, ``type`` and ``function.name``, later deltas the same ``index`` and argument fragments only;
exactly one chunk carries a ``finish_reason``; a usage chunk (``choices: []``) follows it only when
the request asked with ``stream_options.include_usage``; a failure is a ``{"error": …}`` chunk.

Responses producers are loose in theirs (docs/reverse.md §3): DeepSeek ends with the terminal
event and no ``[DONE]``; vLLM and gpt-oss servers stream ``response.reasoning_text.delta``, Open
Responses servers ``response.reasoning.delta``, some servers reasoning part events of their own;
some leave out ``sequence_number``, ``output_index``, ``output_item.added`` or the deltas
altogether (sending only ``*.done`` events or only the terminal Response). So the machine keeps,
per output item, what it has already told the client, and treats every ``*.done`` event and the
terminal Response as the truth: whatever the deltas did not say yet is emitted then, as the tail
of the same item. An answer received whole therefore goes through the same machine
(`response_to_chat_completion` feeds it the Response alone) and cannot disagree with the stream.

Sans-IO: dicts in, dicts out; the server decodes SSE and writes ``data: [DONE]``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .errors import UpstreamError
from .events import (
    COMPLETED,
    CREATED,
    ERROR,
    FAILED,
    IN_PROGRESS,
    INCOMPLETE,
    OUTPUT_ITEM_ADDED,
    OUTPUT_ITEM_DONE,
    QUEUED,
    random_hex,
    reverse_usage,
)

__all__ = [
    "ChatCompletionAccumulator",
    "ResponsesStreamTranslator",
    "chat_error",
    "response_to_chat_completion",
]

#: Our own replay tokens (translator/reasoning.py): a chat client replays them as reasoning_content.
_OWN_TOKEN_PREFIXES = ("rb1.", "rb1f.")

# Delta kinds, by the event that carries them. Anything else that ends in ``.delta`` and names
# reasoning is taken as reasoning text too (non-standard reasoning part events).
_TEXT = "text"
_REFUSAL = "refusal"
_ARGS = "args"
_INPUT = "input"
_SUMMARY = "summary"
_RAW = "raw"
_DELTA_KINDS: dict[str, str] = {
    "response.output_text.delta": _TEXT,
    "response.refusal.delta": _REFUSAL,
    "response.function_call_arguments.delta": _ARGS,
    "response.custom_tool_call_input.delta": _INPUT,
    "response.reasoning_summary_text.delta": _SUMMARY,
    "response.reasoning_text.delta": _RAW,
    "response.reasoning.delta": _RAW,
}
#: ``*.done`` events whose full value settles one field of an item: event → (kind, key of the value).
_DONE_KINDS: dict[str, tuple[str, str]] = {
    "response.output_text.done": (_TEXT, "text"),
    "response.refusal.done": (_REFUSAL, "refusal"),
    "response.function_call_arguments.done": (_ARGS, "arguments"),
    "response.custom_tool_call_input.done": (_INPUT, "input"),
}
_TERMINAL = frozenset((COMPLETED, INCOMPLETE, FAILED))
_CALL_TYPES = {"function_call": "function", "custom_tool_call": "custom"}


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def chat_error(message: str, code: str | None = "server_error", kind: str = "server_error",
               param: str | None = None) -> dict[str, Any]:
    """The ``{"error": …}`` chunk chat clients parse out of a stream (the openai SDK raises on it)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def chat_id(response_id: str) -> str:
    """``resp_X`` → ``chatcmpl-X``: the same answer keeps the same id in both directions."""
    return "chatcmpl-" + (response_id[5:] if response_id.startswith("resp_") else response_id)


def _joined_parts(parts: Any, key: str, sep: str) -> str:
    return sep.join(_str(p.get(key)) for p in _list(parts) if isinstance(p, dict))


def _reasoning_text(item: dict[str, Any], kind: str | None) -> tuple[str, str]:
    """A reasoning item's text and which kind it is: raw content first, else summary parts."""
    raw = _joined_parts(item.get("content"), "text", "")
    summary = "\n\n".join(t for t in (_str(p.get("text")) for p in _list(item.get("summary")) if isinstance(p, dict)) if t)
    if kind == _SUMMARY:
        return summary, _SUMMARY
    if kind == _RAW or raw:
        return raw, _RAW
    return summary, _SUMMARY


@dataclass
class _Item:
    """What the client was told about one output item (keyed by output index)."""

    type: str = ""
    said: dict[str, str] = field(default_factory=dict)  # field kind → text already emitted
    call_index: int | None = None  # its position in ``tool_calls`` once opened
    call_id: str = ""
    name: str = ""
    pending: str = ""  # call arguments that came before the call's id and name
    reasoning_kind: str | None = None  # summary or raw, whichever streamed first
    summary_parts: int = 0
    logprobs_sent: int = 0


class ResponsesStreamTranslator:
    """Responses stream events → chat completion chunks, one ``feed(event)`` at a time.

    ``feed`` returns the chunks an event causes (often none); after a terminal event ``finished``
    is True and further events are ignored. ``finish()`` is the end of the event stream: without a
    terminal event the stream was cut, and the client gets an error chunk. ``fail(message, code)``
    ends it early from outside (an upstream timeout, a shutdown). ``completion`` is the chat
    completion the chunks add up to, available at any time.

    ``include_usage`` defaults to the request's ``stream_options.include_usage`` (False when absent,
    as OpenAI's chat API does). ``accumulate=False`` skips keeping ``completion`` (a server relaying
    the chunks has no use for it, and it is a third of the cost per chunk); ``usage`` is kept anyway.
    """

    def __init__(self, request: dict[str, Any] | None = None, *, include_usage: bool | None = None,
                 accumulate: bool = True) -> None:
        self.request = request if isinstance(request, dict) else {}
        if include_usage is None:
            include_usage = bool(_obj(self.request.get("stream_options")).get("include_usage", False))
        self.include_usage = include_usage
        self.id = "chatcmpl-" + random_hex()
        self.model = _str(self.request.get("model"))
        self.created = int(time.time())
        self.finished = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self._role_sent = False
        self._items: dict[int, _Item] = {}
        self._by_item_id: dict[str, int] = {}
        self._last_key: int | None = None
        self._next_index = 0
        self._unplaced = 0  # keys below 0: items known by an id only
        self._calls = 0
        self._acc = ChatCompletionAccumulator() if accumulate else None

    # ------------------------------------------------------------------------------ the output

    @property
    def completion(self) -> dict[str, Any]:
        """The chat completion the chunks so far add up to (empty when built with ``accumulate=False``)."""
        out = (self._acc or ChatCompletionAccumulator()).completion()
        out.update(id=self.id, model=self.model, created=self.created)
        if self.usage is not None:
            out["usage"] = self.usage
        return out

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None,
               logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": {"content": logprobs, "refusal": None}
                         if logprobs else None, "finish_reason": finish_reason}],
        }
        if self._acc is not None:
            self._acc.add(chunk)
        return chunk

    # ------------------------------------------------------------------------------ dispatch

    def feed(self, event: Any) -> list[dict[str, Any]]:
        """The chunks one Responses stream event causes."""
        if self.finished or not isinstance(event, dict):
            return []
        kind = event.get("type")
        if not isinstance(kind, str):
            return []
        out: list[dict[str, Any]] = []
        if kind in (CREATED, IN_PROGRESS, QUEUED):
            self._take_response(_obj(event.get("response")), kind == CREATED)
            if not self._role_sent:
                out.append(self._chunk({"content": ""}))
            return out
        delta_kind = _DELTA_KINDS.get(kind)
        if delta_kind is None and kind.endswith(".delta") and "reasoning" in kind:
            delta_kind = _RAW  # a reasoning part event of a server's own naming
        if delta_kind is not None:
            delta = event.get("delta")
            if isinstance(delta, str) and delta:
                item = self._item_for(event)
                self._say(item, delta_kind, delta, out, _list(event.get("logprobs")))
            return out
        if kind == "response.reasoning_summary_part.added":
            item = self._item_for(event, "reasoning")
            if item.reasoning_kind in (None, _SUMMARY):
                index = event.get("summary_index")
                if isinstance(index, int) and index > 0 and item.said.get(_SUMMARY):
                    self._say(item, _SUMMARY, "\n\n", out)
            return out
        done = _DONE_KINDS.get(kind)
        if done is not None:
            value = event.get(done[1])
            if isinstance(value, str):
                self._settle(self._item_for(event), done[0], value, out)
            return out
        if kind in (OUTPUT_ITEM_ADDED, OUTPUT_ITEM_DONE):
            data = _obj(event.get("item"))
            item = self._item_for(event, _str(data.get("type")), data)
            self._take_item(item, data, out, settle=kind == OUTPUT_ITEM_DONE)
            return out
        if kind in _TERMINAL:
            response = _obj(event.get("response"))
            self._take_response(response, False)
            if kind == FAILED:
                error = _obj(response.get("error"))
                return self._fail_chunks(out, _str(error.get("message")) or "The response failed.",
                                         _str(error.get("code")) or "server_error")
            for position, data in enumerate(_list(response.get("output"))):
                if isinstance(data, dict):
                    self._take_item(self._item_for({"output_index": position}, _str(data.get("type")), data),
                                    data, out, settle=True)
            return self._end(response, out)
        if kind == ERROR:
            nested = _obj(event.get("error"))
            message = _str(event.get("message")) or _str(nested.get("message")) or "The response failed."
            code = _str(event.get("code")) or _str(nested.get("code")) or "server_error"
            return self._fail_chunks(out, message, code)
        return out

    def finish(self) -> list[dict[str, Any]]:
        """The end of the event stream. Without a terminal event the answer was cut: an error chunk."""
        if self.finished:
            return []
        return self.fail("The Responses stream ended without a terminal event.", "upstream_error")

    def fail(self, message: str, code: str = "server_error") -> list[dict[str, Any]]:
        """End the stream now with an error chunk (nothing follows it but ``[DONE]``)."""
        if self.finished:
            return []
        return self._fail_chunks([], message, code)

    # ------------------------------------------------------------------------------ items

    def _take_response(self, response: dict[str, Any], created: bool) -> None:
        """Id, model and timestamp from the Response, until the first chunk fixed them (every chunk
        of a stream carries the same three)."""
        if self._role_sent:
            return
        rid = _str(response.get("id"))
        if rid:
            self.id = chat_id(rid)
        self.model = _str(response.get("model")) or self.model
        stamp = response.get("created_at")
        if isinstance(stamp, int) and not isinstance(stamp, bool):
            self.created = stamp

    def _item_at(self, index: int, type_: str = "", data: dict[str, Any] | None = None) -> _Item:
        item = self._items.get(index)
        if item is None:
            item = self._items[index] = _Item(type=type_)
        elif type_ and not item.type:
            item.type = type_
        self._last_key = index
        if index >= 0:
            self._next_index = max(self._next_index, index + 1)
        if data is not None:
            item_id = data.get("id")
            if isinstance(item_id, str) and item_id:
                self._by_item_id.setdefault(item_id, index)
        return item

    def _item_for(self, event: dict[str, Any], type_: str = "", data: dict[str, Any] | None = None) -> _Item:
        """The item an event is about: by ``output_index``, else by ``item_id`` (an id never seen gets
        a key of its own, below 0, until the terminal Response names its position), else the latest."""
        index = event.get("output_index")
        item_id = event.get("item_id") or _obj(data).get("id")
        item_id = item_id if isinstance(item_id, str) and item_id else None
        if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
            known = self._by_item_id.get(item_id) if item_id else None
            if known is not None and known < 0 and index not in self._items:
                self._items[index] = self._items.pop(known)  # its position, now known
                self._by_item_id[item_id] = index  # type: ignore[index]
        else:
            index = self._by_item_id.get(item_id) if item_id else None
            if index is None and item_id and event.get("type") != OUTPUT_ITEM_ADDED:
                self._unplaced -= 1
                index = self._unplaced
            if index is None:
                last = self._items.get(self._last_key) if self._last_key is not None else None
                same = last is not None and (not type_ or last.type in ("", type_))
                # a delta, or the done event of the item just added, is about the latest item
                index = self._last_key if same and (not type_ or event.get("type") == OUTPUT_ITEM_DONE) \
                    else self._next_index
        item = self._item_at(index, type_, data)
        if item_id:
            self._by_item_id.setdefault(item_id, index)
        return item

    def _take_item(self, item: _Item, data: dict[str, Any], out: list[dict[str, Any]], *, settle: bool) -> None:
        """An item as a whole (added, done, or in the terminal Response): open calls, settle text."""
        kind = item.type or _str(data.get("type"))
        if kind in _CALL_TYPES:
            item.call_id = item.call_id or _str(data.get("call_id"))
            item.name = item.name or _str(data.get("name"))
            self._open_call(item, out)
            if settle:
                key = "arguments" if kind == "function_call" else "input"
                value = data.get(key)
                if isinstance(value, str):
                    self._settle(item, _ARGS if kind == "function_call" else _INPUT, value, out)
        elif not settle:
            return
        elif kind == "message":
            texts = [p for p in _list(data.get("content")) if isinstance(p, dict) and p.get("type") == "output_text"]
            if texts:
                logprobs = [lp for p in texts for lp in _list(p.get("logprobs")) if isinstance(lp, dict)]
                self._settle(item, _TEXT, "".join(_str(p.get("text")) for p in texts), out, logprobs)
            refusal = "".join(_str(p.get("refusal")) for p in _list(data.get("content"))
                              if isinstance(p, dict) and p.get("type") == "refusal")
            if refusal:
                self._settle(item, _REFUSAL, refusal, out)
        elif kind == "reasoning":
            text, rkind = _reasoning_text(data, item.reasoning_kind)
            if text:
                self._settle(item, rkind, text, out)

    def _open_call(self, item: _Item, out: list[dict[str, Any]]) -> None:
        """Tell the client about a call once its id and name are known (its first delta)."""
        if item.call_index is not None or not item.name:
            return
        item.call_index = self._calls
        self._calls += 1
        if not item.call_id:
            item.call_id = f"call_{self.id.removeprefix('chatcmpl-')}_{item.call_index}"
        ctype = _CALL_TYPES.get(item.type, "function")
        body_key = "arguments" if ctype == "function" else "input"
        field_kind = _ARGS if ctype == "function" else _INPUT
        pending, item.pending = item.pending, ""
        item.said[field_kind] = pending
        out.append(self._chunk({"tool_calls": [{"index": item.call_index, "id": item.call_id, "type": ctype,
                                                ctype: {"name": item.name, body_key: pending}}]}))

    # ------------------------------------------------------------------------------ text

    def _say(self, item: _Item, kind: str, text: str, out: list[dict[str, Any]],
             logprobs: list[Any] | None = None) -> None:
        """Emit ``text`` as the next fragment of field ``kind`` of ``item``."""
        if kind in (_SUMMARY, _RAW):
            item.type = item.type or "reasoning"
            if item.reasoning_kind is None:
                item.reasoning_kind = kind
            elif item.reasoning_kind != kind:
                return  # the same thought in its other form (summary and raw both streamed)
            item.said[kind] = item.said.get(kind, "") + text
            out.append(self._chunk({"reasoning_content": text}))
            return
        if kind in (_ARGS, _INPUT):
            item.type = item.type or ("function_call" if kind == _ARGS else "custom_tool_call")
            if item.call_index is None:
                item.pending += text
                return
            item.said[kind] = item.said.get(kind, "") + text
            ctype = _CALL_TYPES.get(item.type, "function")
            key = "arguments" if ctype == "function" else "input"
            out.append(self._chunk({"tool_calls": [{"index": item.call_index, ctype: {key: text}}]}))
            return
        item.type = item.type or "message"
        item.said[kind] = item.said.get(kind, "") + text
        if kind == _TEXT:
            lps = [lp for lp in (logprobs or ()) if isinstance(lp, dict)]
            item.logprobs_sent += len(lps)
            out.append(self._chunk({"content": text}, logprobs=lps or None))
        else:
            out.append(self._chunk({"refusal": text}))

    def _settle(self, item: _Item, kind: str, full: str, out: list[dict[str, Any]],
                logprobs: list[Any] | None = None) -> None:
        """``full`` is the whole value of the field: emit what the deltas left unsaid, if anything.

        A value that contradicts what was already sent (not an extension of it) cannot be taken
        back from a chat client; the stream keeps what it said."""
        if kind in (_ARGS, _INPUT) and item.call_index is None:
            item.pending = full if full.startswith(item.pending) else item.pending
            return
        said = item.said.get(kind, "")
        if kind in (_SUMMARY, _RAW) and item.reasoning_kind not in (None, kind):
            return
        rest_logprobs = None
        if logprobs and len(logprobs) > item.logprobs_sent:
            rest_logprobs = logprobs[item.logprobs_sent:]
        if len(full) > len(said) and full.startswith(said):
            self._say(item, kind, full[len(said):], out, rest_logprobs)

    # ------------------------------------------------------------------------------ the end

    def _end(self, response: dict[str, Any], out: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.finished = True
        if response.get("status") == "incomplete":
            reason = _obj(response.get("incomplete_details")).get("reason")
            finish = "content_filter" if reason == "content_filter" else "length"
        elif self._calls:
            finish = "tool_calls"
        else:
            finish = "stop"
        self.finish_reason = finish
        out.append(self._chunk({}, finish))
        self.usage = reverse_usage(response.get("usage"))
        if self.include_usage:
            # asked for, the usage chunk always comes (clients wait for it); counts the backend did
            # not report are 0, as the forward direction's map_usage reports them
            usage = self.usage if self.usage is not None else reverse_usage({})
            out.append({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                        "model": self.model, "choices": [], "usage": usage})
        return out

    def _fail_chunks(self, out: list[dict[str, Any]], message: str, code: str) -> list[dict[str, Any]]:
        self.finished = True
        self.error = chat_error(message, code)["error"]
        out.append(chat_error(message, code))
        return out


class ChatCompletionAccumulator:
    """Chat completion chunks → the chat completion they add up to (as chat clients assemble it).

    Used by the translator for its ``completion``, by tests, and by the conformance kit's judgement
    of what a stream said. Tool calls are assembled by ``index``.
    """

    def __init__(self) -> None:
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.logprobs: list[dict[str, Any]] = []
        self.saw_content = False
        self.error: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("error"), dict):
            self.error = chunk["error"]
            return
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in _list(chunk.get("choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = _obj(choice.get("delta"))
            if isinstance(delta.get("content"), str):
                if delta["content"]:
                    self.saw_content = True
                self.content.append(delta["content"])
            if isinstance(delta.get("refusal"), str):
                self.refusal.append(delta["refusal"])
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str):
                self.reasoning.append(reasoning)
            for call in _list(delta.get("tool_calls")):
                if not isinstance(call, dict) or not isinstance(call.get("index"), int):
                    continue
                slot = self.calls.setdefault(call["index"], {"id": "", "type": "function"})
                if isinstance(call.get("id"), str) and call["id"]:
                    slot["id"] = call["id"]
                if isinstance(call.get("type"), str):
                    slot["type"] = call["type"]
                for kind, key in (("function", "arguments"), ("custom", "input")):
                    body = call.get(kind)
                    if isinstance(body, dict):
                        target = slot.setdefault(kind, {"name": "", key: ""})
                        if isinstance(body.get("name"), str) and body["name"]:
                            target["name"] = body["name"]
                        if isinstance(body.get(key), str):
                            target[key] += body[key]
            lp = _obj(choice.get("logprobs")).get("content")
            self.logprobs.extend(x for x in _list(lp) if isinstance(x, dict))
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) if self.saw_content else None}
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.reasoning and "".join(self.reasoning):
            message["reasoning_content"] = "".join(self.reasoning)
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return message

    def completion(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": "",
            "object": "chat.completion",
            "created": 0,
            "model": "",
            "choices": [{"index": 0, "message": self.message(), "finish_reason": self.finish_reason,
                         "logprobs": {"content": self.logprobs, "refusal": None} if self.logprobs else None}],
        }
        if self.usage is not None:
            out["usage"] = self.usage
        return out


def _foreign_reasoning(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The backend's own encrypted reasoning (OpenAI's), as OpenRouter-style ``reasoning_details``
    entries, so a chat client that keeps the message replays it (`chat_to_responses_request` maps
    them back to reasoning items). Our own replay tokens are left out: reasoning_content carries them."""
    out = []
    for item in _list(response.get("output")):
        if not isinstance(item, dict) or item.get("type") != "reasoning":
            continue
        token = item.get("encrypted_content")
        if isinstance(token, str) and token and not token.startswith(_OWN_TOKEN_PREFIXES):
            entry: dict[str, Any] = {"type": "reasoning.encrypted", "data": token, "format": "openai-responses-v1"}
            if isinstance(item.get("id"), str):
                entry["id"] = item["id"]
            out.append(entry)
    return out


def response_to_chat_completion(response: Any) -> dict[str, Any]:
    """A Response object → a ``chat.completion``, through the same machine as a stream.

    Raises `UpstreamError` for a failed Response or an error body (the server answers it as an
    OpenAI error before any stream)."""
    if not isinstance(response, dict):
        raise UpstreamError("The upstream backend returned a body that is not a JSON object.", body=response)
    if response.get("status") == "failed" or (response.get("error") and "output" not in response):
        raise UpstreamError.from_body(response)
    translator = ResponsesStreamTranslator(include_usage=False)
    translator.feed({"type": CREATED, "response": response})
    translator.feed({"type": INCOMPLETE if response.get("status") == "incomplete" else COMPLETED,
                     "response": response})
    out = translator.completion
    if not isinstance(response.get("created_at"), int):
        out["created"] = int(time.time())
    details = _foreign_reasoning(response)
    if details:
        out["choices"][0]["message"]["reasoning_details"] = details
    if "usage" not in out:
        out.pop("usage", None)
    return out
