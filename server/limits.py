"""The bridge's ceilings against hostile peers: the error raised when a backend exceeds one, the
minimum-body-rate rule for clients, and the raw error answers sent before the app runs.

Why a module of its own: the same ceilings are enforced in three places that must agree on the
wording a client sees: the backend transport (server/transport.py: header block, answer bytes,
content encoding), the backend client (server/upstream.py: non-streamed JSON size) and the client
protocol (server/http_protocol.py: header size and count, header timeout, body rate, connections).
The settings and their defaults are `server.config.Limits`; docs/failure-behaviour.md lists what a
client gets for each.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson

from server.config import Limits
from translator.errors import error_type_for_status

log = logging.getLogger("responses_bridge")

__all__ = ["BodyRate", "Limits", "UpstreamLimitError", "log_ceiling", "raw_error_response"]


class UpstreamLimitError(httpx.TransportError):
    """The backend's answer broke a ceiling (`limit` names the `[limits]` setting, or
    `content_encoding`). A transport error, so code that handles httpx failures (the stream pump's
    `response.failed`) handles it too; the message states the limit, for the client to read.

    Not a `RemoteProtocolError`: those are retried as stale keep-alive connections, and an answer
    that is too large would only be too large again."""

    def __init__(
        self,
        message: str,
        *,
        limit: str,
        code: str = "upstream_too_large",
        request: httpx.Request | None = None,
    ) -> None:
        super().__init__(message, request=request)
        self.limit = limit
        self.code = code


def too_large(what: str, limit: str, value: int, upstream: str = "the backend") -> UpstreamLimitError:
    """The error for a backend answer part larger than `limits.<limit>` (= `value` bytes)."""
    return UpstreamLimitError(
        f"Upstream {upstream} sent {what} larger than the bridge's limit of {value} bytes (limits.{limit}).",
        limit=limit,
    )


def unsupported_encoding(encoding: str, upstream: str = "the backend") -> UpstreamLimitError:
    """The error for a compressed answer: the bridge asks for identity and never inflates."""
    shown = encoding[:40].encode("ascii", "backslashreplace").decode("ascii")
    return UpstreamLimitError(
        f"Upstream {upstream} answered with Content-Encoding {shown!r}; the bridge asks for 'identity' "
        "and does not decompress backend answers.",
        limit="content_encoding",
        code="upstream_unsupported_encoding",
    )


class BodyRate:
    """The slow-body rule: a request body must arrive at `min_rate` bytes/s or more, averaged over
    each `window` seconds, or the request is given up (408).

    A gap timeout alone lets a client drip one byte just before each deadline and hold a connection
    (and its buffers) forever; an average rate cannot be gamed that way. Windows during which the
    reader deliberately stopped reading (flow control: the app had not consumed the bytes yet) are
    not judged. Sans-IO: the caller passes the clock, so the rule is tested without sleeping."""

    __slots__ = ("_received", "_window_start", "min_rate", "window")

    def __init__(self, min_rate: float, window: float, now: float) -> None:
        self.min_rate = min_rate
        self.window = window
        self._window_start = now
        self._received = 0

    def feed(self, size: int) -> None:
        self._received += size

    def restart(self, now: float) -> None:
        """Begin a new window (after a pause the client is not to blame for)."""
        self._window_start = now
        self._received = 0

    def too_slow(self, now: float) -> bool:
        """True when the window that just ended brought fewer than `min_rate * window` bytes;
        otherwise a new window starts."""
        if now - self._window_start < self.window:
            return False
        if self._received < self.min_rate * self.window:
            return True
        self.restart(now)
        return False

    def message(self) -> str:
        return (
            f"The request body arrived slower than {self.min_rate:g} bytes per second over "
            f"{self.window:g} seconds (limits.request_min_body_rate)."
        )


def raw_error_response(status: int, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 error answer in OpenAI's shape, for the protocol to write before (or
    instead of) the app; the connection is closed after it."""
    body = orjson.dumps(
        {"error": {"message": message, "type": error_type_for_status(status), "param": None, "code": code}}
    )
    reason = _REASONS.get(status, b"Error")
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        )
    )


_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


#: translator option → the `[limits]` setting it comes from, and how the response ended
_CEILINGS = {
    "max_output_tokens_ceiling": ("upstream_max_output_tokens", "incomplete (max_output_tokens)"),
    "max_output_items": ("response_max_output_items", "failed (upstream_too_large)"),
}


def log_ceiling(translator: Any, upstream_name: str, response_id: Any) -> None:
    """Log, once per response, that a `[limits]` ceiling ended the answer (the translator's
    `ceiling_hit`): the client sees only a length stop or a failure, the operator learns which
    backend ran away."""
    option = getattr(translator, "ceiling_hit", None)
    if option not in _CEILINGS:
        return
    setting, ending = _CEILINGS[option]
    value = getattr(getattr(translator, "options", None), option, "?")
    log.warning("response %s: upstream %s passed [limits] %s (%s); the answer ended %s",
                response_id, upstream_name, setting, value, ending)  # fmt: skip
