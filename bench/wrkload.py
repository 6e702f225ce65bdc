"""Throughput phases driven by wrk, with a Lua script that posts the request body and prints JSON.

wrk counts a request done when the whole response has arrived, so for a streaming request its
requests/s is streams/s.  Its ``done`` hook prints one machine-readable line (``BENCHJSON {...}``)
that this module parses; non-2xx answers are counted by wrk as status errors and are not throughput.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_TEMPLATE = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "text/event-stream, application/json"
wrk.headers["Authorization"] = "Bearer bench"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


@dataclass
class WrkResult:
    requests: int
    ok: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {"rate": self.rate, "requests": self.requests, "ok": self.ok, "seconds": self.seconds,
                "errors": self.errors, "p50_ms": self.p50_ms, "p90_ms": self.p90_ms,
                "p99_ms": self.p99_ms, "mean_ms": self.mean_ms, "max_ms": self.max_ms}


def run_wrk(wrk: str, url: str, body: str, connections: int, seconds: float, script_dir: Path,
            name: str, timeout_s: float = 10.0) -> WrkResult:
    script_dir.mkdir(parents=True, exist_ok=True)
    script = script_dir / f"{name}.lua"
    script.write_text(LUA_TEMPLATE.format(body=body))
    threads = max(1, min(2, connections))
    cmd = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
           "--timeout", f"{timeout_s:g}s", "-s", str(script), url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    for line in done.stdout.splitlines():
        if line.startswith("BENCHJSON "):
            data = json.loads(line[len("BENCHJSON "):])
            errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]}
            us = 1000.0
            return WrkResult(
                requests=data["requests"], ok=data["requests"] - data["status"],
                seconds=data["duration_us"] / 1e6, errors=errors,
                p50_ms=data["p50_us"] / us, p90_ms=data["p90_us"] / us, p99_ms=data["p99_us"] / us,
                mean_ms=data["mean_us"] / us, max_ms=data["max_us"] / us,
            )
    raise RuntimeError(f"wrk printed no result (exit {done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
