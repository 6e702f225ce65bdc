"""Load: 1,000 concurrent streams and 10,000 sequential requests with zero errors, and no growth
in the bridge's open file descriptors, threads or memory once the load has ended.

Both servers are real processes (`python -m fixtures.backend`, `python -m server serve`), so what is
measured under /proc/<pid> belongs to the bridge alone. The measurement is taken against a baseline
after a warm-up of the same shape: the first burst legitimately grows the upstream keep-alive pool and
the allocator's arenas; a leak is growth on the *second* burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.server.test_reliability_client import REPO, BridgeProcess
from tests.support.servers import free_port
from translator.validate import parse_sse

pytestmark = pytest.mark.timeout(300)

CONCURRENT = 1000
SEQUENTIAL = 10_000
FD_SLACK = 16
THREAD_SLACK = 4
RSS_SLACK_MIB = 40


@pytest.fixture(scope="module")
def backend_process() -> Iterator[str]:
    """The fixture chat backend in its own process (so the bridge's numbers are its own)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONSES_BRIDGE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fixtures.backend", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fixture backend did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def sample(bridge: BridgeProcess) -> dict[str, int]:
    return {"fds": bridge.fds(), "threads": bridge.threads(), "rss_kib": bridge.rss_kib()}


async def concurrent_streams(url: str, count: int, tag: str) -> list[str]:
    """`count` streams at once, each on its own connection; returns the problems found (empty = ok)."""
    problems: list[str] = []
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        text = f"{tag} stream {i}"
        try:
            response = await client.post(
                url + "/responses",
                json={"model": "fixture-scripted", "input": "@text " + text, "stream": True},
            )
        except httpx.HTTPError as exc:
            problems.append(f"{i}: {type(exc).__name__}: {exc}")
            return
        if response.status_code != 200:
            problems.append(f"{i}: HTTP {response.status_code} {response.text[:200]}")
            return
        events, framing = parse_sse(response.content)
        got = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        terminal = events[-1]["type"] if events else None
        if framing or terminal != "response.completed" or got != text:
            problems.append(
                f"{i}: terminal {terminal}, text {got!r}, framing {[str(v) for v in framing][:2]}"
            )

    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await asyncio.gather(*(one(client, i) for i in range(count)))
    return problems


def sequential_requests(url: str, count: int) -> list[str]:
    """`count` non-streaming requests one after another on one keep-alive connection."""
    problems: list[str] = []
    with httpx.Client(timeout=30) as client:
        for i in range(count):
            text = f"seq {i}"
            try:
                response = client.post(
                    url + "/responses", json={"model": "fixture-scripted", "input": "@text " + text}
                )
            except httpx.HTTPError as exc:
                problems.append(f"{i}: {type(exc).__name__}: {exc}")
                continue
            if response.status_code != 200:
                problems.append(f"{i}: HTTP {response.status_code} {response.text[:200]}")
                continue
            body: dict[str, Any] = orjson.loads(response.content)
            if body.get("status") != "completed" or body["output"][0]["content"][0]["text"] != text:
                problems.append(f"{i}: {str(body)[:200]}")
    return problems


def settle(bridge: BridgeProcess, baseline: dict[str, int], timeout: float = 15.0) -> dict[str, int]:
    """Closed client connections take a moment to be reaped: sample until fds are back near the
    baseline or the time is up, and return the last sample."""
    deadline = time.monotonic() + timeout
    now = sample(bridge)
    while now["fds"] > baseline["fds"] + FD_SLACK and time.monotonic() < deadline:
        time.sleep(0.25)
        now = sample(bridge)
    return now


def test_load_without_errors_or_leaks(backend_process: str) -> None:
    with BridgeProcess("--upstream", backend_process, "--store", "none") as bridge:
        # warm-up: the same shape as the measured load
        warm = asyncio.run(concurrent_streams(bridge.url, CONCURRENT, "warm"))
        assert not warm, f"{len(warm)} failed warm-up streams, first: {warm[:3]}"
        assert not sequential_requests(bridge.url, 300)
        baseline = settle(bridge, sample(bridge))
        baseline = settle(bridge, baseline)

        started = time.monotonic()
        problems = asyncio.run(concurrent_streams(bridge.url, CONCURRENT, "load"))
        concurrent_s = time.monotonic() - started
        assert not problems, f"{len(problems)} of {CONCURRENT} streams failed, first: {problems[:5]}"
        during = sample(bridge)

        started = time.monotonic()
        problems = sequential_requests(bridge.url, SEQUENTIAL)
        sequential_s = time.monotonic() - started
        assert not problems, f"{len(problems)} of {SEQUENTIAL} requests failed, first: {problems[:5]}"

        after = settle(bridge, baseline)
        print(
            f"\n{CONCURRENT} concurrent streams in {concurrent_s:.1f}s; {SEQUENTIAL} sequential requests in "
            f"{sequential_s:.1f}s ({SEQUENTIAL / sequential_s:.0f}/s); baseline {baseline}, during {during}, "
            f"after {after}"
        )
        assert after["fds"] <= baseline["fds"] + FD_SLACK, f"open fds grew: {baseline} → {after}"
        assert after["threads"] <= baseline["threads"] + THREAD_SLACK, f"threads grew: {baseline} → {after}"
        growth_mib = (after["rss_kib"] - baseline["rss_kib"]) / 1024
        assert growth_mib <= RSS_SLACK_MIB, f"RSS grew by {growth_mib:.0f} MiB: {baseline} → {after}"
        health = httpx.get(bridge.root + "/healthz", timeout=10)
        assert health.status_code == 200
        assert "Traceback" not in bridge.logs(), bridge.logs()[-3000:]


def test_no_task_growth_after_mixed_load(backend_url: str) -> None:
    """Asyncio tasks on the bridge's loop (in-process, so they can be counted): after streams that
    complete, streams the client abandons mid-way and backend faults, no task is left behind."""
    from server.config import Timeouts
    from tests.conftest import bridge_config, start_bridge

    handle = start_bridge(bridge_config(backend_url, store="none", timeouts=Timeouts(2, 3, 1)))
    loop = handle.app.state.bridge.loop

    def tasks() -> int:
        async def count() -> int:
            return len(asyncio.all_tasks())

        return asyncio.run_coroutine_threadsafe(count(), loop).result(10) - 1  # minus the counter itself

    async def mixed(n: int) -> list[str]:
        problems: list[str] = []

        async def complete(client: httpx.AsyncClient, i: int) -> None:
            body = {"model": "fixture-scripted", "input": f"@text mixed {i}", "stream": True}
            response = await client.post(handle.url + "/responses", json=body)
            if response.status_code != 200 or b"response.completed" not in response.content:
                problems.append(f"{i}: {response.status_code} {response.text[:300]}")

        async def abandon(client: httpx.AsyncClient) -> None:
            body = {"model": "chaos:stall", "input": "hi", "stream": True}
            async with client.stream("POST", handle.url + "/responses", json=body) as response:
                async for _ in response.aiter_raw():
                    break  # got response.created: hang up

        async def fault(client: httpx.AsyncClient, name: str) -> None:
            await client.post(
                handle.url + "/responses", json={"model": f"chaos:{name}", "input": "hi", "stream": True}
            )

        limits = httpx.Limits(max_connections=n * 3, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            faults = ["cut", "malformed", "status-500", "hang", "midstream-error"]
            await asyncio.gather(
                *(complete(client, i) for i in range(n)),
                *(abandon(client) for _ in range(n // 4)),
                *(fault(client, faults[i % len(faults)]) for i in range(n // 4)),
            )
        return problems

    try:
        assert not asyncio.run(mixed(40))  # warm-up
        time.sleep(0.5)
        baseline = tasks()
        assert not asyncio.run(mixed(200))
        deadline = time.monotonic() + 10
        while tasks() > baseline and time.monotonic() < deadline:
            time.sleep(0.1)
        after = tasks()
        assert after <= baseline, f"asyncio tasks grew from {baseline} to {after}"
        assert not handle.app.state.bridge.streams, "streams still registered after the load"
    finally:
        handle.stop()
