"""What every hostile case measures: the bridge's memory growth, the worst `/healthz` latency seen
by another client meanwhile, and (optionally) a results file for the before/after table.

`measure(bridge)` is a context manager: a thread polls `/healthz` over its own keep-alive
connection every 20 ms and keeps the worst latency (a failed or refused poll counts as a 10 s
latency, so an unserved client can never look fast); an `RssSampler` watches the bridge process
and kills it past `HARD_CEILING_MIB`, so a case run against unfixed code cannot take the machine.
Set `HOSTILE_RESULTS=path.jsonl` to append each case's figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from tests.support.bridge_process import BridgeProcess
from tests.support.rss import RssSampler

__all__ = ["HARD_CEILING_MIB", "LATENCY_CEILING_S", "RSS_CEILING_MIB", "Measurement", "measure"]

RSS_CEILING_MIB = 300.0
"""Stated ceiling: a hostile case may grow the bridge's RSS by at most this much."""
LATENCY_CEILING_S = 0.100
"""Stated ceiling: another client's `/healthz` answers within this while a case runs, on a machine
whose cores are not oversubscribed (see `latency_ceiling`)."""
HARD_CEILING_MIB = 1500.0
"""Safety: the bridge is killed past this RSS (recorded as `killed`)."""
_FAILED_POLL_S = 10.0


@dataclass
class Measurement:
    case: str
    growth_mib: float = 0.0
    peak_mib: float = 0.0
    worst_latency_s: float = 0.0
    polls: int = 0
    failed_polls: int = 0
    killed: bool = False
    seconds: float = 0.0
    #: Runnable tasks per core (1-minute load average / cores, at least 1) over the case.
    contention: float = 1.0
    notes: list[str] = field(default_factory=list)

    @property
    def latency_ceiling(self) -> float:
        """`LATENCY_CEILING_S`, scaled by how oversubscribed the cores were: with twice as many
        runnable tasks as cores the bridge gets half the CPU time, and a poll waits about twice as
        long for a turn, however well the bridge behaves. A loop really blocked (the cases this suite
        was written against blocked for 0.4-10 s) still fails at any load seen on a CI machine."""
        return LATENCY_CEILING_S * self.contention

    def assert_bounded(self) -> None:
        assert not self.killed, f"{self.case}: bridge passed {HARD_CEILING_MIB} MiB and was killed"
        assert self.growth_mib < RSS_CEILING_MIB, f"{self.case}: RSS grew {self.growth_mib:.0f} MiB"
        assert self.polls > 0, f"{self.case}: no health poll completed"
        assert self.worst_latency_s < self.latency_ceiling, (
            f"{self.case}: another client's /healthz took {self.worst_latency_s * 1000:.0f} ms "
            f"({self.failed_polls} of {self.polls} polls failed; ceiling {self.latency_ceiling * 1000:.0f} ms "
            f"at {self.contention:.2f} runnable tasks per core)"
        )


_POLLER = r"""
import json, sys, time, threading, httpx
url, failed_cost = sys.argv[1], float(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
client = httpx.Client(timeout=failed_cost)
client.get(url)  # the keep-alive connection is open before the case begins
print("ready", flush=True)
worst, polls, failed = 0.0, 0, 0
while not stop.is_set():
    start = time.perf_counter()
    try:
        ok = client.get(url).status_code == 200
    except httpx.HTTPError:
        ok = False
    worst = max(worst, time.perf_counter() - start if ok else failed_cost)
    polls += 1
    failed += not ok
    stop.wait(0.02)
print(json.dumps({"worst": worst, "polls": polls, "failed": failed}), flush=True)
"""


