"""Event-grammar rules: a whole stream of decoded Responses events, judged in one pass.

:func:`validate_events` walks the events once, keeping per-item state (which item is open, which parts
were added, the text the deltas built), and reports every rule of docs/wire.md §1.5-§1.8 an event breaks:
the canonical prefix, sequence numbers, output and content indexes, delta sums against the ``.done``
events, item identity, exactly one terminal event whose output matches the done items. Each Response a
lifecycle event carries is checked by :mod:`conformance.response`. May import: rules, kinds,
catalogue, response, sse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conformance.catalogue import (
    CALL_TEXT_KEY,
    EVENT_FIELDS,
    LIFECYCLE_EVENT_TYPES,
    OPENAI_ONLY_PREFIXES,
    OR_REJECTED_PREFIXES,
    PART_EVENTS,
    PART_TEXT_KEY,
    PART_TYPES,
    TERMINAL_EVENT_TYPES,
    TERMINAL_STATUS,
    TEXT_EVENTS,
)
from conformance.kinds import KINDS, is_dict, is_int, is_list, is_str, short, type_of
from conformance.response import check_item, validate_response
from conformance.rules import Violation, check_profile, format_violations
from conformance.sse import validate_sse

__all__ = ["assert_valid", "validate_events"]


@dataclass
class _Part:
    """One streamed string: a content part, a summary part, or a call's arguments/input."""

    added_at: int
    kind: str | None
    text: str = ""
    text_done: str | None = None  # from the .delta's matching .done event
    part_done: dict | None = None  # from content_part.done / reasoning_summary_part.done
    streamed: bool = False


@dataclass
class _Item:
    added_at: int
    output_index: int
    item: dict
    content: list[_Part] = field(default_factory=list)
    summary: list[_Part] = field(default_factory=list)
    call: _Part | None = None
    done: dict | None = None
    done_at: int | None = None
    tainted: bool = False  # an event for it had missing/mistyped fields: its text can't be followed

    @property
    def type(self) -> str | None:
        return type_of(self.item)

    @property
    def id(self) -> Any:
        return self.item.get("id")


def _identity(item: dict) -> tuple[Any, Any, Any]:
    """The SDK's `_output_identity`: calls are known by call_id, everything else by id (§1.6)."""
    if item.get("type") in ("function_call", "custom_tool_call"):
        return item.get("type"), None, item.get("call_id")
    return item.get("type"), item.get("id"), item.get("call_id")


