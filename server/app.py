"""The Starlette app: `POST /v1/responses`, `GET /v1/models`, `GET /healthz`, errors, lifecycle.

The request path is one straight line (docs/architecture.md): parse and check the body here, route the
model to an upstream (`BridgeConfig.route`), resolve stored history (`_prepare_input`, the one place
that reads the store), translate with `translator`, then either one JSON answer or an `EventStream`.
Every error a client can see is `{"error": {message, type, param, code}}`; nothing ever answers with
a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.accesslog import AccessRecord, emit
from server.auth import caller_token, check_key, fingerprint
from server.compact import COMPACT_ENDPOINT, compact_response
from server.config import BridgeConfig, ConfigError
from server.streaming import EventStream
from server.upstream import ApiError, FixtureBackend, UpstreamClient, is_fixtures, scrub

__all__ = ["app_from_env", "create_app", "error_response"]

log = logging.getLogger("responses_bridge")

ACCESS_KEY = "responses_bridge.access"
TOKEN_KEY = "responses_bridge.token"
RAW_SEND_KEY = "responses_bridge.raw_send"
OWNER_KEY = "responses_bridge.owner"
RESPONSES_ENDPOINT = "/v1/responses"


# ------------------------------------------------------------------------------------------ errors


class JSONBytes(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: ApiError) -> Response:
    return JSONBytes(error.body(), status_code=error.status, headers=error.headers or None)


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, type="invalid_request_error", param=param, code=code)


def _translator_error(exc: Exception, secrets: tuple[str, ...]) -> ApiError:
    """`InvalidRequest` → 400 naming the param; `UpstreamError` → its status (502 by default)."""
    status = int(getattr(exc, "status", 400))
    message = scrub(str(getattr(exc, "message", exc)), secrets)
    return ApiError(status, message, param=getattr(exc, "param", None), code=getattr(exc, "code", None))


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: f"No route for {request.method} {request.url.path}.", 405: "Method not allowed."}
    message = messages.get(exc.status_code, str(exc.detail))
    return error_response(ApiError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ApiError(500, "The bridge hit an internal error.", code="server_error"))


# ------------------------------------------------------------------------------------- middleware


class BridgeMiddleware:
    """Access log (one line per request, written when it ends) and API-key auth for `/v1/*`."""

    def __init__(self, app: ASGIApp, config: BridgeConfig) -> None:
        self.app = app
        self.config = config
        self.keys = config.api_keys
        self.passthrough = any(u.passthrough for u in config.upstreams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = AccessRecord(scope["method"], scope["path"])
        scope[ACCESS_KEY] = record

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            await send(message)

        try:
            token = caller_token(scope["headers"])
            if self.keys and scope["path"].startswith("/v1/"):
                if not check_key(token, self.keys):
                    body = ApiError(
                        401,
                        "Missing or invalid API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'.",
                        code="invalid_api_key",
                    )
                    await error_response(body)(scope, receive, send_wrapper)
                    return
                scope[OWNER_KEY] = fingerprint(token)
            scope[TOKEN_KEY] = token
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            if record.status == 0:
                record.status = 500
            raise
        finally:
            if scope["path"] != "/healthz":
                emit(record, self.config.log_format)


# ------------------------------------------------------------------------------------------- state


class BridgeState:
    """Everything shared by requests: config, upstream clients, the store, live streams."""

    def __init__(self, config: BridgeConfig) -> None:
        self.config = config
        self.clients: dict[str, UpstreamClient] = {}
        self.store: Any = None
        self.streams: set[EventStream] = set()
        self.ready = False
        self.shutting_down = False
        self.fixture_backends: list[FixtureBackend] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app: Starlette | None = None
        self.retention: asyncio.Task[None] | None = None

    def begin_shutdown(self) -> None:
        """Stop taking requests; in-flight streams get `shutdown_grace` seconds, then end with
        `response.failed` (code `server_shutting_down`) and `[DONE]`, never mid-frame."""
        if self.shutting_down:
            return
        self.shutting_down = True
        loop = self.loop
        if loop is None:
            return
        log.info("shutting down: %d stream(s) in flight", len(self.streams))
        for stream in list(self.streams):
            loop.call_later(self.config.shutdown_grace, stream.abort, "shutdown")
        if self.app is not None and self.store is not None:
            try:
                from server.background import begin_background_shutdown
            except ImportError:
                return
            begin_background_shutdown(self.app)  # jobs fail now; followers end, so uvicorn need not wait


def _install_signal_hook(state: BridgeState) -> Callable[[], None]:
    """Hear SIGINT/SIGTERM before uvicorn drains connections (it runs the lifespan shutdown only
    after every request has finished, too late to end streams cleanly). Chains to uvicorn's handler."""
    if threading.current_thread() is not threading.main_thread() or state.loop is None:
        return lambda: None
    loop = state.loop
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        loop.call_soon_threadsafe(state.begin_shutdown)
        prev = previous.get(signum)
        if callable(prev):
            prev(signum, frame)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
        except (ValueError, OSError):
            previous.pop(sig, None)

    def restore() -> None:
        for sig, prev in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                if signal.getsignal(sig) is handler:
                    signal.signal(sig, prev)

    return restore


