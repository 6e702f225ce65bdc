"""The Starlette app, assembled: routes, error handlers, the middleware, the lifespan.

Each piece lives in a module of its own (docs/architecture.md): `server.responses` (`POST
/v1/responses`), `server.models`, `server.stored` (stored responses), `server.state` (shared state,
lifespan, health), `server.middleware` (auth, access log), `server.errors` (the error shape),
`server.metrics` (Prometheus, when on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from server import conversations, stored
from server.chat import create_chat_completion
from server.compact import COMPACT_ENDPOINT, compact_response
from server.config import BridgeConfig, ConfigError
from server.errors import error_response, handle_http_exception, handle_unexpected
from server.middleware import BridgeMiddleware
from server.models import list_models, retrieve_model
from server.responses import create_response
from server.scope import CHAT_ENDPOINT, OWNER_KEY, RAW_SEND_KEY, RESPONSES_ENDPOINT
from server.state import BridgeState, healthz, lifespan
from server.websocket import responses_websocket
from translator.options import TranslatorOptions

__all__ = ["OWNER_KEY", "BridgeMiddleware", "app_from_env", "create_app", "error_response"]


def create_app(config: BridgeConfig) -> Starlette:
    """The ASGI app for `config`. Upstream clients and the store open in the lifespan."""
    _check_options(config)
    state = BridgeState(config)
    metrics = None
    if config.metrics_enabled:  # imported only then: prometheus_client is ~1 MB a server without metrics never needs
        from server.metrics import BridgeMetrics

        metrics = BridgeMetrics(config)
    routes: list[BaseRoute] = [
        Route(RESPONSES_ENDPOINT, create_response, methods=["POST"]),
        Route(CHAT_ENDPOINT, create_chat_completion, methods=["POST"]),
        WebSocketRoute(RESPONSES_ENDPOINT, responses_websocket),
        Route(COMPACT_ENDPOINT, compact_response, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        *stored.routes(),
        *conversations.routes(),
        *(metrics.routes() if metrics is not None else ()),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: handle_http_exception,
        Exception: handle_unexpected,
    }
    run = lifespan(state) if metrics is None else metrics.lifespan(lifespan(state), state)
    app = BridgeApp(routes=routes, lifespan=run, exception_handlers=handlers)
    app.state.metrics = metrics  # server/cli.py serves it on --metrics-port
    app.state.bridge = state
    app.state.config = config
    app.state.store = None  # set by the lifespan; server/stored.py and server/background.py read it
    app.state.begin_shutdown = state.begin_shutdown
    state.app = app
    app.add_middleware(BridgeMiddleware, config=config, metrics=metrics)
    return app


class BridgeApp(Starlette):
    """Starlette, keeping the server's own `send` in the scope: a stream's body messages skip the
    middleware wrappers every send would otherwise pass through (its start message does not, so
    error handling and the access log still see the status)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[RAW_SEND_KEY] = send
        await super().__call__(scope, receive, send)


def _check_options(config: BridgeConfig) -> None:
    """Fail at startup, not on the first request, when a profile or override is not a valid option."""
    for upstream in config.upstreams:
        try:
            TranslatorOptions.from_kwargs(**dict(upstream.options))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"upstream {upstream.name}: {exc}") from None


def app_from_env() -> Starlette:
    """uvicorn factory (`server.app:app_from_env`, used for --workers N): config from the
    RESPONSES_BRIDGE_* environment, as `responses-bridge serve` left it for its workers."""
    from server.http_protocol import configure
    from server.settings import config_from_env

    config = config_from_env()
    configure(config.limits)  # the worker's protocol class is named by path, so it is told the limits here
    return create_app(config)
