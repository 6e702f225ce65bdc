"""Metrics under `responses-bridge serve` as real processes: with `--workers 2` the counts summed across
the workers are exact, the streams gauge forgets a killed worker and the shared directory is removed;
the separate `--metrics-port` listener, and its start-up failure."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
Samples = list[tuple[str, dict[str, str], float]]


class Bridge:
    def __init__(self, args: list[str], tmp: Path) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RESPONSES_BRIDGE_", "PROMETHEUS_"))}
        env.update({"PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), "RESPONSES_BRIDGE_PORT": str(self.port)})
        self.proc = subprocess.Popen([sys.executable, "-m", "server", "serve", *args], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        self.root = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stop()
            try:
                if httpx.get(self.root + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the bridge did not become healthy")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode("utf-8", "replace")


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[Bridge] = []

    def factory(args: list[str]) -> Bridge:
        bridge = Bridge(args, tmp_path)
        started.append(bridge)
        bridge.wait_ready()
        return bridge

    yield factory
    for bridge in started:
        bridge.stop()


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(response.text) for s in f.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and all(ls.get(k) == w for k, w in labels.items()))


def file_pids(directory: Path, prefix: str) -> set[int]:
    return {int(m.group(1)) for p in directory.iterdir() if (m := re.match(rf"{prefix}_(\d+)\.db$", p.name))}


def shared_directory(tmp: Path) -> Path:
    found = list(tmp.glob("responses-bridge-metrics-*"))
    assert len(found) == 1, found
    return found[0]


def post(root: str, body: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(timeout=30) as http:  # a new connection each time, so both workers take some
        response = http.post(root + "/v1/responses", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_two_workers_sum_exactly_on_the_metrics_port(spawn: Any, tmp_path: Path) -> None:
    metrics_port = free_port()
    bridge = spawn(["--upstream", "fixtures", "--workers", "2", "--store", "none", "--metrics-port", str(metrics_port)])
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    assert httpx.get(bridge.root + "/metrics", timeout=10).status_code == 404  # only on its own port
    directory = shared_directory(tmp_path)
    sent, tokens_out = 0, 0
    while sent < 8 or len(file_pids(directory, "counter")) < 2:  # until both workers have answered some
        assert sent < 400, "one worker took every connection"
        tokens_out += post(bridge.root, {"model": "fixture-scripted", "input": f"@text n{sent}"})["usage"]["output_tokens"]
        sent += 1
    with httpx.Client(timeout=30) as http:
        streamed = http.post(bridge.root + "/v1/responses",
                             json={"model": "fixture-scripted", "input": "@text s", "stream": True})  # fmt: skip
    assert "response.completed" in streamed.text

    samples = scrape(metrics_url)
    assert len(file_pids(directory, "counter")) >= 2
    ok = {"route": "/v1/responses", "status": "200", "upstream": "default", "model": "fixture-scripted"}
    assert value(samples, "responses_bridge_requests_total", method="POST", **ok) == sent + 1
    assert value(samples, "responses_bridge_request_duration_seconds_count", route="/v1/responses") == sent + 1
    assert value(samples, "responses_bridge_time_to_first_token_seconds_count", stream="true") == 1
    assert value(samples, "responses_bridge_output_tokens_total", model="fixture-scripted") >= tokens_out > 0
    assert value(samples, "responses_bridge_streams_in_flight") == 0

    # A worker killed with a stream open: its live gauge stops counting, its counters stay.
    before = value(samples, "responses_bridge_requests_total", method="POST", **ok)
    with httpx.Client(timeout=30) as http, http.stream(
        "POST", bridge.root + "/v1/responses", json={"model": "chaos:stall", "input": "hi", "stream": True}
    ) as stall:
        chunks = stall.iter_raw()
        assert b"response.created" in next(chunks)
        assert value(scrape(metrics_url), "responses_bridge_streams_in_flight") == 1
        # the workers that ever opened a stream write a live gauge (the parent writes none); one holds it
        holders = {pid for pid in file_pids(directory, "gauge_livesum") if _alive(pid)}
        assert holders
        for pid in holders:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20  # the kill is asynchronous; the next scrapes must see it
        while value(after := scrape(metrics_url), "responses_bridge_streams_in_flight") != 0:
            assert time.monotonic() < deadline, "a killed worker's stream is still counted"
            time.sleep(0.1)
        assert value(after, "responses_bridge_requests_total", method="POST", **ok) == before

    err = bridge.stop()
    assert f"metrics: http://127.0.0.1:{metrics_port}/metrics" in err, err
    assert not directory.exists(), "the shared directory is removed at exit"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_answer_metrics_on_the_main_port(spawn: Any, tmp_path: Path) -> None:
    bridge = spawn(["--upstream", "fixtures", "--workers", "2", "--store", "none", "--metrics"])
    for i in range(6):
        post(bridge.root, {"model": "fixture-scripted", "input": f"@text m{i}"})
    counts = set()
    for _ in range(4):  # whichever worker answers the scrape, it sums both
        samples = scrape(bridge.root + "/metrics")
        counts.add(value(samples, "responses_bridge_requests_total", route="/v1/responses", status="200"))
    assert counts == {6}
    directory = shared_directory(tmp_path)
    bridge.stop()
    assert not directory.exists()


def test_single_process_metrics_port_needs_no_key_and_counts(spawn: Any) -> None:
    metrics_port = free_port()
    bridge = spawn(["--upstream", "fixtures", "--store", "memory", "--api-key", "sk-m", "--metrics-port", str(metrics_port)])
    with httpx.Client(timeout=30, headers={"Authorization": "Bearer sk-m"}) as http:
        assert http.post(bridge.root + "/v1/responses", json={"model": "fixture-scripted", "input": "hi"}).status_code == 200
        assert http.get(bridge.root + "/metrics").status_code == 404
    samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    assert value(samples, "responses_bridge_requests_total", route="/v1/responses", status="200") == 1
    assert value(samples, "responses_bridge_store_operation_seconds_count", operation="put") == 1


def test_a_taken_metrics_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONSES_BRIDGE_")}
        result = subprocess.run(
            [sys.executable, "-m", "server", "serve", "--upstream", "fixtures", "--store", "none",
             "--port", str(free_port()), "--metrics-port", str(port)],
            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--metrics-port {port}: cannot listen" in lines[0], result.stderr
