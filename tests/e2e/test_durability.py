"""Durability: with the SQLite store, `kill -9` in the middle of a burst of stored requests
loses none that were acknowledged.

"Acknowledged" is what a client can rely on: a 200 with the Response for a non-streaming request, the
terminal `response.completed` event for a streaming one (the store's `put` is durable when it returns,
and the bridge stores before it sends either). The bridge runs as a real process so it can be killed
with SIGKILL (no shutdown code, no flush); a new process on the same file must then return every
acknowledged response whole.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.test_reliability_client import BridgeProcess
from translator.validate import parse_sse

pytestmark = pytest.mark.timeout(180)

WRITERS = 4
MIN_ACKED = 60


class Burst:
    """Client threads sending stored requests as fast as the bridge answers, recording what was
    acknowledged (response id → the text that was asked for)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acked: dict[str, str] = {}
        self.errors_after_kill = 0
        self.killed = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.writer, args=(n,), daemon=True) for n in range(WRITERS)]

    def writer(self, n: int) -> None:
        stream = n == 0  # one writer streams, the others do not
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self.killed.is_set():
                text = f"durable {n}-{i}"
                i += 1
                body: dict[str, Any] = {
                    "model": "fixture-scripted",
                    "input": "@text " + text,
                    "stream": stream,
                }
                try:
                    response = client.post(self.url + "/responses", json=body)
                except httpx.HTTPError:
                    if not self.killed.is_set():
                        raise
                    with self.lock:
                        self.errors_after_kill += 1
                    return
                if response.status_code != 200:
                    raise AssertionError(f"HTTP {response.status_code}: {response.text[:300]}")
                rid = self.ack_id(response, stream)
                if rid is not None:
                    with self.lock:
                        self.acked[rid] = text

    @staticmethod
    def ack_id(response: httpx.Response, stream: bool) -> str | None:
        if not stream:
            return str(response.json()["id"])
        events, _ = parse_sse(response.content, require_done=False)
        done = [e for e in events if e["type"] == "response.completed"]
        return str(done[0]["response"]["id"]) if done else None


def test_kill_9_mid_burst_loses_no_acknowledged_response(backend_url: str, tmp_path: Path) -> None:
    db = tmp_path / "durable.db"
    spec = f"sqlite:///{db}"
    with BridgeProcess("--upstream", backend_url, "--store", spec) as bridge:
        burst = Burst(bridge.url)
        for thread in burst.threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(burst.acked) < MIN_ACKED and time.monotonic() < deadline:
            assert all(t.is_alive() for t in burst.threads), "a writer failed before the kill"
            time.sleep(0.05)
        assert len(burst.acked) >= MIN_ACKED, f"only {len(burst.acked)} acknowledged in 60 s"
        burst.killed.set()
        bridge.kill()  # SIGKILL while the writers still have requests in flight
        for thread in burst.threads:
            thread.join(15)
        acked = dict(burst.acked)

    with (
        BridgeProcess("--upstream", backend_url, "--store", spec) as restarted,
        httpx.Client(timeout=10) as client,
    ):
        missing, wrong = [], []
        for rid, text in acked.items():
            response = client.get(f"{restarted.url}/responses/{rid}")
            if response.status_code != 200:
                missing.append((rid, response.status_code, response.text[:120]))
                continue
            stored = response.json()
            got = stored["output"][0]["content"][0]["text"] if stored.get("output") else None
            if stored.get("id") != rid or stored.get("status") != "completed" or got != text:
                wrong.append((rid, str(stored)[:200]))
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged responses lost: {missing[:5]}"
        assert not wrong, f"{len(wrong)} stored responses differ: {wrong[:3]}"
        # the store is usable after the crash: a new stored response, and a chain from an old one
        previous = next(iter(acked))
        follow = client.post(
            restarted.url + "/responses",
            json={
                "model": "fixture-scripted",
                "input": "@text after the crash",
                "previous_response_id": previous,
            },
        )
        assert follow.status_code == 200, follow.text[:300]
        assert client.get(f"{restarted.url}/responses/{follow.json()['id']}").status_code == 200
    print(f"\n{len(acked)} acknowledged before kill -9, all retrievable after restart")
