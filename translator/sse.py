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

from .errors import UpstreamError
from .events import EVENT_TYPES

__all__ = ["DONE_FRAME", "KEEPALIVE_FRAME", "MAX_FRAME_BYTES", "SSEDecoder", "encode_sse", "json_object"]

DONE_FRAME = b"data: [DONE]\n\n"
KEEPALIVE_FRAME = b": keepalive\n\n"

_dumps = orjson.dumps
_loads = orjson.loads
_NEWLINE = orjson.OPT_APPEND_NEWLINE
#: Precomputed frame heads for the event types the translator emits (a constant, not a cache).
_PREFIXES: dict[str, bytes] = {t: b"event: " + t.encode() + b"\ndata: " for t in sorted(EVENT_TYPES)}


def json_object(data: str) -> dict[str, Any] | None:
    """A frame's `data` as the JSON object every chat chunk and Responses event is, or None when it
    is not JSON or not an object (the caller says whose fault and how the stream ends)."""
    try:
        value = _loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def encode_sse(event: dict[str, Any]) -> bytes:
    """One whole frame: ``event: TYPE\\ndata: JSON\\n\\n`` (orjson never emits a raw newline)."""
    kind = event["type"]
    prefix = _PREFIXES.get(kind)
    if prefix is None:
        prefix = b"event: " + kind.encode() + b"\ndata: "
    # One join, one copy (a `+` chain copies a large event once per `+`; it is also slower for small ones).
    return b"".join((prefix, _dumps(event, None, _NEWLINE), b"\n"))


#: The default ceiling on one frame (or the unfinished tail of one): far above any real chunk (a
#: whole tool call's arguments rarely reach 1 MiB), low enough that a backend streaming one endless
#: line cannot make the bridge buffer without bound.
MAX_FRAME_BYTES = 8 * 1024 * 1024


class SSEDecoder:
    """Bytes in, ``(event_name | None, data)`` frames out; ``[DONE]`` comes out as data ``"[DONE]"``.

    Feed it every network read; call `close` at EOF to flush a last frame that ended without a
    blank line (several backends close the connection right after the final ``data:`` line).

    A frame longer than ``max_frame_bytes`` raises `UpstreamError`: the backend, not the client, is
    at fault, and buffering it would let one endless line take the process's memory. The unfinished
    tail is kept in a bytearray that grows in place and is searched only where new bytes arrived,
    so a long frame fed in small reads costs linear time, not a copy of the whole buffer per read.
    """

    __slots__ = ("_buf", "_cr", "_max")

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        if isinstance(max_frame_bytes, bool) or not isinstance(max_frame_bytes, int) or max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be a positive integer")
        self._buf = bytearray()
        self._cr = False  # the last read ended with CR: a LF starting the next one is its CRLF's half
        self._max = max_frame_bytes

    def _too_long(self) -> UpstreamError:
        self._buf = bytearray()
        return UpstreamError(f"The backend sent an SSE frame over {self._max} bytes.")

    def feed(self, data: bytes) -> list[tuple[str | None, str]]:
        if self._cr:
            self._cr = False
            if data[:1] == b"\n":
                data = data[1:]
        if b"\r" in data:
            # CR alone ends a line too (WHATWG); a CR at the very end may be the first half of a CRLF
            # split across reads, so the LF that may start the next read is dropped then.
            self._cr = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        # Only whole frames (ended by a blank line) are parsed; the tail waits for the next read,
        # so no half-parsed state survives between calls. A multi-byte UTF-8 character never
        # contains a newline byte, so the whole-frame prefix always decodes cleanly.
        if buf:
            start = len(buf) - 1  # a blank line may straddle the old tail and the new read
            buf += data
            end = buf.rfind(b"\n\n", start)
            if end < 0:
                if len(buf) > self._max:
                    raise self._too_long()
                return []
            head: bytes | bytearray = buf[:end]
            del buf[: end + 2]
        else:
            end = data.rfind(b"\n\n")
            if end < 0:
                if len(data) > self._max:
                    raise self._too_long()
                buf += data
                return []
            head = data[:end]
            if end + 2 < len(data):
                buf += memoryview(data)[end + 2 :]
        if len(buf) > self._max:
            raise self._too_long()
        if len(head) > self._max and any(len(frame) > self._max for frame in head.split(b"\n\n")):
            raise self._too_long()
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
        buf = bytes(self._buf).rstrip(b"\r\n")
        self._buf = bytearray()
        self._cr = False
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
