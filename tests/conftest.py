"""Shared fixtures: the fixture chat backend and the bridge, each under a real uvicorn server.

- `backend_url`: the project's fixture chat backend (`fixtures.backend.create_app()`), base URL ending
  in `/v1` (session-scoped).
- `bridge_url`: the bridge (`server.app.create_app(config)`) in front of `backend_url`, base URL ending in
  `/v1`, ready for `openai.OpenAI(base_url=bridge_url, api_key="x")` (session-scoped; open, no API key;
  store `memory` when `server.store` is importable, else `none`).
- `make_bridge(**overrides)`: start another bridge with `BridgeConfig` fields overridden (for instance
  `api_keys=("k",)`, `keepalive_interval=0.2`, `timeouts=Timeouts(idle=1)`, `store="none"`); the keyword
  `upstream={...}` overrides fields of the single upstream (`models`, `aliases`, `profile`, `options`,
  `api_key`, ...). Returns a `BridgeHandle` (`.url` ending in `/v1`, `.root`, `.app`, `.config`); the
  server stops at the end of the test.
- `backend_requests` / `clear_backend_requests`: what the bridge sent upstream (the backend's log).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.servers import RunningServer, run_app


def _default_store() -> str:
    """Memory store when the storage module exists, so previous_response_id works in tests."""
    return "memory" if importlib.util.find_spec("server.store") is not None else "none"


def bridge_config(backend_url: str, **overrides: Any) -> Any:
    """A `BridgeConfig` with one upstream (`fixture`) at `backend_url`, fields overridden."""
    from server.config import BridgeConfig, Upstream

    upstream_overrides = overrides.pop("upstream", None) or {}
    upstream = Upstream(name="fixture", base_url=backend_url)
    if upstream_overrides:
        upstream = dataclasses.replace(upstream, **upstream_overrides)
    overrides.setdefault("upstreams", (upstream,))
    overrides.setdefault("store", _default_store())
    return BridgeConfig(**overrides)


@dataclass
class BridgeHandle:
    """A running bridge: `url` ends in `/v1` (for SDK clients), `root` is scheme://host:port."""

    url: str
    root: str
    app: Any
    config: Any
    server: RunningServer

    def stop(self) -> None:
        self.server.stop()


def start_bridge(config: Any) -> BridgeHandle:
    """Create the bridge app for `config` and serve it on a free loopback port."""
    from server.app import create_app
    from server.ws_protocol import WS_PROTOCOL

    app = create_app(config)
    running = run_app(app, ws=WS_PROTOCOL)  # the WebSocket protocol `serve` uses
    return BridgeHandle(url=running.url + "/v1", root=running.url, app=app, config=config, server=running)


@pytest.fixture(scope="session")
def backend_server() -> Iterator[RunningServer]:
    from fixtures.backend import create_app

    with run_app(create_app()) as running:
        yield running


@pytest.fixture(scope="session")
def backend_url(backend_server: RunningServer) -> str:
    return backend_server.url + "/v1"


@pytest.fixture(scope="session")
def bridge(backend_url: str) -> Iterator[BridgeHandle]:
    handle = start_bridge(bridge_config(backend_url))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="session")
def bridge_url(bridge: BridgeHandle) -> str:
    return bridge.url


@pytest.fixture
def make_bridge(backend_url: str) -> Iterator[Callable[..., BridgeHandle]]:
    started: list[BridgeHandle] = []

    def factory(**overrides: Any) -> BridgeHandle:
        handle = start_bridge(bridge_config(backend_url, **overrides))
        started.append(handle)
        return handle

    try:
        yield factory
    finally:
        for handle in reversed(started):
            handle.stop()


@pytest.fixture
def backend_requests(backend_server: RunningServer) -> Callable[[], list[dict[str, Any]]]:
    """Call it to get the requests the fixture backend received so far (its `/_fixture/requests`)."""

    def fetch() -> list[dict[str, Any]]:
        response = httpx.get(backend_server.url + "/_fixture/requests", timeout=10)
        response.raise_for_status()
        body = response.json()
        return body.get("requests", body) if isinstance(body, dict) else body

    return fetch


@pytest.fixture
def clear_backend_requests(backend_server: RunningServer) -> Callable[[], None]:
    def clear() -> None:
        httpx.delete(backend_server.url + "/_fixture/requests", timeout=10).raise_for_status()

    return clear
