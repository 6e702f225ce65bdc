"""Reading a request: the body (bounded in size and in stall time), the JSON object, the top-level
fields the route needs before anything else (`model`, `stream`), and their JSON types.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from server.config import BridgeConfig, Limits
from server.errors import ApiError, invalid, translator_error
from translator import check_request
from translator.errors import InvalidRequest

log = logging.getLogger("responses_bridge")

__all__ = [
    "JSONShapeMeter",
    "ResponsesRequest",
    "check_responses_payload",
    "json_object",
    "parse_json",
    "read_body",
    "read_responses_request",
    "required_model",
]


#: Top-level fields that hold the arrays a request can make long, with the limit that bounds each.
_ARRAY_LIMITS = {"input": "request_max_input_items", "tools": "request_max_tools"}


class JSONShapeMeter:
    """Counts the JSON objects and arrays of a body as it arrives, and refuses it (a 400) the moment
    the count passes `ceiling` (`limits.request_max_json_containers`).

    Parsing a million small objects holds the event loop for ~0.4 s and ~1 GB, so the count is
    taken on the raw bytes before anything is parsed, one read at a time: each read costs
    microseconds (`bytes.count` runs at memory speed), and a hostile body is refused before it has
    even arrived whole. Braces inside strings are counted too, which only over-counts; a real
    request is nowhere near the ceiling. The field named is the array field (`input`, `tools`)
    after whose name most brackets came: a best guess, since nothing was parsed."""

    _MARKERS = tuple((name, f'"{name}"'.encode()) for name in _ARRAY_LIMITS)

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.total = 0
        self.by_field: dict[str | None, int] = {}
        self._field: str | None = None
        self._tail = b""  # the end of the previous read, so a field name split across reads is found

    def feed(self, part: bytes) -> None:
        tail = self._tail
        window = tail + part if tail else part
        start = pos = len(tail)
        marks = sorted((at, name) for name, token in self._MARKERS for at in _find_all(window, token))
        for at, name in marks:
            end = max(at, start)
            self._count(window, pos, end)
            pos, self._field = end, name
        self._count(window, pos, len(window))
        self._tail = window[-8:]
        if self.total > self.ceiling:
            named = {k: v for k, v in self.by_field.items() if k is not None}
            param = max(named, key=named.__getitem__) if named else None
            raise invalid(f"The request holds more than {self.ceiling:,} JSON objects and arrays "
                          "(limits.request_max_json_containers).", param, "request_too_large")  # fmt: skip

    def _count(self, window: bytes, begin: int, end: int) -> None:
        if end > begin:
            n = window.count(b"{", begin, end) + window.count(b"[", begin, end)
            self.total += n
            self.by_field[self._field] = self.by_field.get(self._field, 0) + n


def _find_all(data: bytes, token: bytes) -> list[int]:
    found, at = [], data.find(token)
    while at >= 0:
        found.append(at)
        at = data.find(token, at + 1)
    return found


async def read_request_body(request: Request, config: BridgeConfig) -> bytes:
    """A route's body under the bridge's bounds: `max_body_bytes`, a stall over the idle timeout
    (at most 30 s), and `limits.request_max_json_containers`: every route that reads a JSON body
    (responses, chat completions, compact, conversations) gets the same ceilings from here."""
    return await read_body(request, config.max_body_bytes, min(config.timeouts.idle, 30.0),
                           max_json_containers=config.limits.request_max_json_containers)  # fmt: skip


async def read_body(request: Request, limit: int, gap: float, *, max_json_containers: int | None = None) -> bytes:
    """The whole body, refused early when over `limit` (or, with `max_json_containers`, when it
    holds more JSON objects and arrays than that: see `JSONShapeMeter`), and given up on (408) when
    the client leaves a gap longer than `gap` seconds (a stalled or slowloris upload must not hold a
    connection).

    Read from the ASGI `receive` itself, under one deadline moved on at every message: what
    `request.stream()` does (a disconnect raises `ClientDisconnect`), without an async generator and
    a new timer per message on the path of every request. A body that arrives whole in one message
    (most do) is metered only when its brackets alone could break the ceiling: the meter refuses a
    body exactly when that count does, so it is needed only to name the field."""
    length = _content_length(request.scope["headers"])
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    meter: JSONShapeMeter | None = None
    parts: list[bytes] = []
    size = 0
    receive = request.receive
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(gap) as deadline:
            while True:
                message = await receive()
                kind = message["type"]
                if kind == "http.request":
                    part = message.get("body", b"")
                    more = message.get("more_body", False)
                    if part:
                        size += len(part)
                        if size > limit:
                            raise _too_large(limit)
                        if max_json_containers:
                            if meter is None and (more or parts or _containers(part) > max_json_containers):
                                meter = JSONShapeMeter(max_json_containers)
                                for earlier in parts:
                                    meter.feed(earlier)
                            if meter is not None:
                                meter.feed(part)
                        parts.append(part)
                    if not more:
                        break
                    deadline.reschedule(loop.time() + gap)
                elif kind == "http.disconnect":
                    raise ClientDisconnect()
    except TimeoutError:
        raise ApiError(408, f"The request body stalled for more than {gap:g} seconds.",
                       type="invalid_request_error", code="request_timeout") from None  # fmt: skip
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _content_length(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first Content-Length of the ASGI headers (as `request.headers.get` reads it)."""
    for name, value in headers:
        if name == b"content-length":
            return value.decode("latin-1")
    return None


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large")


def _containers(part: bytes) -> int:
    return part.count(b"{") + part.count(b"[")


@dataclass(frozen=True)
class ResponsesRequest:
    """A `POST /v1/responses` body that passed the server's checks."""

    payload: dict[str, Any]
    model: str
    stream: bool
    background: bool
    store: bool  # False only when the request said `store: false`



def _check_array_lengths(payload: dict[str, Any], limits: Limits) -> None:
    for name, setting in _ARRAY_LIMITS.items():
        value = payload.get(name)
        limit = getattr(limits, setting)
        if isinstance(value, list) and len(value) > limit:
            raise invalid(f"Invalid '{name}': array too long. Expected an array with maximum length {limit:,}, "
                          f"but got an array with length {len(value):,} instead (limits.{setting}).",
                          name, "array_above_max_length")  # fmt: skip


def parse_json(body: bytes) -> Any:
    """The body's JSON value, or OpenAI's 400 `invalid_json` naming what did not parse."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"We could not parse the JSON body of your request: {exc.msg}.", None, "invalid_json") from None


def json_object(payload: Any) -> dict[str, Any]:
    """`payload` when it is a JSON object; every route answers another shape with the same 400."""
    if not isinstance(payload, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    return payload


def required_model(payload: dict[str, Any]) -> str:
    """The body's `model`: a non-empty string, or the 400 every route gives without one."""
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("Missing required parameter: 'model' (a non-empty string).", "model", "missing_required_parameter")
    return model


def read_responses_request(body: bytes, *, strict: bool = False, limits: Limits | None = None) -> ResponsesRequest:
    """Parse and check the body; every refusal is a 400 naming the field. With `strict`, an unknown
    top-level field is refused (OpenAI's `unknown_parameter`) instead of logged and dropped."""
    return check_responses_payload(parse_json(body), strict=strict, limits=limits)


def check_responses_payload(payload: Any, *, strict: bool = False, limits: Limits | None = None) -> ResponsesRequest:
    """`read_responses_request` for a body already parsed (a WebSocket `response.create` message)."""
    limits = limits or Limits()
    payload = json_object(payload)
    _check_array_lengths(payload, limits)
    model = required_model(payload)
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
