"""The bridge's configuration: plain frozen dataclasses, loaded from TOML (stdlib tomllib) or flags.

Everything the server does differently per deployment lives here, explicitly, so a config file can be
read top to bottom and a test can build a `BridgeConfig(...)` by hand. Translator option names and
defaults are owned by `translator/options.py`; a profile (`server/profiles/<name>.toml`) is just a
named set of those options for one kind of backend, and an upstream may override any of them.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
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
    "config_from_env",
    "list_profiles",
    "load_config",
    "load_profile",
    "parse_config",
    "resolve_config",
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
    table = _expect(table, dict, "limits")
    unknown = set(table) - set(LIMIT_KEYS)
    if unknown:
        raise ConfigError(f"limits: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in _FLOAT_LIMITS:
            values[key] = float(_expect(value, (int, float), f"limits.{key}"))
        else:
            values[key] = int(_expect(value, int, f"limits.{key}"))
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


# --------------------------------------------------------------------------------------------------
# profiles


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load_profile(name: str) -> Profile:
    path = PROFILES_DIR / f"{name}.toml"
    if not name.replace("-", "").replace("_", "").isalnum() or not path.is_file():
        raise ConfigError(f"unknown profile {name!r}; available: {', '.join(list_profiles())}")
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"profile {name}: [options] must be a table")
    return Profile(name=name, description=str(data.get("description", "")), options=options)


def resolve_options(profile: str | None, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Profile options, then the upstream's own overrides on top."""
    options: dict[str, Any] = dict(load_profile(profile).options) if profile else {}
    options.update(overrides or {})
    return options


# --------------------------------------------------------------------------------------------------
# TOML


