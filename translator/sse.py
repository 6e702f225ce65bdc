"""Server-sent events: an incremental decoder for upstream chat streams and a frame encoder.

Upstream backends split frames anywhere (TCP reads, proxies), use CRLF (some Windows-hosted
proxies), send ``: keep-alive`` comments (DeepSeek, OpenRouter) and occasionally multi-line
``data:``. The decoder follows the WHATWG event-stream rules so all of these parse.

On the way out we write each event as ONE frame with LF endings and a single ``data:`` line:
the Open Responses compliance parser drops frames split across reads and never dispatches CRLF.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["DONE_FRAME", "KEEPALIVE_FRAME", "SSEDecoder", "encode_sse"]

DONE_FRAME = b"data: [DONE]\n\n"
KEEPALIVE_FRAME = b": keepalive\n\n"

_dumps = orjson.dumps
_NEWLINE = orjson.OPT_APPEND_NEWLINE
_KNOWN_TYPES = (
    "response.created", "response.in_progress", "response.completed", "response.incomplete", "response.failed",
    "error", "response.output_item.added", "response.output_item.done", "response.content_part.added",
    "response.content_part.done", "response.output_text.delta", "response.output_text.done",
    "response.output_text.annotation.added", "response.refusal.delta", "response.refusal.done",
    "response.function_call_arguments.delta", "response.function_call_arguments.done",
    "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done",
    "response.reasoning_summary_part.added", "response.reasoning_summary_part.done",
    "response.reasoning_summary_text.delta", "response.reasoning_summary_text.done",
    "response.reasoning_text.delta", "response.reasoning_text.done", "response.reasoning.delta",
    "response.reasoning.done",
)  # fmt: skip
#: Precomputed frame heads for the event types the translator emits (a constant, not a cache).
_PREFIXES: dict[str, bytes] = {t: b"event: " + t.encode() + b"\ndata: " for t in _KNOWN_TYPES}


def encode_sse(event: dict[str, Any]) -> bytes:
    """One whole frame: ``event: TYPE\\ndata: JSON\\n\\n`` (orjson never emits a raw newline)."""
    kind = event["type"]
    prefix = _PREFIXES.get(kind)
    if prefix is None:
        prefix = b"event: " + kind.encode() + b"\ndata: "
    return prefix + _dumps(event, None, _NEWLINE) + b"\n"


class SSEDecoder:
    """Bytes in, ``(event_name | None, data)`` frames out; ``[DONE]`` comes out as data ``"[DONE]"``.

    Feed it every network read; call `close` at EOF to flush a last frame that ended without a
    blank line (several backends close the connection right after the final ``data:`` line).
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[str | None, str]]:
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            # A CR at the very end may be the first half of a CRLF split across reads.
            keep_cr = buf.endswith(b"\r")
            if keep_cr:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buf += b"\r"
        # Only whole frames (ended by a blank line) are parsed; the tail waits for the next read,
        # so no half-parsed state survives between calls. A multi-byte UTF-8 character never
        # contains a newline byte, so the whole-frame prefix always decodes cleanly.
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return []
        self._buf = buf[end + 2 :]
        head = buf[:end]
        try:
            text = head.decode()
        except UnicodeDecodeError:
            text = head.decode("utf-8", "replace")
        out: list[tuple[str | None, str]] = []
        # Splitting on the blank line *and* the next "data: " yields the payloads of plain one-line
        # data frames directly (one string per frame); anything else (comments, event names,
        # several data lines) leaves a newline in its piece and takes the general path.
        pieces = ("\n\n" + text).split("\n\ndata: ")
        if pieces[0]:
            self._frames(pieces[0][2:], out)
        for i in range(1, len(pieces)):
            piece = pieces[i]
            if "\n" in piece:
                self._frames("data: " + piece, out)
            else:
                out.append((None, piece))
        return out

    def _frames(self, text: str, out: list[tuple[str | None, str]]) -> None:
        for frame in text.split("\n\n"):
            if frame:
                self._frame(frame, out)

    def close(self) -> list[tuple[str | None, str]]:
        """Flush what is left at EOF: a last frame that ended without its blank line."""
        out: list[tuple[str | None, str]] = []
        buf = self._buf.rstrip(b"\r\n")
        self._buf = b""
        if buf:
            self._frame(buf.decode("utf-8", "replace"), out)
        return out

    def _frame(self, frame: str, out: list[tuple[str | None, str]]) -> None:
        """The general WHATWG path: comments, event names, several data lines, fields without a space."""
        data: list[str] = []
        event: str | None = None
        for line in frame.split("\n"):
            if not line or line[0] == ":":  # blank (stray) or comment / keep-alive
                continue
            field, colon, value = line.partition(":")
            if colon and value[:1] == " ":
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                event = value
            # id and retry carry nothing a translator needs.
        if data:
            out.append((event, "\n".join(data)))