class _Poller:
    """Another client, in its own process: the test process also runs the hostile backend, whose
    work would otherwise be measured as the bridge's latency (they would share one GIL)."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _POLLER, url + "/healthz", str(_FAILED_POLL_S)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.worst = 0.0
        self.polls = 0
        self.failed = 0

    def stop(self) -> None:
        out, _ = self.proc.communicate("", timeout=_FAILED_POLL_S + 5)
        result = json.loads(out.strip().splitlines()[-1])
        self.worst, self.polls, self.failed = result["worst"], result["polls"], result["failed"]


@contextlib.contextmanager
def measure(bridge: BridgeProcess, case: str) -> Iterator[Measurement]:
    result = Measurement(case)
    time.sleep(0.2)  # let the start-up settle before the baseline
    poller = _Poller(bridge.url)
    sampler = RssSampler(bridge.pid, kill_above_mib=HARD_CEILING_MIB)
    start = time.monotonic()
    load_before = _contention()
    with sampler:
        try:
            yield result
        finally:
            time.sleep(0.1)  # one more poll after the case
            poller.stop()
            result.seconds = time.monotonic() - start
            result.peak_mib = sampler.peak_mib
            result.growth_mib = sampler.growth_mib
            result.killed = sampler.killed
            result.worst_latency_s = poller.worst
            result.polls = poller.polls
            result.failed_polls = poller.failed
            result.contention = max(load_before, _contention())
            _record(result)


def _contention() -> float:
    """The 1-minute load average per core, at least 1 (see `Measurement.latency_ceiling`)."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def _record(result: Measurement) -> None:
    path = os.environ.get("HOSTILE_RESULTS")
    if not path:
        return
    row = {"case": result.case, "growth_mib": round(result.growth_mib, 1), "peak_mib": round(result.peak_mib, 1),
           "worst_latency_ms": round(result.worst_latency_s * 1000, 1), "polls": result.polls,
           "failed_polls": result.failed_polls, "killed": result.killed, "seconds": round(result.seconds, 2),
           "contention": round(result.contention, 2),
           "notes": result.notes, "src": os.environ.get("HOSTILE_BRIDGE_SRC", "")}  # fmt: skip
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


# ------------------------------------------------------------------------------------------ streams

_TERMINALS = (b"response.completed", b"response.incomplete", b"response.failed")


@dataclass
class StreamOutcome:
    """What a client saw of one `/v1/responses` stream: the status, the terminal event's type and
    (when it is small) its `response.error`, whether `[DONE]` came, and the bytes read."""

    status: int
    terminal: str | None = None
    error: dict | None = None
    done: bool = False
    received: int = 0
    body: bytes = b""
    timed_out: bool = False


def stream_response(url: str, body: dict, api_key: str, deadline: float) -> StreamOutcome:
    """POST a stream request and scan the answer for its terminal event without keeping it (a
    flood of tool calls makes a response.completed of many megabytes)."""
    headers = {"authorization": f"Bearer {api_key}"}
    end = time.monotonic() + deadline
    outcome = StreamOutcome(status=0)
    try:
        with httpx.stream("POST", url + "/v1/responses", json=body, headers=headers,
                          timeout=httpx.Timeout(deadline)) as response:  # fmt: skip
            outcome.status = response.status_code
            if response.status_code != 200:
                outcome.body = response.read()
                return outcome
            tail = b""
            last = b""  # the stream's last bytes: the terminal frame's `error` sits near its end
            for part in response.iter_raw():
                outcome.received += len(part)
                window = tail + part
                for name in _TERMINALS:
                    if outcome.terminal is None and b"event: " + name + b"\n" in window:
                        outcome.terminal = name.decode()
                if b"data: [DONE]" in window:
                    outcome.done = True
                tail = window[-64:]
                last = (last + part)[-65536:]
                if time.monotonic() > end:
                    outcome.timed_out = True
                    break
    except httpx.TimeoutException:
        outcome.timed_out = True
    except httpx.HTTPError:
        pass
    if outcome.terminal is not None:
        at = last.rfind(b'"error":{')
        if at >= 0:
            with contextlib.suppress(ValueError):
                outcome.error = json.JSONDecoder().raw_decode(last[at + 8 :].decode("utf-8", "replace"))[0]
    return outcome
