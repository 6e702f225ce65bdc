"""The real bridge in its own process (so its memory can be measured), with `[limits]` set, served
by uvicorn with the bounded client protocol (server/http_protocol.py) when the code has one.

Run as a script: `python tests/support/bridge_process.py` reads its settings from the environment
(`HOSTILE_BRIDGE_*`, see `BridgeProcess`). `HOSTILE_BRIDGE_SRC` points at another checkout of the
bridge (e.g. an export of main), so the same hostile cases measure the code before a change.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

__all__ = ["BridgeProcess"]

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BridgeProcess:
    """`python tests/support/bridge_process.py` on a free port; `.pid`, `.url` (no /v1)."""

    def __init__(self, upstream: str, *, upstream_key: str, api_key: str, limits: dict[str, Any]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.src = os.environ.get("HOSTILE_BRIDGE_SRC") or str(REPO)
        env = {
            **os.environ,
            "HOSTILE_BRIDGE_UPSTREAM": upstream,
            "HOSTILE_BRIDGE_UPSTREAM_KEY": upstream_key,
            "HOSTILE_BRIDGE_API_KEY": api_key,
            "HOSTILE_BRIDGE_PORT": str(self.port),
            "HOSTILE_BRIDGE_LIMITS": json.dumps(limits),
            "HOSTILE_BRIDGE_SRC": self.src,
            "PYTHONPATH": self.src,
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            env=env,
            cwd=self.src,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited: {self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ''}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("bridge did not start")
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> BridgeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _main() -> None:
    src = os.environ["HOSTILE_BRIDGE_SRC"]
    if src not in sys.path:
        sys.path.insert(0, src)
    import uvicorn

    import server.config as config_module
    from server.app import create_app
    from server.config_file import single_upstream

    limits = json.loads(os.environ.get("HOSTILE_BRIDGE_LIMITS") or "{}")
    upstream = single_upstream(
        os.environ["HOSTILE_BRIDGE_UPSTREAM"], os.environ["HOSTILE_BRIDGE_UPSTREAM_KEY"]
    )
    kwargs: dict[str, Any] = {"upstreams": (upstream,), "api_keys": (os.environ["HOSTILE_BRIDGE_API_KEY"],),
                              "store": "memory"}  # fmt: skip
    has_limits = hasattr(config_module, "Limits")
    if has_limits:
        kwargs["limits"] = config_module.Limits(**limits)
    config = config_module.BridgeConfig(**kwargs)
    http: Any = "httptools"
    try:
        from server.http_protocol import bounded_protocol
    except ImportError:  # code from before the client-side limits
        pass
    else:
        http = bounded_protocol(config.limits)
    uvicorn.run(
        create_app(config), host="127.0.0.1", port=int(os.environ["HOSTILE_BRIDGE_PORT"]), loop="uvloop",
        http=http, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2,
    )  # fmt: skip


if __name__ == "__main__":
    _main()
