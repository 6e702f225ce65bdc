"""`responses-bridge serve ...` and `responses-bridge check ...`.

Every `serve` flag has an environment fallback `RESPONSES_BRIDGE_<FLAG>` (API keys comma-separated),
so a container can be configured without a command line. Precedence: flag, then environment, then
the config file (`--config`), then defaults. `--upstream` replaces the config file's upstreams with
one upstream named `default`. The resolution itself lives in `server.settings.resolve_config`.

`serve` checks everything it can before it answers a request (server/startup.py): the config, the upstream URLs, the
store (opened once and closed) and the listening socket (bound here and handed to uvicorn). Each
failure is one line on stderr naming the setting and the cause, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.config import FIXTURES_UPSTREAM, BridgeConfig, ConfigError, base_url_warnings, redact_url
from server.config_file import list_profiles
from server.settings import SETTINGS, config_from_env, resolve_config
from server.startup import StartupError, base_url, bind_socket, check_store

__all__ = ["build_config", "logging_config", "main", "version", "worker_app"]

log = logging.getLogger("responses_bridge")

TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Seconds the start-up check waits for the store to open (an unreachable database host)."""


def version() -> str:
    """The installed distribution's version, or pyproject.toml's when run from a source tree."""
    from importlib import metadata

    try:
        return metadata.version("responses-bridge")
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    try:
        with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as fh:
            return str(tomllib.load(fh)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--upstream", metavar="URL",
        help="chat backend base URL ending in /v1 (e.g. http://127.0.0.1:11434/v1), or 'fixtures' for the "
             "built-in fixture backend [RESPONSES_BRIDGE_UPSTREAM]")
    add("--upstream-key", metavar="KEY",
        help="API key sent to the backend, or 'passthrough' to forward the caller's. Visible to other "
             "local users in `ps`: prefer RESPONSES_BRIDGE_UPSTREAM_KEY or --upstream-key-file "
             "[RESPONSES_BRIDGE_UPSTREAM_KEY]")
    add("--upstream-key-file", metavar="PATH",
        help="read the backend API key from this file [RESPONSES_BRIDGE_UPSTREAM_KEY_FILE]")
    add("--profile", metavar="NAME", help=f"backend profile: {', '.join(list_profiles())} [RESPONSES_BRIDGE_PROFILE]")
    add("--host", help="bind address (default 127.0.0.1) [RESPONSES_BRIDGE_HOST]")
    add("--port", type=int, help="port (default 8080) [RESPONSES_BRIDGE_PORT]")
    add("--api-key", action="append", metavar="KEY",
        help="require this key from clients (repeatable) [RESPONSES_BRIDGE_API_KEY, comma-separated]")
    add("--store", metavar="SPEC",
        help="none, memory, sqlite:///path.db (relative to the working directory), sqlite:////abs/path.db or "
             "postgresql://... (default sqlite:///./responses-bridge.db) [RESPONSES_BRIDGE_STORE]")
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
        help="secret for reasoning carried in encrypted_content [RESPONSES_BRIDGE_ENCRYPTION_KEY]")
    add("--strict-params", action="store_true", default=None,
        help="reject requests naming an unknown field (OpenAI's 400 unknown_parameter) instead of "
             "logging and dropping it [RESPONSES_BRIDGE_STRICT_PARAMS=1]")
    add("--metrics", action="store_true", default=None,
        help="serve Prometheus metrics at GET /metrics, behind --api-key when keys are set (docs/metrics.md) "
             "[RESPONSES_BRIDGE_METRICS=1]")
    add("--metrics-port", type=int, metavar="PORT",
        help="serve the metrics on a listener of their own instead (no API key; implies --metrics) "
             "[RESPONSES_BRIDGE_METRICS_PORT]")
    add("--metrics-host", metavar="HOST",
        help="address of the --metrics-port listener (default 127.0.0.1) [RESPONSES_BRIDGE_METRICS_HOST]")
    add("--connect-timeout", type=float, metavar="SECONDS",
        help="backend connect timeout (default 10) [RESPONSES_BRIDGE_CONNECT_TIMEOUT]")
    add("--first-byte-timeout", type=float, metavar="SECONDS",
        help="wait for the backend's response headers (default 600) [RESPONSES_BRIDGE_FIRST_BYTE_TIMEOUT]")
    add("--idle-timeout", type=float, metavar="SECONDS",
        help="silence allowed between two reads of a backend stream (default 300) "
             "[RESPONSES_BRIDGE_IDLE_TIMEOUT]")  # fmt: skip