async def _open_store(spec: str) -> Any:
    if not spec or spec == "none":
        return None
    try:
        from server.store import open_store
    except ImportError:
        log.warning("store %r requested but server.store is not available; responses will not be stored", spec)
        return None
    store = open_store(spec)
    await store.open()
    return store


# ---------------------------------------------------------------------------- store integration
# The two places the store is used for /v1/responses. (server/stored.py serves the stored-response
# routes; it reads `request.app.state.store`.)

_ID_PREFIXES = {
    "message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs",
    "custom_tool_call": "ctc", "custom_tool_call_output": "ctco",
}  # fmt: skip


def _normalise_input(value: Any) -> list[dict[str, Any]]:
    """This request's input as items, each with an id (string input → one user message item)."""
    if isinstance(value, str):
        return [{"type": "message", "id": f"msg_{uuid.uuid4().hex}", "role": "user",
                 "content": [{"type": "input_text", "text": value}]}]  # fmt: skip
    items: list[dict[str, Any]] = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict) and not item.get("id") and item.get("type") != "item_reference":
            kind = item.get("type") or "message"
            item = {**item, "id": f"{_ID_PREFIXES.get(kind, 'item')}_{uuid.uuid4().hex}"}
        items.append(item)
    return items


async def _prepare_input(
    state: BridgeState, payload: dict[str, Any], owner: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The request the translator sees (stored history prepended, item references resolved) and the
    input items to store with the answer."""
    store = state.store
    previous_id = payload.get("previous_response_id")
    raw_input = payload.get("input")
    has_refs = isinstance(raw_input, list) and any(
        isinstance(i, dict) and i.get("type") == "item_reference" for i in raw_input
    )
    if previous_id is None and not has_refs:
        return payload, _normalise_input(raw_input) if store is not None else []
    if previous_id is not None and not isinstance(previous_id, str):
        raise invalid("previous_response_id must be a string.", "previous_response_id")
    history: list[dict[str, Any]] = []
    if previous_id is not None:
        if store is None:
            raise ApiError(404, f"Previous response with id '{previous_id}' not found: this bridge runs "
                           "without a response store (--store none).", param="previous_response_id",
                           code="previous_response_not_found")  # fmt: skip
        chain = await store.conversation(previous_id, owner=owner)
        if chain is None:
            raise ApiError(404, f"Previous response with id '{previous_id}' not found.",
                           param="previous_response_id", code="previous_response_not_found")  # fmt: skip
        history = list(chain)
    items = _normalise_input(raw_input)
    if has_refs:
        by_id = {i.get("id"): i for i in history if isinstance(i, dict)}
        resolved: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            if isinstance(item, dict) and item.get("type") == "item_reference":
                found = by_id.get(item.get("id"))
                if found is None and store is not None and hasattr(store, "get_item"):
                    found = await store.get_item(item.get("id"), owner=owner)
                if found is None:
                    raise ApiError(404, f"Item with id '{item.get('id')}' not found.",
                                   param=f"input[{index}].id", code="item_not_found")  # fmt: skip
                resolved.append(found)
            else:
                resolved.append(item)
        items = resolved
    request = {**payload, "input": history + items}
    return request, items


async def _store_response(
    state: BridgeState, payload: dict[str, Any], response: dict[str, Any], items: list[dict[str, Any]],
    owner: str | None,
) -> None:  # fmt: skip
    if state.store is None or payload.get("store") is False:
        return
    await state.store.put(response, items, owner=owner)


# ----------------------------------------------------------------------------------------- routes


async def _read_body(request: Request, limit: int, gap: float) -> bytes:
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


def _check_field_types(payload: dict[str, Any]) -> None:
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


class ClientGone(Exception):
    """The client hung up while the bridge waited on the backend."""


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


def _options(state: BridgeState, upstream_options: dict[str, Any]) -> dict[str, Any]:
    options = dict(upstream_options)
    if state.config.encryption_key is not None:
        options.setdefault("encryption_key", state.config.encryption_key)
    return options


async def create_response(request: Request) -> Response | EventStream:
    state: BridgeState = request.app.state.bridge
    record: AccessRecord = request.scope.get(ACCESS_KEY) or AccessRecord("POST", RESPONSES_ENDPOINT)
    try:
        return await _create_response(request, state, record)
    except ApiError as exc:
        record.error_code = exc.code
        return error_response(exc)
    except ClientGone:
        record.status, record.error_code = 499, "client_disconnected"
        return Response(status_code=499)  # nobody reads it; uvicorn drops it


async def _create_response(request: Request, state: BridgeState, record: AccessRecord) -> Response | EventStream:
    import translator

    config = state.config
    if state.shutting_down:
        raise ApiError(503, "The server is shutting down.", code="server_shutting_down")
    body = await _read_body(request, config.max_body_bytes, min(config.timeouts.idle, 30.0))
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
    _check_field_types(payload)
    route = config.route(model)
    if route is None:
        raise ApiError(404, f"The model '{model}' does not exist or is not served by this bridge.",
                       type="invalid_request_error", param="model", code="model_not_found")  # fmt: skip
    client = state.clients[route.upstream.name]
    record.model, record.upstream, record.stream = model, route.upstream.name, stream
    owner = request.scope.get(OWNER_KEY)
    token = request.scope.get(TOKEN_KEY)

    try:
        async with _cancel_on_disconnect(request.receive):
            translated_request, items = await _prepare_input(state, payload, owner)
            options = _options(state, dict(route.upstream.options))
            chat_request = translator.responses_to_chat_request(translated_request, **options)
            chat_request["model"] = route.model
            if payload.get("background") is True:
                stream_translator = translator.ChatStreamTranslator(translated_request, **options)
                return await _start_background(request, state, record, route.upstream.name, client, chat_request,
                                               stream_translator, items, owner, token, payload, stream)  # fmt: skip
            if not stream:
                chat_request["stream"] = False
                chat_request.pop("stream_options", None)
                completion = await client.complete(chat_request, token)
                record.mark_first_token()
                response = translator.chat_completion_to_response(completion, translated_request, **options)
            else:
                stream_translator = translator.ChatStreamTranslator(translated_request, **options)
                upstream_response = await client.open_stream(chat_request, token)
    except (translator.InvalidRequest, translator.UpstreamError) as exc:
        raise _translator_error(exc, config.secrets) from None

    if not stream:
        record.set_usage(response)
        try:
            await _store_response(state, payload, response, items, owner)
        except Exception:
            log.exception("storing response %s failed", response.get("id"))
        return JSONBytes(response)

    async def on_terminal(response: dict[str, Any]) -> None:
        await _store_response(state, payload, response, items, owner)

    event_stream = EventStream(
        upstream=upstream_response,
        translator=stream_translator,
        record=record,
        keepalive_interval=config.keepalive_interval,
        on_terminal=on_terminal,
        on_close=state.streams.discard,
        upstream_name=route.upstream.name,
        secrets=_request_secrets(config, route.upstream.passthrough, token),
    )
    state.streams.add(event_stream)
    if state.shutting_down:  # shutdown began while we waited on the backend
        assert state.loop is not None
        state.loop.call_later(config.shutdown_grace, event_stream.abort, "shutdown")
    return event_stream


def _request_secrets(config: BridgeConfig, passthrough: bool, token: str | None) -> tuple[str, ...]:
    """The configured secrets, plus the caller's own key when it is forwarded to the backend."""
    if passthrough and token:
        return (*config.secrets, token)
    return config.secrets


async def _start_background(
    request: Request, state: BridgeState, record: AccessRecord, upstream_name: str, client: UpstreamClient,
    chat_request: dict[str, Any], stream_translator: Any, items: list[dict[str, Any]], owner: str | None,
    token: str | None, payload: dict[str, Any], stream: bool,
) -> Response:  # fmt: skip
    """`background: true`: answer `queued` at once; the job runs the same EventStream with no client
    attached (server/background.py stores its events and final response)."""
    from server.background import background_stream, events_from_asgi, start_background

    job_record = AccessRecord("POST", RESPONSES_ENDPOINT)
    job_record.model, job_record.upstream, job_record.stream = record.model, record.upstream, True

    async def run() -> AsyncIterator[list[dict[str, Any]]]:
        upstream = await client.open_stream({**chat_request, "stream": True}, token)
        event_stream = EventStream(
            upstream=upstream, translator=stream_translator, record=job_record,
            keepalive_interval=state.config.keepalive_interval, on_terminal=None, upstream_name=upstream_name,
            secrets=_request_secrets(state.config, client.upstream.passthrough, token),
        )  # fmt: skip
        async for batch in events_from_asgi(event_stream):
            yield batch

    queued = {**stream_translator.response, "status": "queued", "background": True}
    answer = await start_background(
        request.app, queued, items, run, owner=owner, store_requested=payload.get("store") is not False
    )
    record.response_id = answer.get("id")
    if stream:
        return background_stream(request.app, answer["id"], owner=owner)
    return JSONBytes(answer)


async def list_models(request: Request) -> Response:
    return JSONBytes({"object": "list", "data": await _models(request)})


async def retrieve_model(request: Request) -> Response:
    model_id = request.path_params["model"]
    for entry in await _models(request):
        if entry["id"] == model_id:
            return JSONBytes(entry)
    if request.app.state.bridge.config.route(model_id) is None:
        return error_response(ApiError(404, f"The model '{model_id}' does not exist.", param="model",
                                       code="model_not_found"))  # fmt: skip
    return JSONBytes({"id": model_id, "object": "model", "created": int(time.time()), "owned_by": "upstream",
                      "supported_endpoints": [RESPONSES_ENDPOINT]})  # fmt: skip


async def _models(request: Request) -> list[dict[str, Any]]:
    """The upstreams' model lists merged, aliases included, first upstream wins on a duplicate id."""
    state: BridgeState = request.app.state.bridge
    token = request.scope.get(TOKEN_KEY)
    seen: set[str] = set()
    data: list[dict[str, Any]] = []
    now = int(time.time())

    def add(model_id: str, owned_by: str, created: Any = None, alias_of: str | None = None) -> None:
        if model_id in seen:
            return
        seen.add(model_id)
        entry: dict[str, Any] = {
            "id": model_id,
            "object": "model",
            "created": created if isinstance(created, int) else now,
            "owned_by": owned_by,
            "supported_endpoints": [RESPONSES_ENDPOINT],
        }
        if alias_of is not None:
            entry["alias_of"] = alias_of
        data.append(entry)

    async def fetch(client: UpstreamClient) -> list[dict[str, Any]]:
        return await client.list_models(token)

    upstreams = state.config.upstreams
    fetched = await asyncio.gather(
        *(fetch(state.clients[u.name]) if not u.models else _const([]) for u in upstreams)
    )
    for upstream, remote in zip(upstreams, fetched, strict=True):
        for alias, target in upstream.aliases.items():
            add(alias, upstream.name, alias_of=target)
        for name in upstream.models:
            add(name, upstream.name)
        if upstream.models:
            continue
        if upstream.prefix or upstream.accepts_any_model:
            for model in remote:
                add((upstream.prefix or "") + model["id"], str(model.get("owned_by") or upstream.name), model.get("created"))
    return data


async def _const(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return value


async def healthz(request: Request) -> Response:
    state: BridgeState = request.app.state.bridge
    if not state.ready or state.shutting_down:
        return JSONBytes({"status": "shutting_down" if state.shutting_down else "starting"}, status_code=503)
    return JSONBytes({"status": "ok"})


def _stored_routes() -> list[BaseRoute]:
    """The stored-response routes (server/stored.py), when that module exists."""
    try:
        from server import stored
    except ImportError:
        return []
    return list(stored.routes())


# ------------------------------------------------------------------------------------------- app


class BridgeApp(Starlette):
    """Starlette, keeping the server's own `send` in the scope: a stream's body messages skip the
    three middleware wrappers every send would otherwise pass through (its start message does not,
    so error handling and the access log still see the status)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[RAW_SEND_KEY] = send
        await super().__call__(scope, receive, send)


def _check_options(config: BridgeConfig) -> None:
    """Fail at startup, not on the first request, when a profile or override is not a valid option."""
    try:
        from translator.options import TranslatorOptions
    except ImportError:
        return
    for upstream in config.upstreams:
        try:
            TranslatorOptions.from_kwargs(**dict(upstream.options))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"upstream {upstream.name}: {exc}") from None


def create_app(config: BridgeConfig) -> Starlette:
    """The ASGI app for `config`. Upstream clients and the store open in the lifespan."""
    _check_options(config)
    state = BridgeState(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        restore_signals = _install_signal_hook(state)
        try:
            for upstream in config.upstreams:
                base_url = None
                if is_fixtures(upstream):
                    backend = FixtureBackend()
                    await backend.start()
                    state.fixture_backends.append(backend)
                    base_url = backend.base_url
                    log.info("upstream %s: serving the fixture backend at %s", upstream.name, base_url)
                state.clients[upstream.name] = UpstreamClient(upstream, config, base_url)
            state.store = await _open_store(config.store)
            app.state.store = state.store
            if state.store is not None and config.store_retention_days:
                from server.store import run_retention

                state.retention = asyncio.get_running_loop().create_task(
                    run_retention(state.store, config.store_retention_days)
                )
            state.ready = True
            yield
        finally:
            state.begin_shutdown()
            await _drain(state)
            if state.store is not None:
                with contextlib.suppress(ImportError):
                    from server.background import shutdown_background

                    await shutdown_background(app)
            restore_signals()
            if state.retention is not None:
                state.retention.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await state.retention
            for client in state.clients.values():
                await client.aclose()
            if state.store is not None:
                with contextlib.suppress(Exception):
                    await state.store.close()
            for backend in state.fixture_backends:
                await backend.stop()

    routes: list[BaseRoute] = [
        Route(RESPONSES_ENDPOINT, create_response, methods=["POST"]),
        Route(COMPACT_ENDPOINT, compact_response, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        *_stored_routes(),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: _http_exception,
        Exception: _unexpected,
    }
    app = BridgeApp(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.bridge = state
    state.app = app
    app.state.config = config
    app.state.store = None
    app.state.begin_shutdown = state.begin_shutdown
    app.add_middleware(BridgeMiddleware, config=config)
    return app


async def _drain(state: BridgeState) -> None:
    """Wait for in-flight streams to end (they are failed after the grace period)."""
    deadline = time.monotonic() + state.config.shutdown_grace + 5
    while state.streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def app_from_env() -> Starlette:
    """uvicorn factory (`server.app:app_from_env`, used for --workers N): config from the
    RESPONSES_BRIDGE_* environment, as `responses-bridge serve` left it for its workers."""
    from server.cli import config_from_env

    return create_app(config_from_env())
