"""`responses-bridge serve ...` and `responses-bridge check ...`.

Every `serve` flag has an environment fallback `RESPONSES_BRIDGE_<FLAG>` (API keys comma-separated),
so a container can be configured without a command line. Precedence: flag, then environment, then
the config file (`--config`), then defaults. `--upstream` replaces the config file's upstreams with
one upstream named `default`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from server.config import (
    FIXTURES_UPSTREAM,
    BridgeConfig,
    ConfigError,
    list_profiles,
    load_config,
    redact_url,
    single_upstream,
    split_keys,
)

__all__ = ["build_config", "config_from_env", "main"]

ENV_PREFIX = "RESPONSES_BRIDGE_"
log = logging.getLogger("responses_bridge")

# flag dest → environment variable suffix
_ENV = {
    "upstream": "UPSTREAM",
    "upstream_key": "UPSTREAM_KEY",
    "host": "HOST",
    "port": "PORT",
    "api_key": "API_KEY",
    "store": "STORE",
    "config": "CONFIG",
    "workers": "WORKERS",
    "profile": "PROFILE",
    "log_format": "LOG_FORMAT",
    "keepalive_interval": "KEEPALIVE_INTERVAL",
    "max_body_bytes": "MAX_BODY_BYTES",
    "encryption_key": "ENCRYPTION_KEY",
    "store_retention_days": "STORE_RETENTION_DAYS",
}


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--upstream", metavar="URL",
        help="chat backend base URL ending in /v1 (e.g. http://127.0.0.1:11434/v1), or 'fixtures' for the "
             "built-in fixture backend [RESPONSES_BRIDGE_UPSTREAM]")
    add("--upstream-key", metavar="KEY",
        help="API key sent to the backend, or 'passthrough' to forward the caller's [RESPONSES_BRIDGE_UPSTREAM_KEY]")
    add("--profile", metavar="NAME", help=f"backend profile: {', '.join(list_profiles())} [RESPONSES_BRIDGE_PROFILE]")
    add("--host", help="bind address (default 127.0.0.1) [RESPONSES_BRIDGE_HOST]")
    add("--port", type=int, help="port (default 8080) [RESPONSES_BRIDGE_PORT]")
    add("--api-key", action="append", metavar="KEY",
        help="require this key from clients (repeatable) [RESPONSES_BRIDGE_API_KEY, comma-separated]")
    add("--store", metavar="SPEC",
        help="none, memory, sqlite:///path.db or postgresql://... (default sqlite:///./responses-bridge.db) "
             "[RESPONSES_BRIDGE_STORE]")
    add("--store-retention-days", type=float, metavar="DAYS",
        help="purge stored responses older than this, hourly (default: keep) [RESPONSES_BRIDGE_STORE_RETENTION_DAYS]")
    add("--config", metavar="FILE", help="TOML config file (see docs/server.md) [RESPONSES_BRIDGE_CONFIG]")
    add("--workers", type=int, help="worker processes (default 1) [RESPONSES_BRIDGE_WORKERS]")
    add("--log-format", choices=("text", "json"), help="log format (default text) [RESPONSES_BRIDGE_LOG_FORMAT]")
    add("--keepalive-interval", type=float, metavar="SECONDS",
        help="SSE keep-alive comment after this much silence (default 15) [RESPONSES_BRIDGE_KEEPALIVE_INTERVAL]")
    add("--max-body-bytes", type=int, metavar="N",
        help="request body limit (default 32 MiB) [RESPONSES_BRIDGE_MAX_BODY_BYTES]")
    add("--encryption-key", metavar="SECRET",
        help="secret for reasoning carried in encrypted_content [RESPONSES_BRIDGE_ENCRYPTION_KEY]")  # fmt: skip


def _value(args: argparse.Namespace, dest: str, env: dict[str, str] | os._Environ[str]) -> Any:
    value = getattr(args, dest, None)
    if value is not None:
        return value
    return env.get(ENV_PREFIX + _ENV[dest]) or None


def build_config(args: argparse.Namespace, env: dict[str, str] | os._Environ[str] | None = None) -> BridgeConfig:
    """Flags over environment over config file over defaults."""
    env = os.environ if env is None else env
    config_file = _value(args, "config", env)
    upstream_url = _value(args, "upstream", env)
    overrides: dict[str, Any] = {}
    if upstream_url:
        overrides["upstreams"] = (
            single_upstream(upstream_url, _value(args, "upstream_key", env), _value(args, "profile", env)),
        )
    elif _value(args, "profile", env) and not config_file:
        raise ConfigError("--profile needs --upstream")
    keys = args.api_key if args.api_key else ([env[ENV_PREFIX + "API_KEY"]] if env.get(ENV_PREFIX + "API_KEY") else [])
    if keys:
        overrides["api_keys"] = split_keys(keys)
    for dest, cast in (("host", str), ("port", int), ("store", str), ("workers", int), ("log_format", str),
                       ("keepalive_interval", float), ("max_body_bytes", int), ("encryption_key", str),
                       ("store_retention_days", float)):  # fmt: skip
        value = _value(args, dest, env)
        if value is not None:
            try:
                overrides[dest] = cast(value)
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX}{_ENV[dest]}: not a valid {cast.__name__}: {value!r}") from None
    if config_file:
        import dataclasses

        base = load_config(config_file, env)
        return dataclasses.replace(base, **overrides)
    if "upstreams" not in overrides:
        raise ConfigError("no upstream: pass --upstream URL (or --upstream fixtures), or --config FILE")
    return BridgeConfig(**overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="responses-bridge",
        description="Serve the OpenAI Responses API (/v1/responses) in front of a Chat Completions backend.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bridge")
    _add_serve_arguments(serve)
    check = sub.add_parser("check", help="conformance check of a /v1/responses server")
    try:
        from conformance import check as check_module
    except ImportError:
        check.set_defaults(check_missing=True)
    else:
        check_module.add_arguments(check)
    return parser


def config_from_env() -> BridgeConfig:
    """The config a worker process builds from RESPONSES_BRIDGE_* (see `_export_env`)."""
    parser = argparse.ArgumentParser()
    _add_serve_arguments(parser)
    return build_config(parser.parse_args([]))


def _export_env(args: argparse.Namespace) -> None:
    """Workers are separate processes importing `server.app:app_from_env`: hand them the flags."""
    for dest, suffix in _ENV.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        os.environ[ENV_PREFIX + suffix] = ",".join(value) if isinstance(value, list) else str(value)


def serve(args: argparse.Namespace) -> int:
    from server.accesslog import configure_logging
    from server.auth import is_loopback

    config = build_config(args)
    configure_logging(config.log_format)
    if not config.api_keys and not is_loopback(config.host):
        log.warning(
            "no API key configured and bound to %s: anyone who can reach this address can use the "
            "backend. Pass --api-key KEY (or RESPONSES_BRIDGE_API_KEY).", config.host
        )  # fmt: skip
    for upstream in config.upstreams:
        where = "the built-in fixture backend" if upstream.base_url == FIXTURES_UPSTREAM else redact_url(upstream.base_url)
        log.info("upstream %s → %s (profile %s)", upstream.name, where, upstream.profile or "none")

    import uvicorn

    common: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "http": "httptools",
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": config.shutdown_grace + 5,
        "timeout_keep_alive": 30,
        "proxy_headers": False,
    }
    log.info("listening on http://%s:%d/v1/responses", config.host, config.port)
    if config.workers > 1:
        _export_env(args)
        uvicorn.run("server.app:app_from_env", factory=True, workers=config.workers, **common)
        return 0
    from server.app import create_app

    uvicorn.run(create_app(config), **common)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        if getattr(args, "check_missing", False):
            print("responses-bridge check is not available in this build", file=sys.stderr)
            return 2
        from conformance import check as check_module

        return int(check_module.run(args))
    except ConfigError as exc:
        print(f"responses-bridge: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
