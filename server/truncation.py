"""`truncation: "auto"` at the backend call: one retry with the oldest turns dropped (docs/context-overflow.md).

A backend that refuses a prompt as too long answers before any stream, so the bridge can still try
again: when the request asked for `truncation: "auto"` and the refusal's code is
`context_length_exceeded`, `translator.truncation.truncate_input` drops the oldest whole turns and the
shortened request is sent once more. Its own refusal (or a request nothing can be dropped from) is
the answer. With `"disabled"` (the default) the first refusal stands.

Used by every path that calls the backend for a response (`server.responses`, `server.websocket`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from server.errors import ApiError
from translator.truncation import overflow_ratio, truncate_input

__all__ = ["CONTEXT_LENGTH_EXCEEDED", "send_with_truncation"]

log = logging.getLogger("responses_bridge")

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
T = TypeVar("T")


async def send_with_truncation(
    request: dict[str, Any],
    build: Callable[[dict[str, Any]], dict[str, Any]],
    send: Callable[[dict[str, Any]], Awaitable[T]],
) -> tuple[T, dict[str, Any]]:
    """`send(build(request))`, and on a context overflow with `truncation: "auto"`, once more with a
    shorter input. Returns the answer and the Responses request it answers (the shortened one after
    a retry, so the translator echoes what the backend really saw)."""
    try:
        return await send(build(request)), request
    except ApiError as exc:
        if exc.code != CONTEXT_LENGTH_EXCEEDED or request.get("truncation") != "auto":
            raise
        shorter = truncate_input(request.get("input"), ratio=overflow_ratio(exc.message))
        if shorter is None:
            raise
        log.info("context overflow with truncation auto: retrying with %d of %d input items",
                 len(shorter), len(request["input"]))  # fmt: skip
        retried = {**request, "input": shorter}
        return await send(build(retried)), retried
