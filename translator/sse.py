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


def encode_sse(event: dict[str, Any]) -> bytes:
    """One whole frame: ``event: TYPE\\ndata: JSON\\n\\n`` (orjson never emits a raw newline)."""
    return b"event: " + event["type"].encode() + b"\ndata: " + _dumps(event) + b"\n\n"


class SSEDecoder:
    """Bytes in, ``(event_name | None, data)`` frames out; ``[DONE]`` comes out as data ``"[DONE]"``.

    Feed it every network read; call `close` at EOF to flush a last frame that ended without a
    blank line (several backends close the connection right after the final ``data:`` line).
    """

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event: str | None = None

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
        end = buf.rfind(b"\n")
        if end < 0:
            self._buf = buf
            return []
        self._buf = buf[end + 1 :]
        out: list[tuple[str | None, str]] = []
        for line in buf[:end].split(b"\n"):
            self._line(line, out)
        return out

    def close(self) -> list[tuple[str | None, str]]:
        """Flush what is left at EOF: a pending line and a frame without its blank line."""
        out: list[tuple[str | None, str]] = []
        buf = self._buf.rstrip(b"\r")
        self._buf = b""
        if buf:
            self._line(buf, out)
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[tuple[str | None, str]]) -> None:
        if not line:
            if self._data:
                out.append((self._event, "\n".join(self._data)))
                self._data = []
            self._event = None
            return
        if line[0] == 58:  # b":" comment / keep-alive
            return
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if field == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        # id and retry carry nothing a translator needs.
