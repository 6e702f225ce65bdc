"""One access-log line per request, as text or JSON, written when the request ends.

A stream's line is written after its last frame, so duration, time to first token and token counts
are the real ones. Nothing is logged per chunk, and no header or body (so no secret) is ever logged.
Client-chosen text (the decoded path, the model name) is escaped in the text format: a `%0a` in a
path must not start a forged log line, nor a space add a forged field.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

__all__ = ["TEXT_FORMAT", "AccessRecord", "TextFormatter", "configure_logging", "emit", "escape_text"]

access_log = logging.getLogger("responses_bridge.access")

#: C0 controls, space, backslash (so an escape is unambiguous), DEL and C1 controls → `\xNN`.
_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x21), 0x5C, *range(0x7F, 0xA0))}


def escape_text(value: str) -> str:
    """`value` safe to write into one space-separated text log line."""
    if value.isascii() and value.isprintable() and " " not in value and "\\" not in value:
        return value  # the common case, nothing to escape: skip the per-character translation
    return value.translate(_UNSAFE)


class AccessRecord:
    """What is known about one request; endpoints fill it in, `emit` writes it once."""

    __slots__ = (
        "error_code", "first_token", "input_tokens", "method", "metrics", "model", "output_tokens", "path",
        "response_id", "start", "status", "stream", "upstream",
    )  # fmt: skip

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path
        self.start = time.perf_counter()
        self.status = 0
        self.model: str | None = None
        self.upstream: str | None = None
        self.stream = False
        self.first_token: float | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.response_id: str | None = None
        self.error_code: str | None = None
        #: The app's `server.metrics.BridgeMetrics` (None: metrics off); the pump counts streams with it.
        self.metrics: Any = None

    def mark_first_token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def set_usage(self, response: dict[str, Any] | None) -> None:
        if not isinstance(response, dict):
            return
        self.response_id = response.get("id")
        usage = response.get("usage")
        if isinstance(usage, dict):
            self.input_tokens = usage.get("input_tokens")
            self.output_tokens = usage.get("output_tokens")
        error = response.get("error")
        if isinstance(error, dict):
            self.error_code = error.get("code")

    def fields(self) -> dict[str, Any]:
        now = time.perf_counter()
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "model": self.model,
            "upstream": self.upstream,
            "stream": self.stream,
            "duration_ms": round((now - self.start) * 1000, 1),
            "ttft_ms": None if self.first_token is None else round((self.first_token - self.start) * 1000, 1),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "response_id": self.response_id,
            "error_code": self.error_code,
        }


_TEXT_LINE = "%s %s %s model=%s upstream=%s stream=%s duration_ms=%s ttft_ms=%s tokens_in=%s tokens_out=%s%s"


def emit(record: AccessRecord, log_format: str) -> None:
    """Write the request's one access line.

    The `LogRecord` is made and handed to the handlers directly (what `Logger.info` does, minus its
    walk up the stack to find the caller, which no access line shows), and the text line's fields
    are formatted by the handler, as for any log call: one record per request, nothing else."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    now = time.perf_counter()
    start = record.start
    duration = round((now - start) * 1000, 1)
    ttft = None if record.first_token is None else round((record.first_token - start) * 1000, 1)
    if log_format == "json":
        fields = {
            "ts": time.time(), "event": "access", "method": record.method, "path": record.path,
            "status": record.status, "model": record.model, "upstream": record.upstream, "stream": record.stream,
            "duration_ms": duration, "ttft_ms": ttft, "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens, "response_id": record.response_id,
            "error_code": record.error_code,
        }  # fmt: skip
        message, args = orjson.dumps(fields).decode(), ()
    else:
        message = _TEXT_LINE
        args = (
            escape_text(record.method), escape_text(record.path), record.status,
            escape_text(record.model or "-"), escape_text(record.upstream or "-"),
            "true" if record.stream else "false", duration,
            "-" if ttft is None else ttft,
            "-" if record.input_tokens is None else record.input_tokens,
            "-" if record.output_tokens is None else record.output_tokens,
            f" error={record.error_code}" if record.error_code else "",
        )  # fmt: skip
    access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, __file__, _EMIT_LINE, message, args,
                                            None, "emit"))  # fmt: skip


_EMIT_LINE = emit.__code__.co_firstlineno


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """`logging.Formatter(TEXT_FORMAT)`, the same lines at a third of the cost: the timestamp's
    `strftime` is done once per second, not per line, and the line is one f-string. A record with
    a traceback or stack, or a formatter given another format, takes the standard way."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, **kwargs: Any) -> None:
        super().__init__(fmt or TEXT_FORMAT, datefmt, **kwargs)
        self._plain = self._fmt == TEXT_FORMAT and datefmt is None and type(self._style) is logging.PercentStyle
        self._stamp: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None or not self._plain:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached, stamp = self._stamp  # one tuple: a thread never sees one second's stamp with another's
        if cached != second:
            stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._stamp = (second, stamp)
        return self.default_msec_format % (stamp, record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        if not self._plain or record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        return f"{record.asctime} {record.levelname} {record.name}: {record.message}"


class _JsonFormatter(logging.Formatter):
    """Plain messages already JSON (access lines) pass through; other records are wrapped."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == access_log.name and message.startswith("{"):
            return message
        payload: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(payload).decode()


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    """Route the bridge's and uvicorn's loggers to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    for name in ("responses_bridge", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
