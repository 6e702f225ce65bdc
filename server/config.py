"""The bridge's configuration as plain frozen dataclasses: `BridgeConfig`, `Upstream`, `Timeouts`,
`Limits`, `Profile`, `Route`, and model → upstream routing (`BridgeConfig.route`).

Everything the server does differently per deployment lives here, explicitly, so a test can build a
`BridgeConfig(...)` by hand. Reading it from text is elsewhere: TOML files and profiles in
`server/config_file.py`, flags and environment variables in `server/settings.py`. Translator option
names and defaults are owned by `translator/options.py`; a profile (`server/profiles/<name>.toml`) is
just a named set of those options for one kind of backend, and an upstream may override any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_STORE",
    "PASSTHROUGH",
    "PROFILES_DIR",
    "BridgeConfig",
    "ConfigError",
    "Limits",
    "Profile",
    "Route",
    "Timeouts",
    "Upstream",
    "base_url_warnings",
    "check_base_url",
]

PASSTHROUGH = "passthrough"
"""Upstream `api_key` value meaning: forward the caller's own bearer token to the backend."""

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
"""Room for a few base64 images in `input_image` parts."""

DEFAULT_STORE = "sqlite:///./responses-bridge.db"
PROFILES_DIR = Path(__file__).with_name("profiles")
FIXTURES_UPSTREAM = "fixtures"
"""`--upstream fixtures`: serve the project's fixture chat backend in-process (no backend needed)."""

LOG_FORMATS = ("text", "json")
UPSTREAM_APIS = ("chat", "responses")
"""What an upstream speaks: Chat Completions (the default) or the Responses API."""


class ConfigError(ValueError):
    """A config file or flag that cannot be used; the message says which key and why."""


