"""A `POST /v1/chat/completions` body, read and checked (`read_chat_request` → `ChatRequest`), and
a chat answer's usage written to the access line (`record_chat_usage`).

Why a module: the route (server/chat.py) and both ways of answering (server/chat_passthrough.py,
server/chat_translated.py) share these, and none of them should import another's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.accesslog import AccessRecord
from server.body import json_object, parse_json, required_model
from server.config import Limits
from server.errors import invalid

__all__ = ["ChatRequest", "read_chat_request", "record_chat_usage"]


@dataclass(frozen=True)
class ChatRequest:
    """A `POST /v1/chat/completions` body that passed the server's checks."""

    payload: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool


def read_chat_request(body: bytes, limits: Limits | None = None) -> ChatRequest:
    """Parse and check the body; every refusal is a 400 naming the field."""
    payload = json_object(parse_json(body))
    model = required_model(payload)
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("Missing required parameter: 'messages' (a non-empty array).", "messages",
                      "missing_required_parameter")  # fmt: skip
    if limits is not None:
        for name, ceiling, setting in (("messages", limits.request_max_input_items, "request_max_input_items"),
                                       ("tools", limits.request_max_tools, "request_max_tools")):
            value = payload.get(name)
            if isinstance(value, list) and len(value) > ceiling:
                raise invalid(f"'{name}' holds {len(value)} entries; the bridge's limit is {ceiling} "
                              f"(limits.{setting}).", name, "request_too_large")
    stream = payload.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("Invalid type for 'stream': expected a boolean.", "stream", "invalid_type")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("Invalid type for 'stream_options': expected an object.", "stream_options", "invalid_type")
    include_usage = bool((options or {}).get("include_usage", False))
    return ChatRequest(payload, model, stream, include_usage)


def record_chat_usage(record: AccessRecord, usage: Any) -> None:
    """A chat answer's usage (`prompt_tokens`, `completion_tokens`) on the access line."""
    if isinstance(usage, dict):
        record.input_tokens = usage.get("prompt_tokens")
        record.output_tokens = usage.get("completion_tokens")
