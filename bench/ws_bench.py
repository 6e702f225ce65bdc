"""A 20-tool-call agent run over one WebSocket vs HTTP+SSE: ``python bench/ws_bench.py [--runs N]``.

The run is what a coding agent does in a long turn: a first request with the user's prompt and a
Codex-sized set of tools and instructions (tests/support/data/codex_request.json), the model calls a tool,
the client sends the tool's output back and the model calls the next one, 20 times, then answers.
That is 21 sequential `response.create`s, each after the previous terminal event, timed end to end.

Transports compared, against the same bridge process (one worker, `--store memory`) in front of the
fixture chat backend (`python -m fixtures.backend`, its own process, so the bridge's CPU is its own):

* ``ws``: one WebSocket, `store: false`, each continuation `previous_response_id` + only the new
  items (the connection's memory holds the conversation; docs/websocket.md);
* ``ws-deflate``: the same with `permessage-deflate` negotiated (Codex offers it; uvicorn accepts);
* ``http-prev``: `POST /v1/responses` + SSE on one keep-alive connection, `store: true`, each
  continuation `previous_response_id` + the new items (the store rebuilds the conversation);
* ``http-full``: `POST` + SSE, `store: false`, the whole conversation resent every time (what Codex
  does over HTTP).

Wall time is the client's, bridge CPU is utime+stime of the bridge process from /proc over the run.
The transports alternate run by run so a change in machine load hits them alike; wall time is the
median, CPU the mean (/proc counts it in 10 ms ticks).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs

ROOT = Path(__file__).resolve().parent.parent
CALLS = 20
TOOL = "exec_command"


def codex_shaped() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Codex's tools and its developer messages + environment context (the head of every request)."""
    recorded = json.loads((ROOT / "tests/support/data/codex_request.json").read_text())
    head = [i for i in recorded["input"] if i.get("type", "message") == "message" and i.get("role") in ("developer",)]
    return recorded["tools"], head


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def step_prompt(step: int) -> str:
    if step >= CALLS:
        return "That is all; summarise."
    return f"Step {step}.\n@call {TOOL} " + json.dumps({"cmd": f"echo step-{step}"})


def tool_output(call: dict[str, Any], step: int) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call["call_id"],
            "output": f"Process exited with code 0\nOutput:\nstep-{step - 1}\n"}  # fmt: skip


def last_call(response: dict[str, Any]) -> dict[str, Any]:
    calls = [i for i in response["output"] if i.get("type") == "function_call"]
    assert calls, f"expected a tool call, got {response['output']}"
    return calls[-1]


# ---------------------------------------------------------------------------------------- clients


async def run_ws(url: str, model: str, tools: list, head: list, deflate: bool = False) -> None:
    async with websockets.connect(url, max_size=None, compression="deflate" if deflate else None) as ws:
        previous: dict[str, Any] | None = None
        for step in range(CALLS + 1):
            body: dict[str, Any] = {"type": "response.create", "model": model, "store": False, "tools": tools}
            if previous is None:
                body["input"] = [*head, user(step_prompt(step))]
            else:
                body["previous_response_id"] = previous["id"]
                body["input"] = [tool_output(last_call(previous), step), user(step_prompt(step))]
            await ws.send(orjson.dumps(body).decode())
            while True:
                event = orjson.loads(await ws.recv())
                if event["type"] in ("response.completed", "response.failed", "response.incomplete", "error"):
                    break
            assert event["type"] == "response.completed", event
            previous = event["response"]


async def _post_stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with client.stream("POST", url, json={**body, "stream": True}) as response:
        assert response.status_code == 200, await response.aread()
        final: dict[str, Any] | None = None
        async for line in response.aiter_lines():
            if line.startswith("data: {") and '"response.completed"' in line[:60]:
                final = orjson.loads(line[6:])["response"]
        assert final is not None, "no response.completed"
        return final


