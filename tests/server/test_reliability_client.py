"""Client faults: a client that hangs up, one that reads slowly, a body over the limit, a
body trickled in or never finished.

The backend here is a small raw-ASGI app built for the purpose (`ProbeBackend`): it records, on its
own clock, when the bridge's connection to it goes away and how many bytes it managed to push, which
is what "the upstream connection is closed" and "backpressure" mean when seen from the backend. The
slow-reader test runs the bridge as a real process (`BridgeProcess`, also used by the load, security
and durability suites) so its resident memory can be measured on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import BridgeHandle, bridge_config, start_bridge
from tests.support.assertions import assert_openai_error
from tests.support.servers import RunningServer, free_port, poll, run_app

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
DISCONNECT_BOUND = 0.1
"""The upstream connection is closed within 100 ms of the client hanging up."""


# --------------------------------------------------------------------------- the bridge as a process


class BridgeProcess:
    """`python -m server serve ...` on a free loopback port, its output captured to a file.

    A real process so that its RSS, open file descriptors and threads (/proc/<pid>) are its own, and
    so that it can be killed with SIGKILL."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, startup_timeout: float = 30.0) -> None:
        self.port = free_port()
        self.args = args
        self.log_file = tempfile.NamedTemporaryFile(prefix="bridge-", suffix=".log", delete=False)  # noqa: SIM115
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONSES_BRIDGE_")}
        base_env.update(env or {})
        base_env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=base_env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = self.root + "/v1"
        deadline = time.monotonic() + startup_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}: {self.logs()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.root + "/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"bridge did not become healthy: {self.logs()[-2000:]}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def logs(self) -> str:
        return Path(self.log_file.name).read_bytes().decode("utf-8", "replace")

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def rss_kib(self) -> int:
        return self._status("VmRSS")

    def threads(self) -> int:
        return self._status("Threads")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (the durability test's crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log_file.close()

    def __enter__(self) -> BridgeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self.log_file.name)


# ----------------------------------------------------------------------------- the probe backend


def _chunk(content: str, finish: str | None = None) -> bytes:
    delta: dict[str, Any] = {"content": content} if content else {}
    chunk = {"id": "chatcmpl-probe", "object": "chat.completion.chunk", "created": 1, "model": "probe",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class ProbeBackend:
    """A chat backend that streams `count` chunks of `chunk_chars` characters, `pause` seconds apart
    (`hang_before_headers`: never answers), and records what the bridge did to it.

    `sent` counts body bytes whose `send` returned (uvicorn's flow control makes `send` wait while
    the socket is full, so a stalled `sent` is backpressure); `disconnected_at` is the monotonic time
    at which uvicorn reported `http.disconnect`, i.e. the bridge closed the connection. `reset()`
    starts the counts afresh for the next request: an earlier request's handler may still be running
    (after a disconnect uvicorn's `send` returns at once, so a handler that has not yet seen the
    disconnect runs through its loop), and it no longer touches them."""

    def __init__(
        self, *, count: int = 1000, chunk_chars: int = 8, pause: float = 0.0, hang_before_headers: bool = False,
        whole_after: float | None = None,
    ) -> None:  # fmt: skip
        self.count = count
        self.chunk = _chunk("x" * chunk_chars)
        self.pause = pause
        self.hang_before_headers = hang_before_headers
        self.whole_after = whole_after
        self.sent = 0
        self.requests = 0
        self.started = threading.Event()
        self.disconnected_at: float | None = None
        self.finished = False
        self.generation = 0

    def reset(self) -> None:
        self.generation += 1
        self.sent, self.finished = 0, False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].endswith("/models"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": b'{"object":"list","data":[]}'})
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        self.requests += 1
        generation = self.generation
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.disconnected_at = time.monotonic()
                    gone.set()
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            self.started.set()
            if self.hang_before_headers:
                await gone.wait()
                return
            if self.whole_after is not None:  # a slow non-streamed answer
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(gone.wait(), self.whole_after)
                if gone.is_set():
                    return
                body = {"id": "chatcmpl-probe", "object": "chat.completion", "created": 1, "model": "probe",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "late answer"}}]}  # fmt: skip
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json")]})  # fmt: skip
                await send({"type": "http.response.body", "body": orjson.dumps(body)})
                return
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
            await send({"type": "http.response.body", "body": _chunk(""), "more_body": True})
            for _ in range(self.count):
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": self.chunk, "more_body": True})
                if generation == self.generation:
                    self.sent += len(self.chunk)
                if self.pause:
                    await asyncio.sleep(self.pause)
            await send({"type": "http.response.body", "body": _chunk("", "stop") + b"data: [DONE]\n\n"})
            if generation == self.generation:
                self.finished = True
        except OSError:
            return
        finally:
            watcher.cancel()


