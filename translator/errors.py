"""The two ways a translation can fail, shaped as OpenAI error bodies.

The server turns these into HTTP responses and the library user catches them, so both carry
everything an OpenAI-shaped error envelope needs: ``{"error": {message, type, param, code}}``.
Clients (the openai SDK, Codex) read ``param`` to point at the offending field, which is why
`InvalidRequest` names it precisely (``input[3].call_id``, ``tools[0].name``).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["BACKEND_ERROR_RULES", "InvalidRequest", "TranslatorError", "UpstreamError", "classify_backend_error",
           "error_type_for_status"]


#: What an error ``code`` or ``param`` copied from a backend body may look like: an identifier or a
#: path. Anything else (free text, a header a backend echoed back) is dropped rather than relayed.
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_PARAM = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,128}")


#: Backend error bodies that mean one thing in OpenAI's terms, as rules: (field of the error object,
#: pattern, OpenAI code). The first match wins. Every backend words "the prompt does not fit the
#: context window" differently; a client (Codex compacts and retries) only recognises OpenAI's
#: ``context_length_exceeded``, so each known wording is mapped to it (docs/wire.md §3 lists them).
BACKEND_ERROR_RULES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (field, re.compile(pattern, re.IGNORECASE), code)
    for field, pattern, code in (
        ("code", r"context_length_exceeded", "context_length_exceeded"),  # OpenAI, Groq, DeepSeek
        ("type", r"exceed_context_size_error", "context_length_exceeded"),  # llama.cpp server
        ("message", r"exceeds? the available context size", "context_length_exceeded"),  # llama.cpp
        ("message", r"maximum context length", "context_length_exceeded"),  # OpenAI, vLLM, DeepSeek, OpenRouter
        ("message", r"context[ _]length[ _]exceeded", "context_length_exceeded"),
        ("message", r"prompt is too long", "context_length_exceeded"),  # Anthropic-compatible proxies
        ("message", r"prompt too long", "context_length_exceeded"),  # Ollama
        ("message", r"exceeds? (?:the )?(?:maximum )?context (?:length|size|window)", "context_length_exceeded"),
        ("message", r"longer than the maximum model length", "context_length_exceeded"),  # vLLM decoder prompt
        ("message", r"greater than the context length", "context_length_exceeded"),  # LM Studio
        ("message", r"reduce the length of the messages", "context_length_exceeded"),  # Groq
        ("message", r"exceeds the maximum number of tokens", "context_length_exceeded"),  # Gemini
        ("message", r"inputs.? tokens \+ .?max_new_tokens.? must be <=", "context_length_exceeded"),  # TGI
    )
)
#: The HTTP status each rule's code is reported with, whatever the backend used (llama.cpp says
#: 400, some proxies 413 or 500; OpenAI says 400 and clients branch on it).
_RULE_STATUS = {"context_length_exceeded": 400}


def classify_backend_error(error: Any) -> str | None:
    """The OpenAI code a backend error object (or bare message string) means, by `BACKEND_ERROR_RULES`."""
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        return None
    for field, pattern, code in BACKEND_ERROR_RULES:
        value = error.get(field)
        if isinstance(value, str) and pattern.search(value):
            return code
    return None


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
        mapped = classify_backend_error(err)
        if mapped is not None:
            code = mapped
            status = _RULE_STATUS.get(mapped, status)
        return cls(message, status=status, code=code, body=body, param=param)

    def __repr__(self) -> str:
        return f"UpstreamError({self.message!r}, status={self.status}, code={self.code!r})"