async def run_http_prev(url: str, model: str, tools: list, head: list) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        previous: dict[str, Any] | None = None
        for step in range(CALLS + 1):
            body: dict[str, Any] = {"model": model, "store": True, "tools": tools}
            if previous is None:
                body["input"] = [*head, user(step_prompt(step))]
            else:
                body["previous_response_id"] = previous["id"]
                body["input"] = [tool_output(last_call(previous), step), user(step_prompt(step))]
            previous = await _post_stream(client, url, body)


async def run_http_full(url: str, model: str, tools: list, head: list) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        history: list[dict[str, Any]] = [*head]
        previous: dict[str, Any] | None = None
        for step in range(CALLS + 1):
            if previous is not None:
                history += [*previous["output"], tool_output(last_call(previous), step)]
            history.append(user(step_prompt(step)))
            previous = await _post_stream(client, url, {"model": model, "store": False, "tools": tools,
                                                        "input": history})  # fmt: skip


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per transport (alternating)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)

    tools, head = codex_shaped()
    logs = Path(tempfile.mkdtemp(prefix="ws-bench-"))
    backend_port, bridge_port = procs.free_port(), procs.free_port()
    try:
        backend = procs.start("backend", [sys.executable, "-m", "fixtures.backend", "--port", str(backend_port)],
                              logs, cwd=ROOT)  # fmt: skip
        assert procs.wait_port(backend_port, 30, backend), backend.tail()
        bridge = procs.start("bridge", [sys.executable, "-m", "server", "serve", "--upstream",
                                        f"http://127.0.0.1:{backend_port}/v1", "--store", "memory",
                                        "--port", str(bridge_port)], logs, cwd=ROOT)  # fmt: skip
        assert procs.wait_port(bridge_port, 30, bridge), bridge.tail()
        http_url = f"http://127.0.0.1:{bridge_port}/v1/responses"
        ws_url = f"ws://127.0.0.1:{bridge_port}/v1/responses"
        runners = {
            "ws": lambda: run_ws(ws_url, "bench", tools, head),
            "ws-deflate": lambda: run_ws(ws_url, "bench", tools, head, deflate=True),
            "http-prev": lambda: run_http_prev(http_url, "bench", tools, head),
            "http-full": lambda: run_http_full(http_url, "bench", tools, head),
        }
        for runner in runners.values():  # warm-up: imports, pools, the store's first write
            asyncio.run(runner())
        figures: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runners}
        for _ in range(args.runs):
            for name, runner in runners.items():
                cpu0 = procs.cpu_seconds([bridge.pid])
                t0 = time.perf_counter()
                asyncio.run(runner())
                figures[name]["wall"].append(time.perf_counter() - t0)
                figures[name]["cpu"].append(procs.cpu_seconds([bridge.pid]) - cpu0)
    finally:
        procs.stop_all()

    base = statistics.median(figures["http-prev"]["wall"])
    print(f"{CALLS}-tool-call agent run ({CALLS + 1} responses), median of {args.runs} runs, loadavg "
          f"{' '.join(f'{x:.2f}' for x in procs.loadavg())}")  # fmt: skip
    base_cpu = statistics.fmean(figures["http-prev"]["cpu"])
    print(f"{'transport':<11} {'wall ms':>9} {'min ms':>8} {'wall vs http-prev':>18} {'bridge CPU ms':>14} "
          f"{'CPU vs http-prev':>17}")  # fmt: skip
    for name, values in figures.items():
        wall = statistics.median(values["wall"])
        cpu = statistics.fmean(values["cpu"])  # a mean: /proc counts in 10 ms ticks, a median would round
        print(f"{name:<11} {wall * 1000:>9.1f} {min(values['wall']) * 1000:>8.1f} {wall / base:>17.2f}x "
              f"{cpu * 1000:>14.1f} {cpu / base_cpu:>16.2f}x")  # fmt: skip
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
