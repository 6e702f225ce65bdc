"""Prometheus metrics (`prometheus-client`), opt-in: `--metrics`, `metrics = true`, `RESPONSES_BRIDGE_METRICS=1`.

What is measured, and each metric's labels, is listed in docs/metrics.md. Where the numbers come from:

- one `AccessRecord` per request (server/accesslog.py), observed when the request ends, by the
  middleware, with the status the client really got: requests, latency, time to first token, tokens;
- the event pump (server/pump.py) opens and closes the streams-in-flight gauge, so SSE streams and any
  other consumer of a pump count alike;
- the upstream clients and the store are wrapped once the lifespan opened them (`instrument`): every
  error an upstream client raises is an upstream error, every store call is timed by operation.

Label cardinality is bounded: `route` is the route's path template (`/v1/responses/{response_id}`,
never the raw path), `upstream` a configured name, `status` an HTTP status, `code` a known error code
or `other`, `operation` a store method name. `model` is a name configured for an upstream (its
`models` and `aliases`), or one learned from a request the upstream answered successfully, at most
`MODEL_LABEL_LIMIT` of those per process; any other name is `other`. A client inventing model names
therefore adds at most that many series, and only if the backend accepted its names.

Several worker processes (`serve --workers N`) are summed at each scrape: server/metrics_process.py.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from server.accesslog import AccessRecord
from server.auth import caller_token, check_key
from server.config import BridgeConfig
from server.errors import ApiError, error_response
from server.metrics_process import (
    MULTIPROC_ENV,
    MetricsServer,
    multiprocess_dir,
    scrape_registry,
    start_metrics_server,
)
from translator.events import RESPONSE_ERROR_CODES

__all__ = [
    "LATENCY_BUCKETS",
    "METRICS_PATH",
    "MODEL_LABEL_LIMIT",
    "BridgeMetrics",
    "MetricsRuntime",
    "ModelLabels",
]

METRICS_PATH = "/metrics"

#: Seconds: LLM answers take from tens of milliseconds (a cached short reply) to minutes (long reasoning).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
#: Store calls are local disk or a nearby database: a millisecond to a few seconds.
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

MODEL_LABEL_LIMIT = 64
"""Model names learned from successful requests (beyond the configured ones) per process."""
MODEL_NAME_MAX = 128
OTHER = "other"
UNMATCHED_ROUTE = "unmatched"

#: Error codes kept as they are in the `code` label (the bridge's own upstream codes, the OpenAI codes
#: backends commonly answer, and the codes a failed response may carry); any other code is `other`,
#: a missing one `http_<status>`.
KNOWN_ERROR_CODES = RESPONSE_ERROR_CODES | frozenset({
    "upstream_error", "upstream_timeout", "upstream_busy", "upstream_unavailable",
    "upstream_malformed_chunk", "upstream_too_large", "upstream_unsupported_encoding",
    "context_length_exceeded", "rate_limit_exceeded", "insufficient_quota", "invalid_api_key",
    "missing_api_key", "model_not_found", "server_error", "invalid_request_error", "invalid_value",
})  # fmt: skip
#: Codes a stream ends with for reasons of the bridge's or the client's own, not the backend's.
_BRIDGE_STREAM_CODES = frozenset({"store_unavailable", "server_shutting_down", "client_disconnected"})

_UNAUTHORISED = "Missing or invalid API key. Send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'."

class ModelLabels:
    """The `model` label of a request: bounded whatever names clients send (see the module docstring)."""

    def __init__(self, config: BridgeConfig, limit: int = MODEL_LABEL_LIMIT) -> None:
        self.configured = frozenset(
            name for upstream in config.upstreams for name in (*upstream.models, *upstream.aliases)
        )
        self.limit = limit
        self.learned: set[str] = set()

    def label(self, model: str | None, answered: bool) -> str:
        """`model` itself when configured or already learned; learned now when `answered` (the upstream
        accepted it) and there is room; otherwise `other`. No model (the request failed before one
        was routed) is the empty label."""
        if not model:
            return ""
        if model in self.configured or model in self.learned:
            return model
        if answered and len(self.learned) < self.limit and len(model) <= MODEL_NAME_MAX:
            self.learned.add(model)
            return model
        return OTHER


def error_code_label(code: str | None, status: int) -> str:
    if code is None:
        return f"http_{status}"
    return code if code in KNOWN_ERROR_CODES else OTHER


def route_label(scope: dict[str, Any]) -> str:
    """The path template of the route that served (or would have served) this request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    for candidate in getattr(app, "routes", ()):  # answered before routing (401): match it ourselves
        if isinstance(candidate, Route) and candidate.matches(scope)[0] is not Match.NONE:
            return candidate.path
    return UNMATCHED_ROUTE