def build_config(args: argparse.Namespace, env: dict[str, str] | os._Environ[str] | None = None) -> BridgeConfig:
    """Flags over environment over config file over defaults (see `server.settings.resolve_config`)."""
    return resolve_config({s.name: getattr(args, s.name, None) for s in SETTINGS}, env)


def _parser(check_arguments: bool = True) -> argparse.ArgumentParser:
    """The command line. `check_arguments=False` (what `main` passes for `serve`) leaves the `check`
    subcommand's own options out, so serving never imports the conformance kit (3 MB of a server
    process that does not use it)."""
    parser = argparse.ArgumentParser(
        prog="responses-bridge",
        description="Serve the OpenAI Responses API (/v1/responses) in front of a Chat Completions backend.",
    )
    parser.add_argument("--version", action="version", version=f"responses-bridge {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bridge")
    _add_serve_arguments(serve)
    check = sub.add_parser("check", help="conformance check of a /v1/responses server")
    if check_arguments:
        from conformance import check as check_module

        check_module.add_arguments(check)
    return parser


def _export_env(args: argparse.Namespace) -> None:
    """Workers are separate processes building their config with `config_from_env`: hand them the flags."""
    for setting in SETTINGS:
        value = getattr(args, setting.name, None)
        if value is None:
            continue
        os.environ[setting.env] = ",".join(value) if isinstance(value, list) else str(value)


# ------------------------------------------------------------------------------------------ logging


def logging_config(log_format: str, level: str = "INFO") -> dict[str, Any]:
    """The bridge's and uvicorn's loggers on stderr in the chosen format, as a `dictConfig` document.

    It is handed to uvicorn as `log_config`, so every `--workers` process applies it when it starts
    (a worker is a fresh interpreter: logging set up in the parent does not reach it)."""
    formatter: dict[str, Any] = (
        {"()": "server.accesslog._JsonFormatter"} if log_format == "json"
        else {"()": "server.accesslog.TextFormatter", "fmt": TEXT_LOG_FORMAT}
    )
    logger = {"handlers": ["stderr"], "level": level, "propagate": False}
    handler = {
        "class": "logging.StreamHandler", "formatter": "bridge", "stream": "ext://sys.stderr",
        "filters": ["not_fixture_server"],
    }  # fmt: skip
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"not_fixture_server": {"()": "server.cli.NotFixtureServer"}},
        "formatters": {"bridge": formatter},
        "handlers": {"stderr": handler},
        "loggers": {**{name: dict(logger) for name in ("responses_bridge", "uvicorn", "uvicorn.error")},
                    # the bridge writes its own access line; uvicorn's would be a second one per request
                    "uvicorn.access": {"handlers": [], "propagate": False}},
    }


