"""The things the benchmark measures, and how each is installed and started.

Each target answers the same work: the direct backend answers chat-completions requests itself; the
bridges (this project, codex-relay, LiteLLM) answer the equivalent Responses request by calling that
same backend.  Request bodies are the smallest realistic ones.  Responses bodies come in two kinds:
``"store": false`` as Codex CLI sends it (nothing is written), and with no ``store`` field at all, as
the openai SDK, the Agents SDK and curl send them, so the Responses default applies: the response is
stored, and this bridge writes it to its store (a fresh SQLite file, or a fresh schema on the local
PostgreSQL server) before it answers.

Two reference targets need no bridge: the backend itself ("direct"), and the floor, a byte-copying
proxy written here (bench/floor_proxy.py), which is what moving the same bytes costs in Python.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from install import CODEX_RELAY, LITELLM, VenvSpec

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
WORK = BENCH / ".work"
PROMPT = "Write a few words."
#: the local PostgreSQL server (trust auth); each bridge start gets its own schema in it
PG_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_fresh = itertools.count(1)


def project_python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    import sys

    return str(venv) if venv.exists() else sys.executable


def chat_body(model: str, stream: bool) -> str:
    body: dict = {"model": model, "messages": [{"role": "user", "content": PROMPT}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body, separators=(",", ":"))


def responses_body(model: str, stream: bool, stored: bool = False) -> str:
    """``stored``: no ``store`` field (the Responses default, stored); else ``"store": false``."""
    body: dict = {"model": model, "input": PROMPT}
    if not stored:
        body["store"] = False
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


@dataclass
class Target:
    """One thing to measure: a label, how to reach it, how to start it."""

    key: str
    label: str
    kind: str  # "chat" (the backend itself) or "responses" (a bridge)
    argv: Callable[[int, str], list[str]]  # (port, upstream base URL) -> command line
    env: dict[str, str] = field(default_factory=dict)
    venv: VenvSpec | None = None
    ready_timeout: float = 60.0
    note: str = ""
    stored: bool = False  # Responses bodies without a `store` field (the default: stored)
    floor: bool = False  # a reference that does no translation (the byte-copying proxy)
    store_pids: Callable[[], list[int]] | None = None  # the store server's processes serving this target
    cleanup: Callable[[], None] | None = None  # drops what the target's starts created (schemas, files)

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.kind == "chat" else "/v1/responses"

    def body(self, model: str, stream: bool) -> str:
        return chat_body(model, stream) if self.kind == "chat" else responses_body(model, stream, self.stored)


def _bridge_argv(workers: int, store: Callable[[], str] | None = None) -> Callable[[int, str], list[str]]:
    """The bridge's command line; ``store`` makes a fresh store spec for each start."""

    def argv(port: int, upstream: str) -> list[str]:
        extra = ["--store", store()] if store is not None else []
        return [project_python(), "-m", "server", "serve", "--upstream", upstream,
                "--port", str(port), "--workers", str(workers), *extra]

    return argv


