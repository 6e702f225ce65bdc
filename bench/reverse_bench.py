"""The reverse path beside the forward path, on loopback: ``python bench/reverse_bench.py``.

Four routes to the same answers of bench/backend.py (64 content chunks streamed, or one completion):

- ``backend``: a chat client straight to the backend (the floor);
- ``forward``: a Responses client → the bridge's ``/v1/responses`` → the chat backend;
- ``chat-passthrough``: a chat client → the bridge's ``/v1/chat/completions`` (``api = "chat"``) → the backend;
- ``chat-over-responses``: a chat client → the bridge's ``/v1/chat/completions`` (``api = "responses"``) →
  a second bridge's ``/v1/responses`` → the backend. Two bridges and two translations: the reverse
  translation's own cost is this row minus the ``forward`` row.

Every server is its own process (uvicorn, one worker), the load generator another (httpx, asyncio),
so the figures include real sockets and SSE parsing on both sides. Per route: the CPU the bridge
processes spent per request (user + system, from /proc: the figure other load bends least), requests per second at
a concurrency, and the median and 95th percentile of the time to the first content chunk/event and
to the end of the answer, the median of ``--rounds`` rounds that interleave the routes (so a burst
of load from elsewhere hits every route, not one). ``--json`` prints the figures as JSON. The machine's load by other
processes shows up in the figures; docs/reverse.md records them with the conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "go"}]
#: The first frame with model output: a chat delta with non-empty content, or a Responses text delta.
_FIRST_OUTPUT = re.compile(r'"content":"[^"]|"type":"response\.output_text\.delta"')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bridge_code(port: int, upstream: str, api: str) -> str:
    return (
        "import uvicorn\n"
        "from server.app import create_app\n"
        "from server.config import BridgeConfig, Upstream\n"
        f"config = BridgeConfig(upstreams=(Upstream(name='u', base_url={upstream!r}, api={api!r}),), store='none')\n"
        f"uvicorn.run(create_app(config), host='127.0.0.1', port={port}, log_level='warning', access_log=False,"
        " loop='uvloop', http='httptools')\n"
    )


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/<pid>/stat), the figure a loaded machine bends least."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _start(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[:3]} exited: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}") from None
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{argv[:3]} did not start")


async def _one(client: httpx.AsyncClient, url: str, body: dict, stream: bool) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    if not stream:
        reply = await client.post(url, json=body)
        reply.raise_for_status()
        done = time.perf_counter() - started
        return done, done
    async with client.stream("POST", url, json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if first is None and _FIRST_OUTPUT.search(line):
                first = time.perf_counter() - started
    done = time.perf_counter() - started
    return (first if first is not None else done), done


async def _load(url: str, body: dict, stream: bool, concurrency: int, total: int) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for _ in range(min(8, total)):  # warm the pools
            await _one(client, url, body, stream)
        queue = list(range(total))
        results: list[tuple[float, float]] = []

        async def worker() -> None:
            while queue:
                queue.pop()
                results.append(await _one(client, url, body, stream))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    firsts = sorted(r[0] for r in results)
    ends = sorted(r[1] for r in results)

    def pct(values: list[float], p: float) -> float:
        return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 2)

    return {"rps": round(total / elapsed, 1), "ttft_p50_ms": pct(firsts, 0.5), "ttft_p95_ms": pct(firsts, 0.95),
            "total_p50_ms": round(statistics.median(ends) * 1000, 2), "total_p95_ms": pct(ends, 0.95)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="reverse path vs forward path on loopback")
    parser.add_argument("--requests", type=int, default=400, help="requests per route and mode (default 400)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all routes; the median round is shown")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    py = sys.executable
    ports = {name: _free_port() for name in ("backend", "forward", "passthrough", "reverse")}
    backend_url = f"http://127.0.0.1:{ports['backend']}/v1"
    forward_url = f"http://127.0.0.1:{ports['forward']}/v1"
    procs = []
    try:
        procs.append(_start([py, "bench/backend.py", "--port", str(ports["backend"])], ports["backend"]))
        procs.append(_start([py, "-c", _bridge_code(ports["forward"], backend_url, "chat")], ports["forward"]))
        procs.append(_start([py, "-c", _bridge_code(ports["passthrough"], backend_url, "chat")], ports["passthrough"]))
        procs.append(_start([py, "-c", _bridge_code(ports["reverse"], forward_url, "responses")], ports["reverse"]))
        chat = {"model": "bench-64", "messages": MESSAGES}
        routes = [
            ("backend", backend_url + "/chat/completions", chat),
            ("forward", forward_url + "/responses", {"model": "bench-64", "input": "go"}),
            ("chat-passthrough", f"http://127.0.0.1:{ports['passthrough']}/v1/chat/completions", chat),
            ("chat-over-responses", f"http://127.0.0.1:{ports['reverse']}/v1/chat/completions", chat),
        ]
        pids = {"backend": procs[0].pid, "forward": procs[1].pid, "chat-passthrough": procs[2].pid,
                "reverse": procs[3].pid}
        bridges = {"backend": [], "forward": ["forward"], "chat-passthrough": ["chat-passthrough"],
                   "chat-over-responses": ["reverse", "forward"]}
        runs: dict[tuple[str, bool], list[dict]] = {}
        for _round in range(args.rounds):  # rounds interleave the routes, so a burst of load hits all of them
            for name, url, body in routes:
                for stream in (True, False):
                    before = {k: _cpu_seconds(pid) for k, pid in pids.items()}
                    figures = asyncio.run(_load(url, {**body, "stream": stream}, stream, args.concurrency,
                                                args.requests))
                    spent = sum(_cpu_seconds(pids[k]) - before[k] for k in bridges[name])
                    # warm-up requests are counted in the CPU too (8 per row)
                    figures["bridge_cpu_ms_per_request"] = round(spent * 1000 / (args.requests + 8), 3)
                    runs.setdefault((name, stream), []).append(figures)
        rows = []
        for (name, stream), figures in runs.items():
            best = sorted(figures, key=lambda f: f["rps"])[len(figures) // 2]  # the median round
            cpu = sorted(f["bridge_cpu_ms_per_request"] for f in figures)[len(figures) // 2]
            rows.append({"route": name, "stream": stream, "concurrency": args.concurrency, **best,
                         "bridge_cpu_ms_per_request": cpu, "rps_rounds": [f["rps"] for f in figures]})
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.json:
        print(json.dumps({"load_average": os.getloadavg(), "cpus": os.cpu_count(), "rows": rows}, indent=2))
    else:
        print(f"{'route':<20} {'mode':<6} {'bridge CPU ms/req':>17} {'req/s':>7} {'ttft p50':>9} {'ttft p95':>9} "
              f"{'total p50':>10} {'total p95':>10}")
        for r in rows:
            print(f"{r['route']:<20} {'stream' if r['stream'] else 'whole':<6} {r['bridge_cpu_ms_per_request']:>17} "
                  f"{r['rps']:>7} {r['ttft_p50_ms']:>9} "
                  f"{r['ttft_p95_ms']:>9} {r['total_p50_ms']:>10} {r['total_p95_ms']:>10}  rounds {r['rps_rounds']}")
        print(f"load average {os.getloadavg()}, {os.cpu_count()} CPUs, concurrency {args.concurrency}, "
              f"{args.requests} requests per row and round, {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
