"""SSE framing rules and a lenient decoder (docs/wire.md §1.1).

:func:`parse_sse` decodes a raw ``text/event-stream`` body the way the openai SDK does (CRLF, multi-line
``data:``, comments) while reporting what a stricter parser (Open Responses' compliance suite) would
drop: so a stream can be judged by its events and by its bytes in one pass. May import: rules, kinds.
"""

from __future__ import annotations

import orjson

from conformance.kinds import short
from conformance.rules import Violation

__all__ = ["parse_sse", "validate_sse"]


def parse_sse(raw: bytes, *, require_done: bool = True) -> tuple[list[dict], list[Violation]]:
    """Decode SSE bytes leniently (CRLF, multi-line data, like the SDK) while reporting framing violations.

    Returns the decoded event objects (without the ``[DONE]`` sentinel) and the violations. A violation's
    index is the position of the event in the returned list, or None for stream-level problems.
    ``require_done=False`` accepts a stream that just ends: Open Responses requires ``data: [DONE]`` but
    OpenAI's own API does not send it (§1.1); a frame after ``[DONE]`` is reported either way.
    """
    out: list[Violation] = []
    events: list[dict] = []
    if b"\r" in raw:
        out.append(
            Violation(
                None, "sse-line-endings", "CR characters in the stream; frames must use LF line endings"
            )
        )
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    if text.strip() and not text.endswith("\n\n"):
        out.append(Violation(None, "sse-framing", "the last frame is not terminated by a blank line"))
    done_seen = False
    for block in text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        name: str | None = None
        data_lines: list[str] = []
        has_id = False
        for line in lines:
            key, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if key == "event":
                name = value
            elif key == "data":
                data_lines.append(value)
            elif key == "id":
                has_id = True
        if not data_lines:
            continue  # a frame without data dispatches nothing in any parser
        position = len(events)
        if done_seen:
            out.append(Violation(position, "sse-done", "a frame after data: [DONE]"))
        data = "\n".join(data_lines)
        if data.startswith("[DONE]"):
            done_seen = True
            if has_id:
                out.append(Violation(None, "sse-id", "the [DONE] frame has an id: line"))
            continue
        if has_id:
            out.append(Violation(position, "sse-id", "frame has an id: line (servers should not send ids)"))
        if len(data_lines) > 1:
            out.append(
                Violation(
                    position, "sse-data-lines", f"frame has {len(data_lines)} data: lines, expected one"
                )
            )
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            out.append(Violation(position, "sse-json", f"data is not JSON ({exc}): {data[:80]!r}"))
            continue
        if not isinstance(event, dict):
            out.append(Violation(position, "sse-json", f"data must be a JSON object, got {short(event)}"))
            continue
        event_type = event.get("type")
        if name is None:
            out.append(
                Violation(position, "sse-event-name", f"frame has no event: line (data type {event_type!r})")
            )
        elif name != event_type:
            out.append(
                Violation(position, "sse-event-name", f"event: {name!r} but data type is {event_type!r}")
            )
        events.append(event)
    if require_done and not done_seen:
        out.append(Violation(None, "sse-done", "the stream does not end with data: [DONE]"))
    return events, out


def validate_sse(raw: bytes, *, require_done: bool = True) -> list[Violation]:
    """The framing violations of a raw SSE body (§1.1); see :func:`parse_sse` for the events too."""
    return parse_sse(raw, require_done=require_done)[1]