class FreshSQLite:
    """A new SQLite file under bench/.work for every start (the default store's engine and settings,
    only at a path of ours, so no run measures a file an earlier one filled)."""

    def __init__(self, name: str) -> None:
        self.dir = WORK / "stores" / name
        self.made: list[Path] = []

    def __call__(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{os.getpid()}-{next(_fresh)}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        self.made.append(path)
        return f"sqlite:///{path}"

    def cleanup(self) -> None:
        for path in self.made:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        self.made.clear()


class FreshSchema:
    """A new schema on the local PostgreSQL server for every start (``?schema=bench_<pid>_<n>``, the
    bridge creates it), dropped by ``cleanup`` with psql."""

    def __init__(self, dsn: str = PG_DSN) -> None:
        self.dsn = dsn
        self.made: list[str] = []

    def __call__(self) -> str:
        schema = f"bench_{os.getpid()}_{next(_fresh)}"
        self.made.append(schema)
        # application_name (passed through to the server by the driver) tags the bridge's connections,
        # so server_pids can find the database backends serving this bridge and no one else
        return f"{self.dsn}?schema={schema}&application_name={schema}"

    def server_pids(self) -> list[int]:
        """The PostgreSQL backend processes serving the latest start's connections."""
        if not self.made:
            return []
        ok, out = psql(self.dsn, f"SELECT pid FROM pg_stat_activity WHERE application_name = '{self.made[-1]}'",
                       timeout=10)
        return [int(x) for x in out.split()] if ok else []

    def cleanup(self) -> None:
        for schema in self.made:
            drop_schema(self.dsn, schema)
        self.made.clear()


def psql(dsn: str, sql: str, timeout: float = 60.0) -> tuple[bool, str]:
    """Run one SQL statement with the psql client (no driver in the benchmark's own process)."""
    exe = shutil.which("psql")
    if exe is None:
        return False, "psql not found"
    try:
        done = subprocess.run([exe, dsn, "-X", "-q", "-t", "-A", "-c", sql], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"psql timed out after {timeout:.0f} s"
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def drop_schema(dsn: str, schema: str) -> None:
    with contextlib.suppress(OSError):
        psql(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def postgres_reachable(dsn: str = PG_DSN) -> str | None:
    """None when the local PostgreSQL server answers, else why not."""
    ok, out = psql(dsn, "SELECT 1", timeout=10)
    return None if ok else out or "no answer"


def _floor_argv(port: int, upstream: str) -> list[str]:
    hostport = upstream.split("://", 1)[1].split("/", 1)[0]
    return [project_python(), str(BENCH / "floor_proxy.py"), "--port", str(port), "--upstream", hostport]


def _codex_relay_argv(port: int, upstream: str) -> list[str]:
    return [str(CODEX_RELAY.path("bin/codex-relay")), "--port", str(port), "--upstream", upstream,
            "--api-key", "bench"]


def litellm_config(upstream: str) -> Path:
    """LiteLLM's proxy config: each bench model routed through its Responses→chat bridge.

    ``use_chat_completions_api: true`` makes LiteLLM translate /v1/responses into chat completions
    for an ``openai/`` deployment instead of forwarding the Responses request natively.
    """
    WORK.mkdir(parents=True, exist_ok=True)
    lines = ["model_list:"]
    for model in ("bench-64", "bench-64p", "bench-512", "bench-stall"):
        lines += [
            f"  - model_name: {model}",
            "    litellm_params:",
            f"      model: openai/{model}",
            f'      api_base: "{upstream}"',
            "      api_key: bench",
            "      use_chat_completions_api: true",
        ]
    lines += ["litellm_settings:", "  set_verbose: false", "  turn_off_message_logging: true", ""]
    path = WORK / "litellm.yaml"
    path.write_text("\n".join(lines))
    return path


def _litellm_argv(port: int, upstream: str) -> list[str]:
    return [str(LITELLM.path("bin/litellm")), "--config", str(litellm_config(upstream)),
            "--port", str(port), "--host", "127.0.0.1"]


def backend_argv(port: int, procs: int) -> list[str]:
    return [project_python(), str(BENCH / "backend.py"), "--port", str(port), "--procs", str(procs)]


def all_targets(bridge_workers: list[int], stored_workers: list[int] | None = None) -> list[Target]:
    """Every target, in the order they are measured (references first, then this bridge, then peers)."""
    targets = [
        Target("direct", "direct backend", "chat", lambda port, upstream: [],
               note="the bench backend itself, answering chat completions"),
        Target("floor", "floor: byte-copying proxy", "chat", _floor_argv, floor=True,
               note="bench/floor_proxy.py: asyncio + uvloop, copies the backend's bytes, parses only framing"),
    ]
    for w in bridge_workers:
        targets.append(Target(f"bridge-w{w}", f"bridge w{w}, store:false (as Codex)", "responses",
                              _bridge_argv(w), env={"PYTHONPATH": str(REPO)},
                              note="this project: uvicorn + uvloop + httptools; bodies say \"store\": false"))
    for w in bridge_workers if stored_workers is None else stored_workers:
        sqlite = FreshSQLite(f"sqlite-w{w}")
        targets.append(Target(f"bridge-sqlite-w{w}", f"bridge w{w}, default store: SQLite", "responses",
                              _bridge_argv(w, sqlite), env={"PYTHONPATH": str(REPO)}, stored=True,
                              cleanup=sqlite.cleanup,
                              note="no store field (stored, the Responses default), a fresh SQLite file"))
        pg = FreshSchema()
        targets.append(Target(f"bridge-pg-w{w}", f"bridge w{w}, default store: PostgreSQL", "responses",
                              _bridge_argv(w, pg), env={"PYTHONPATH": str(REPO)}, stored=True,
                              store_pids=pg.server_pids, cleanup=pg.cleanup,
                              note="no store field (stored), a fresh schema on the local PostgreSQL 127.0.0.1:5432"))
    targets.append(Target("codex-relay", "codex-relay", "responses", _codex_relay_argv, venv=CODEX_RELAY,
                          note="Rust (axum + reqwest), from PyPI's prebuilt wheel"))
    targets.append(Target("litellm", "LiteLLM proxy", "responses", _litellm_argv, venv=LITELLM,
                          env={"LITELLM_LOCAL_MODEL_COST_MAP": "True",
                               "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"},
                          ready_timeout=180.0,
                          note="litellm[proxy], use_chat_completions_api: true, no master key, no database"))
    return targets
