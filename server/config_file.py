"""The bridge's configuration read from files: a TOML config (`load_config`, `parse_config`) and the
shipped backend profiles (`server/profiles/<name>.toml`: `list_profiles`, `load_profile`).

Why apart from `server/config.py`: that module is the shape of a configuration (frozen dataclasses a
test can build by hand); this one turns text into it. Unknown keys are errors, every value's type is
checked with the key's dotted name in the message, and secrets may be read from the environment
(`api_key_env`, `api_keys_env`, `encryption_key_env`) so a config file can be committed.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from server.config import (
    PROFILES_DIR,
    BridgeConfig,
    ConfigError,
    Profile,
    Timeouts,
    Upstream,
    check_base_url,
    expect,
    parse_limits,
)

__all__ = ["list_profiles", "load_config", "load_profile", "parse_config", "parse_upstream", "resolve_options", "single_upstream", "split_keys"]

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


def _str_tuple(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    expect(value, list, key)
    return tuple(str(expect(v, str, key)) for v in value)


def _secret(table: Mapping[str, Any], key: str, where: str, env: Mapping[str, str]) -> str | None:
    """A secret given inline (`key`) or, better, named by environment variable (`key_env`)."""
    if f"{key}_env" in table:
        var = expect(table[f"{key}_env"], str, f"{where}.{key}_env")
        if var not in env:
            raise ConfigError(f"{where}.{key}_env names {var}, which is not set")
        return env[var]
    value = table.get(key)
    return None if value is None else expect(value, str, f"{where}.{key}")


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
    base_url = check_base_url(str(expect(table["base_url"], str, f"{where}.base_url")), f"{where}.base_url")
    profile = table.get("profile")
    if profile is not None:
        expect(profile, str, f"{where}.profile")
    options = expect(table.get("options", {}), dict, f"{where}.options")
    aliases = expect(table.get("aliases", {}), dict, f"{where}.aliases")
    headers = expect(table.get("headers", {}), dict, f"{where}.headers")
    prefix = table.get("prefix")
    context_window = table.get("context_window")
    if context_window is not None and (expect(context_window, int, f"{where}.context_window") <= 0):
        raise ConfigError(f"{where}.context_window must be a positive number of tokens")
    return Upstream(
        name=str(expect(table.get("name", f"upstream{index}"), str, f"{where}.name")),
        base_url=base_url,
        api_key=_secret(table, "api_key", where, env),
        models=_str_tuple(table.get("models", []), f"{where}.models"),
        aliases={str(k): str(expect(v, str, f"{where}.aliases.{k}")) for k, v in aliases.items()},
        prefix=None if prefix is None else str(expect(prefix, str, f"{where}.prefix")),
        profile=profile,
        options=resolve_options(profile, options),
        headers={str(k): str(v) for k, v in headers.items()},
        context_window=context_window,
        api=str(expect(table.get("api", "chat"), str, f"{where}.api")),
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
    upstream_tables = expect(data.get("upstreams", []), list, "upstreams")
    upstreams = tuple(
        parse_upstream(expect(t, dict, f"upstreams[{i}]"), i, env) for i, t in enumerate(upstream_tables)
    )
    kwargs: dict[str, Any] = {"upstreams": upstreams}
    if "api_keys_env" in data:
        var = expect(data["api_keys_env"], str, "api_keys_env")
        kwargs["api_keys"] = _str_tuple(env.get(var, ""), "api_keys_env")
    elif "api_keys" in data:
        kwargs["api_keys"] = _str_tuple(data["api_keys"], "api_keys")
    timeouts = expect(data.get("timeouts", {}), dict, "timeouts")
    bad = set(timeouts) - {"connect", "first_byte", "idle"}
    if bad:
        raise ConfigError(f"timeouts: unknown keys {sorted(bad)}")
    kwargs["timeouts"] = Timeouts(
        **{k: float(expect(v, (int, float), f"timeouts.{k}")) for k, v in timeouts.items()}
    )
    for key in ("store", "log_format", "host", "metrics_host"):
        if key in data:
            kwargs[key] = expect(data[key], str, key)
    for key in ("max_body_bytes", "max_connections", "port", "workers", "metrics_port"):
        if key in data:
            kwargs[key] = int(expect(data[key], int, key))
    for key in ("keepalive_interval", "shutdown_grace", "store_retention_days", "websocket_connection_limit"):
        if key in data:
            kwargs[key] = float(expect(data[key], (int, float), key))
    for key in ("strict_params", "metrics"):
        if key in data:
            kwargs[key] = expect(data[key], bool, key)
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
