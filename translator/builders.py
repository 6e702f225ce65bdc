"""The pieces `ChatStreamTranslator` is built from: one emitter and one builder per output item kind.

In the manner of h11, each piece owns exactly one part of the state. The `Emitter` owns the
sequence number: every event of a stream is made by it, so numbers are contiguous by construction
rather than counted by hand at each site. A `MessageBuilder`, `ReasoningBuilder` or `ToolCall`
holds what one open output item has accumulated and emits that item's own events (added, parts,
deltas, done). `ToolCallTable` attributes tool-call deltas to calls in O(1) per delta. The
translator (stream.py) keeps only dispatch and the rule that one item is open at a time.

None of these decide *when* an item opens or closes; the translator does, so the canonical event
order (docs/wire.md §1.5/§1.6) is visible in one place.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import UpstreamError
from .events import (
    CONTENT_PART_ADDED,
    CONTENT_PART_DONE,
    CUSTOM_TOOL_CALL_INPUT_DELTA,
    CUSTOM_TOOL_CALL_INPUT_DONE,
    FUNCTION_CALL_ARGUMENTS_DELTA,
    FUNCTION_CALL_ARGUMENTS_DONE,
    OUTPUT_ITEM_ADDED,
    OUTPUT_ITEM_DONE,
    OUTPUT_TEXT_ANNOTATION_ADDED,
    OUTPUT_TEXT_DELTA,
    OUTPUT_TEXT_DONE,
    REASONING_DELTA,
    REASONING_DONE,
    REASONING_SUMMARY_PART_ADDED,
    REASONING_SUMMARY_PART_DONE,
    REASONING_SUMMARY_TEXT_DELTA,
    REASONING_SUMMARY_TEXT_DONE,
    REASONING_TEXT_DELTA,
    REASONING_TEXT_DONE,
    REFUSAL_DELTA,
    REFUSAL_DONE,
    random_hex,
)
from .reasoning import pack_reasoning

__all__ = ["Emitter", "MessageBuilder", "QuietEmitter", "ReasoningBuilder", "ToolCall", "ToolCallTable", "carrier_item"]

Event = dict[str, Any]

#: The ``logprobs`` of text deltas when none were asked for. One shared empty list (allocating a
#: fresh one per delta was a measurable share of the hot path); treat events as read-only.
NO_LOGPROBS: list[Any] = []


class Emitter:
    """Owns the sequence number and the list of events the current call of the translator produced.

    `emit` numbers and appends one event; `take` hands the list over (each public translator call
    ends with it). `from_template` is the fast path's one-event form: a copy of a per-item delta
    template, numbered, not appended (the fast path returns it alone).
    """

    __slots__ = ("events", "seq")

    def __init__(self) -> None:
        self.seq = 0
        self.events: list[Event] = []

    def emit(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        self.events.append(event)
        return event

    def from_template(self, template: Event, delta: str) -> Event:
        event = template.copy()
        event["sequence_number"] = self.seq
        event["delta"] = delta
        self.seq += 1
        return event

    def take(self) -> list[Event]:
        events = self.events
        self.events = []
        return events


class QuietEmitter(Emitter):
    """An `Emitter` that keeps no events (nor numbers them): for a whole answer
    (`translator.responses.completion_translator`), where only the final Response is wanted and
    the stream events the state machine makes on the way would be thrown away. The keyword
    arguments are still built by the callers; the event dicts and the list are not."""

    __slots__ = ()

    def emit(self, kind: str, **fields: Any) -> Event:
        return fields


# ---------------------------------------------------------------------------------------- message


def _num(value: Any) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _token_bytes(value: Any) -> list[int]:
    return [b for b in value if isinstance(b, int) and not isinstance(b, bool)] if isinstance(value, list) else []


def map_logprobs(choice_logprobs: Any) -> list[dict[str, Any]]:
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


#: Content part kinds of a message.
TEXT, REFUSAL = "text", "refusal"


class MessageBuilder:
    """One assistant message item: its finished parts and the open one (text or refusal)."""

    __slots__ = ("annotations", "em", "item_id", "logprobs", "output_index", "part_index", "part_kind", "parts",
                 "text")

    def __init__(self, em: Emitter, item_id: str, output_index: int) -> None:
        self.em = em
        self.item_id = item_id
        self.output_index = output_index
        self.parts: list[dict[str, Any]] = []  # finished parts
        self.part_kind: str | None = None  # TEXT | REFUSAL | None
        self.part_index = -1
        self.text: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        em.emit(OUTPUT_ITEM_ADDED, output_index=output_index,
                item={"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []})

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.item_id, "output_index": self.output_index, "content_index": self.part_index}

    def open_part(self, kind: str) -> None:
        if self.part_kind is not None:
            self.close_part()
        self.part_kind = kind
        self.part_index += 1
        self.text = []
        self.logprobs = []
        self.annotations = []
        part = (
            {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            if kind == TEXT
            else {"type": "refusal", "refusal": ""}
        )
        self.em.emit(CONTENT_PART_ADDED, **self._where(), part=part)

    def current_part(self) -> dict[str, Any]:
        text = "".join(self.text)
        if self.part_kind == TEXT:
            return {"type": "output_text", "text": text, "annotations": self.annotations, "logprobs": self.logprobs}
        return {"type": "refusal", "refusal": text}

    def close_part(self) -> None:
        part = self.current_part()
        where = self._where()
        if self.part_kind == TEXT:
            self.em.emit(OUTPUT_TEXT_DONE, **where, text=part["text"], logprobs=part["logprobs"])
        else:
            self.em.emit(REFUSAL_DONE, **where, refusal=part["refusal"])
        self.em.emit(CONTENT_PART_DONE, **where, part=part)
        self.parts.append(part)
        self.part_kind = None

    def add_text(self, text: str, logprobs: list[dict[str, Any]] | None) -> None:
        """A text delta for the open text part."""
        self.text.append(text)
        if logprobs:
            self.logprobs.extend(logprobs)
        self.em.emit(OUTPUT_TEXT_DELTA, **self._where(), delta=text, logprobs=logprobs or [])

    def text_template(self) -> Event:
        """The fast path's template for this part's text deltas."""
        return {"type": OUTPUT_TEXT_DELTA, "sequence_number": 0, **self._where(), "delta": "",
                "logprobs": NO_LOGPROBS}

    def annotate(self, annotations: list[Any]) -> None:
        for raw in annotations:
            annotation = _map_annotation(raw)
            if annotation is None:
                continue
            self.annotations.append(annotation)
            self.em.emit(OUTPUT_TEXT_ANNOTATION_ADDED, **self._where(),
                         annotation_index=len(self.annotations) - 1, annotation=annotation)

    def add_refusal(self, text: str) -> None:
        self.text.append(text)
        self.em.emit(REFUSAL_DELTA, **self._where(), delta=text)

    def snapshot(self, status: str) -> dict[str, Any]:
        parts = list(self.parts)
        if self.part_kind is not None:
            parts.append(self.current_part())
        return {"id": self.item_id, "type": "message", "status": status, "role": "assistant", "content": parts}

    def close(self, status: str) -> dict[str, Any]:
        if self.part_kind is not None:
            self.close_part()
        item = {"id": self.item_id, "type": "message", "status": status, "role": "assistant", "content": self.parts}
        self.em.emit(OUTPUT_ITEM_DONE, output_index=self.output_index, item=item)
        return item


# -------------------------------------------------------------------------------------- reasoning

#: ``reasoning_events`` option → (delta, done) event names of the reasoning text (summary mode has
#: its own part events as well).
_REASONING_TEXT_EVENTS = {
    "summary": (REASONING_SUMMARY_TEXT_DELTA, REASONING_SUMMARY_TEXT_DONE),
    "reasoning_text": (REASONING_TEXT_DELTA, REASONING_TEXT_DONE),
    "openresponses": (REASONING_DELTA, REASONING_DONE),
}


class ReasoningBuilder:
    """One reasoning item: its text, OpenRouter ``reasoning_details`` and tool-call extras to replay."""

    __slots__ = ("details", "em", "encryption_key", "extras", "item_id", "mode", "output_index", "part_open", "text")

    def __init__(self, em: Emitter, item_id: str, output_index: int, mode: str, encryption_key: str | None) -> None:
        self.em = em
        self.item_id = item_id
        self.output_index = output_index
        self.mode = mode  # the reasoning_events option
        self.encryption_key = encryption_key
        self.text: list[str] = []
        self.part_open = False
        self.details: list[dict[str, Any]] = []
        self.extras: dict[str, Any] = {}
        item: dict[str, Any] = {"id": item_id, "type": "reasoning", "status": "in_progress", "summary": []}
        if mode != "summary":
            item["content"] = []
        em.emit(OUTPUT_ITEM_ADDED, output_index=output_index, item=item)

    def _where(self) -> dict[str, Any]:
        index = "summary_index" if self.mode == "summary" else "content_index"
        return {"item_id": self.item_id, "output_index": self.output_index, index: 0}

    def add(self, text: str) -> None:
        if not self.part_open:
            self.part_open = True
            if self.mode == "summary":
                self.em.emit(REASONING_SUMMARY_PART_ADDED, **self._where(), part={"type": "summary_text", "text": ""})
            else:
                self.em.emit(CONTENT_PART_ADDED, **self._where(), part={"type": "reasoning_text", "text": ""})
        self.text.append(text)
        self.em.emit(_REASONING_TEXT_EVENTS[self.mode][0], **self._where(), delta=text)

    def template(self) -> Event:
        """The fast path's template for this item's text deltas."""
        return {"type": _REASONING_TEXT_EVENTS[self.mode][0], "sequence_number": 0, **self._where(), "delta": ""}

    def merge_details(self, details: list[Any]) -> None:
        """Keep OpenRouter reasoning_details for replay, merging streamed fragments by (index, type)."""
        for d in details:
            if not isinstance(d, dict):
                continue
            for prev in self.details:
                if prev.get("index") == d.get("index") and prev.get("type") == d.get("type"):
                    for k, v in d.items():
                        if k in ("text", "summary", "data") and isinstance(v, str):
                            prev[k] = (prev.get(k) or "") + v
                        elif v is not None:
                            prev[k] = v
                    break
            else:
                self.details.append(dict(d))

    def snapshot(self, status: str) -> dict[str, Any]:
        text = "".join(self.text)
        item: dict[str, Any] = {"id": self.item_id, "type": "reasoning", "status": status}
        if self.mode == "summary":
            item["summary"] = [{"type": "summary_text", "text": text}] if self.part_open else []
        else:
            item["summary"] = []
            item["content"] = [{"type": "reasoning_text", "text": text}] if self.part_open else []
        data: dict[str, Any] = {}
        if text:
            data["text"] = text
        if self.details:
            data["details"] = self.details
        if self.extras:
            data["tool_extras"] = self.extras
        try:
            item["encrypted_content"] = pack_reasoning(data, self.encryption_key) if data else None
        except UpstreamError:  # a failed response's snapshot must still be built; close() raises it
            item["encrypted_content"] = None
        return item

    def close(self, status: str) -> dict[str, Any]:
        item = self.snapshot(status)
        if item["encrypted_content"] is None and (self.details or self.extras or self.text):
            pack_reasoning({"text": "".join(self.text), "details": self.details, "tool_extras": self.extras},
                           self.encryption_key)  # raises the UpstreamError that made the snapshot drop it
        if self.part_open:
            text = "".join(self.text)
            where = self._where()
            self.em.emit(_REASONING_TEXT_EVENTS[self.mode][1], **where, text=text)
            if self.mode == "summary":
                self.em.emit(REASONING_SUMMARY_PART_DONE, **where, part={"type": "summary_text", "text": text})
            else:
                self.em.emit(CONTENT_PART_DONE, **where, part={"type": "reasoning_text", "text": text})
        self.em.emit(OUTPUT_ITEM_DONE, output_index=self.output_index, item=item)
        return item


def carrier_item(em: Emitter, item_id: str, output_index: int, mode: str, extras: dict[str, Any],
                 encryption_key: str | None) -> dict[str, Any]:
    """Emit a reasoning item with no text whose ``encrypted_content`` holds tool-call extras (reasoning.py)."""
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "status": "completed", "summary": []}
    if mode != "summary":
        item["content"] = []
    item["encrypted_content"] = pack_reasoning({"tool_extras": extras}, encryption_key)
    added = {k: v for k, v in item.items() if k != "encrypted_content"}
    added["status"] = "in_progress"
    em.emit(OUTPUT_ITEM_ADDED, output_index=output_index, item=added)
    em.emit(OUTPUT_ITEM_DONE, output_index=output_index, item=item)
    return item


# ------------------------------------------------------------------------------------- tool calls

#: How a call's text is carried: chat ``function`` arguments streamed as they come, a custom tool
#: sent as a function (its input JSON-wrapped, sent whole at the end), or a native chat custom call.
FUNCTION, CUSTOM, CUSTOM_NATIVE = "function", "custom", "custom_native"


class ToolCall:
    """One tool call being assembled from deltas; an output item once its name is known."""

    __slots__ = ("added", "args", "backend_id", "call_id", "carried", "em", "extra", "index", "item_id", "kind",
                 "name", "namespace", "output_index", "pending")

    def __init__(self, index: Any, backend_id: str | None) -> None:
        self.index = index
        self.backend_id = backend_id
        self.call_id = backend_id or "call_" + random_hex(12)
        self.name = ""
        self.namespace: str | None = None
        self.kind = FUNCTION
        self.args: list[str] = []
        self.pending: list[str] = []  # argument fragments seen before the item could be added
        self.added = False
        self.extra: Any = None
        self.carried = False  # extra already put in a reasoning item
        self.item_id = ""
        self.output_index = -1
        self.em: Emitter | None = None

    @property
    def item_type(self) -> str:
        return "function_call" if self.kind == FUNCTION else "custom_tool_call"

    def open(self, em: Emitter, item_id: str, output_index: int) -> None:
        """Emit ``output_item.added`` and the argument fragments that arrived before the name."""
        self.em = em
        self.item_id = item_id
        self.output_index = output_index
        self.added = True
        if self.kind == FUNCTION:
            item: dict[str, Any] = {"id": item_id, "type": "function_call", "status": "in_progress",
                                    "call_id": self.call_id, "name": self.name, "arguments": ""}
        else:
            item = {"id": item_id, "type": "custom_tool_call", "status": "in_progress", "call_id": self.call_id,
                    "name": self.name, "input": ""}
        if self.namespace:
            item["namespace"] = self.namespace
        em.emit(OUTPUT_ITEM_ADDED, output_index=output_index, item=item)
        pending, self.pending = self.pending, []
        for fragment in pending:
            self.add_live(fragment)

    def add_live(self, fragment: str) -> None:
        """A fragment while this call is the open item: function arguments stream as deltas; custom
        input is sent whole at the end (it arrives JSON-wrapped)."""
        self.args.append(fragment)
        if self.kind == FUNCTION and self.em is not None:
            self.em.emit(FUNCTION_CALL_ARGUMENTS_DELTA, item_id=self.item_id, output_index=self.output_index,
                         delta=fragment)

    def args_template(self) -> Event:
        """The fast path's template for this call's argument deltas."""
        return {"type": FUNCTION_CALL_ARGUMENTS_DELTA, "sequence_number": 0, "item_id": self.item_id,
                "output_index": self.output_index, "delta": ""}

    def custom_input(self) -> str:
        raw = "".join(self.args)
        if self.kind == CUSTOM_NATIVE:
            return raw
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
        if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
            return parsed["input"]
        return raw

    def snapshot(self, status: str) -> dict[str, Any]:
        if self.kind == FUNCTION:
            item: dict[str, Any] = {"id": self.item_id, "type": "function_call", "status": status,
                                    "call_id": self.call_id, "name": self.name, "arguments": "".join(self.args) or "{}"}
        else:
            item = {"id": self.item_id, "type": "custom_tool_call", "status": status, "call_id": self.call_id,
                    "name": self.name, "input": self.custom_input()}
        if self.namespace:
            item["namespace"] = self.namespace
        return item

    def close(self, status: str) -> dict[str, Any]:
        em = self.em
        assert em is not None, "a call is closed only after open()"
        item = self.snapshot(status)
        where = {"item_id": self.item_id, "output_index": self.output_index}
        if self.kind == FUNCTION:
            if not self.args:
                em.emit(FUNCTION_CALL_ARGUMENTS_DELTA, **where, delta="{}")
            em.emit(FUNCTION_CALL_ARGUMENTS_DONE, **where, arguments=item["arguments"])
        else:
            if item["input"]:
                em.emit(CUSTOM_TOOL_CALL_INPUT_DELTA, **where, delta=item["input"])
            em.emit(CUSTOM_TOOL_CALL_INPUT_DONE, **where, input=item["input"])
        em.emit(OUTPUT_ITEM_DONE, output_index=self.output_index, item=item)
        return item


class ToolCallTable:
    """Every tool call of the answer, found by backend id or by index in O(1) (docs/wire.md §3.1 rule 6).

    ``by_index`` holds the latest call seen at each index: backends that put every parallel call on
    index 0 (Ollama via LiteLLM) start a new call there by sending a new id. A dict, not a scan, so
    a hostile backend sending 100,000 distinct indexes costs linear time, not quadratic.
    """

    __slots__ = ("by_id", "by_index", "calls")

    def __init__(self) -> None:
        self.calls: list[ToolCall] = []
        self.by_index: dict[Any, ToolCall] = {}
        self.by_id: dict[str, ToolCall] = {}

    def find(self, tc: dict[str, Any], open_call: ToolCall | None) -> ToolCall:
        """The call a delta belongs to (``open_call``: the call that is the open item, if any)."""
        index = tc.get("index")
        if isinstance(index, list | dict):
            index = None  # unusable as an index
        backend_id = tc.get("id")
        if not isinstance(backend_id, str) or not backend_id:
            backend_id = None
        if backend_id is not None:
            call = self.by_id.get(backend_id)
            if call is not None:
                return call
            if index is not None:
                call = self.by_index.get(index)
                if call is not None and call.backend_id is None:
                    call.backend_id = backend_id
                    self.by_id[backend_id] = call
                    if not call.added:
                        call.call_id = backend_id
                    return call
            return self._new(index, backend_id)
        if index is not None:
            call = self.by_index.get(index)
            return call if call is not None else self._new(index, None)
        if open_call is not None:
            return open_call
        if self.calls:
            return self.calls[-1]
        return self._new(None, None)

    def _new(self, index: Any, backend_id: str | None) -> ToolCall:
        call = ToolCall(index, backend_id)
        self.calls.append(call)
        if index is not None:
            self.by_index[index] = call
        if backend_id is not None:
            self.by_id[backend_id] = call
        return call