class _StreamChecker:
    """Walks the events once, keeping per-item state, and collects violations."""

    def __init__(self, events: list[dict], request: dict | None, profile: str) -> None:
        self.events = events
        self.request = request
        self.profile = profile
        self.out: list[Violation] = []
        self.items: dict[int, _Item] = {}
        self.order: list[int] = []  # output_index values in output_item.added order
        self.response_id: Any = None
        self.terminals: list[int] = []
        self.error_events: list[int] = []
        self.incomplete_done_at: int | None = None
        self.in_progress_seen = False

    def bad(self, index: int | None, rule: str, message: str) -> None:
        self.out.append(Violation(index, rule, message))

    def run(self) -> list[Violation]:
        if not self.events:
            self.bad(None, "first-event", "the stream has no events")
            self.bad(None, "terminal", "the stream has no terminal event")
            return self.out
        previous_seq: int | None = None
        for i, event in enumerate(self.events):
            if not is_dict(event) or not is_str(event.get("type")):
                self.bad(
                    i, "event-type", f"an event must be an object with a string type, got {short(event)}"
                )
                continue
            previous_seq = self._sequence(i, event, previous_seq)
            if self.terminals:
                self.bad(i, "terminal", f"{event['type']} after the terminal event at {self.terminals[0]}")
            self._event(i, event)
        self._finish()
        return self.out

    def _sequence(self, i: int, event: dict, previous: int | None) -> int | None:
        seq = event.get("sequence_number")
        if not is_int(seq):
            got = short(seq) if "sequence_number" in event else "nothing (the field is missing)"
            self.bad(i, "sequence-number", f"sequence_number must be an integer, got {got}")
            return previous
        # after events without a usable number, the position is what the counter should have reached
        expected = i if previous is None else previous + 1
        if seq != expected:
            self.bad(i, "sequence-number", f"sequence_number {seq}, expected {expected}")
        return seq

    def _event(self, i: int, event: dict) -> None:
        kind = event["type"]
        if i == 0 and kind != "response.created":
            self.bad(0, "first-event", f"the first event must be response.created, got {kind}")
        if self.profile == "openresponses" and kind.startswith(OR_REJECTED_PREFIXES):
            rename = " (Open Responses names it response.reasoning.*)" if "reasoning_text" in kind else ""
            self.bad(i, "or-event-name", f"{kind} is not an Open Responses event{rename}")
        if kind not in EVENT_FIELDS:
            if not kind.startswith(OPENAI_ONLY_PREFIXES):
                self.bad(i, "event-type", f"unknown event type {kind!r}")
            return
        fields_ok = self._fields(i, event, EVENT_FIELDS[kind])
        if kind == "error":
            self._error_event(i, event)
        elif not fields_ok:
            if kind in TERMINAL_EVENT_TYPES:  # still the end of the stream, even without a usable response
                self.terminals.append(i)
            self._taint(i, event)
        elif kind in LIFECYCLE_EVENT_TYPES or kind in TERMINAL_EVENT_TYPES:
            self._lifecycle(i, event)
        elif kind == "response.output_item.added":
            self._item_added(i, event)
        elif kind == "response.output_item.done":
            self._item_done(i, event)
        elif kind in PART_EVENTS:
            self._part_event(i, event)
        elif kind in TEXT_EVENTS:
            self._text_event(i, event)
        elif kind == "response.output_text.annotation.added":
            item = self._item_for(i, event, "message")
            if item is not None and event["content_index"] >= len(item.content):
                self.bad(
                    i,
                    "content-index",
                    f"annotation for content_index {event['content_index']} with no such part",
                )

    def _taint(self, i: int, event: dict) -> None:
        """An item event with missing or mistyped fields: check what can be checked, then stop comparing
        that item's text (a delta-sum report would blame the wrong thing)."""
        oi = event.get("output_index")
        if not is_int(oi) or event["type"] in LIFECYCLE_EVENT_TYPES or event["type"] in TERMINAL_EVENT_TYPES:
            return
        item = self.items.get(oi)
        if item is None:
            if event["type"] != "response.output_item.added":
                self.bad(
                    i, "item-not-added", f"{event['type']} for output_index {oi} before its output_item.added"
                )
            return
        item.tainted = True
        if is_str(event.get("item_id")) and event["item_id"] != item.id:
            self.bad(i, "item-id", f"item_id {short(event['item_id'])} is not the item's id {short(item.id)}")

    def _in_progress(self, i: int) -> None:
        """The canonical prefix is created then in_progress (§1.5); strict clients wait for the latter."""
        if not self.in_progress_seen:
            self.in_progress_seen = True
            self.bad(i, "in-progress", "no response.in_progress between response.created and the output")

    def _fields(self, i: int, event: dict, spec: dict[str, str]) -> bool:
        ok = True
        for name, kind in spec.items():
            check, expected = KINDS[kind]
            if name not in event:
                self.bad(i, "event-fields", f"{event['type']} is missing {name}")
                ok = False
            elif not check(event[name]):
                self.bad(
                    i, "event-fields", f"{event['type']}.{name} must be {expected}, got {short(event[name])}"
                )
                ok = False
        return ok

    # -- lifecycle -----------------------------------------------------------------------------

    def _lifecycle(self, i: int, event: dict) -> None:
        kind = event["type"]
        response = event["response"]
        if kind == "response.created" and i != 0:
            self.bad(i, "first-event", "response.created may only be the first event")
        if i == 0 and kind == "response.created":
            self.response_id = response.get("id")
        elif response.get("id") != self.response_id:
            self.bad(
                i,
                "response-id",
                f"response id {short(response.get('id'))} differs from {short(self.response_id)}",
            )
        status = response.get("status")
        if kind in LIFECYCLE_EVENT_TYPES:
            allowed = ("queued",) if kind == "response.queued" else ("in_progress", "queued")
            if status not in allowed:
                self.bad(
                    i,
                    "lifecycle-status",
                    f"{kind} must carry status {'|'.join(allowed)}, got {short(status)}",
                )
            if kind == "response.created" and response.get("output") not in ([], None):
                self.bad(i, "lifecycle-status", "response.created must carry output []")
            if kind == "response.in_progress":
                if self.in_progress_seen:
                    self.bad(i, "in-progress", "response.in_progress after output items, or twice")
                self.in_progress_seen = True
        else:
            self._in_progress(i)
            self.terminals.append(i)
            if status != TERMINAL_STATUS[kind]:
                self.bad(
                    i,
                    "terminal-status",
                    f"{kind} carries status {short(status)}, expected {TERMINAL_STATUS[kind]!r}",
                )
        request = self.request if kind in TERMINAL_EVENT_TYPES else None
        self.out.extend(validate_response(response, profile=self.profile, request=request, index=i))

    def _error_event(self, i: int, event: dict) -> None:
        self.error_events.append(i)
        nested = event.get("error")
        has_flat = "message" in event
        if nested is not None:
            if not (is_dict(nested) and is_str(nested.get("message")) and is_str(nested.get("type"))):
                self.bad(
                    i,
                    "error-event",
                    f"nested error must be {{type, code, message, param}}, got {short(nested)}",
                )
            elif self.profile == "openresponses":
                missing = [k for k in ("code", "param") if k not in nested]
                if missing:
                    self.bad(i, "error-event", "nested error lacks key(s) " + ", ".join(missing))
        elif self.profile == "openresponses":
            self.bad(
                i,
                "error-event",
                "Open Responses needs the nested shape {type:'error', error:{type,code,message,param}}",
            )
        if has_flat and not is_str(event["message"]):
            self.bad(i, "error-event", f"error.message must be a string, got {short(event['message'])}")
        if not has_flat and nested is None:
            self.bad(
                i,
                "error-event",
                "error event has neither a message (OpenAI) nor an error object (Open Responses)",
            )
        for key in ("code", "param"):
            if event.get(key) is not None and not is_str(event[key]):
                self.bad(i, "error-event", f"error.{key} must be a string or null, got {short(event[key])}")

    # -- items ---------------------------------------------------------------------------------

    def _item_added(self, i: int, event: dict) -> None:
        oi, item = event["output_index"], event["item"]
        self._in_progress(i)
        if oi in self.items:
            self.bad(
                i,
                "output-index",
                f"duplicate output_index {oi} (first added at event {self.items[oi].added_at})",
            )
            return
        if oi != len(self.order):
            self.bad(
                i,
                "output-index",
                f"output_index {oi}, expected {len(self.order)} (0,1,2,… in emission order)",
            )
        if self.incomplete_done_at is not None:
            self.bad(
                i,
                "incomplete-item",
                f"item added after the incomplete item done at event {self.incomplete_done_at}",
            )
        check_item(item, self.profile, lambda r, m: self.bad(i, r, m), where="item", final=False)
        if item.get("status") not in (None, "in_progress"):
            self.bad(i, "item-status", f"an added item must be in_progress, got {short(item.get('status'))}")
        state = _Item(added_at=i, output_index=oi, item=item)
        kind = type_of(item)
        if kind in CALL_TEXT_KEY:
            initial = item.get(CALL_TEXT_KEY[kind])
            state.call = _Part(added_at=i, kind=None, text=initial if is_str(initial) else "")
        for container in ("content", "summary"):
            if is_list(item.get(container)) and item[container]:
                self.bad(
                    i,
                    "content-index",
                    f"added item already has {container}; parts must be streamed with events",
                )
        self.items[oi] = state
        self.order.append(oi)

    def _item_for(self, i: int, event: dict, item_type: str | None) -> _Item | None:
        """The item an event refers to, after the checks every item event shares."""
        oi = event["output_index"]
        item = self.items.get(oi)
        if item is None:
            self.bad(
                i, "item-not-added", f"{event['type']} for output_index {oi} before its output_item.added"
            )
            return None
        if item.done is not None:
            self.bad(
                i,
                "after-done",
                f"{event['type']} for output_index {oi} after its output_item.done at {item.done_at}",
            )
        if "item_id" in event and event["item_id"] != item.id:
            self.bad(i, "item-id", f"item_id {short(event['item_id'])} is not the item's id {short(item.id)}")
        if item_type is not None and item.type != item_type:
            self.bad(
                i, "item-type-mismatch", f"{event['type']} targets a {item.type} item (output_index {oi})"
            )
            return None
        return item

    def _part_event(self, i: int, event: dict) -> None:
        container, index_key, is_done = PART_EVENTS[event["type"]]
        item_type = "reasoning" if container == "summary" else None
        item = self._item_for(i, event, item_type)
        if item is None:
            return
        allowed = PART_TYPES.get((item.type, container))
        if allowed is None:
            self.bad(i, "item-type-mismatch", f"{event['type']} on a {item.type} item")
            return
        parts = getattr(item, container)
        index = event[index_key]
        part = event["part"]
        kind = type_of(part)
        if kind not in allowed:
            hint = " (use output_text)" if kind == "text" else ""
            self.bad(
                i,
                "item-type",
                f"part type {short(kind)} on a {item.type} item, expected {'|'.join(allowed)}{hint}",
            )
        if not is_done:
            if index != len(parts):
                self.bad(
                    i, "content-index", f"{index_key} {index}, expected {len(parts)} (parts are added 0,1,…)"
                )
                return
            text_key = PART_TEXT_KEY.get(kind, "text")
            if part.get(text_key, "") != "":
                self.bad(
                    i,
                    "delta-sum",
                    f"an added part must start empty, got {text_key}={short(part.get(text_key))}",
                )
            if kind == "output_text" and not is_list(part.get("annotations")):
                self.bad(i, "item-field", "an output_text part needs an annotations list")
            parts.append(_Part(added_at=i, kind=kind))
            return
        state = self._part_at(i, event, item, parts, index, index_key)
        if state is None:
            return
        if state.part_done is not None:
            self.bad(i, "after-done", f"second {event['type']} for {index_key} {index}")
            return
        if kind != state.kind:
            self.bad(i, "item-type", f"part done with type {short(kind)}, added as {state.kind}")
        got = part.get(PART_TEXT_KEY.get(state.kind or "", "text"))
        if got != state.text and not item.tainted:
            self.bad(
                i, "delta-sum", f"done part text {short(got)} != concatenated deltas {short(state.text)}"
            )
        if state.streamed and state.text_done is None:
            self.bad(i, "unclosed-part", f"{event['type']} before the text's own .done event")
        state.part_done = part

    def _part_at(
        self, i: int, event: dict, item: _Item, parts: list[_Part], index: Any, index_key: str
    ) -> _Part | None:
        if not is_int(index) or not 0 <= index < len(parts):
            self.bad(i, "content-index", f"{event['type']} for {index_key} {index} before its part was added")
            item.tainted = True  # its text went nowhere: comparing the done item would only repeat this
            return None
        return parts[index]

    def _text_event(self, i: int, event: dict) -> None:
        item_type, container, part_type, value_key = TEXT_EVENTS[event["type"]]
        item = self._item_for(i, event, item_type)
        if item is None:
            return
        is_delta = value_key == "delta"
        if container is None:
            state = item.call
            assert state is not None  # created with every call item
        else:
            index_key = "summary_index" if container == "summary" else "content_index"
            state = self._part_at(i, event, item, getattr(item, container), event[index_key], index_key)
            if state is None:
                return
            if state.kind != part_type:
                self.bad(i, "item-type-mismatch", f"{event['type']} on a {state.kind} part")
                return
            if state.part_done is not None:
                self.bad(i, "after-done", f"{event['type']} after the part's done event at {state.part_done}")
        if state.text_done is not None:
            self.bad(i, "after-done", f"{event['type']} after the text's .done event")
            return
        if is_delta:
            state.text += event["delta"]
            state.streamed = True
        else:
            value = event[value_key]
            if value != state.text and not item.tainted:
                self.bad(
                    i,
                    "delta-sum",
                    f"{event['type']}.{value_key} {short(value)} != concatenated deltas {short(state.text)}",
                )
            state.text_done = value
            state.streamed = True

    def _item_done(self, i: int, event: dict) -> None:
        done = event["item"]
        item = self._item_for(i, event, None)
        if item is None:
            return
        if item.done is not None:
            return  # after-done already reported
        check_item(done, self.profile, lambda r, m: self.bad(i, r, m), where="item", final=True)
        if _identity(done) != _identity(item.item) or (item.id is not None and done.get("id") != item.id):
            self.bad(
                i,
                "item-identity",
                f"done item {short(_identity(done))} differs from added {short(_identity(item.item))}",
            )
        if done.get("status") == "incomplete":
            self.incomplete_done_at = i
        if item.tainted:
            item.done, item.done_at = done, i
            return
        kind = item.type
        if kind in CALL_TEXT_KEY and item.call is not None:
            key = CALL_TEXT_KEY[kind]
            if done.get(key) != item.call.text:
                self.bad(
                    i, "delta-sum", f"done {key} {short(done.get(key))} != streamed {short(item.call.text)}"
                )
            if item.call.streamed and item.call.text_done is None:
                self.bad(i, "unclosed-part", f"output_item.done before the {key}.done event")
        for container in ("content", "summary"):
            if (kind, container) not in PART_TYPES:
                continue
            self._compare_parts(i, container, item, getattr(item, container), done.get(container))
        item.done, item.done_at = done, i

    def _compare_parts(self, i: int, container: str, item: _Item, parts: list[_Part], final: Any) -> None:
        final_list = final if is_list(final) else []
        if not parts:
            if any(is_dict(p) and p.get(PART_TEXT_KEY.get(type_of(p) or "", "text")) for p in final_list):
                self.bad(i, "delta-sum", f"done item has {container} text that was never streamed as deltas")
            return
        if len(final_list) != len(parts):
            self.bad(
                i,
                "delta-sum",
                f"done item has {len(final_list)} {container} part(s), {len(parts)} were streamed",
            )
        for position, (state, part) in enumerate(zip(parts, final_list, strict=False)):
            if state.part_done is None:
                self.bad(
                    i, "unclosed-part", f"{container}[{position}] was never closed with its part .done event"
                )
            got = part.get(PART_TEXT_KEY.get(state.kind or "", "text")) if is_dict(part) else None
            if got != state.text:
                self.bad(
                    i,
                    "delta-sum",
                    f"done {container}[{position}] text {short(got)} != streamed {short(state.text)}",
                )

    # -- end of stream -------------------------------------------------------------------------

    def _finish(self) -> None:
        if not self.terminals:
            self.bad(
                None,
                "terminal",
                "no terminal event (response.completed, response.incomplete or response.failed)",
            )
        elif len(self.terminals) > 1:
            self.bad(self.terminals[1], "terminal", f"a second terminal event (first at {self.terminals[0]})")
        if self.error_events and not (
            self.terminals and self.events[self.terminals[0]]["type"] == "response.failed"
            and self.terminals[0] > self.error_events[0]
        ):  # fmt: skip
            self.bad(
                self.error_events[0], "error-event", "an error event must be followed by response.failed"
            )
        if not self.terminals:
            return
        t = self.terminals[0]
        kind = self.events[t]["type"]
        response = self.events[t].get("response")
        open_items = [oi for oi in self.order if self.items[oi].done is None]
        if kind != "response.failed" and open_items:
            self.bad(t, "unfinished-item", f"{kind} with output_index(es) {open_items} never done")
        output = response.get("output") if is_dict(response) else None
        if not is_list(output):
            return  # a missing/invalid response or output is reported by event-fields/validate_response
        expected = [self._expected_final(oi) for oi in self.order]
        if len(output) != len(expected):
            self.bad(
                t, "terminal-output", f"output has {len(output)} item(s), the stream added {len(expected)}"
            )
        for position, (got, (want, left_open)) in enumerate(zip(output, expected, strict=False)):
            problem = self._compare_final(got, want, left_open=left_open)
            if problem:
                self.bad(t, "terminal-output", f"output[{position}] {problem}")
        statuses = [it.get("status") if is_dict(it) else None for it in output]
        for position, status in enumerate(statuses):
            if status != "incomplete":
                continue
            if position != len(statuses) - 1:
                self.bad(t, "incomplete-item", f"output[{position}] is incomplete but not the last item")
            if kind == "response.completed":
                self.bad(t, "incomplete-item", f"output[{position}] is incomplete in a completed response")

    def _expected_final(self, oi: int) -> tuple[dict, bool]:
        """The item the terminal output should hold at this position, and whether it was left open."""
        item = self.items[oi]
        if item.done is not None:
            return item.done, False
        partial = dict(item.item)  # failed: what was streamed so far, marked incomplete (§1.5e)
        partial["status"] = "incomplete"
        if item.call is not None:
            partial[CALL_TEXT_KEY[item.type]] = item.call.text
        for container in ("content", "summary"):
            parts = getattr(item, container)
            if parts:
                partial[container] = [
                    {"type": p.kind, PART_TEXT_KEY.get(p.kind or "", "text"): p.text} for p in parts
                ]
        return partial, True

    @staticmethod
    def _compare_final(got: Any, want: dict, *, left_open: bool) -> str | None:
        if not is_dict(got):
            return f"is not an object: {short(got)}"
        if _identity(got) != _identity(want) or got.get("id") != want.get("id"):
            return f"identity {short(_identity(got))} differs from the streamed item {short(_identity(want))}"
        if not left_open:
            if got != want:
                keys = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
                return "differs from its output_item.done item in " + ", ".join(keys)
            return None
        # an item left open by a failure: compare status and the streamed text only
        if got.get("status") != "incomplete":
            return (
                f"was left open by the failure and must be status incomplete, got {short(got.get('status'))}"
            )
        for key in ("arguments", "input"):
            if key in want and got.get(key) != want[key]:
                return f"{key} {short(got.get(key))} != streamed {short(want[key])}"
        for container in ("content", "summary"):
            if container in want and is_list(got.get(container)):
                texts = [
                    p.get(PART_TEXT_KEY.get(type_of(p) or "", "text")) for p in got[container] if is_dict(p)
                ]
                wanted = [p[PART_TEXT_KEY.get(p["type"] or "", "text")] for p in want[container]]
                if texts != wanted:
                    return f"{container} text {short(texts)} != streamed {short(wanted)}"
        return None


def validate_events(
    events: list[dict], request: dict | None = None, *, profile: str = "openai"
) -> list[Violation]:
    """Every violation of the Responses event grammar in ``events`` (decoded JSON objects, in order).

    With ``request`` (the Responses request body), the terminal Response must echo its fields.
    Violations are ordered by the pass that found them; each carries the index of the event at fault.
    """
    check_profile(profile)
    return _StreamChecker(events, request, profile).run()


def assert_valid(
    events: list[dict], request: dict | None = None, *, profile: str = "openai", raw: bytes | None = None
) -> None:
    """Raise AssertionError listing every violation; the one-liner the project's tests call on each stream.

    With ``raw`` (the SSE bytes the events were decoded from), the framing rules are checked too.
    """
    violations = validate_sse(raw) if raw is not None else []
    violations += validate_events(events, request, profile=profile)
    if violations:
        raise AssertionError("stream violates the Responses event grammar:\n" + format_violations(violations))
