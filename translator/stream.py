"""Streams as state machines: chat completion chunks ⇄ Responses stream events.

`ChatStreamTranslator` is the heart of the bridge. Chat backends stream loosely (see the quirks
table in docs/wire.md §3): the role and an empty content on every chunk (Ollama, Groq), a tool
call whole in one chunk or split anywhere, tool-call ``index`` missing (Gemini) or every parallel
call on index 0 (Ollama via LiteLLM), ``finish_reason: "stop"`` after tool calls, a finish reason
in a chunk of its own or twice (OpenRouter), usage in a last empty-choices chunk or on every chunk
or never, ``reasoning`` vs ``reasoning_content``, ``data: {"error": …}`` in the middle of a 200
stream, choices other than index 0 when a backend ignores ``n``. Responses clients, on the other
hand, are strict: the openai SDK's accumulator raises on an event for an item it was not told
about, Open Responses rejects a missing field. So the machine keeps exactly one item open at a
time and emits the canonical sequence (docs/wire.md §1.5/§1.6): ``created``, ``in_progress``, then
per item ``output_item.added`` → part added → deltas → part done → ``output_item.done``, then one
terminal event with the full output and usage.

The pieces it is built from live in builders.py: an `Emitter` that owns the sequence number, and
one builder per open item kind that holds that item's state. This module keeps dispatch (which
delta goes where), the think-tag machine, and the one-open-item rule (`_open`).

Item ids are derived from the response id and the output index (``msg_<base>_<n>``, events.py), so
the same answer gives the same ids whether it arrives streamed or whole.

Hot path: a text chunk costs a few dict lookups and one small event dict. The Response object is
built twice (at the start and at the end), never per chunk, and nothing is deep-copied.
"""

from __future__ import annotations

import enum
import time
from typing import Any

import orjson

from .builders import (
    CUSTOM,
    CUSTOM_NATIVE,
    FUNCTION,
    REFUSAL,
    TEXT,
    Emitter,
    MessageBuilder,
    ReasoningBuilder,
    ToolCall,
    ToolCallTable,
    carrier_item,
    map_logprobs,
)
from .errors import InvalidRequest, UpstreamError, classify_backend_error
from .events import (
    CREATED,
    ERROR,
    FAILED,
    IN_PROGRESS,
    RESPONSE_ERROR_CODES,
    item_id,
    map_usage,
    response_skeleton,
)
from .options import TranslatorOptions
from .requests import ToolMap, build_tool_map
from .reverse import ResponsesStreamTranslator  # the reverse direction lives in reverse.py

__all__ = ["ChatStreamTranslator", "ResponsesStreamTranslator"]

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"


class Fast(enum.IntEnum):
    """Which fast path the next chunk may take: the kind of delta that continues the open item."""

    NONE = 0
    TEXT = 1
    REASONING = 2
    ARGS = 3


class Think(enum.IntEnum):
    """Where a leading ``<think>…</think>`` in content stands."""

    UNDECIDED = 0  # nothing but whitespace (or a prefix of <think>) seen yet
    INSIDE = 1  # inside <think>: content is reasoning
    CLOSED = 2  # just closed: skip the whitespace that follows
    PLAIN = 3  # plain content from here on


# Module aliases: comparing with a global is cheaper than an enum attribute on the hot path.
_FAST_NONE, _FAST_TEXT, _FAST_REASONING, _FAST_ARGS = Fast.NONE, Fast.TEXT, Fast.REASONING, Fast.ARGS
_T_UNDECIDED, _T_INSIDE, _T_CLOSED, _T_PLAIN = Think.UNDECIDED, Think.INSIDE, Think.CLOSED, Think.PLAIN

_OpenItem = MessageBuilder | ReasoningBuilder | ToolCall


class _TooManyItems(Exception):
    """Raised where a new output item would pass ``max_output_items``; `_feed_general` fails the response."""


def _utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8: ``len`` for ASCII (an O(1) flag check), encoded otherwise."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _reported_tokens(usage: Any) -> int | None:
    """``usage.completion_tokens`` when it is a plain non-negative integer, else None."""
    if type(usage) is not dict:
        return None
    tokens = usage.get("completion_tokens")
    return tokens if type(tokens) is int and tokens >= 0 else None