class NotFixtureServer(logging.Filter):
    """Drops uvicorn's informational lines from the in-process fixture backend's server (its thread
    is named `fixture-backend`): its "Shutting down" and "Finished server process" would read as the
    bridge's. Its warnings and errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno < logging.WARNING
            and record.name.startswith("uvicorn")
            and record.threadName == FIXTURE_THREAD
        )


FIXTURE_THREAD = "fixture-backend"


class _KeepLogging:
    """Re-applies the bridge's logging once the app has started.

    The in-process fixture backend (`--upstream fixtures`) is a second uvicorn server started in the
    app's lifespan; its `uvicorn.Config` reconfigures the shared `uvicorn.error` logger (level
    warning), which would swallow the bridge's own uvicorn lines from then on."""

    def __init__(self, app: Any, log_config: dict[str, Any]) -> None:
        self.app = app
        self.log_config = log_config

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_restoring(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                logging.config.dictConfig(self.log_config)
            await send(message)

        await self.app(scope, receive, send_restoring)


def worker_app() -> Any:
    """uvicorn factory for `--workers N` (`server.cli:worker_app`): the config from the environment
    `serve` exported, with the same logging as the parent."""
    from server.app import create_app
    from server.http_protocol import configure

    config = config_from_env()
    configure(config.limits)  # the worker's protocol class is named by path, so it is told the limits here
    return _KeepLogging(create_app(config), logging_config(config.log_format))


def serve(args: argparse.Namespace) -> int:
    from server.app import create_app
    from server.auth import is_loopback

    config = build_config(args)
    app = create_app(config)  # checks every upstream's translator options, also for --workers
    store = check_store(config.store)
    sock = bind_socket(config.host, config.port)
    port = int(sock.getsockname()[1])
    metrics = _start_metrics(config, app, sock)
    # Only now, with nothing left that can fail, does anything reach the log.
    log_config = logging_config(config.log_format)
    logging.config.dictConfig(log_config)
    if args.upstream_key is not None:
        log.warning(
            "--upstream-key on the command line is visible to every local user (ps); use "
            "RESPONSES_BRIDGE_UPSTREAM_KEY or --upstream-key-file PATH"
        )  # fmt: skip
    if not config.api_keys and not is_loopback(config.host):
        log.warning(
            "no API key configured and bound to %s: anyone who can reach this address can use the "
            "backend. Pass --api-key KEY (or RESPONSES_BRIDGE_API_KEY).", config.host
        )  # fmt: skip
    for warning in base_url_warnings(config):
        log.warning("%s", warning)
    for upstream in config.upstreams:
        where = "the built-in fixture backend" if upstream.base_url == FIXTURES_UPSTREAM else redact_url(upstream.base_url)
        log.info("upstream %s → %s (profile %s)", upstream.name, where, upstream.profile or "none")
    log.info("store: %s", store)
    log.info("metrics: %s", metrics.description)
    log.info("listening; base URL for clients: %s", base_url(config.host, port))

    import uvicorn

    from server.http_protocol import bounded_protocol
    from server.ws_protocol import WS_PROTOCOL

    common: dict[str, Any] = {
        "host": config.host,
        "port": port,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "http": "httptools",
        "ws": WS_PROTOCOL,  # a WebSocket turn in flight at shutdown gets the grace period too
        "log_config": log_config,
        "access_log": False,
        "timeout_graceful_shutdown": config.shutdown_grace + 5,
        "timeout_keep_alive": 30,
        "proxy_headers": False,
    }
    try:
        if config.workers > 1:
            from uvicorn.supervisors import Multiprocess

            _export_env(args)
            os.environ["RESPONSES_BRIDGE_PORT"] = str(port)  # the bound one, should --port be 0
            common["http"] = "server.http_protocol:BoundedHttpToolsProtocol"
            worker_config = uvicorn.Config("server.cli:worker_app", factory=True, workers=config.workers, **common)
            Multiprocess(worker_config, sockets=[sock]).run()
            return 0
        common["http"] = bounded_protocol(config.limits)  # header size/count/time, body rate, connections
        uvicorn.Server(uvicorn.Config(_KeepLogging(app, log_config), **common)).run(sockets=[sock])
    finally:
        sock.close()
        metrics.close()
    return 0


class _MetricsOff:
    """`MetricsRuntime`'s face when metrics are off (nothing to set up or undo)."""

    description = "off"

    def close(self) -> None:
        pass


def _start_metrics(config: BridgeConfig, app: Any, sock: socket.socket) -> Any:
    """The metrics' share of this process (server/metrics.py): the workers' shared directory, the
    `--metrics-port` listener. A port that cannot be bound is a start-up failure like the main one."""
    metrics = getattr(app.state, "metrics", None)
    if metrics is None:  # off: prometheus_client is never imported
        return _MetricsOff()
    from server.metrics import MetricsRuntime

    try:
        return MetricsRuntime(config, metrics)
    except OSError as exc:
        sock.close()
        raise StartupError(
            f"--metrics-host {config.metrics_host} --metrics-port {config.metrics_port}: cannot listen: "
            f"{exc.strerror or exc}"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(check_arguments=argv[:1] != ["serve"])
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        from conformance import check as check_module

        return int(check_module.run(args))
    except (ConfigError, StartupError) as exc:
        print(f"responses-bridge: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
