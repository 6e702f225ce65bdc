"""Flags and environment variables: the `SETTINGS` table and `resolve_config` (flags over environment
over a config file over defaults), and `config_from_env` for uvicorn workers.

Why a table: one row per setting gives its flag, its `RESPONSES_BRIDGE_*` variable, its type and
where it lands in `BridgeConfig`, so `server/cli.py` builds its parser from the same rows this module
resolves, and a setting cannot exist as a flag but not as a variable. Every setting: docs/server.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import BridgeConfig, ConfigError
from server.config_file import load_config, single_upstream, split_keys

__all__ = ["ENV_PREFIX", "SETTINGS", "Setting", "config_from_env", "read_key_file", "resolve_config"]

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
