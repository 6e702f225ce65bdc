"""Streams as state machines: chat completion chunks ⇄ Responses stream events.

`ChatStreamTranslator` is the heart of the bridge. Chat backends stream loosely (see the quirks
table in REFERENCE §3): the role and an empty content on every chunk (Ollama, Groq), a tool call
whole in one chunk or split anywhere, tool-call ``index`` missing (Gemini) or every parallel call
on index 0 (Ollama via LiteLLM), ``finish_reason: "stop"`` after tool calls, a finish reason in a
chunk of its own or twice (OpenRouter), usage in a last empty-choices chunk or on every chunk or
never, ``reasoning`` vs ``reasoning_content``, ``data: {"error": …}`` in the middle of a 200 stream.
Responses clients, on the other hand, are strict: the openai SDK's accumulator raises on an event
for an item it was not told about, Open Responses rejects a missing field. So the machine keeps
exactly one item open at a time and emits the canonical sequence (docs/wire.md §1.5/§1.6):
``created``, ``in_progress``, then per item ``output_item.added`` → part added → deltas → part done
→ ``output_item.done``, then one terminal event with the full output and usage.

Item ids are derived from the response id and the output index (``msg_<base>_<n>``), so the same
answer gives the same ids whether it arrives streamed or whole.

Hot path: a text chunk costs a few dict lookups and one small event dict. The Response object is
built twice (at the start and at the end), never per chunk, and nothing is deep-copied.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from .errors import InvalidRequest
from .options import TranslatorOptions
from .reasoning import pack_reasoning
from .requests import ToolMap, build_tool_map
from .responses import RESPONSE_ERROR_CODES, map_usage, response_skeleton, reverse_usage

__all__ = ["ChatStreamTranslator", "ResponsesStreamTranslator"]

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"

# open item kinds
_NONE, _REASONING, _MESSAGE, _CALL = 0, 1, 2, 3
#: The ``logprobs`` of text deltas when none were asked for. One shared empty list (allocating a
#: fresh one per delta was a measurable share of the hot path); treat events as read-only.
_NO_LOGPROBS: list[Any] = []
# fast paths
_FAST_NONE, _FAST_TEXT, _FAST_REASONING, _FAST_ARGS = 0, 1, 2, 3
# think-tag states: undecided, inside <think>, just closed (skip whitespace), plain content
_T_UNDECIDED, _T_INSIDE, _T_CLOSED, _T_PLAIN = 0, 1, 2, 3


def _num(value: Any) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _token_bytes(value: Any) -> list[int]:
    return [b for b in value if isinstance(b, int) and not isinstance(b, bool)] if isinstance(value, list) else []


def _map_logprobs(choice_logprobs: Any) -> list[dict[str, Any]]:
    """Chat ``choices[0].logprobs.content`` → Responses output_text logprobs."""
    content = choice_logprobs.get("content") if isinstance(choice_logprobs, dict) else None
    if not content or not isinstance(content, list):
        return []
    out = []
    for lp in content:
        if not isinstance(lp, dict):
            continue
        top = lp.get("top_logprobs")
        out.append(
            {
                "token": lp["token"] if isinstance(lp.get("token"), str) else "",
                "logprob": _num(lp.get("logprob")),
                "bytes": _token_bytes(lp.get("bytes")),
                "top_logprobs": [
                    {
                        "token": t["token"] if isinstance(t.get("token"), str) else "",
                        "logprob": _num(t.get("logprob")),
                        "bytes": _token_bytes(t.get("bytes")),
                    }
                    for t in (top if isinstance(top, list) else ())
                    if isinstance(t, dict)
                ],
            }
        )
    return out


def _map_annotation(annotation: Any) -> dict[str, Any] | None:
    """Chat ``url_citation`` annotation (nested) → Responses annotation (flat); others are dropped."""
    if not isinstance(annotation, dict) or annotation.get("type") != "url_citation":
        return None
    cite = annotation.get("url_citation")
    if not isinstance(cite, dict):
        cite = annotation  # some proxies send it flat already
    start, end = cite.get("start_index"), cite.get("end_index")
    return {
        "type": "url_citation",
        "start_index": start if isinstance(start, int) and not isinstance(start, bool) else 0,
        "end_index": end if isinstance(end, int) and not isinstance(end, bool) else 0,
        "title": cite["title"] if isinstance(cite.get("title"), str) else "",
        "url": cite["url"] if isinstance(cite.get("url"), str) else "",
    }


class _Call:
    """One tool call being assembled from deltas."""

    __slots__ = ("added", "args", "backend_id", "call_id", "carried", "extra", "index", "item_id", "kind", "name", "namespace",
                 "output_index", "pending")

    def __init__(self, index: Any, backend_id: str | None) -> None:
        self.index = index
        self.backend_id = backend_id
        self.call_id = backend_id or "call_" + uuid.uuid4().hex[:24]
        self.name = ""
        self.namespace: str | None = None
        self.kind = "function"
        self.args: list[str] = []
        self.pending: list[str] = []  # argument fragments seen before the item could be added
        self.added = False
        self.extra: Any = None
        self.carried = False  # extra already put in a reasoning item
        self.item_id = ""
        self.output_index = -1


class ChatStreamTranslator:
    """Chat completion chunks (parsed JSON dicts) → Responses stream events (plain dicts).

    ``start()`` gives ``response.created`` + ``response.in_progress`` (``feed`` calls it on first
    use); ``feed(chunk)`` gives the events a chunk causes; ``finish(done_seen)`` closes the stream
    (``done_seen=False`` means the connection dropped without ``[DONE]``); ``fail(message, code)``
    ends it as ``response.failed``. Once finished, every call returns ``[]``.
    """

    def __init__(self, request: dict[str, Any], **options: Any) -> None:
        opts = TranslatorOptions.from_kwargs(**options)
        self.options = opts
        self.request = request if isinstance(request, dict) else {}
        try:
            _, self._tools = build_tool_map(self.request.get("tools"), opts)
        except InvalidRequest:  # the server validated the request already; be lenient here
            self._tools = ToolMap()
        self.id = opts.new_response_id()
        self._base = self.id[5:] if self.id.startswith("resp_") else self.id
        self.created_at = opts.now()
        self._skeleton = response_skeleton(self.request, self.id, self.created_at)
        self._seq = 0
        self._started = False
        self.finished = False
        self._final: dict[str, Any] | None = None
        self._output: list[dict[str, Any] | None] = []  # done items; None while open
        self._cur = _NONE
        # message state
        self._msg_id = ""
        self._msg_oi = -1
        self._parts: list[dict[str, Any]] = []  # finished parts of the open message
        self._part_kind: str | None = None  # "text" | "refusal" | None
        self._part_index = -1
        self._text: list[str] = []
        self._logprobs: list[dict[str, Any]] = []
        self._annotations: list[dict[str, Any]] = []
        # reasoning state
        self._rs_id = ""
        self._rs_oi = -1
        self._rs_text: list[str] = []
        self._rs_part_open = False
        self._rs_details: list[dict[str, Any]] = []
        self._rs_extras: dict[str, Any] = {}
        # calls
        self._calls: list[_Call] = []
        self._call: _Call | None = None
        # signals
        self._finish_reason: str | None = None
        self._raw_usage: Any = None
        self._think = _T_UNDECIDED if opts.think_tags else _T_PLAIN
        self._think_buf = ""
        self._reasoning_mode = opts.reasoning_events
        self._fast = _FAST_NONE  # which fast path the next chunk may take (see _fast_path)
        self._fast_tpl: dict[str, Any] = {}  # the delta event of the open item, copied per chunk

    # ------------------------------------------------------------------ public API
    @property
    def usage(self) -> dict[str, Any] | None:
        return map_usage(self._raw_usage)

    @property
    def response(self) -> dict[str, Any]:
        """The final Response once finished; before that, a snapshot of the response so far."""
        if self._final is not None:
            return self._final
        resp = dict(self._skeleton)
        resp["output"] = self._snapshot_output("in_progress")
        resp["usage"] = self.usage
        return resp

    def start(self) -> list[dict[str, Any]]:
        if self._started or self.finished:
            return []
        self._started = True
        created = dict(self._skeleton)
        created["output"] = []
        in_progress = dict(self._skeleton)
        in_progress["output"] = []
        self._seq = 2
        return [
            {"type": "response.created", "sequence_number": 0, "response": created},
            {"type": "response.in_progress", "sequence_number": 1, "response": in_progress},
        ]

    def _feed_general(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self.finished:
            return []
        events: list[dict[str, Any]] = self.start() if not self._started else []
        if not isinstance(chunk, dict):
            return events
        error = chunk.get("error")
        if error:
            message, code = self._error_fields(error)
            events.extend(self.fail(message, code))
            return events
        usage = chunk.get("usage")
        if usage and isinstance(usage, dict):
            self._raw_usage = usage
        elif "x_groq" in chunk:  # older Groq: usage under x_groq in the last chunk
            xg = chunk["x_groq"]
            if isinstance(xg, dict) and xg.get("usage"):
                self._raw_usage = xg["usage"]
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return events
        choice = choices[0]
        if len(choices) > 1 and (not isinstance(choice, dict) or choice.get("index", 0) != 0):
            # n > 1 (or a proxy reordering choices): only choice 0 is translated
            choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
        if not isinstance(choice, dict):
            return events
        delta = choice.get("delta")
        if delta and isinstance(delta, dict):
            self._delta(delta, choice, events)
        reason = choice.get("finish_reason")
        if reason and isinstance(reason, str) and self._finish_reason is None:
            self._finish_reason = reason
        return events

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The events one chat chunk causes (``response.created``/``in_progress`` first if needed).

        Inlined fast path: the common chunk (a plain text, reasoning or arguments fragment continuing
        the open item, with nothing else in it; other delta keys may be present but empty: Ollama
        repeats role, OpenAI sends refusal: null, DeepSeek content: null) becomes one event from a
        per-item template. Anything else takes `_feed_general`; the fast path changes no state
        before deciding.
        """
        fast = self._fast
        if not fast:
            return self._feed_general(chunk)
        try:
            choices = chunk["choices"]
            choice = choices[0]
            delta = choice["delta"]
        except (KeyError, IndexError, TypeError):
            return self._feed_general(chunk)
        get = chunk.get
        if (
            len(choices) != 1
            or get("error")
            or type(delta) is not dict
            or choice.get("finish_reason")
            or choice.get("logprobs") is not None
        ):
            return self._feed_general(chunk)
        usage = get("usage")
        if usage:  # vLLM continuous usage stats / llama.cpp: usage on every chunk
            if type(usage) is not dict:
                return self._feed_general(chunk)
            self._raw_usage = usage  # idempotent: the general path would store the same
        if fast == _FAST_TEXT:
            content = delta.get("content")
            if type(content) is not str or not content:
                return self._feed_general(chunk)
            if len(delta) > 1:
                for key, value in delta.items():
                    if value and key != "content" and key != "role":
                        return self._feed_general(chunk)
            self._text.append(content)
            event = self._fast_tpl.copy()
            event["sequence_number"] = self._seq
            event["delta"] = content
            self._seq += 1
            return [event]
        if fast == _FAST_REASONING:
            text = None
            for key, value in delta.items():
                if not value or key == "role":
                    continue
                if (key == "reasoning_content" or key == "reasoning") and type(value) is str and (
                    text is None or text == value
                ):
                    text = value
                    continue
                return self._feed_general(chunk)
            if text is None:
                return self._feed_general(chunk)
            self._rs_text.append(text)
            event = self._fast_tpl.copy()
            event["sequence_number"] = self._seq
            event["delta"] = text
            self._seq += 1
            return [event]
        # _FAST_ARGS: an arguments fragment for the open function call
        calls = delta.get("tool_calls")
        if type(calls) is not list or len(calls) != 1:
            return self._feed_general(chunk)
        for key, value in delta.items():
            if value and key != "tool_calls" and key != "role":
                return self._feed_general(chunk)
        tc = calls[0]
        call = self._call
        if type(tc) is not dict or call is None:
            return self._feed_general(chunk)
        index = tc.get("index")
        backend_id = tc.get("id")
        fn = tc.get("function")
        if (
            (index is not None and index != call.index)
            or (backend_id and backend_id != call.backend_id)
            or type(fn) is not dict
            or tc.get("extra_content") is not None
        ):
            return self._feed_general(chunk)
        fragment = fn.get("arguments")
        name = fn.get("name")
        if type(fragment) is not str or not fragment or (name and name != call.name and call.kind == "function"):
            return self._feed_general(chunk)
        call.args.append(fragment)
        event = self._fast_tpl.copy()
        event["sequence_number"] = self._seq
        event["delta"] = fragment
        self._seq += 1
        return [event]

    def finish(self, done_seen: bool = True) -> list[dict[str, Any]]:
        if self.finished:
            return []
        events: list[dict[str, Any]] = self.start() if not self._started else []
        self._flush_think(events)
        reason = self._finish_reason
        if reason == "error":
            events.extend(self.fail("The upstream backend ended the answer with finish_reason 'error'."))
            return events
        if reason is None:
            # Never report an answer as completed unless the backend said how it ended: a cut
            # connection, and equally a [DONE] with no finish_reason before it, may have lost the end.
            events.extend(
                self.fail(
                    "The upstream backend ended the stream without a finish reason; the answer may be cut short."
                    if done_seen
                    else "The upstream stream ended before the answer was finished."
                )
            )
            return events
        for call in self._calls:
            if not call.added:  # a call whose name never came: still surface it
                self._add_call(call, events)
        status = "completed"
        details = None
        if reason == "length":
            status, details = "incomplete", {"reason": "max_output_tokens"}
        elif reason == "content_filter":
            status, details = "incomplete", {"reason": "content_filter"}
        self._close(events, "incomplete" if status == "incomplete" else "completed")
        if status == "completed":
            self._extras_carrier(events)
        resp = dict(self._skeleton)
        resp["status"] = status
        resp["incomplete_details"] = details
        resp["completed_at"] = self.options.completed_at if self.options.completed_at is not None else int(time.time())
        resp["output"] = [item for item in self._output if item is not None]
        resp["usage"] = self.usage
        self._final = resp
        self.finished = True
        self._fast = _FAST_NONE
        events.append({"type": "response." + status, "sequence_number": self._seq, "response": resp})
        self._seq += 1
        return events

    def fail(self, message: str, code: str = "server_error") -> list[dict[str, Any]]:
        """End the stream as ``response.failed`` (open items are listed, marked incomplete, not closed)."""
        if self.finished:
            return []
        events: list[dict[str, Any]] = self.start() if not self._started else []
        if code not in RESPONSE_ERROR_CODES:
            code = "server_error"
        mode = self.options.error_event
        if mode != "none":
            event: dict[str, Any] = {"type": "error", "sequence_number": self._seq}
            if mode in ("openai", "both"):
                event["code"] = code
                event["message"] = message
                event["param"] = None
            if mode in ("openresponses", "both"):
                event["error"] = {"type": "server_error", "code": code, "message": message, "param": None}
            events.append(event)
            self._seq += 1
        resp = dict(self._skeleton)
        resp["status"] = "failed"
        resp["output"] = self._snapshot_output("incomplete")
        resp["usage"] = self.usage
        resp["error"] = {"code": code, "message": message}
        self._final = resp
        self.finished = True
        self._fast = _FAST_NONE
        events.append({"type": "response.failed", "sequence_number": self._seq, "response": resp})
        self._seq += 1
        return events

    # ------------------------------------------------------------------ chunk handling
    @staticmethod
    def _error_fields(error: Any) -> tuple[str, str]:
        if isinstance(error, dict):
            message = error.get("message") or "The upstream backend reported an error."
            code = error.get("code")
            return str(message), code if isinstance(code, str) and code in RESPONSE_ERROR_CODES else "server_error"
        return (error if isinstance(error, str) else "The upstream backend reported an error."), "server_error"

    def _delta(self, delta: dict[str, Any], choice: dict[str, Any], events: list[dict[str, Any]]) -> None:
        # 1. reasoning (DeepSeek/llama.cpp reasoning_content, vLLM/Ollama/OpenRouter reasoning)
        rc = delta.get("reasoning_content")
        rr = delta.get("reasoning")
        text = rc if isinstance(rc, str) and rc else (rr if isinstance(rr, str) and rr else "")
        details = delta.get("reasoning_details")
        if isinstance(details, list) and details:
            self._merge_details(details, events)
            if not text:
                text = "".join(
                    t
                    for d in details
                    if isinstance(d, dict) and d.get("type") in ("reasoning.text", "reasoning.summary")
                    for t in (d.get("text") or d.get("summary"),)
                    if isinstance(t, str)
                )
        if text:
            self._reason(text, events)
        # 2. content (with an optional leading <think>…</think>)
        content = delta.get("content")
        if isinstance(content, str) and content:
            lp = _map_logprobs(choice.get("logprobs")) if choice.get("logprobs") else None
            if self._think == _T_PLAIN:
                self._emit_text(content, events, lp)
            else:
                self._think_content(content, events, lp)
        elif isinstance(content, list):  # some proxies send content parts in deltas
            joined = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
            if joined and self._think == _T_PLAIN:
                self._emit_text(joined, events, None)
            elif joined:
                self._think_content(joined, events, None)
        annotations = delta.get("annotations")
        if isinstance(annotations, list) and annotations:
            self._annotate(annotations, events)
        # 3. refusal
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._emit_refusal(refusal, events)
        # 4. tool calls
        calls = delta.get("tool_calls")
        if calls and isinstance(calls, list):
            for tc in calls:
                if isinstance(tc, dict):
                    self._tool_delta(tc, events)

    def _merge_details(self, details: list[Any], events: list[dict[str, Any]]) -> None:
        """Keep OpenRouter reasoning_details for replay, merging streamed fragments by (index, type)."""
        if self._cur != _REASONING:
            self._open_reasoning(events)
        for d in details:
            if not isinstance(d, dict):
                continue
            for prev in self._rs_details:
                if prev.get("index") == d.get("index") and prev.get("type") == d.get("type"):
                    for k, v in d.items():
                        if k in ("text", "summary", "data") and isinstance(v, str):
                            prev[k] = (prev.get(k) or "") + v
                        elif v is not None:
                            prev[k] = v
                    break
            else:
                self._rs_details.append(dict(d))

    # ------------------------------------------------------------------ think tags
    def _think_content(self, content: str, events: list[dict[str, Any]], lp: list[dict[str, Any]] | None) -> None:
        state = self._think
        if state == _T_CLOSED:
            content = content.lstrip()
            if not content:
                return
            self._think = _T_PLAIN
            self._emit_text(content, events, lp)
            return
        buf = self._think_buf + content
        if state == _T_UNDECIDED:
            stripped = buf.lstrip()
            if not stripped or (len(stripped) < len(_THINK_OPEN) and _THINK_OPEN.startswith(stripped)):
                self._think_buf = buf
                return
            if not stripped.startswith(_THINK_OPEN):
                self._think = _T_PLAIN
                self._think_buf = ""
                self._emit_text(buf, events, lp)
                return
            self._think = _T_INSIDE
            buf = stripped[len(_THINK_OPEN) :]
        end = buf.find(_THINK_CLOSE)
        if end >= 0:
            if end:
                self._reason(buf[:end], events)
            self._think_buf = ""
            self._think = _T_CLOSED
            rest = buf[end + len(_THINK_CLOSE) :]
            if rest:
                self._think_content(rest, events, lp)
            return
        keep = 0
        for n in range(min(len(_THINK_CLOSE) - 1, len(buf)), 0, -1):
            if _THINK_CLOSE.startswith(buf[-n:]):
                keep = n
                break
        if keep:
            self._think_buf = buf[-keep:]
            buf = buf[:-keep]
        else:
            self._think_buf = ""
        if buf:
            self._reason(buf, events)

    def _flush_think(self, events: list[dict[str, Any]]) -> None:
        """At the end: an unclosed <think> is all reasoning; undecided whitespace is dropped."""
        if self._think == _T_INSIDE and self._think_buf:
            self._reason(self._think_buf, events)
        self._think_buf = ""

    # ------------------------------------------------------------------ items
    def _next_index(self) -> int:
        self._output.append(None)
        return len(self._output) - 1

    def _close(self, events: list[dict[str, Any]], status: str = "completed") -> None:
        self._fast = _FAST_NONE
        cur = self._cur
        if cur == _MESSAGE:
            self._close_message(events, status)
        elif cur == _REASONING:
            self._close_reasoning(events, status)
        elif cur == _CALL and self._call is not None:
            self._close_call(self._call, events, status)
        self._cur = _NONE

    # reasoning ---------------------------------------------------------
    def _open_reasoning(self, events: list[dict[str, Any]]) -> None:
        self._close(events)
        oi = self._next_index()
        self._rs_oi = oi
        self._rs_id = f"rs_{self._base}_{oi}"
        self._rs_text = []
        self._rs_details = []
        self._rs_extras = {}
        self._rs_part_open = False
        self._cur = _REASONING
        item: dict[str, Any] = {"id": self._rs_id, "type": "reasoning", "status": "in_progress", "summary": []}
        if self._reasoning_mode != "summary":
            item["content"] = []
        events.append({"type": "response.output_item.added", "sequence_number": self._seq, "output_index": oi, "item": item})
        self._seq += 1

    def _reason(self, text: str, events: list[dict[str, Any]]) -> None:
        if self._cur != _REASONING:
            self._open_reasoning(events)
        summary = self._reasoning_mode == "summary"
        if not self._rs_part_open:
            self._rs_part_open = True
            if summary:
                events.append(
                    {
                        "type": "response.reasoning_summary_part.added",
                        "sequence_number": self._seq,
                        "item_id": self._rs_id,
                        "output_index": self._rs_oi,
                        "summary_index": 0,
                        "part": {"type": "summary_text", "text": ""},
                    }
                )
            else:
                events.append(
                    {
                        "type": "response.content_part.added",
                        "sequence_number": self._seq,
                        "item_id": self._rs_id,
                        "output_index": self._rs_oi,
                        "content_index": 0,
                        "part": {"type": "reasoning_text", "text": ""},
                    }
                )
            self._seq += 1
        self._rs_text.append(text)
        if self._fast != _FAST_REASONING:
            self._fast = _FAST_REASONING
            self._fast_tpl = (
                {"type": "response.reasoning_summary_text.delta", "sequence_number": 0, "item_id": self._rs_id,
                 "output_index": self._rs_oi, "summary_index": 0, "delta": ""}
                if summary
                else {"type": "response.reasoning_text.delta" if self._reasoning_mode == "reasoning_text"
                      else "response.reasoning.delta", "sequence_number": 0, "item_id": self._rs_id,
                      "output_index": self._rs_oi, "content_index": 0, "delta": ""}
            )
        if summary:
            events.append(
                {
                    "type": "response.reasoning_summary_text.delta",
                    "sequence_number": self._seq,
                    "item_id": self._rs_id,
                    "output_index": self._rs_oi,
                    "summary_index": 0,
                    "delta": text,
                }
            )
        else:
            events.append(
                {
                    "type": "response.reasoning_text.delta"
                    if self._reasoning_mode == "reasoning_text"
                    else "response.reasoning.delta",
                    "sequence_number": self._seq,
                    "item_id": self._rs_id,
                    "output_index": self._rs_oi,
                    "content_index": 0,
                    "delta": text,
                }
            )
        self._seq += 1

    def _reasoning_item(self, status: str) -> dict[str, Any]:
        text = "".join(self._rs_text)
        item: dict[str, Any] = {"id": self._rs_id, "type": "reasoning", "status": status}
        if self._reasoning_mode == "summary":
            item["summary"] = [{"type": "summary_text", "text": text}] if self._rs_part_open else []
        else:
            item["summary"] = []
            item["content"] = [{"type": "reasoning_text", "text": text}] if self._rs_part_open else []
        data: dict[str, Any] = {}
        if text:
            data["text"] = text
        if self._rs_details:
            data["details"] = self._rs_details
        if self._rs_extras:
            data["tool_extras"] = self._rs_extras
        item["encrypted_content"] = pack_reasoning(data, self.options.encryption_key) if data else None
        return item

    def _close_reasoning(self, events: list[dict[str, Any]], status: str) -> None:
        item = self._reasoning_item(status)
        if self._rs_part_open:
            text = "".join(self._rs_text)
            base = {"item_id": self._rs_id, "output_index": self._rs_oi}
            if self._reasoning_mode == "summary":
                events.append(
                    {"type": "response.reasoning_summary_text.done", "sequence_number": self._seq, **base,
                     "summary_index": 0, "text": text}
                )
                events.append(
                    {"type": "response.reasoning_summary_part.done", "sequence_number": self._seq + 1, **base,
                     "summary_index": 0, "part": {"type": "summary_text", "text": text}}
                )
            else:
                events.append(
                    {"type": "response.reasoning_text.done" if self._reasoning_mode == "reasoning_text"
                     else "response.reasoning.done", "sequence_number": self._seq, **base,
                     "content_index": 0, "text": text}
                )
                events.append(
                    {"type": "response.content_part.done", "sequence_number": self._seq + 1, **base,
                     "content_index": 0, "part": {"type": "reasoning_text", "text": text}}
                )
            self._seq += 2
        events.append({"type": "response.output_item.done", "sequence_number": self._seq, "output_index": self._rs_oi,
                       "item": item})
        self._seq += 1
        self._output[self._rs_oi] = item

    # message -----------------------------------------------------------
    def _open_message(self, events: list[dict[str, Any]]) -> None:
        self._close(events)
        oi = self._next_index()
        self._msg_oi = oi
        self._msg_id = f"msg_{self._base}_{oi}"
        self._parts = []
        self._part_kind = None
        self._part_index = -1
        self._cur = _MESSAGE
        events.append(
            {
                "type": "response.output_item.added",
                "sequence_number": self._seq,
                "output_index": oi,
                "item": {"id": self._msg_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []},
            }
        )
        self._seq += 1

    def _open_part(self, kind: str, events: list[dict[str, Any]]) -> None:
        self._fast = _FAST_NONE
        if self._cur != _MESSAGE:
            self._open_message(events)
        elif self._part_kind is not None:
            self._close_part(events)
        self._part_kind = kind
        self._part_index += 1
        self._text = []
        self._logprobs = []
        self._annotations = []
        part = (
            {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            if kind == "text"
            else {"type": "refusal", "refusal": ""}
        )
        events.append(
            {
                "type": "response.content_part.added",
                "sequence_number": self._seq,
                "item_id": self._msg_id,
                "output_index": self._msg_oi,
                "content_index": self._part_index,
                "part": part,
            }
        )
        self._seq += 1

    def _current_part(self) -> dict[str, Any]:
        text = "".join(self._text)
        if self._part_kind == "text":
            return {"type": "output_text", "text": text, "annotations": self._annotations, "logprobs": self._logprobs}
        return {"type": "refusal", "refusal": text}

    def _close_part(self, events: list[dict[str, Any]]) -> None:
        part = self._current_part()
        base = {"item_id": self._msg_id, "output_index": self._msg_oi, "content_index": self._part_index}
        if self._part_kind == "text":
            events.append({"type": "response.output_text.done", "sequence_number": self._seq, **base,
                           "text": part["text"], "logprobs": part["logprobs"]})
        else:
            events.append({"type": "response.refusal.done", "sequence_number": self._seq, **base,
                           "refusal": part["refusal"]})
        events.append({"type": "response.content_part.done", "sequence_number": self._seq + 1, **base, "part": part})
        self._seq += 2
        self._parts.append(part)
        self._part_kind = None

    def _emit_text(self, text: str, events: list[dict[str, Any]], lp: list[dict[str, Any]] | None) -> None:
        if self._cur != _MESSAGE or self._part_kind != "text":
            self._open_part("text", events)
        self._text.append(text)
        if self._fast != _FAST_TEXT and self._think == _T_PLAIN:
            self._fast = _FAST_TEXT
            self._fast_tpl = {
                "type": "response.output_text.delta",
                "sequence_number": 0,
                "item_id": self._msg_id,
                "output_index": self._msg_oi,
                "content_index": self._part_index,
                "delta": "",
                "logprobs": _NO_LOGPROBS,
            }
        if lp:
            self._logprobs.extend(lp)
        events.append(
            {
                "type": "response.output_text.delta",
                "sequence_number": self._seq,
                "item_id": self._msg_id,
                "output_index": self._msg_oi,
                "content_index": self._part_index,
                "delta": text,
                "logprobs": lp or [],
            }
        )
        self._seq += 1

    def _annotate(self, annotations: list[Any], events: list[dict[str, Any]]) -> None:
        if self._cur != _MESSAGE or self._part_kind != "text":
            self._open_part("text", events)
        for raw in annotations:
            annotation = _map_annotation(raw)
            if annotation is None:
                continue
            self._annotations.append(annotation)
            events.append(
                {
                    "type": "response.output_text.annotation.added",
                    "sequence_number": self._seq,
                    "item_id": self._msg_id,
                    "output_index": self._msg_oi,
                    "content_index": self._part_index,
                    "annotation_index": len(self._annotations) - 1,
                    "annotation": annotation,
                }
            )
            self._seq += 1

    def _emit_refusal(self, text: str, events: list[dict[str, Any]]) -> None:
        if self._cur != _MESSAGE or self._part_kind != "refusal":
            self._open_part("refusal", events)
        self._text.append(text)
        events.append(
            {
                "type": "response.refusal.delta",
                "sequence_number": self._seq,
                "item_id": self._msg_id,
                "output_index": self._msg_oi,
                "content_index": self._part_index,
                "delta": text,
            }
        )
        self._seq += 1

    def _close_message(self, events: list[dict[str, Any]], status: str) -> None:
        if self._part_kind is not None:
            self._close_part(events)
        item = {"id": self._msg_id, "type": "message", "status": status, "role": "assistant", "content": self._parts}
        events.append({"type": "response.output_item.done", "sequence_number": self._seq, "output_index": self._msg_oi,
                       "item": item})
        self._seq += 1
        self._output[self._msg_oi] = item

    # tool calls ----------------------------------------------------------
    def _find_call(self, tc: dict[str, Any]) -> _Call:
        """Attribute a tool-call delta to a call (docs/wire.md §3.1 rule 6)."""
        index = tc.get("index")
        if isinstance(index, list | dict):
            index = None  # unusable as an index
        backend_id = tc.get("id")
        if not isinstance(backend_id, str) or not backend_id:
            backend_id = None
        calls = self._calls
        if backend_id is not None:
            for call in calls:
                if call.backend_id == backend_id:
                    return call
            if index is not None:
                for call in reversed(calls):
                    if call.index == index:
                        if call.backend_id is None:
                            call.backend_id = backend_id
                            if not call.added:
                                call.call_id = backend_id
                            return call
                        break
            return self._new_call(index, backend_id)
        if index is not None:
            for call in reversed(calls):
                if call.index == index:
                    return call
            return self._new_call(index, None)
        if self._call is not None and self._cur == _CALL:
            return self._call
        if calls:
            return calls[-1]
        return self._new_call(None, None)

    def _new_call(self, index: Any, backend_id: str | None) -> _Call:
        call = _Call(index, backend_id)
        self._calls.append(call)
        return call

    def _tool_delta(self, tc: dict[str, Any], events: list[dict[str, Any]]) -> None:
        call = self._find_call(tc)
        fn = tc.get("function")
        custom = tc.get("custom")
        fragment: Any = None
        name = None
        if isinstance(fn, dict):
            name = fn.get("name")
            fragment = fn.get("arguments")
        elif isinstance(custom, dict):
            name = custom.get("name")
            fragment = custom.get("input")
            call.kind = "custom_native"
        if tc.get("extra_content") is not None:
            call.extra = tc["extra_content"]
        if name and isinstance(name, str) and not call.name:
            call.name = name
        if fragment is not None and not isinstance(fragment, str):
            # LiteLLM's ollama_chat streams arguments as a JSON object.
            fragment = orjson.dumps(fragment).decode()
        if not call.added:
            if fragment:
                call.pending.append(fragment)
            if call.name:
                self._add_call(call, events)
            return
        if fragment:
            self._call_fragment(call, fragment, events)

    def _add_call(self, call: _Call, events: list[dict[str, Any]]) -> None:
        if call.extra is not None:
            # Gemini's thought signature must come back with this call on the next turn: put it in
            # the open reasoning item, or in a text-less reasoning item just before the call.
            if self._cur == _REASONING:
                self._rs_extras[call.call_id] = call.extra
            else:
                self._close(events)
                self._carrier({call.call_id: call.extra}, events)
            call.carried = True
        self._close(events)
        kind, name, namespace = self._tools.resolve(call.name)
        if call.kind == "custom_native":
            kind = "custom"
            call.kind = "custom_native"
        else:
            call.kind = kind
        call.name = name
        call.namespace = namespace
        oi = self._next_index()
        call.output_index = oi
        call.added = True
        self._call = call
        self._cur = _CALL
        if kind == "custom":
            call.item_id = f"ctc_{self._base}_{oi}"
            item: dict[str, Any] = {"id": call.item_id, "type": "custom_tool_call", "status": "in_progress",
                                    "call_id": call.call_id, "name": name, "input": ""}
        else:
            call.item_id = f"fc_{self._base}_{oi}"
            item = {"id": call.item_id, "type": "function_call", "status": "in_progress", "call_id": call.call_id,
                    "name": name, "arguments": ""}
        if namespace:
            item["namespace"] = namespace
        events.append({"type": "response.output_item.added", "sequence_number": self._seq, "output_index": oi,
                       "item": item})
        self._seq += 1
        pending, call.pending = call.pending, []
        for fragment in pending:
            self._call_fragment(call, fragment, events)
        if kind == "function" and call.kind == "function":
            self._fast = _FAST_ARGS
            self._fast_tpl = {"type": "response.function_call_arguments.delta", "sequence_number": 0,
                              "item_id": call.item_id, "output_index": call.output_index, "delta": ""}

    def _call_fragment(self, call: _Call, fragment: str, events: list[dict[str, Any]]) -> None:
        call.args.append(fragment)
        if call.kind != "function" or self._call is not call or self._cur != _CALL:
            # custom input is sent whole at the end (it arrives JSON-wrapped); a late fragment for
            # an already closed call (interleaving backends) only lands in the final response.
            done_item = self._output[call.output_index]
            if call.kind == "function" and done_item is not None:
                self._output[call.output_index] = {**done_item, "arguments": "".join(call.args)}
            return
        events.append({"type": "response.function_call_arguments.delta", "sequence_number": self._seq,
                       "item_id": call.item_id, "output_index": call.output_index, "delta": fragment})
        self._seq += 1

    def _custom_input(self, call: _Call) -> str:
        raw = "".join(call.args)
        if call.kind == "custom_native":
            return raw
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
        if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
            return parsed["input"]
        return raw

    def _call_item(self, call: _Call, status: str) -> dict[str, Any]:
        if call.kind == "function":
            args = "".join(call.args) or "{}"
            item: dict[str, Any] = {"id": call.item_id, "type": "function_call", "status": status,
                                    "call_id": call.call_id, "name": call.name, "arguments": args}
        else:
            item = {"id": call.item_id, "type": "custom_tool_call", "status": status, "call_id": call.call_id,
                    "name": call.name, "input": self._custom_input(call)}
        if call.namespace:
            item["namespace"] = call.namespace
        return item

    def _close_call(self, call: _Call, events: list[dict[str, Any]], status: str) -> None:
        item = self._call_item(call, status)
        base = {"item_id": call.item_id, "output_index": call.output_index}
        if item["type"] == "function_call":
            if not call.args:
                events.append({"type": "response.function_call_arguments.delta", "sequence_number": self._seq,
                               **base, "delta": "{}"})
                self._seq += 1
            events.append({"type": "response.function_call_arguments.done", "sequence_number": self._seq, **base,
                           "arguments": item["arguments"]})
        else:
            if item["input"]:
                events.append({"type": "response.custom_tool_call_input.delta", "sequence_number": self._seq,
                               **base, "delta": item["input"]})
                self._seq += 1
            events.append({"type": "response.custom_tool_call_input.done", "sequence_number": self._seq, **base,
                           "input": item["input"]})
        events.append({"type": "response.output_item.done", "sequence_number": self._seq + 1,
                       "output_index": call.output_index, "item": item})
        self._seq += 2
        self._output[call.output_index] = item
        self._call = None

    def _extras_carrier(self, events: list[dict[str, Any]]) -> None:
        """Provider extras that arrived after their call was opened ride in a trailing reasoning item."""
        extras = {c.call_id: c.extra for c in self._calls if c.extra is not None and c.added and not c.carried}
        if extras:
            self._carrier(extras, events)

    def _carrier(self, extras: dict[str, Any], events: list[dict[str, Any]]) -> None:
        """A reasoning item with no text whose ``encrypted_content`` holds tool-call extras (reasoning.py)."""
        oi = self._next_index()
        rid = f"rs_{self._base}_{oi}"
        item: dict[str, Any] = {"id": rid, "type": "reasoning", "status": "completed", "summary": []}
        if self._reasoning_mode != "summary":
            item["content"] = []
        item["encrypted_content"] = pack_reasoning({"tool_extras": extras}, self.options.encryption_key)
        added = {k: v for k, v in item.items() if k != "encrypted_content"}
        added["status"] = "in_progress"
        events.append({"type": "response.output_item.added", "sequence_number": self._seq, "output_index": oi,
                       "item": added})
        events.append({"type": "response.output_item.done", "sequence_number": self._seq + 1, "output_index": oi,
                       "item": item})
        self._seq += 2
        self._output[oi] = item

    def _snapshot_output(self, open_status: str) -> list[dict[str, Any]]:
        """Items so far; the open one rendered from its buffers with ``open_status``."""
        out = []
        for i, item in enumerate(self._output):
            if item is not None:
                out.append(item)
                continue
            if self._cur == _MESSAGE and i == self._msg_oi:
                parts = list(self._parts)
                if self._part_kind is not None:
                    parts.append(self._current_part())
                out.append({"id": self._msg_id, "type": "message", "status": open_status, "role": "assistant",
                            "content": parts})
            elif self._cur == _REASONING and i == self._rs_oi:
                out.append(self._reasoning_item(open_status))
            elif self._cur == _CALL and self._call is not None and i == self._call.output_index:
                out.append(self._call_item(self._call, open_status))
        return out


# ============================================================================ reverse direction


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


class ResponsesStreamTranslator:
    """Responses stream events → chat completion chunks (for chat clients in front of a Responses server)."""

    def __init__(self, request: dict[str, Any] | None = None) -> None:
        self.request = request if isinstance(request, dict) else {}
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.model = _str(self.request.get("model"))
        self.created = int(time.time())
        self.finished = False
        self._role_sent = False
        self._calls: dict[int, int] = {}  # output_index -> tool call index
        self._custom: dict[int, dict[str, Any]] = {}  # output_index -> {"id", "name", "input"}
        self._include_usage = bool((self.request.get("stream_options") or {}).get("include_usage", True))

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if self.finished or not isinstance(event, dict):
            return []
        kind = event.get("type")
        if not isinstance(kind, str):
            return []
        delta = event.get("delta")
        if not isinstance(delta, str):
            delta = ""
        oi = event.get("output_index")
        if not isinstance(oi, int):
            oi = -1
        if kind in ("response.created", "response.in_progress"):
            resp = _obj(event.get("response"))
            rid = _str(resp.get("id"))
            if kind == "response.created" and rid:
                self.id = "chatcmpl-" + (rid[5:] if rid.startswith("resp_") else rid)
            self.model = _str(resp.get("model")) or self.model
            if isinstance(resp.get("created_at"), int):
                self.created = resp["created_at"]
            if kind == "response.created":
                return [self._chunk({"content": ""})]
            return []
        if kind == "response.output_text.delta":
            return [self._chunk({"content": delta})]
        if kind == "response.refusal.delta":
            return [self._chunk({"refusal": delta})]
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta", "response.reasoning.delta"):
            return [self._chunk({"reasoning_content": delta})]
        summary_index = event.get("summary_index")
        if kind == "response.reasoning_summary_part.added" and isinstance(summary_index, int) and summary_index > 0:
            return [self._chunk({"reasoning_content": "\n\n"})]
        if kind == "response.output_item.added":
            item = _obj(event.get("item"))
            if item.get("type") == "function_call":
                index = len(self._calls) + len(self._custom)
                self._calls[oi] = index
                return [
                    self._chunk(
                        {"tool_calls": [{"index": index, "id": _str(item.get("call_id")), "type": "function",
                                         "function": {"name": _str(item.get("name")), "arguments": ""}}]}
                    )
                ]
            if item.get("type") == "custom_tool_call":
                self._custom[oi] = {"index": len(self._calls) + len(self._custom), "id": _str(item.get("call_id")),
                                    "name": _str(item.get("name"))}
            return []
        if kind == "response.function_call_arguments.delta":
            index = self._calls.get(oi)
            if index is None:
                return []
            return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": delta}}]})]
        if kind == "response.output_item.done":
            item = _obj(event.get("item"))
            custom = self._custom.pop(oi, None)
            if custom is not None:
                arguments = orjson.dumps({"input": _str(item.get("input"))}).decode()
                return [
                    self._chunk(
                        {"tool_calls": [{"index": custom["index"], "id": custom["id"], "type": "function",
                                         "function": {"name": custom["name"], "arguments": arguments}}]}
                    )
                ]
            return []
        if kind in ("response.completed", "response.incomplete"):
            return self._end(_obj(event.get("response")))
        if kind == "response.failed":
            self.finished = True
            error = _obj(_obj(event.get("response")).get("error"))
            return [{"error": {"message": _str(error.get("message")) or "The response failed.",
                               "type": "server_error", "param": None,
                               "code": _str(error.get("code")) or "server_error"}}]
        if kind == "error":
            self.finished = True
            nested = _obj(event.get("error"))
            return [{"error": {"message": _str(event.get("message")) or _str(nested.get("message"))
                               or "The response failed.", "type": "server_error", "param": None,
                               "code": _str(event.get("code")) or _str(nested.get("code")) or "server_error"}}]
        return []

    def _end(self, response: dict[str, Any]) -> list[dict[str, Any]]:
        self.finished = True
        status = response.get("status")
        if status == "incomplete":
            reason = _obj(response.get("incomplete_details")).get("reason")
            finish = "content_filter" if reason == "content_filter" else "length"
        elif self._calls or any(
            isinstance(i, dict) and i.get("type") in ("function_call", "custom_tool_call")
            for i in (response.get("output") if isinstance(response.get("output"), list) else ())
        ):
            finish = "tool_calls"
        else:
            finish = "stop"
        chunks = [self._chunk({}, finish)]
        usage = reverse_usage(response.get("usage"))
        if usage is not None and self._include_usage:
            chunks.append({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model, "choices": [], "usage": usage})
        return chunks

    def finish(self) -> list[dict[str, Any]]:
        """End of the event stream: if no terminal event came, report the stream as broken."""
        if self.finished:
            return []
        self.finished = True
        return [{"error": {"message": "The Responses stream ended without a terminal event.", "type": "server_error",
                           "param": None, "code": "server_error"}}]