def _expect(value: Any, kind: type | tuple[type, ...], key: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{key} has the wrong type: {type(value).__name__}")
    return value


def _str_tuple(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    _expect(value, list, key)
    return tuple(str(_expect(v, str, key)) for v in value)


def _secret(table: Mapping[str, Any], key: str, where: str, env: Mapping[str, str]) -> str | None:
    """A secret given inline (`key`) or, better, named by environment variable (`key_env`)."""
    if f"{key}_env" in table:
        var = _expect(table[f"{key}_env"], str, f"{where}.{key}_env")
        if var not in env:
            raise ConfigError(f"{where}.{key}_env names {var}, which is not set")
        return env[var]
    value = table.get(key)
    return None if value is None else _expect(value, str, f"{where}.{key}")


_UPSTREAM_KEYS = {
    "name", "base_url", "api_key", "api_key_env", "models", "aliases", "prefix", "profile", "options",
    "headers", "context_window", "api",
}  # fmt: skip


def parse_upstream(table: Mapping[str, Any], index: int, env: Mapping[str, str]) -> Upstream:
    where = f"upstreams[{index}]"
    unknown = set(table) - _UPSTREAM_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    if "base_url" not in table:
        raise ConfigError(f"{where}.base_url is required")
    base_url = check_base_url(str(_expect(table["base_url"], str, f"{where}.base_url")), f"{where}.base_url")
    profile = table.get("profile")
    if profile is not None:
        _expect(profile, str, f"{where}.profile")
    options = _expect(table.get("options", {}), dict, f"{where}.options")
    aliases = _expect(table.get("aliases", {}), dict, f"{where}.aliases")
    headers = _expect(table.get("headers", {}), dict, f"{where}.headers")
    prefix = table.get("prefix")
    context_window = table.get("context_window")
    if context_window is not None and (_expect(context_window, int, f"{where}.context_window") <= 0):
        raise ConfigError(f"{where}.context_window must be a positive number of tokens")
    return Upstream(
        name=str(_expect(table.get("name", f"upstream{index}"), str, f"{where}.name")),
        base_url=base_url,
        api_key=_secret(table, "api_key", where, env),
        models=_str_tuple(table.get("models", []), f"{where}.models"),
        aliases={str(k): str(_expect(v, str, f"{where}.aliases.{k}")) for k, v in aliases.items()},
        prefix=None if prefix is None else str(_expect(prefix, str, f"{where}.prefix")),
        profile=profile,
        options=resolve_options(profile, options),
        headers={str(k): str(v) for k, v in headers.items()},
        context_window=context_window,
        api=str(_expect(table.get("api", "chat"), str, f"{where}.api")),
    )


_TOP_KEYS = {
    "upstreams", "api_keys", "api_keys_env", "store", "timeouts", "max_body_bytes", "keepalive_interval",
    "shutdown_grace", "log_format", "encryption_key", "encryption_key_env", "max_connections", "host",
    "port", "workers", "store_retention_days", "limits", "strict_params", "metrics", "metrics_port",
    "metrics_host", "websocket_connection_limit",
}  # fmt: skip


def parse_config(
    data: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> BridgeConfig:
    """Build a `BridgeConfig` from a parsed TOML document (unknown keys are errors: typos matter).

    `overrides` (BridgeConfig fields, from flags and environment) win over the file; they are applied
    before the config is checked, so a file that sets only `[timeouts]` works with `--upstream`."""
    env = os.environ if env is None else env
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(f"unknown top-level keys {sorted(unknown)}")
    upstream_tables = _expect(data.get("upstreams", []), list, "upstreams")
    upstreams = tuple(
        parse_upstream(_expect(t, dict, f"upstreams[{i}]"), i, env) for i, t in enumerate(upstream_tables)
    )
    kwargs: dict[str, Any] = {"upstreams": upstreams}
    if "api_keys_env" in data:
        var = _expect(data["api_keys_env"], str, "api_keys_env")
        kwargs["api_keys"] = _str_tuple(env.get(var, ""), "api_keys_env")
    elif "api_keys" in data:
        kwargs["api_keys"] = _str_tuple(data["api_keys"], "api_keys")
    timeouts = _expect(data.get("timeouts", {}), dict, "timeouts")
    bad = set(timeouts) - {"connect", "first_byte", "idle"}
    if bad:
        raise ConfigError(f"timeouts: unknown keys {sorted(bad)}")
    kwargs["timeouts"] = Timeouts(
        **{k: float(_expect(v, (int, float), f"timeouts.{k}")) for k, v in timeouts.items()}
    )
    for key in ("store", "log_format", "host", "metrics_host"):
        if key in data:
            kwargs[key] = _expect(data[key], str, key)
    for key in ("max_body_bytes", "max_connections", "port", "workers", "metrics_port"):
        if key in data:
            kwargs[key] = int(_expect(data[key], int, key))
    for key in ("keepalive_interval", "shutdown_grace", "store_retention_days", "websocket_connection_limit"):
        if key in data:
            kwargs[key] = float(_expect(data[key], (int, float), key))
    for key in ("strict_params", "metrics"):
        if key in data:
            kwargs[key] = _expect(data[key], bool, key)
    kwargs["encryption_key"] = _secret(data, "encryption_key", "config", env)
    if "limits" in data:
        kwargs["limits"] = parse_limits(data["limits"])
    kwargs.update(overrides or {})
    return BridgeConfig(**kwargs)


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> BridgeConfig:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return parse_config(data, env, overrides)


def single_upstream(
    base_url: str,
    api_key: str | None = None,
    profile: str | None = None,
    name: str = "default",
    setting: str = "--upstream",
) -> Upstream:
    """The upstream described by `--upstream URL [--upstream-key KEY] [--profile NAME]`."""
    return Upstream(
        name=name,
        base_url=check_base_url(base_url, setting),
        api_key=api_key or None,
        profile=profile,
        options=resolve_options(profile, None),
    )


def split_keys(values: Iterable[str]) -> tuple[str, ...]:
    """API keys from repeated flags and/or comma-separated env values."""
    return tuple(k.strip() for v in values for k in v.split(",") if k.strip())


# --------------------------------------------------------------------------------------------------
# flags and environment

ENV_PREFIX = "RESPONSES_BRIDGE_"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


@dataclass(frozen=True)
class Setting:
    """One `serve` setting given as a flag (`--name-with-dashes`) or as `RESPONSES_BRIDGE_<NAME>`.

    `field` is the BridgeConfig field it sets (None: handled by `resolve_config` itself), `cast` turns
    an environment string into the field's type."""

    name: str
    cast: Any = str
    field: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("upstream"),
    Setting("upstream_key"),
    Setting("upstream_key_file"),
    Setting("profile"),
    Setting("config"),
    Setting("api_key"),
    Setting("host", str, "host"),
    Setting("port", int, "port"),
    Setting("store", str, "store"),
    Setting("store_retention_days", float, "store_retention_days"),
    Setting("workers", int, "workers"),
    Setting("log_format", str, "log_format"),
    Setting("keepalive_interval", float, "keepalive_interval"),
    Setting("max_body_bytes", int, "max_body_bytes"),
    Setting("encryption_key", str, "encryption_key"),
    Setting("strict_params", _bool, "strict_params"),
    Setting("metrics", _bool, "metrics"),
    Setting("metrics_port", int, "metrics_port"),
    Setting("metrics_host", str, "metrics_host"),
    Setting("connect_timeout", float),
    Setting("first_byte_timeout", float),
    Setting("idle_timeout", float),
)
"""Every `serve` setting; the flag table in server/cli.py and the worker environment follow it."""

_BY_NAME = {s.name: s for s in SETTINGS}
_TIMEOUT_SETTINGS = {"connect_timeout": "connect", "first_byte_timeout": "first_byte", "idle_timeout": "idle"}


class _Sources:
    """Flag values over environment values, remembering which one a value came from."""

    def __init__(self, flags: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.flags = flags
        self.env = env

    def flag(self, name: str) -> Any:
        return self.flags.get(name)

    def env_value(self, name: str) -> str | None:
        return self.env.get(_BY_NAME[name].env) or None

    def get(self, name: str) -> tuple[Any, str]:
        """(value or None, the setting's name as the operator wrote it)."""
        setting = _BY_NAME[name]
        value = self.flag(name)
        if value is not None:
            return value, setting.flag
        value = self.env_value(name)
        return (value, setting.env) if value is not None else (None, setting.flag)

    def cast(self, name: str) -> Any:
        value, where = self.get(name)
        if value is None:
            return None
        setting = _BY_NAME[name]
        try:
            return setting.cast(value)
        except (TypeError, ValueError):
            kind = "boolean" if setting.cast is _bool else setting.cast.__name__
            raise ConfigError(f"{where}: not a valid {kind}: {value!r}") from None


def read_key_file(path: str, setting: str) -> str:
    """The key in `path` (surrounding whitespace and the trailing newline dropped)."""
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{setting}: {path} is not UTF-8 text") from None
    if not key:
        raise ConfigError(f"{setting}: {path} is empty")
    return key


def _upstream_key(sources: _Sources) -> str | None:
    """`--upstream-key` or `--upstream-key-file`; a flag beats the environment, both at one level is an error."""
    for level in (sources.flag, sources.env_value):
        key, key_file = level("upstream_key"), level("upstream_key_file")
        if key is not None and key_file is not None:
            raise ConfigError("give the upstream key once: --upstream-key or --upstream-key-file, not both")
        if key is not None:
            return str(key)
        if key_file is not None:
            where = "--upstream-key-file" if level == sources.flag else _BY_NAME["upstream_key_file"].env
            return read_key_file(str(key_file), where)
    return None


def resolve_config(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> BridgeConfig:
    """The config for `serve`: flags (by setting name; None = not given) over `RESPONSES_BRIDGE_*`
    environment over the config file (`config`) over defaults."""
    env = os.environ if env is None else env
    sources = _Sources(flags, env)
    config_file = sources.get("config")[0]
    upstream_url, upstream_where = sources.get("upstream")
    profile = sources.get("profile")[0]
    overrides: dict[str, Any] = {}
    if upstream_url:
        upstream = single_upstream(str(upstream_url), _upstream_key(sources), profile, setting=upstream_where)
        overrides["upstreams"] = (upstream,)
    elif profile:
        raise ConfigError("--profile applies to --upstream; in a config file, set profile per [[upstreams]]")
    keys = flags.get("api_key")
    if not keys and sources.env_value("api_key"):
        keys = [sources.env_value("api_key")]
    if keys:
        overrides["api_keys"] = split_keys([keys] if isinstance(keys, str) else keys)
    for setting in SETTINGS:
        if setting.field is not None:
            value = sources.cast(setting.name)
            if value is not None:
                overrides[setting.field] = value
    timeouts = {field: sources.cast(name) for name, field in _TIMEOUT_SETTINGS.items()}
    timeouts = {k: v for k, v in timeouts.items() if v is not None}
    if config_file:
        config = load_config(str(config_file), env, overrides)
    elif "upstreams" not in overrides:
        raise ConfigError("no upstream: pass --upstream URL (or --upstream fixtures), or --config FILE")
    else:
        config = BridgeConfig(**overrides)
    if timeouts:
        import dataclasses

        config = dataclasses.replace(config, timeouts=dataclasses.replace(config.timeouts, **timeouts))
    return config


def config_from_env(env: Mapping[str, str] | None = None) -> BridgeConfig:
    """The config a worker process builds from `RESPONSES_BRIDGE_*` alone (the parent `serve` exports
    its flags there for `--workers N`)."""
    return resolve_config({}, env)
