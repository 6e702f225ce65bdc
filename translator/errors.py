"""The two ways a translation can fail, shaped as OpenAI error bodies.

The server turns these into HTTP responses and the library user catches them, so both carry
everything an OpenAI-shaped error envelope needs: ``{"error": {message, type, param, code}}``.
Clients (the openai SDK, Codex) read ``param`` to point at the offending field, which is why
`InvalidRequest` names it precisely (``input[3].call_id``, ``tools[0].name``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["InvalidRequest", "TranslatorError", "UpstreamError", "error_type_for_status"]


#: What an error ``code`` or ``param`` copied from a backend body may look like: an identifier or a
#: path. Anything else (free text, a header a backend echoed back) is dropped rather than relayed.
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_PARAM = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,128}")


def error_type_for_status(status: int) -> str:
    """OpenAI's ``error.type`` for an HTTP status, so clients branch on it as they would upstream."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if 400 <= status < 500:
        return "invalid_request_error"
    return "server_error"


class TranslatorError(Exception):
    """Base class: lets callers catch every translation failure with one clause."""

    status: int = 500
    message: str
    param: str | None
    code: str | None

    def to_error(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": error_type_for_status(self.status),
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(TranslatorError):
    """The client's request cannot be translated: HTTP 400, ``invalid_request_error``."""

    status = 400

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def __repr__(self) -> str:
        return f"InvalidRequest({self.message!r}, param={self.param!r}, code={self.code!r})"


class UpstreamError(TranslatorError):
    """The chat backend failed or answered with an error body.

    ``status`` defaults to 502 (a bad gateway: the backend, not the bridge, is at fault); a server
    may pass the backend's own 4xx through so a client sees e.g. a 429 as a rate limit. ``body`` keeps
    the backend's parsed error for logs.
    """

    def __init__(
        self,
        message: str,
        status: int = 502,
        code: str | None = "server_error",
        body: Any = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body
        self.param = param

    @classmethod
    def from_body(cls, body: Any, status: int = 502) -> UpstreamError:
        """Build from a backend error body (``{"error": {...}}``, ``{"error": "text"}``, or anything)."""
        err = body.get("error") if isinstance(body, dict) else None
        message = None
        code: str | None = "server_error"
        param = None
        if isinstance(err, dict):
            message = err.get("message")
            raw_code = err.get("code")
            if isinstance(raw_code, str) and _IDENTIFIER.fullmatch(raw_code):
                code = raw_code
            elif isinstance(raw_code, int) and not isinstance(raw_code, bool) and 400 <= raw_code < 600 and status == 502:
                # OpenRouter puts the HTTP status in error.code.
                status = raw_code
            raw_param = err.get("param")
            if isinstance(raw_param, str) and _PARAM.fullmatch(raw_param):
                param = raw_param
        elif isinstance(err, str):
            message = err
        if not isinstance(message, str) or not message:
            message = "The upstream chat backend returned an error."
        return cls(message, status=status, code=code, body=body, param=param)

    def __repr__(self) -> str:
        return f"UpstreamError({self.message!r}, status={self.status}, code={self.code!r})"