def expect(value: Any, kind: type | tuple[type, ...], key: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{key} has the wrong type: {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `first_byte` bounds the wait for the backend's response headers (a non-streaming
    answer is generated before them, so it is long); `idle` bounds the silence between two reads of
    a streamed body (a reasoning model may think for minutes before its first token)."""

    connect: float = 10.0
    first_byte: float = 600.0
    idle: float = 300.0

    def __post_init__(self) -> None:
        for name in ("connect", "first_byte", "idle"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"timeouts.{name} must be a positive number of seconds, got {getattr(self, name)!r}")


# --------------------------------------------------------------------------------------------------
# [limits]: ceilings against hostile peers (enforced by server/transport.py, server/upstream.py and
# server/http_protocol.py; what a client gets when one is hit is listed in docs/failure-behaviour.md)


@dataclass(frozen=True)
class Limits:
    """Ceilings on what one peer may cost the bridge, each with a safe default.

    Backend side (`upstream_*`): the response header block, the bytes of one answer (streamed or
    not), the size of a non-streamed JSON answer, and the output tokens of one answer (the
    translator's `max_output_tokens_ceiling`). Client side (`request_*`, checked before any
    API key): header block size and count, the time from connection open to the end of the headers,
    a minimum body rate averaged over a window, and the number of open connections. Request shape
    (`request_max_*`, checked after the API key): JSON objects and arrays in one body, counted on the
    raw bytes before parsing (parsing a million small objects holds the event loop for ~0.4 s and
    ~1 GB), then the lengths of `input` and `tools`, before any translation. Response shape: the
    output items (messages, reasoning, tool calls) one answer may hold (the translator's
    `max_output_items`)."""

    upstream_max_header_bytes: int = 64 * 1024
    upstream_max_answer_bytes: int = 64 * 1024 * 1024
    upstream_max_json_bytes: int = 32 * 1024 * 1024
    upstream_max_output_tokens: int = 262_144  # the translator's max_output_tokens_ceiling
    request_max_header_bytes: int = 64 * 1024
    request_max_headers: int = 100
    request_header_timeout: float = 10.0
    request_min_body_rate: int = 1024
    request_body_rate_window: float = 10.0
    max_client_connections: int = 1000
    request_max_json_containers: int = 100_000
    request_max_input_items: int = 20_000
    request_max_tools: int = 2_000
    response_max_output_items: int = 1024

    def __post_init__(self) -> None:
        for name in LIMIT_KEYS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"limits.{name} must be a positive number, got {value!r}")


LIMIT_KEYS = (
    "upstream_max_header_bytes", "upstream_max_answer_bytes", "upstream_max_json_bytes",
    "upstream_max_output_tokens",
    "request_max_header_bytes", "request_max_headers", "request_header_timeout", "request_min_body_rate",
    "request_body_rate_window", "max_client_connections", "request_max_json_containers",
    "request_max_input_items", "request_max_tools", "response_max_output_items",
)  # fmt: skip
_FLOAT_LIMITS = {"request_header_timeout", "request_body_rate_window"}


def parse_limits(table: Any) -> Limits:
    """The `[limits]` table: every key optional, unknown keys are errors."""
    table = expect(table, dict, "limits")
    unknown = set(table) - set(LIMIT_KEYS)
    if unknown:
        raise ConfigError(f"limits: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in _FLOAT_LIMITS:
            values[key] = float(expect(value, (int, float), f"limits.{key}"))
        else:
            values[key] = int(expect(value, int, f"limits.{key}"))
    return Limits(**values)


@dataclass(frozen=True)
class Profile:
    """A named set of translator options for one kind of backend (see server/profiles/*.toml)."""

    name: str
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Upstream:
    """One chat-completions backend.

    `base_url` ends in `/v1` (the bridge POSTs to `{base_url}/chat/completions`), or is `fixtures`.
    `api_key` is sent as `Authorization: Bearer`, or `passthrough` to forward the caller's token.
    Routing: a model named in `aliases` (alias → backend model), a model starting with `prefix` (the
    prefix is stripped), or a model in `models`. An upstream without `models` accepts any model not
    claimed by another upstream. `options` are the translator options after applying `profile`.
    `api` is what the backend speaks: `chat` (POSTs go to `{base_url}/chat/completions`) or
    `responses` (`{base_url}/responses`; chat clients are then served by translation, docs/reverse.md).
    """

    name: str
    base_url: str
    api_key: str | None = None
    models: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    prefix: str | None = None
    profile: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The backend model's context window in tokens, for `truncation: "auto"` (docs/conversations.md);
    #: None: learned from the backend's first `context_length_exceeded` answer instead.
    context_window: int | None = None
    api: str = "chat"

    def __post_init__(self) -> None:
        if self.api not in UPSTREAM_APIS:
            raise ConfigError(f"upstream {self.name}: api must be one of {', '.join(UPSTREAM_APIS)}, got {self.api!r}")

    @property
    def passthrough(self) -> bool:
        return self.api_key == PASSTHROUGH

    @property
    def accepts_any_model(self) -> bool:
        return not self.models and not self.aliases and not self.prefix


@dataclass(frozen=True)
class Route:
    """Where a request's model goes: the upstream and the model name the backend knows."""

    upstream: Upstream
    model: str


@dataclass(frozen=True)
class BridgeConfig:
    """Everything `create_app` needs. Build it by hand, from TOML (`load_config`) or from flags."""

    upstreams: tuple[Upstream, ...]
    api_keys: tuple[str, ...] = ()
    store: str = DEFAULT_STORE
    store_retention_days: float | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    keepalive_interval: float = 15.0
    shutdown_grace: float = 10.0
    log_format: str = "text"
    encryption_key: str | None = None
    max_connections: int = 1000
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    limits: Limits = field(default_factory=Limits)
    strict_params: bool = False
    """Reject a request naming a field the bridge does not know (OpenAI's 400 `unknown_parameter`)
    instead of logging a warning and dropping the field."""
    metrics: bool = False
    """Prometheus metrics (docs/metrics.md): `/metrics` on the main port behind the API keys, or on
    `metrics_host:metrics_port` when a port is given (a port alone turns metrics on)."""
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    #: Seconds a WebSocket connection may live (server/websocket.py); Open Responses says 60 minutes.
    websocket_connection_limit: float = 3600.0

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ConfigError("at least one upstream is required (--upstream URL or [[upstreams]])")
        names = [u.name for u in self.upstreams]
        if len(set(names)) != len(names):
            raise ConfigError(f"upstream names must be unique, got {names}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {LOG_FORMATS}, got {self.log_format!r}")
        if self.max_body_bytes <= 0 or self.keepalive_interval <= 0 or self.websocket_connection_limit <= 0:
            raise ConfigError("max_body_bytes, keepalive_interval and websocket_connection_limit must be positive")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port must be between 0 and 65535, got {self.metrics_port}")
        if self.metrics_port and self.metrics_port == self.port and self.metrics_host == self.host:
            raise ConfigError(f"metrics_port {self.metrics_port} is the bridge's own port; pick another")

    @property
    def metrics_enabled(self) -> bool:
        """Metrics are on when asked for, or when a metrics port is given."""
        return self.metrics or self.metrics_port is not None

    def route(self, model: str) -> Route | None:
        """The upstream serving `model`, or None (→ 404 model_not_found).

        Order: alias, then the longest matching prefix, then an explicit model list, then the first
        upstream that accepts any model."""
        for upstream in self.upstreams:
            target = upstream.aliases.get(model)
            if target is not None:
                return Route(upstream, target)
        best: Upstream | None = None
        for upstream in self.upstreams:
            if (
                upstream.prefix
                and model.startswith(upstream.prefix)
                and len(model) > len(upstream.prefix)
                and (best is None or len(upstream.prefix) > len(best.prefix or ""))
            ):
                best = upstream
        if best is not None:
            return Route(best, model[len(best.prefix or "") :])
        for upstream in self.upstreams:
            if model in upstream.models:
                return Route(upstream, model)
        for upstream in self.upstreams:
            if upstream.accepts_any_model:
                return Route(upstream, model)
        return None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every configured secret, so logs and error messages can be scrubbed of them."""
        values = [*self.api_keys, self.encryption_key or ""]
        values += [u.api_key or "" for u in self.upstreams if not u.passthrough]
        values += [_url_password(u.base_url) for u in self.upstreams]
        values += [v for u in self.upstreams for k, v in u.headers.items() if k.lower() in _SECRET_HEADERS]
        return tuple(v for v in values if len(v) >= 4)


_SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization"}


def _url_password(url: str) -> str:
    _scheme, sep, rest = url.partition("://")
    userinfo, at, _ = rest.partition("@") if sep else ("", "", "")
    if not at or "/" in userinfo:
        return ""
    return userinfo.partition(":")[2]


def redact_url(url: str) -> str:
    """`url` with any `user:password@` replaced, for logs."""
    scheme, sep, rest = url.partition("://")
    host_part, slash, path = rest.partition("/")
    if sep and "@" in host_part:
        host_part = "***@" + host_part.rsplit("@", 1)[1]
    return f"{scheme}{sep}{host_part}{slash}{path}" if sep else url


_BASE_URL_SCHEMES = ("http", "https")


def check_base_url(url: str, setting: str) -> str:
    """`url` without a trailing slash, or a ConfigError naming `setting` when no request could reach it.

    httpx refuses a URL without `http://` or `https://` on every request (UnsupportedProtocol), so a
    missing scheme is caught here, at start-up, instead of as a 502 on each call."""
    url = url.strip().rstrip("/")
    if url == FIXTURES_UPSTREAM:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _BASE_URL_SCHEMES:
        raise ConfigError(
            f"{setting}: {redact_url(url)!r} has no http:// or https:// scheme "
            f"(write e.g. http://{rest if sep else url})"
        )
    host = rest.partition("/")[0].rpartition("@")[2]
    if not host or host.startswith(":"):
        raise ConfigError(f"{setting}: {redact_url(url)!r} names no host")
    return url


def base_url_warnings(config: BridgeConfig) -> list[str]:
    """One line per upstream whose base URL looks wrong but may be intended (the bridge appends
    `/chat/completions`, and nearly every backend serves that under `/v1`)."""
    warnings = []
    for upstream in config.upstreams:
        url = upstream.base_url
        if url != FIXTURES_UPSTREAM and not url.endswith("/v1"):
            warnings.append(
                f"upstream {upstream.name}: base URL {redact_url(url)} does not end in /v1; requests go to "
                f"{redact_url(url)}/chat/completions (most backends serve /v1/chat/completions)"
            )
    return warnings


