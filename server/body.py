"""Reading a request: the body (bounded in size and in stall time), the JSON object, the top-level
fields the route needs before anything else (`model`, `stream`), and their JSON types.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from server.errors import ApiError, invalid, translator_error
from translator import check_request
from translator.errors import InvalidRequest

log = logging.getLogger("responses_bridge")

__all__ = ["ResponsesRequest", "read_body", "read_responses_request"]


async def read_body(request: Request, limit: int, gap: float) -> bytes:
    """The whole body, refused early when over `limit`, and given up on (408) when the client leaves
    a gap longer than `gap` seconds (a stalled or slowloris upload must not hold a connection)."""
    length = request.headers.get("content-length")
    too_large = ApiError(413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    parts: list[bytes] = []
    size = 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            async with asyncio.timeout(gap):
                part = await chunks.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise ApiError(408, f"The request body stalled for more than {gap:g} seconds.",
                           type="invalid_request_error", code="request_timeout") from None  # fmt: skip
        size += len(part)
        if size > limit:
            raise too_large
        parts.append(part)
    return b"".join(parts)


@dataclass(frozen=True)
class ResponsesRequest:
    """A `POST /v1/responses` body that passed the server's checks."""

    payload: dict[str, Any]
    model: str
    stream: bool
    background: bool
    store: bool  # False only when the request said `store: false`


def read_responses_request(body: bytes, *, strict: bool = False) -> ResponsesRequest:
    """Parse and check the body; every refusal is a 400 naming the field. With `strict`, an unknown
    top-level field is refused (OpenAI's `unknown_parameter`) instead of logged and dropped."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"We could not parse the JSON body of your request: {exc.msg}.", None, "invalid_json") from None
    if not isinstance(payload, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("Missing required parameter: 'model' (a non-empty string).", "model", "missing_required_parameter")
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    try:  # the translator's one table of request fields: library users get the same 400s
        unknown = check_request(payload, strict=strict)
    except InvalidRequest as exc:
        raise translator_error(exc, ()) from None
    _warn_unknown(unknown)
    return ResponsesRequest(payload, model, stream, payload.get("background") is True, payload.get("store") is not False)


_warned_fields: set[str] = set()


def _warn_unknown(names: list[str]) -> None:
    """Log each unknown request field once per process: clients add fields over time, and one line
    per request would drown the log, but a typo such as `max_output_token` must not pass unseen."""
    for name in names:
        if name not in _warned_fields and len(_warned_fields) < 1000:
            _warned_fields.add(name)
            log.warning("ignoring unknown request field %r (strict_params refuses it)", name[:100])