@contextlib.contextmanager
def probe(backend: ProbeBackend) -> Iterator[RunningServer]:
    with run_app(backend, timeout_graceful_shutdown=2) as running:
        yield running


def _raw_request(port: int, body: dict[str, Any], *, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    payload = orjson.dumps(body)
    head = (f"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode()  # fmt: skip
    sock.sendall(head + payload)
    return sock


def _read_until(sock: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
        if len(data) > limit:
            break
    return data


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


# ---------------------------------------------------------------------------------- disconnects


@pytest.mark.parametrize("how", ["close", "reset"])
def test_disconnect_mid_stream_closes_upstream_within_100ms(how: str) -> None:
    """The client hangs up mid-stream (a FIN, or an RST): the backend sees its connection dropped
    within 100 ms, measured on the backend's side."""
    backend = ProbeBackend(count=100_000, pause=0.01)
    with probe(backend) as server:
        handle = start_bridge(bridge_config(server.url + "/v1", store="none"))
        try:
            delays = []
            for _ in range(3):
                backend.disconnected_at = None
                sock = _raw_request(_port(handle.root), {"model": "probe", "input": "hi", "stream": True})
                head = _read_until(sock, b"response.output_text.delta")
                assert b" 200 " in head.split(b"\r\n", 1)[0], head[:200]
                if how == "reset":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                hung_up = time.monotonic()
                sock.close()
                assert poll(lambda: backend.disconnected_at is not None, timeout=5), "upstream never closed"
                assert backend.disconnected_at is not None
                delays.append(backend.disconnected_at - hung_up)
            assert max(delays) < DISCONNECT_BOUND, f"upstream closed after {[round(d, 3) for d in delays]} s"
            assert poll(lambda: not handle.app.state.bridge.streams, timeout=5), "stream still registered"
            assert httpx.get(handle.root + "/healthz", timeout=5).status_code == 200
        finally:
            handle.stop()


def test_disconnect_while_waiting_for_backend_headers_cancels_upstream() -> None:
    """The client gives up before the backend has answered anything (a model thinking before its
    first byte): the bridge must drop the upstream request too, not wait for first_byte (600 s)."""
    backend = ProbeBackend(hang_before_headers=True)
    with probe(backend) as server:
        handle = start_bridge(bridge_config(server.url + "/v1", store="none"))
        try:
            sock = _raw_request(_port(handle.root), {"model": "probe", "input": "hi", "stream": True})
            assert backend.started.wait(5)
            time.sleep(0.2)
            hung_up = time.monotonic()
            sock.close()
            assert poll(lambda: backend.disconnected_at is not None, timeout=3), (
                "the bridge kept its backend request open after the client left"
            )
            assert backend.disconnected_at is not None
            assert backend.disconnected_at - hung_up < 1.0
        finally:
            handle.stop()


def test_disconnect_during_non_streaming_request_cancels_upstream() -> None:
    """A non-streaming client that hangs up while the backend generates: the backend request is
    cancelled instead of running to completion for nobody."""
    backend = ProbeBackend(whole_after=20.0)
    with probe(backend) as server:
        handle = start_bridge(bridge_config(server.url + "/v1", store="none"))
        try:
            sock = _raw_request(_port(handle.root), {"model": "probe", "input": "hi"})
            assert backend.started.wait(5)
            time.sleep(0.2)
            hung_up = time.monotonic()
            sock.close()
            assert poll(lambda: backend.disconnected_at is not None, timeout=3), (
                "the bridge kept its backend request open after the client left"
            )
            assert backend.disconnected_at is not None
            assert backend.disconnected_at - hung_up < 1.0
        finally:
            handle.stop()


# ----------------------------------------------------------------------------------- slow reader

FLOOD_CHUNK_CHARS = 16 * 1024
FLOOD_CHUNKS = 16 * 1024  # 256 MiB of content: far more than every socket buffer on the path together
FLOOD_BYTES = FLOOD_CHUNKS * (FLOOD_CHUNK_CHARS + 150)


def test_slow_reader_backpressure_bounds_memory(tmp_path: Path) -> None:
    """A client that stops reading a huge stream: the bridge stops reading the backend (it cannot push
    more than the socket buffers hold) and its memory stays bounded; once the client hangs up, the
    backend is released. Without backpressure the bridge would buffer the whole 256 MiB."""
    backend = ProbeBackend(count=FLOOD_CHUNKS, chunk_chars=FLOOD_CHUNK_CHARS)
    # backpressure is under test, not the output-token ceiling (256 MiB of text is ~67M estimated tokens)
    config = tmp_path / "bridge.toml"
    config.write_text("[limits]\nupstream_max_output_tokens = 1073741824\n")
    with (
        probe(backend) as server,
        BridgeProcess("--config", str(config), "--upstream", server.url + "/v1", "--store", "none") as bridge,
    ):
        warm = httpx.post(bridge.url + "/responses", json={"model": "probe", "input": "warm-up"}, timeout=60)
        # the probe streams 256 MiB of SSE whatever it is asked: a whole answer that size is refused
        assert assert_openai_error(warm, 502)["code"] == "upstream_too_large"
        backend.reset()  # the warm-up's handler may still be running through its loop
        rss_before = bridge.rss_kib()
        sock = _raw_request(
            bridge.port, {"model": "probe", "input": "flood", "stream": True}, rcvbuf=64 * 1024
        )
        try:
            head = sock.recv(4096)
            assert b" 200 " in head.split(b"\r\n", 1)[0], head[:200]
            # wait until the backend is stalled: no progress for 1.5 s
            last, still_since, deadline = -1, time.monotonic(), time.monotonic() + 40
            while time.monotonic() < deadline:
                time.sleep(0.25)
                if backend.sent != last:
                    last, still_since = backend.sent, time.monotonic()
                elif time.monotonic() - still_since > 1.5:
                    break
            stalled_at = backend.sent
            rss_during = bridge.rss_kib()
            assert not backend.finished, "the whole stream was pulled from the backend: no backpressure"
            assert stalled_at < FLOOD_BYTES // 4, f"backend pushed {stalled_at >> 20} MiB before stalling"
            growth_mib = (rss_during - rss_before) / 1024
            print(f"backend stalled after {stalled_at / 2**20:.1f} MiB; bridge RSS +{growth_mib:.1f} MiB")
            assert growth_mib < 64, f"bridge RSS grew by {growth_mib:.0f} MiB for a client reading nothing"
            # reading a little lets the backend move again: the stream is alive, only paced
            got, sock_deadline = 0, time.monotonic() + 30
            sock.settimeout(10)
            while backend.sent == stalled_at and time.monotonic() < sock_deadline:
                part = sock.recv(1 << 20)
                assert part, "the bridge closed a paced stream"
                got += len(part)
            assert backend.sent > stalled_at, f"backend not resumed after the client read {got >> 20} MiB"
            print(f"backend resumed after the client read {got / 2**20:.1f} MiB")
        finally:
            sock.close()
        assert poll(lambda: backend.disconnected_at is not None, timeout=5), "backend not released"
        ok = httpx.get(bridge.root + "/healthz", timeout=10)
        assert ok.status_code == 200


# ------------------------------------------------------------------------------------------ bodies


@pytest.fixture
def small_body_bridge(backend_url: str) -> Iterator[BridgeHandle]:
    from server.config import Timeouts

    handle = start_bridge(bridge_config(backend_url, store="none", max_body_bytes=4096,
                                        timeouts=Timeouts(connect=2, first_byte=10, idle=1.0)))  # fmt: skip
    try:
        yield handle
    finally:
        handle.stop()


def test_body_over_limit_is_413(small_body_bridge: BridgeHandle) -> None:
    url = small_body_bridge.url + "/responses"
    big = {"model": "fixture-scripted", "input": "@text " + "x" * 8000}
    # declared by Content-Length
    error = assert_openai_error(httpx.post(url, json=big, timeout=10), 413)
    assert error["code"] == "request_too_large" and "4096" in error["message"]

    # chunked: no Content-Length, the limit is enforced while reading
    def pieces() -> Iterator[bytes]:
        data = orjson.dumps(big)
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    error = assert_openai_error(httpx.post(url, content=pieces(), headers={"content-type": "application/json"},
                                     timeout=10), 413)  # fmt: skip
    assert error["code"] == "request_too_large"
    # a just-under-limit body is served
    fits = {"model": "fixture-scripted", "input": "@text " + "y" * 3000}
    assert len(orjson.dumps(fits)) < 4096
    ok = httpx.post(url, json=fits, timeout=10)
    assert ok.status_code == 200 and ok.json()["status"] == "completed"


def test_huge_declared_length_is_refused_without_reading(small_body_bridge: BridgeHandle) -> None:
    """`Content-Length: 10 GB` with a few bytes sent: 413 at once, not a wait for the rest."""
    sock = socket.create_connection(("127.0.0.1", _port(small_body_bridge.root)), timeout=10)
    try:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 10000000000\r\n\r\n{\"model\":")  # fmt: skip
        data = _read_until(sock, b"}}")
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert orjson.loads(body)["error"]["code"] == "request_too_large"


def test_trickled_body_is_served(small_body_bridge: BridgeHandle) -> None:
    """A slow but steady client (bytes trickled over ~1.5 s): the request is served normally."""
    payload = orjson.dumps({"model": "fixture-scripted", "input": "@text trickled in"})
    sock = socket.create_connection(("127.0.0.1", _port(small_body_bridge.root)), timeout=20)
    try:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode())  # fmt: skip
        for i in range(0, len(payload), 4):
            sock.sendall(payload[i : i + 4])
            time.sleep(1.5 / (len(payload) / 4))
        data = b""
        while True:
            part = sock.recv(65536)
            if not part:
                break
            data += part
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:300]
    assert orjson.loads(body)["output"][0]["content"][0]["text"] == "trickled in"


def test_stalled_body_times_out_with_openai_error(small_body_bridge: BridgeHandle) -> None:
    """A client that sends part of its body and then nothing (slowloris): the bridge gives up after
    its idle timeout (1 s here) with 408 `request_timeout` in OpenAI's shape and frees the connection,
    instead of holding it forever."""
    sock = socket.create_connection(("127.0.0.1", _port(small_body_bridge.root)), timeout=15)
    try:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 500\r\n\r\n{\"model\": \"fixture-scripted\",")  # fmt: skip
        started = time.monotonic()
        try:
            data = _read_until(sock, b"}}")
        except TimeoutError:
            data = b""
        waited = time.monotonic() - started
    finally:
        sock.close()
    assert data, f"no answer after {waited:.1f}s: a stalled body holds the connection forever"
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"408", head
    error = orjson.loads(body)["error"]
    assert error == {"message": "The request body stalled for more than 1 seconds.", "type": "invalid_request_error",
                     "param": None, "code": "request_timeout"}
    assert waited < 10
