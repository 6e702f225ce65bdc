"""Errors as the client sees them: `{"error": {message, type, param, code}}` with a status.

`ApiError` (defined with the upstream client, which raises most of them) carries the status and
the body; `JSONResponse` is the one JSON response class of the server; the two exception handlers
turn Starlette's HTTP errors and anything unexpected into the same shape, never a traceback.
404s the bridge itself raises are `invalid_request_error` with a code, as OpenAI's are.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import orjson
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from server.accesslog import AccessRecord
from server.disconnect import ClientGone
from server.scrub import scrub
from translator.errors import error_type_for_status

__all__ = [
    "ApiError",
    "JSONResponse",
    "answer_or_error",
    "error_response",
    "handle_http_exception",
    "handle_unexpected",
    "invalid",
    "not_found",
    "shutting_down",
    "translator_error",
]

log = logging.getLogger("responses_bridge")


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class ApiError(Exception):
    """An error the client receives as `{"error": {message, type, param, code}}` with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type_for_status(status)
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class JSONResponse(Response):
    """A JSON body encoded with orjson (Starlette's own JSONResponse uses the slower json module).

    Without extra headers, a media type or a background task (every answer of the responses route)
    the two header fields are set directly, as `Response.init_headers` would set them."""

    media_type = "application/json"

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        if headers is not None or media_type is not None or background is not None:
            super().__init__(content, status_code, headers, media_type, background)
            return
        self.status_code = status_code
        self.background = None
        self.body = body = orjson.dumps(content)
        self.raw_headers = [(b"content-length", str(len(body)).encode("latin-1")), _JSON_CONTENT_TYPE]

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: ApiError) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers or None)


R = TypeVar("R")


async def answer_or_error(record: AccessRecord, answer: Awaitable[R]) -> R | Response:
    """`answer`, or what a route answers when it raised: an `ApiError` as its status and body (its
    code on the access line), a client that went away as 499 (nobody reads it; uvicorn drops it).
    Every `POST` route that reads a body and calls a backend ends this way."""
    try:
        return await answer
    except ApiError as exc:
        record.error_code = exc.code
        return error_response(exc)
    except ClientGone:
        record.status, record.error_code = 499, "client_disconnected"
        return Response(status_code=499)


def shutting_down() -> ApiError:
    """The 503 every route answers once shutdown has begun (a client should retry elsewhere)."""
    return ApiError(503, "The server is shutting down.", code="server_shutting_down")


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 naming the request field at fault."""
    return ApiError(400, message, type="invalid_request_error", param=param, code=code)


def not_found(message: str, param: str | None = None, code: str | None = "not_found") -> ApiError:
    """A 404 typed as OpenAI types them: `invalid_request_error`, the code saying what is missing."""
    return ApiError(404, message, type="invalid_request_error", param=param, code=code)


def translator_error(exc: Exception, secrets: tuple[str, ...]) -> ApiError:
    """`InvalidRequest` → 400 naming the param; `UpstreamError` → its status (502 by default)."""
    status = int(getattr(exc, "status", 400))
    message = scrub(str(getattr(exc, "message", exc)), secrets)
    return ApiError(status, message, param=getattr(exc, "param", None), code=getattr(exc, "code", None))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(not_found(f"No route for {request.method} {request.url.path}."))
    message = "Method not allowed." if exc.status_code == 405 else str(exc.detail)
    return error_response(ApiError(exc.status_code, message))


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ApiError(500, "The bridge hit an internal error.", code="server_error"))
