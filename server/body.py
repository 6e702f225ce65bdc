"""Reading a request: the body (bounded in size and in stall time), the JSON object, the top-level
fields the route needs before anything else (`model`, `stream`), and their JSON types.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from server.errors import ApiError, invalid, translator_error
from translator.errors import InvalidRequest

__all__ = ["ResponsesRequest", "check_field_types", "read_body", "read_responses_request"]


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


def read_responses_request(body: bytes) -> ResponsesRequest:
    """Parse and check the body; every refusal is a 400 naming the field."""
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
    try:
        check_field_types(payload)  # replaced by translator.check_request at merge
    except InvalidRequest as exc:  # the translator's refusal, as the same 400 naming the field
        raise translator_error(exc, ()) from None
    return ResponsesRequest(payload, model, stream, payload.get("background") is True, payload.get("store") is not False)


# Top-level fields whose JSON type the server checks before translation (null means absent). The
# translator checks the inside of input, tools, text, reasoning...; these are checked here so a wrong
# type is a 400 naming the field instead of being ignored or forwarded to the backend.
_NUMBER = (int, float)
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "input": (str, list), "instructions": (str, list), "tools": (list,), "tool_choice": (str, dict),
    "temperature": _NUMBER, "top_p": _NUMBER, "max_output_tokens": (int,), "store": (bool,),
    "metadata": (dict,), "previous_response_id": (str,), "reasoning": (dict,), "text": (dict,),
    "parallel_tool_calls": (bool,), "truncation": (str,), "user": (str,), "include": (list,),
    "background": (bool,), "prompt_cache_key": (str,), "service_tier": (str,), "safety_identifier": (str,),
    "top_logprobs": (int,), "max_tool_calls": (int,), "stream_options": (dict,),
    "presence_penalty": _NUMBER, "frequency_penalty": _NUMBER, "conversation": (str, dict),
}  # fmt: skip
_TYPE_NAMES = {str: "a string", list: "an array", dict: "an object", bool: "a boolean", int: "an integer",
               float: "a number"}  # fmt: skip


def check_field_types(payload: dict[str, Any]) -> None:
    """The server's check of top-level field types (raises a 400 `ApiError`)."""
    # replaced by translator.check_request at merge
    for name, kinds in _FIELD_TYPES.items():
        value = payload.get(name)
        if value is None:
            continue
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            expected = " or ".join(_TYPE_NAMES[k] for k in dict.fromkeys(kinds) if k in _TYPE_NAMES)
            raise invalid(f"Invalid type for '{name}': expected {expected}.", name, "invalid_type")
    metadata = payload.get("metadata")
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            if not isinstance(value, str):
                raise invalid(f"Invalid type for 'metadata.{key}': metadata values must be strings.",
                              f"metadata.{key}", "invalid_type")  # fmt: skip
    include = payload.get("include")
    if isinstance(include, list):
        for index, value in enumerate(include):
            if not isinstance(value, str):
                raise invalid(f"Invalid type for 'include[{index}]': expected a string.", f"include[{index}]",
                              "invalid_type")  # fmt: skip
