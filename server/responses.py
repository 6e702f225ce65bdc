"""`POST /v1/responses`, top to bottom: read and check the request, route the model to an upstream,
load the stored history, translate, then one of three answers: a background job (`queued` at once),
one JSON response, or an SSE stream fed by an `EventPump`.

A stored response is acknowledged only once it is written: the non-stream answer is 503
`store_unavailable` when the write fails, the stream's terminal event waits on the same write (in
the pump). Every error the client sees is `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

import translator
from server.accesslog import AccessRecord
from server.background import BackgroundStart, background_stream, start_job
from server.body import ResponsesRequest, read_body, read_responses_request
from server.config import BridgeConfig
from server.errors import ApiError, JSONResponse, error_response, invalid, not_found, translator_error
from server.history import prepare_input
from server.pump import STORE_UNAVAILABLE, Commit, EventPump
from server.scope import ACCESS_KEY, OWNER_KEY, RESPONSES_ENDPOINT, TOKEN_KEY
from server.state import BridgeState
from server.store import StoreRefused, check_storable
from server.streaming import EventStream

__all__ = ["create_response"]

log = logging.getLogger("responses_bridge")


class ClientGone(Exception):
    """The client hung up while the bridge waited on the backend."""


async def create_response(request: Request) -> Response | EventStream:
    state: BridgeState = request.app.state.bridge
    record: AccessRecord = request.scope.get(ACCESS_KEY) or AccessRecord("POST", RESPONSES_ENDPOINT)
    try:
        return await _respond(request, state, record)
    except ApiError as exc:
        record.error_code = exc.code
        return error_response(exc)
    except ClientGone:
        record.status, record.error_code = 499, "client_disconnected"
        return Response(status_code=499)  # nobody reads it; uvicorn drops it


async def _respond(request: Request, state: BridgeState, record: AccessRecord) -> Response | EventStream:
    config = state.config
    if state.shutting_down:
        raise ApiError(503, "The server is shutting down.", code="server_shutting_down")
    body = await read_body(request, config.max_body_bytes, min(config.timeouts.idle, 30.0),
                           max_json_containers=config.limits.request_max_json_containers)
    asked = read_responses_request(body, strict=config.strict_params, limits=config.limits)
    route = config.route(asked.model)
    if route is None:
        raise not_found(f"The model '{asked.model}' does not exist or is not served by this bridge.", "model",
                        "model_not_found")  # fmt: skip
    client = state.clients[route.upstream.name]
    record.model, record.upstream, record.stream = asked.model, route.upstream.name, asked.stream
    owner = request.scope.get(OWNER_KEY)
    token = request.scope.get(TOKEN_KEY)
    secrets = _request_secrets(config, route.upstream.passthrough, token)

    try:
        async with _cancel_on_disconnect(request.receive):
            translated_request, items = await prepare_input(state.store, asked.payload, owner)
            if asked.store and state.keeps_responses:  # refused now, not after the model ran
                _check_storable(asked.payload, items)
            options = _options(config, dict(route.upstream.options))
            chat_request = translator.responses_to_chat_request(translated_request, **options)
            chat_request["model"] = route.model
            if asked.background:
                job_record = AccessRecord("POST", RESPONSES_ENDPOINT)
                job_record.model, job_record.upstream, job_record.stream = asked.model, route.upstream.name, True
                start = BackgroundStart(
                    client=client, chat_request=chat_request,
                    translator=translator.ChatStreamTranslator(translated_request, **options),
                    input_items=items, owner=owner, token=token, secrets=secrets, record=job_record,
                    store_requested=asked.store,
                )  # fmt: skip
                queued = await start_job(request.app, start)
                record.response_id = queued.get("id")
                if asked.stream:
                    return background_stream(request.app, queued["id"], owner=owner)
                return JSONResponse(queued)
            if not asked.stream:
                chat_request["stream"] = False
                chat_request.pop("stream_options", None)
                completion = await client.complete(chat_request, token)
                record.mark_first_token()
                response = _translate_completion(completion, translated_request, options)
            else:
                stream_translator = translator.ChatStreamTranslator(translated_request, **options)
                upstream_response = await client.open_stream(chat_request, token)
    except (translator.InvalidRequest, translator.UpstreamError) as exc:
        raise translator_error(exc, config.secrets) from None

    commit = _commit(state, asked, items, owner)
    if not asked.stream:
        record.set_usage(response)
        answer = JSONResponse(response)  # encoded before the write: what is stored can be answered
        if commit is not None:
            await _commit_or_503(commit, response)
        return answer

    pump = EventPump(upstream_response, stream_translator, upstream_name=route.upstream.name, secrets=secrets,
                     commit=commit, record=record, on_close=state.streams.discard)  # fmt: skip
    state.track(pump)
    return EventStream(pump, keepalive_interval=config.keepalive_interval)


# --------------------------------------------------------------------------------------- steps


def _check_storable(payload: dict[str, Any], items: list[dict[str, Any]]) -> None:
    """What the store could not hold (NUL in an id, an over-long id, over-deep JSON) is a 400 naming
    the field, the same on every engine, before the backend is asked."""
    try:
        check_storable({**payload, "id": "resp_check"}, items)  # the id is made later
    except StoreRefused as exc:
        raise invalid(f"Invalid value for '{exc.field}': {exc.reason}.", exc.field, "invalid_value") from None


@contextlib.asynccontextmanager
async def _cancel_on_disconnect(receive: Receive) -> AsyncIterator[None]:
    """Cancel the enclosed awaits (the backend request) the moment the client disconnects, so a
    backend does not generate for nobody while the bridge waits for its headers or whole answer."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
                task.cancel()
                return

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()


def _options(config: BridgeConfig, upstream_options: dict[str, Any]) -> dict[str, Any]:
    options = {"max_output_items": config.limits.response_max_output_items, **upstream_options}
    if config.encryption_key is not None:
        options.setdefault("encryption_key", config.encryption_key)
    return options


def _request_secrets(config: BridgeConfig, passthrough: bool, token: str | None) -> tuple[str, ...]:
    """The configured secrets, plus the caller's own key when it is forwarded to the backend."""
    if passthrough and token:
        return (*config.secrets, token)
    return config.secrets


def _translate_completion(
    completion: dict[str, Any], request: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    """The backend's whole answer as a Response. A translator bug (anything but its own two error
    types) is logged and answered as a clean 500, never a traceback."""
    try:
        return translator.chat_completion_to_response(completion, request, **options)
    except (translator.InvalidRequest, translator.UpstreamError):
        raise
    except Exception:
        log.exception("translating the backend's answer failed")
        raise ApiError(500, "The bridge failed while translating the backend's answer.", code="server_error") from None


def _commit(state: BridgeState, asked: ResponsesRequest, items: list[dict[str, Any]], owner: str | None) -> Commit | None:
    """The store write of this request's final response, or None when nothing is to be stored."""
    store = state.store
    if not asked.store or not state.keeps_responses:
        return None

    async def commit(response: dict[str, Any]) -> bool:
        await store.put(response, items, owner=owner)
        return True

    return commit


async def _commit_or_503(commit: Commit, response: dict[str, Any]) -> None:
    try:
        await commit(response)
    except Exception as exc:
        log.error("storing response %s failed, so the request is answered 503 (%s): %r",
                  response.get("id"), STORE_UNAVAILABLE, exc, exc_info=exc)  # fmt: skip
        raise ApiError(503, "The response could not be stored, so it was not kept; retry the request.",
                       code=STORE_UNAVAILABLE) from None  # fmt: skip