def _is_answer(choice: Any) -> bool:
    """Whether a chat choice is the answer: index 0 (or no index). A backend that ignores ``n``
    streams other choices too; only the first is translated, so none of theirs leak in."""
    if not isinstance(choice, dict):
        return False
    index = choice.get("index")
    return index is None or (index == 0 and not isinstance(index, bool))


class ChatStreamTranslator:
    """Chat completion chunks (parsed JSON dicts) → Responses stream events (plain dicts).

    ``start()`` gives ``response.created`` + ``response.in_progress`` (``feed`` calls it on first
    use); ``feed(chunk)`` gives the events a chunk causes; ``finish(done_seen)`` closes the stream
    (``done_seen=False`` means the connection dropped without ``[DONE]``); ``fail(message, code)``
    ends it as ``response.failed``. Once finished, every call returns ``[]``.

    ``fast_path=False`` sends every chunk through the general path; it exists so a differential
    test can prove the fast path changes nothing but speed.

    Output tokens are counted as the answer streams (``max_output_tokens_ceiling``), in O(1) per
    chunk: ``_token_room`` is the bytes of output still allowed, reset from the backend's
    ``usage.completion_tokens`` whenever a chunk carries one and lowered by each fragment's UTF-8
    size otherwise (4 bytes per token). Below zero the answer ends as ``incomplete``
    (``max_output_tokens``) after the chunk that passed it, and ``ceiling_hit`` names the option.
    ``ceiling_hit`` is ``"max_output_items"`` when the item ceiling failed the response instead.
    """

    def __init__(self, request: dict[str, Any], *, fast_path: bool = True, **options: Any) -> None:
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
        self._em = Emitter()
        self._started = False
        self.finished = False
        self._final: dict[str, Any] | None = None
        self._output: list[dict[str, Any] | None] = []  # done items; None while open
        self._open: _OpenItem | None = None  # the one open item
        self._calls = ToolCallTable()
        # signals
        self._finish_reason: str | None = None
        self._raw_usage: Any = None
        self._think = _T_UNDECIDED if opts.think_tags else _T_PLAIN
        self._think_buf = ""
        self._reasoning_mode = opts.reasoning_events
        self._fast = _FAST_NONE  # which fast path the next chunk may take (see feed)
        self._fast_tpl: dict[str, Any] = {}  # the delta event of the open item, copied per chunk
        self._fast_buf: list[str] = []  # where the open item keeps its fragments
        self._token_room = opts.max_output_tokens_ceiling * 4  # bytes of output still allowed
        #: the option whose ceiling ended the response (for the caller's log), None otherwise
        self.ceiling_hit: str | None = None
        if not fast_path:
            self.feed = self._feed_general  # type: ignore[method-assign]

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
        self._start()
        return self._em.take()

    def _start(self) -> None:
        if self._started or self.finished:
            return
        self._started = True
        created = dict(self._skeleton)
        created["output"] = []
        in_progress = dict(self._skeleton)
        in_progress["output"] = []
        self._em.emit(CREATED, response=created)
        self._em.emit(IN_PROGRESS, response=in_progress)

    def _feed_general(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if self.finished:
            return []
        self._start()
        if isinstance(chunk, dict):
            try:
                self._chunk(chunk)
                if self._token_room < 0 and not self.finished:
                    self._stop_at_token_ceiling()
            except _TooManyItems:
                self._too_many_items()
            except UpstreamError as exc:  # what the backend sent cannot be represented (e.g. too deep)
                self._fail(exc.message, exc.code)
        return self._em.take()

    def _too_many_items(self) -> None:
        self.ceiling_hit = "max_output_items"
        self._fail(f"The backend sent more than {self.options.max_output_items} output items in one "
                   "response (max_output_items).", "upstream_too_large")  # fmt: skip

    def _stop_at_token_ceiling(self) -> None:
        """End the answer as a length stop: what came so far is kept, closed as ``incomplete``."""
        self.ceiling_hit = "max_output_tokens_ceiling"
        self._finish_reason = "length"
        try:
            self._finish(True)
        except _TooManyItems:  # surfacing a call that never got its name needed one item too many
            self._too_many_items()
        except UpstreamError as exc:
            self._fail(exc.message, exc.code)

    def _fast_spent(self, event: dict[str, Any], fragment: str, usage: Any) -> list[dict[str, Any]]:
        """The fast path's output count: the chunk's ``usage`` when it has one, else the fragment's
        size; the event list, with the incomplete ending after it once past the ceiling. (The
        common case, ASCII text without usage, is counted inline by ``feed``.)"""
        reported = _reported_tokens(usage) if usage else None
        if reported is None:
            room = self._token_room - _utf8_size(fragment)
        else:
            room = (self.options.max_output_tokens_ceiling - reported) * 4
        self._token_room = room
        if room >= 0:
            return [event]
        self._stop_at_token_ceiling()
        return [event, *self._em.take()]

    def _chunk(self, chunk: dict[str, Any]) -> None:
        error = chunk.get("error")
        if error:
            message, code = self._error_fields(error)
            self._fail(message, code)
            return
        usage = chunk.get("usage")
        if usage and isinstance(usage, dict):
            self._raw_usage = usage
        elif "x_groq" in chunk:  # older Groq: usage under x_groq in the last chunk
            xg = chunk["x_groq"]
            usage = xg.get("usage") if isinstance(xg, dict) else None
            if usage:
                self._raw_usage = usage
        self._answer_chunk(chunk)
        reported = _reported_tokens(usage) if usage else None
        if reported is not None:  # the backend's own count includes this chunk's output
            self._token_room = (self.options.max_output_tokens_ceiling - reported) * 4

    def _answer_chunk(self, chunk: dict[str, Any]) -> None:
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return
        choice = choices[0]
        if not _is_answer(choice):
            # n > 1 ignored by the backend, or a proxy reordering choices: only choice 0 is translated
            choice = next((c for c in choices if _is_answer(c)), None)
            if choice is None:
                return
        delta = choice.get("delta")
        if delta and isinstance(delta, dict):
            self._delta(delta, choice)
        reason = choice.get("finish_reason")
        if reason and isinstance(reason, str) and self._finish_reason is None:
            self._finish_reason = reason

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
            or choice.get("index")
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
            self._fast_buf.append(content)
            event = self._em.from_template(self._fast_tpl, content)
            if usage or not content.isascii():
                return self._fast_spent(event, content, usage)
            self._token_room = room = self._token_room - len(content)
            return [event] if room >= 0 else self._fast_spent(event, "", None)
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
            self._fast_buf.append(text)
            event = self._em.from_template(self._fast_tpl, text)
            if usage or not text.isascii():
                return self._fast_spent(event, text, usage)
            self._token_room = room = self._token_room - len(text)
            return [event] if room >= 0 else self._fast_spent(event, "", None)
        # _FAST_ARGS: an arguments fragment for the open function call
        calls = delta.get("tool_calls")
        if type(calls) is not list or len(calls) != 1:
            return self._feed_general(chunk)
        for key, value in delta.items():
            if value and key != "tool_calls" and key != "role":
                return self._feed_general(chunk)
        tc = calls[0]
        call = self._open
        if type(tc) is not dict or type(call) is not ToolCall:
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
        if type(fragment) is not str or not fragment or (name and name != call.name and call.kind == FUNCTION):
            return self._feed_general(chunk)
        self._fast_buf.append(fragment)
        event = self._em.from_template(self._fast_tpl, fragment)
        if usage or not fragment.isascii():
            return self._fast_spent(event, fragment, usage)
        self._token_room = room = self._token_room - len(fragment)
        return [event] if room >= 0 else self._fast_spent(event, "", None)

    def finish(self, done_seen: bool = True) -> list[dict[str, Any]]:
        if self.finished:
            return []
        self._start()
        try:
            self._finish(done_seen)
        except UpstreamError as exc:
            self._fail(exc.message, exc.code)
        return self._em.take()

    def _finish(self, done_seen: bool) -> None:
        self._flush_think()
        reason = self._finish_reason
        if reason == "error":
            self._fail("The upstream backend ended the answer with finish_reason 'error'.")
            return
        if reason is None:
            # Never report an answer as completed unless the backend said how it ended: a cut
            # connection, and equally a [DONE] with no finish_reason before it, may have lost the end.
            self._fail(
                "The upstream backend ended the stream without a finish reason; the answer may be cut short."
                if done_seen
                else "The upstream stream ended before the answer was finished."
            )
            return
        for call in self._calls.calls:
            if not call.added:  # a call whose name never came: still surface it
                self._add_call(call)
        status = "completed"
        details = None
        if reason == "length":
            status, details = "incomplete", {"reason": "max_output_tokens"}
        elif reason == "content_filter":
            status, details = "incomplete", {"reason": "content_filter"}
        self._close("incomplete" if status == "incomplete" else "completed")
        if status == "completed":
            self._extras_carrier()
        resp = dict(self._skeleton)
        resp["status"] = status
        resp["incomplete_details"] = details
        resp["completed_at"] = self.options.completed_at if self.options.completed_at is not None else int(time.time())
        resp["output"] = [item for item in self._output if item is not None]
        resp["usage"] = self.usage
        self._final = resp
        self.finished = True
        self._fast = _FAST_NONE
        self._em.emit("response." + status, response=resp)

    def fail(self, message: str, code: str = "server_error") -> list[dict[str, Any]]:
        """End the stream as ``response.failed`` (open items are listed, marked incomplete, not closed).

        ``code`` is reported as given (the server passes ``server_shutting_down`` on shutdown, a
        backend's context overflow arrives as ``context_length_exceeded``).
        """
        if self.finished:
            return []
        self._start()
        self._fail(message, code)
        return self._em.take()

    def _fail(self, message: str, code: str = "server_error") -> None:
        if self.finished:
            return
        mode = self.options.error_event
        if mode != "none":
            fields: dict[str, Any] = {}
            if mode in ("openai", "both"):
                fields["code"] = code
                fields["message"] = message
                fields["param"] = None
            if mode in ("openresponses", "both"):
                fields["error"] = {"type": "server_error", "code": code, "message": message, "param": None}
            self._em.emit(ERROR, **fields)
        resp = dict(self._skeleton)
        resp["status"] = "failed"
        resp["output"] = self._snapshot_output("incomplete")
        resp["usage"] = self.usage
        resp["error"] = {"code": code, "message": message}
        self._final = resp
        self.finished = True
        self._fast = _FAST_NONE
        self._em.emit(FAILED, response=resp)

    # ------------------------------------------------------------------ chunk handling
    @staticmethod
    def _error_fields(error: Any) -> tuple[str, str]:
        """Message and code of a mid-stream error chunk, classified by the same rules as a whole
        error body (errors.BACKEND_ERROR_RULES), so a context overflow fails with its own code."""
        mapped = classify_backend_error(error)
        if isinstance(error, dict):
            message = error.get("message") or "The upstream backend reported an error."
            code = error.get("code")
            if mapped is None:
                mapped = code if isinstance(code, str) and code in RESPONSE_ERROR_CODES else "server_error"
            return str(message), mapped
        return (error if isinstance(error, str) else "The upstream backend reported an error."), mapped or "server_error"

    def _delta(self, delta: dict[str, Any], choice: dict[str, Any]) -> None:
        # 1. reasoning (DeepSeek/llama.cpp reasoning_content, vLLM/Ollama/OpenRouter reasoning)
        rc = delta.get("reasoning_content")
        rr = delta.get("reasoning")
        text = rc if isinstance(rc, str) and rc else (rr if isinstance(rr, str) and rr else "")
        details = delta.get("reasoning_details")
        if isinstance(details, list) and details:
            self._reasoning().merge_details(details)
            if not text:
                text = "".join(
                    t
                    for d in details
                    if isinstance(d, dict) and d.get("type") in ("reasoning.text", "reasoning.summary")
                    for t in (d.get("text") or d.get("summary"),)
                    if isinstance(t, str)
                )
        size = 0
        if text:
            size = _utf8_size(text)
            self._reason(text)
        # 2. content (with an optional leading <think>…</think>)
        content = delta.get("content")
        if isinstance(content, str) and content:
            size += _utf8_size(content)
            lp = map_logprobs(choice.get("logprobs")) if choice.get("logprobs") else None
            if self._think == _T_PLAIN:
                self._emit_text(content, lp)
            else:
                self._think_content(content, lp)
        elif isinstance(content, list):  # some proxies send content parts in deltas
            joined = "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
            size += _utf8_size(joined)
            if joined and self._think == _T_PLAIN:
                self._emit_text(joined, None)
            elif joined:
                self._think_content(joined, None)
        annotations = delta.get("annotations")
        if isinstance(annotations, list) and annotations:
            self._text_part().annotate(annotations)
        # 3. refusal
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            size += _utf8_size(refusal)
            self._emit_refusal(refusal)
        # 4. tool calls
        calls = delta.get("tool_calls")
        if calls and isinstance(calls, list):
            # Held text comes before the call, as it was sent: what only looked like "<think>", or
            # reasoning held back in case it was the start of "</think>".
            if self._think_buf and (self._think == _T_INSIDE or self._think_buf.strip()):
                self._flush_think()
            for tc in calls:
                if isinstance(tc, dict):
                    size += self._tool_delta(tc)
        self._token_room -= size

    # ------------------------------------------------------------------ think tags
    def _think_content(self, content: str, lp: list[dict[str, Any]] | None) -> None:
        state = self._think
        if state == _T_CLOSED:
            content = content.lstrip()
            if not content:
                return
            self._think = _T_PLAIN
            self._emit_text(content, lp)
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
                self._emit_text(buf, lp)
                return
            self._think = _T_INSIDE
            buf = stripped[len(_THINK_OPEN) :]
        end = buf.find(_THINK_CLOSE)
        if end >= 0:
            if end:
                self._reason(buf[:end])
            self._think_buf = ""
            self._think = _T_CLOSED
            rest = buf[end + len(_THINK_CLOSE) :]
            if rest:
                self._think_content(rest, lp)
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
            self._reason(buf)

    def _flush_think(self) -> None:
        """At the end: an unclosed <think> is all reasoning; undecided whitespace is dropped, but an
        answer that only looked like the start of a tag (``<``, ``<th``) is text and is kept."""
        if self._think == _T_INSIDE and self._think_buf:
            self._reason(self._think_buf)
        elif self._think == _T_UNDECIDED and self._think_buf.strip():
            self._think = _T_PLAIN
            self._emit_text(self._think_buf, None)
        self._think_buf = ""

    # ------------------------------------------------------------------ the one open item
    def _next_index(self) -> int:
        if len(self._output) >= self.options.max_output_items:
            raise _TooManyItems  # before the item exists, so the output so far stays consistent
        self._output.append(None)
        return len(self._output) - 1

    def _close(self, status: str = "completed") -> None:
        """Close the open item, if any: the rule that keeps exactly one item open at a time."""
        self._fast = _FAST_NONE
        item = self._open
        if item is not None:
            self._output[item.output_index] = item.close(status)
            self._open = None

    # reasoning ---------------------------------------------------------
    def _reasoning(self) -> ReasoningBuilder:
        """The open reasoning item, opening one (and closing whatever was open) if needed."""
        item = self._open
        if type(item) is ReasoningBuilder:
            return item
        self._close()
        oi = self._next_index()
        builder = ReasoningBuilder(self._em, item_id("reasoning", self._base, oi), oi, self._reasoning_mode,
                                   self.options.encryption_key)
        self._open = builder
        return builder

    def _reason(self, text: str) -> None:
        builder = self._reasoning()
        builder.add(text)
        if self._fast != _FAST_REASONING:
            self._fast = _FAST_REASONING
            self._fast_tpl = builder.template()
            self._fast_buf = builder.text

    # message -----------------------------------------------------------
    def _part(self, kind: str) -> MessageBuilder:
        """The open message with an open part of ``kind``, opening either (and closing others) if needed."""
        msg = self._open
        if type(msg) is MessageBuilder and msg.part_kind == kind:
            return msg
        self._fast = _FAST_NONE
        if type(msg) is not MessageBuilder:
            self._close()
            oi = self._next_index()
            msg = MessageBuilder(self._em, item_id("message", self._base, oi), oi)
            self._open = msg
        msg.open_part(kind)
        return msg

    def _text_part(self) -> MessageBuilder:
        return self._part(TEXT)

    def _emit_text(self, text: str, lp: list[dict[str, Any]] | None) -> None:
        msg = self._part(TEXT)
        msg.add_text(text, lp)
        if self._fast != _FAST_TEXT and self._think == _T_PLAIN:
            self._fast = _FAST_TEXT
            self._fast_tpl = msg.text_template()
            self._fast_buf = msg.text

    def _emit_refusal(self, text: str) -> None:
        self._part(REFUSAL).add_refusal(text)

    # tool calls ----------------------------------------------------------
    def _open_call(self) -> ToolCall | None:
        item = self._open
        return item if type(item) is ToolCall else None

    def _tool_delta(self, tc: dict[str, Any]) -> int:
        """Route one tool-call delta; returns the UTF-8 size of its arguments fragment."""
        call = self._calls.find(tc, self._open_call())
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
            call.kind = CUSTOM_NATIVE
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
                self._add_call(call)
            return _utf8_size(fragment) if fragment else 0
        if fragment:
            self._call_fragment(call, fragment)
            return _utf8_size(fragment)
        return 0

    def _add_call(self, call: ToolCall) -> None:
        if call.extra is not None:
            # Gemini's thought signature must come back with this call on the next turn: put it in
            # the open reasoning item, or in a text-less reasoning item just before the call.
            item = self._open
            if type(item) is ReasoningBuilder:
                item.extras[call.call_id] = call.extra
            else:
                self._close()
                self._carrier({call.call_id: call.extra})
            call.carried = True
        self._close()
        kind, name, namespace = self._tools.resolve(call.name)
        if call.kind != CUSTOM_NATIVE:  # a native custom call stays one whatever the tool map says
            call.kind = CUSTOM if kind == "custom" else FUNCTION
        call.name = name
        call.namespace = namespace
        oi = self._next_index()
        self._open = call
        call.open(self._em, item_id(call.item_type, self._base, oi), oi)
        if call.kind == FUNCTION:
            self._fast = _FAST_ARGS
            self._fast_tpl = call.args_template()
            self._fast_buf = call.args

    def _call_fragment(self, call: ToolCall, fragment: str) -> None:
        if call is self._open:
            call.add_live(fragment)
            return
        # a late fragment for an already closed call (interleaving backends) only lands in the
        # final response
        call.args.append(fragment)
        done_item = self._output[call.output_index]
        if call.kind == FUNCTION and done_item is not None:
            self._output[call.output_index] = {**done_item, "arguments": "".join(call.args)}

    def _extras_carrier(self) -> None:
        """Provider extras that arrived after their call was opened ride in a trailing reasoning item."""
        extras = {c.call_id: c.extra for c in self._calls.calls if c.extra is not None and c.added and not c.carried}
        if extras:
            self._carrier(extras)

    def _carrier(self, extras: dict[str, Any]) -> None:
        oi = self._next_index()
        self._output[oi] = carrier_item(self._em, item_id("reasoning", self._base, oi), oi, self._reasoning_mode,
                                        extras, self.options.encryption_key)

    def _snapshot_output(self, open_status: str) -> list[dict[str, Any]]:
        """Items so far; the open one rendered from its buffers with ``open_status``."""
        out = []
        open_item = self._open
        for i, item in enumerate(self._output):
            if item is not None:
                out.append(item)
            elif open_item is not None and i == open_item.output_index:
                out.append(open_item.snapshot(open_status))
        return out
