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

__all__ = ["AccessRecord", "configure_logging", "emit", "escape_text"]

access_log = logging.getLogger("responses_bridge.access")

#: C0 controls, space, backslash (so an escape is unambiguous), DEL and C1 controls → `\xNN`.
_UNSAFE = {c: f"\\x{c:02x}" for c in (*range(0x21), 0x5C, *range(0x7F, 0xA0))}


def escape_text(value: str) -> str:
    """`value` safe to write into one space-separated text log line."""
    return value.translate(_UNSAFE)


class AccessRecord:
    """What is known about one request; endpoints fill it in, `emit` writes it once."""

    __slots__ = (
        "error_code", "first_token", "input_tokens", "method", "model", "output_tokens", "path",
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


def emit(record: AccessRecord, log_format: str) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = record.fields()
    if log_format == "json":
        access_log.info(orjson.dumps({"ts": time.time(), "event": "access", **fields}).decode())
        return
    access_log.info(
        '%s %s %s model=%s upstream=%s stream=%s duration_ms=%s ttft_ms=%s tokens_in=%s tokens_out=%s%s',
        escape_text(fields["method"]), escape_text(fields["path"]), fields["status"],
        escape_text(fields["model"] or "-"), escape_text(fields["upstream"] or "-"),
        str(fields["stream"]).lower(), fields["duration_ms"],
        "-" if fields["ttft_ms"] is None else fields["ttft_ms"],
        "-" if fields["input_tokens"] is None else fields["input_tokens"],
        "-" if fields["output_tokens"] is None else fields["output_tokens"],
        f' error={fields["error_code"]}' if fields["error_code"] else "",
    )  # fmt: skip


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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("responses_bridge", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