class BridgeMetrics:
    """The metrics of one app. Each app has its own registry (so two apps in one process, as in tests,
    never share counts); under `--workers` the values live in the multiprocess files instead."""

    def __init__(self, config: BridgeConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.directory = multiprocess_dir()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.models = ModelLabels(config)
        r = self.registry
        self.requests = Counter("responses_bridge_requests", "HTTP requests answered, by route and status.",
                                ("method", "route", "status", "upstream", "model"), registry=r)  # fmt: skip
        self.duration = Histogram("responses_bridge_request_duration_seconds",
                                  "Whole-request latency, until the last byte of the answer (streams included).",
                                  ("method", "route", "upstream", "model"), buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.first_token = Histogram("responses_bridge_time_to_first_token_seconds",
                                     "From the request's arrival to the first output (stream: first delta; "
                                     "non-stream: the backend's whole answer).",
                                     ("upstream", "model", "stream"), buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.streams = Gauge("responses_bridge_streams_in_flight", "Translated streams open now.",
                             ("upstream",), multiprocess_mode="livesum", registry=r)  # fmt: skip
        self.input_tokens = Counter("responses_bridge_input_tokens", "Input tokens the backend reported.",
                                    ("upstream", "model"), registry=r)  # fmt: skip
        self.output_tokens = Counter("responses_bridge_output_tokens", "Output tokens the backend reported.",
                                     ("upstream", "model"), registry=r)  # fmt: skip
        self.upstream_errors = Counter("responses_bridge_upstream_errors",
                                       "Requests an upstream failed: its error answers, connection failures, "
                                       "timeouts, and streams it broke or ended with an error.",
                                       ("upstream", "code"), registry=r)  # fmt: skip
        self.store_seconds = Histogram("responses_bridge_store_operation_seconds",
                                       "Latency of one store call, by store method.",
                                       ("operation",), buckets=STORE_BUCKETS, registry=r)  # fmt: skip

    # ------------------------------------------------------------------------------- observing

    def observe(self, record: AccessRecord, scope: dict[str, Any]) -> None:
        """One finished request (called by the middleware with the record the access log writes)."""
        upstream = record.upstream or ""
        # a model no upstream serves (404 model_not_found) gets no model label: clients invent names
        model = self.models.label(record.model, answered=200 <= record.status < 300) if upstream else ""
        route = route_label(scope)
        self.requests.labels(record.method, route, str(record.status), upstream, model).inc()
        self.duration.labels(record.method, route, upstream, model).observe(time.perf_counter() - record.start)
        if record.first_token is not None and record.upstream is not None:
            self.first_token.labels(upstream, model, "true" if record.stream else "false").observe(
                record.first_token - record.start
            )
        if record.upstream is not None:
            if isinstance(record.input_tokens, int) and record.input_tokens > 0:
                self.input_tokens.labels(upstream, model).inc(record.input_tokens)
            if isinstance(record.output_tokens, int) and record.output_tokens > 0:
                self.output_tokens.labels(upstream, model).inc(record.output_tokens)
            # A stream that started (200) and then failed: the backend broke it or sent an error.
            # (One that never started failed in the upstream client, counted there.)
            code = record.error_code
            if record.stream and record.status == 200 and code is not None and code not in _BRIDGE_STREAM_CODES:
                self.upstream_errors.labels(upstream, error_code_label(code, 200)).inc()

    def stream_opened(self, upstream: str) -> None:
        self.streams.labels(upstream).inc()

    def stream_closed(self, upstream: str) -> None:
        self.streams.labels(upstream).dec()

    # ------------------------------------------------------------------------------ wrapping

    def instrument(self, state: Any) -> None:
        """Wrap the opened upstream clients and store (instance attributes, so their classes and every
        other app stay as they are)."""
        for name, client in state.clients.items():
            for method in ("complete", "open_stream"):
                if hasattr(client, method):
                    setattr(client, method, self._counting_errors(getattr(client, method), name))
        store = state.store
        if store is not None and getattr(store, "keeps_responses", True):
            for operation in _store_operations(store):
                setattr(store, operation, self._timed(getattr(store, operation), operation))

    def _counting_errors(self, call: Callable[..., Any], upstream: str) -> Callable[..., Any]:
        errors = self.upstream_errors

        @functools.wraps(call)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                return await call(*args, **kwargs)
            except ApiError as exc:
                errors.labels(upstream, error_code_label(exc.code, exc.status)).inc()
                raise

        return counted

    def _timed(self, call: Callable[..., Any], operation: str) -> Callable[..., Any]:
        histogram = self.store_seconds.labels(operation)

        @functools.wraps(call)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - start)

        return timed

    def lifespan(self, inner: Callable[[Any], Any], state: Any) -> Callable[[Any], Any]:
        """`inner` (the app's lifespan), then the wrapping once clients and store are open; at the end,
        under `--workers`, this process is marked dead so its live gauges stop counting."""

        @contextlib.asynccontextmanager
        async def run(app: Any) -> AsyncIterator[None]:
            async with inner(app):
                self.instrument(state)
                try:
                    yield
                finally:
                    if self.directory is not None:
                        prometheus_multiprocess.mark_process_dead(os.getpid(), self.directory)

        return run

    # ------------------------------------------------------------------------------- serving

    def exposition(self) -> bytes:
        return generate_latest(scrape_registry(self.registry, self.directory))

    async def endpoint(self, request: Request) -> Response:
        """`GET /metrics` on the bridge's own port: behind the API keys when keys are configured."""
        keys = self.config.api_keys
        if keys and not check_key(caller_token(request.scope["headers"]), keys):
            return error_response(ApiError(401, _UNAUTHORISED, code="invalid_api_key"))
        body = await run_in_threadpool(self.exposition)  # reading many workers' files is blocking I/O
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def routes(self) -> list[Route]:
        """`/metrics` on the main port, unless a separate `--metrics-port` serves it."""
        if self.config.metrics_port is not None:
            return []
        return [Route(METRICS_PATH, self.endpoint, methods=["GET"])]


def _store_operations(store: Any) -> list[str]:
    """The store's public coroutine methods (a fixed set per engine class), but open and close."""
    return [
        name
        for name, member in inspect.getmembers(type(store))
        if not name.startswith("_") and name not in ("open", "close") and inspect.iscoroutinefunction(member)
    ]


# ----------------------------------------------------------------------- the parent process (serve)


class MetricsRuntime:
    """What `serve` sets up for metrics in its own process, and undoes at exit: under `--workers N`
    the multiprocess directory the workers inherit (`PROMETHEUS_MULTIPROC_DIR`, a fresh temporary
    one, removed at the end; an operator's own is used as it is, and kept), and the separate
    `--metrics-port` listener."""

    def __init__(self, config: BridgeConfig, metrics: BridgeMetrics | None) -> None:
        self.directory: str | None = None
        self.own_directory = False
        self.listener: MetricsServer | None = None
        self.description = "off"
        if metrics is None:
            return
        if config.workers > 1:
            given = os.environ.get(MULTIPROC_ENV)
            if given:
                Path(given).mkdir(parents=True, exist_ok=True)
                self.directory = given
            else:
                self.directory = tempfile.mkdtemp(prefix="responses-bridge-metrics-")
                self.own_directory = True
                os.environ[MULTIPROC_ENV] = self.directory
        if config.metrics_port is None:
            self.description = f"GET {METRICS_PATH} on the bridge's port" + (
                " (API key required)" if config.api_keys else ""
            )
        else:
            try:
                self.listener = start_metrics_server(
                    config.metrics_host, config.metrics_port, metrics.registry, self.directory
                )
            except OSError:
                self.close()
                raise
            host = f"[{config.metrics_host}]" if ":" in config.metrics_host else config.metrics_host
            self.description = f"http://{host}:{self.listener.port}{METRICS_PATH} (no API key on this listener)"
        if self.directory is not None:
            self.description += f"; {config.workers} workers summed from {self.directory}"

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.own_directory and self.directory is not None:
            os.environ.pop(MULTIPROC_ENV, None)
            shutil.rmtree(self.directory, ignore_errors=True)
            self.own_directory = False


