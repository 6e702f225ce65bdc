"""The messages of WebSocket mode (docs/websocket.md): what a client's `response.create` must be,
and the error envelope the server answers with. Pure functions, so the rules sit in one place apart
from the connection's machinery (server/websocket.py)."""

from __future__ import annotations

from typing import Any

import orjson

from server.errors import ApiError, invalid

__all__ = ["HTTP_ONLY_FIELDS", "error_event", "read_create_message"]

#: Fields of an HTTP create body that mean nothing on a WebSocket, refused by name.
HTTP_ONLY_FIELDS = ("stream", "stream_options", "background")

def read_create_message(data: str | bytes) -> tuple[dict[str, Any], bool]:
    """A client message → (the create body, `generate`). Every refusal is a 400 naming the field."""
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"We could not parse the JSON of your message: {exc.msg}.", None, "invalid_json") from None
    if not isinstance(message, dict):
        raise invalid("A WebSocket message must be a JSON object.", None, "invalid_json")
    kind = message.pop("type", None)
    if kind != "response.create":
        raise invalid(f"Unsupported message type {kind!r}: the client sends 'response.create' messages.",
                      "type", "invalid_value")  # fmt: skip
    if message.get("stream") is True:
        # Codex 0.169.0 sends `stream: true` in every response.create (docs/websocket.md); it asks for
        # what the socket does anyway, so it is dropped, while any other value is refused below.
        del message["stream"]
    for name in HTTP_ONLY_FIELDS:
        if name in message:
            raise invalid(f"'{name}' is not allowed in WebSocket mode: responses always stream on the socket.",
                          name, "unsupported_parameter")  # fmt: skip
    # The socket is the stream, so the backend is asked for one (token by token), as for SSE.
    message["stream"] = True
    generate = message.pop("generate", True)
    if generate is None:
        generate = True
    if not isinstance(generate, bool):
        raise invalid("Invalid type for 'generate': expected a boolean.", "generate", "invalid_type")
    return message, generate


#: Statuses that differ from the HTTP answer: Open Responses shows a missing previous response on a
#: socket as a 400 (over HTTP the bridge answers 404, as for any id it does not hold).
_WS_STATUS = {"previous_response_not_found": 400}


def error_event(error: ApiError) -> dict[str, Any]:
    """The WebSocket error envelope: the HTTP answer's `error` object plus its status."""
    body = error.body().get("error") or {}
    payload = {
        "type": body.get("type") or "invalid_request_error",
        "code": body.get("code") or body.get("type") or "error",
        "message": body.get("message") or "The request failed.",
        "param": body.get("param"),
    }
    return {"type": "error", "status": _WS_STATUS.get(payload["code"], error.status), "error": payload}
