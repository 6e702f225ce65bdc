"""What `serve` checks before it answers a request: the store (opened once and closed, with its
directory checked first for SQLite) and the listening socket (bound here and handed to uvicorn).

Each failure is a `StartupError` whose message is one line naming the setting and the cause
(`serve` prints it and exits with status 2). Why apart from server/cli.py: the checks are the part
of start-up that touches the machine; the CLI only parses flags and calls them in order.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

from server.config import redact_url

__all__ = ["STORE_OPEN_TIMEOUT", "StartupError", "base_url", "bind_socket", "check_store"]


STORE_OPEN_TIMEOUT = 15.0


class StartupError(Exception):
    """A setting that cannot work on this machine; the message names the setting and the cause."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror or text}"
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0 and os.strerror(exc.errno) not in text:
        text = f"{os.strerror(exc.errno)}: {text}"
    return text if type(exc).__name__ in text else f"{text} ({type(exc).__name__})"


def _sqlite_path(store: Any) -> Path:
    return Path(store.path).expanduser().absolute()


def _check_sqlite_location(path: Path, spec: str) -> None:
    """The directory must exist and be writable: the store never creates directories on its own
    (`sqlite:///a/b.db` is relative to the working directory, a typo would land in a new folder)."""
    directory = path.parent
    if not directory.is_dir():
        hint = " (sqlite:///path is relative to the working directory; sqlite:////path is absolute)"
        raise StartupError(f"--store {spec}: directory {directory} does not exist{hint}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(f"--store {spec}: directory {directory} is not writable")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StartupError(f"--store {spec}: {path} is not readable and writable")


async def _open_and_close(store: Any) -> None:
    await asyncio.wait_for(store.open(), STORE_OPEN_TIMEOUT)
    await store.close()


def check_store(spec: str) -> str:
    """Open the store once and close it; a description for the log, or StartupError."""
    from server.store import MemoryStore, NullStore, StoreSpecError, StoreUnavailable, open_store

    shown = redact_url(spec)
    try:
        store = open_store(spec)
    except StoreSpecError as exc:
        raise StartupError(_one_line(exc)) from None
    if isinstance(store, NullStore):
        return "none: responses are not stored (previous_response_id and GET /v1/responses/{id} answer 400/404)"
    if isinstance(store, MemoryStore):
        return "memory: lost on exit and not shared between workers"
    if hasattr(store, "path"):  # SQLite
        path = _sqlite_path(store)
        _check_sqlite_location(path, spec)
        described, where = f"SQLite file {path}", f"{spec}: cannot open {path}"
    else:  # PostgreSQL (credentials redacted in the log and in the error)
        described, where = f"PostgreSQL {shown}", shown
    try:
        asyncio.run(_open_and_close(store))
    except TimeoutError:
        raise StartupError(f"--store {where}: no answer within {STORE_OPEN_TIMEOUT:g} s") from None
    except Exception as exc:  # any engine's failure (asyncpg missing, DNS, auth, sqlite) becomes one line
        if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None:
            exc = exc.__cause__  # the wrapper says "failed during open"; the engine's error says why
        raise StartupError(f"--store {where}: {_one_line(exc)}") from None
    return described


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a taken port is one clear error before anything is logged
    as listening. uvicorn serves on it (and shares it with its workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"--host {host} --port {port}: cannot listen: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/v1"
    if host in ("0.0.0.0", "::"):
        url += " (all interfaces: clients use this machine's address)"
    return url


# ------------------------------------------------------------------------------------------- serve
