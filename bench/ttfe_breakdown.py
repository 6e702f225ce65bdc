"""Where the time to first event goes, inside the bridge: per sequential streaming request, the
server-side moments (request head arrives, upstream request written, upstream headers parsed, first
SSE body handed to the socket) from perf_counter hooks, medians over ``--duration`` seconds.

``python bench/ttfe_breakdown.py [--stored]`` starts the bench backend, runs the bridge in this
process (``serve``'s own app, protocol and uvicorn settings, ``--workers 1``, a fresh SQLite store)
with the hooks, and drives it with bench/loadgen.py's ``ttfe`` mode from another process. The hooks
wrap methods; they add a few microseconds to each step, the same for both rows. ``TTFE_DETAIL=1``
adds hooks on the route's steps and prints (stderr) the mean CPU between consecutive marks;
``TTFE_SRC=DIR`` runs another checkout's ``server/`` and ``translator/`` (before/after on one
machine); ``--fake-commit-ms N`` makes store:false streams wait before their terminal event as a
commit would; ``--gc off|freeze``; ``--profile FILE`` (cProfile of the server thread).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# TTFE_SRC: another checkout's server/ and translator/ (a before/after comparison on one machine)
sys.path.insert(0, os.environ.get("TTFE_SRC") or str(Path(__file__).resolve().parent.parent))

import procs
from targets import BENCH, backend_argv, project_python, responses_body

MARKS: list[tuple[str, float, float]] = []


def install_hooks() -> None:
    from uvicorn.protocols.http import httptools_impl

    from server import http_protocol, upstream_connection

    wall, cpu = time.perf_counter, time.thread_time

    def now() -> tuple[float, float]:
        return wall(), cpu()
    proto = http_protocol.BoundedHttpToolsProtocol
    orig_data = proto.data_received

    def data_received(self, data):  # type: ignore[no-untyped-def]
        if self._in_head and self._head_bytes == 0:
            MARKS.append(("request", *now()))
        return orig_data(self, data)

    proto.data_received = data_received  # type: ignore[method-assign]
    conn = upstream_connection.Connection
    orig_send, orig_headers = conn.send, conn.on_headers_complete

    async def send(self, data, timeout, request):  # type: ignore[no-untyped-def]
        MARKS.append(("upstream_sent", *now()))
        return await orig_send(self, data, timeout, request)

    def on_headers_complete(self):  # type: ignore[no-untyped-def]
        MARKS.append(("upstream_headers", *now()))
        return orig_headers(self)

    conn.send, conn.on_headers_complete = send, on_headers_complete  # type: ignore[method-assign]
    from server import responses

    def wrap_async(module: object, name: str) -> None:
        orig = getattr(module, name)

        async def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            MARKS.append((f"{name}<", *now()))
            try:
                return await orig(*args, **kwargs)
            finally:
                MARKS.append((f"{name}>", *now()))

        setattr(module, name, wrapped)

    def wrap_sync(module: object, name: str) -> None:
        orig = getattr(module, name)

        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            MARKS.append((f"{name}<", *now()))
            try:
                return orig(*args, **kwargs)
            finally:
                MARKS.append((f"{name}>", *now()))

        setattr(module, name, wrapped)

    if os.environ.get("TTFE_DETAIL"):
        for name in ("read_request_body", "prepare_turn"):
            wrap_async(responses, name)
        for name in ("read_responses_request", "response_commit"):
            wrap_sync(responses, name)
        wrap_async(responses, "_respond")
        wrap_async(responses, "create_response")
        from server import middleware

        wrap_async(middleware.BridgeMiddleware, "__call__")
        wrap_async(httptools_impl.RequestResponseCycle, "run_asgi")
        wrap_sync(http_protocol.BoundedHttpToolsProtocol, "on_headers_complete")
        from server import transport, turn, upstream

        wrap_async(transport.FastTransport, "send_raw")
        wrap_async(upstream.UpstreamClient, "open_stream")
        wrap_async(turn.PreparedTurn, "open_stream")
        wrap_sync(turn.PreparedTurn, "stream_translator")
    cycle = httptools_impl.RequestResponseCycle
    orig_cycle_send = cycle.send

    async def cycle_send(self, message):  # type: ignore[no-untyped-def]
        if message["type"] == "http.response.body" and not getattr(self, "_bench_first", False):
            self._bench_first = True
            MARKS.append(("first_body", *now()))
        return await orig_cycle_send(self, message)

    cycle.send = cycle_send  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="time to first event, server-side breakdown")
    parser.add_argument("--stored", action="store_true", help="bodies without a store field (stored)")
    parser.add_argument("--store", default=None, help="store spec (default: a fresh SQLite file)")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--profile", default=None, help="write a cProfile of the server thread here")
    parser.add_argument("--gc", default="on", choices=["on", "off", "freeze"],
                        help="the cyclic garbage collector in the server (off / frozen after start-up)")
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="the client waits this long after each answer (bench/loadgen.py --pause-ms)")
    parser.add_argument("--fake-commit-ms", type=float, default=0.0,
                        help="store:false streams wait this long before their terminal event, as a commit would")
    opts = parser.parse_args(argv)
    if opts.fake_commit_ms:
        import asyncio

        from server import responses

        def response_commit(*args, **kwargs):  # type: ignore[no-untyped-def]
            async def commit(response):  # type: ignore[no-untyped-def]
                await asyncio.sleep(opts.fake_commit_ms / 1000)
                return True

            return commit

        responses.response_commit = response_commit  # type: ignore[assignment]
    backend_port = procs.free_port()
    backend = procs.start("backend", backend_argv(backend_port, 1), Path(tempfile.gettempdir()))
    procs.wait_port(backend_port, 20, backend)
    install_hooks()
    import uvicorn

    from server.app import create_app
    from server.cli import _parser, build_config
    from server.http_protocol import bounded_protocol

    store = opts.store or f"sqlite:///{tempfile.mkdtemp()}/ttfe.db"
    port = procs.free_port()
    args = _parser().parse_args(["serve", "--upstream", f"http://127.0.0.1:{backend_port}/v1", "--port", str(port),
                                 "--store", store])
    config = build_config(args)
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, loop="uvloop",
                                           http=bounded_protocol(config.limits), log_level="warning",
                                           access_log=False))
    def run() -> None:
        if opts.profile is None:
            server.run()
            return
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            server.run()
        finally:
            profiler.disable()
            profiler.dump_stats(opts.profile)

    import gc

    if opts.gc == "freeze":
        gc.collect()
        gc.freeze()
    elif opts.gc == "off":
        gc.disable()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        procs.wait_port(port, 30)
        body = responses_body("bench-64", True, stored=opts.stored)
        cmd = [project_python(), str(BENCH / "loadgen.py"), "ttfe", "--duration", str(opts.duration), "--port",
               str(port), "--path", "/v1/responses", "--body", body, "--api-key", "bench",
               "--pause-ms", str(opts.pause_ms)]
        subprocess.run([*cmd[:4], "0.5", *cmd[5:]], capture_output=True)  # warm-up
        MARKS.clear()
        done = subprocess.run(cmd, capture_output=True, text=True)
        client = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.should_exit = True
        thread.join(10)
        backend.stop()
    pairs = [("request", "upstream_sent"), ("upstream_sent", "upstream_headers"), ("upstream_headers", "first_body"),
             ("request", "first_body")]
    wall_steps: dict[str, list[float]] = {f"{a}→{b}": [] for a, b in pairs}
    cpu_steps: dict[str, list[float]] = {f"{a}→{b}": [] for a, b in pairs}
    current: dict[str, tuple[float, float]] = {}
    for name, t, c in MARKS:
        if name == "request":
            current = {"request": (t, c)}
        elif name not in current:
            current[name] = (t, c)
        if name == "first_body" and len(current) == 4:
            for a, b in pairs:
                wall_steps[f"{a}→{b}"].append(current[b][0] - current[a][0])
                cpu_steps[f"{a}→{b}"].append(current[b][1] - current[a][1])
    if os.environ.get("TTFE_DETAIL"):  # the mean CPU between consecutive marks of each request
        seq: dict[str, list[float]] = {}
        previous: tuple[str, float] | None = None
        for name, _t, c in MARKS:
            if name == "request":
                previous = None
            if previous is not None:
                seq.setdefault(f"{previous[0]}→{name}", []).append(c - previous[1])
            previous = (name, c)
        for key, values in seq.items():
            print(f"{statistics.fmean(values) * 1e6:8.1f} us  {len(values):5d}  {key}", file=sys.stderr)
    out = {"stored": opts.stored, "gc": opts.gc, "collections": [g["collections"] for g in gc.get_stats()], "client": {k: round(v, 3) for k, v in client.items()},
           "server_wall_p50_us": {k: round(statistics.median(v) * 1e6, 1) for k, v in wall_steps.items() if v},
           "server_cpu_mean_us": {k: round(statistics.fmean(v) * 1e6, 1) for k, v in cpu_steps.items() if v},
           "loadavg": procs.loadavg()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
