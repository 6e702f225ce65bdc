"""The bridge's fixed CPU cost per request, from /proc: what one request costs it, whatever the machine's load.

Why a script of its own: `bench/run.py` measures throughput against peers; this answers one question
quickly and repeatably while the hot path is being worked on: how many milliseconds of the bridge
process's CPU (utime + stime from /proc/PID/stat) one request costs, non-streaming and with a
64-chunk stream, with `--store none`, `--store memory` or `--store sqlite` (a fresh database file
per run). CPU time is charged to the process that spends it, so other work on a shared machine
changes wall time, not this figure.

It starts the scripted backend (`bench/backend.py`) and the bridge (`python -m server serve`) as
subprocesses, then, from a separate client process (raw asyncio sockets, keep-alive connections,
no parsing beyond what checks the answer), sends N sequential requests (one connection) and N
concurrent ones (`--concurrency` connections), after a warm-up. Every answer is checked (status 200,
all 64 text deltas and `response.completed` for a stream, the whole text for a JSON answer), so a
fast-but-broken bridge cannot score. Request bodies carry no `store` field: the Responses default
(stored) applies, so the `memory` rows really store every response.

    python bench/request_cost.py                       # 2,000 requests per phase, both stores
    python bench/request_cost.py -n 5000 --store none  # one store
    python bench/request_cost.py --store none,sqlite   # store: false against the default SQLite store
    python bench/request_cost.py --floor               # also a bare ASGI app under the same uvicorn settings
    python bench/request_cost.py --profile prof        # also py-spy the concurrent phases: prof-*.txt
    python bench/request_cost.py --callgrind -n 200 --warmup 50   # instructions per request instead

`--profile` needs py-spy (`pip install py-spy`); it writes py-spy's raw collapsed stacks and prints
the top functions by self share (`bench/profiling.py` does the reduction).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from procs import TICKS, free_port, loadavg, settle, start, stop_all, tree, wait_port  # noqa: E402

PROMPT = "Write a few words."
CHUNKS = 64
WORDS = (b"lorem ", b"ipsum ", b"dolor ", b"sitam ", b"ametis ", b"consec ", b"adipis ", b"elitus ", b"sedum ",
         b"eiusmo ")  # fmt: skip  (bench/backend.py cycles through these, one per content chunk)


def body_for(stream: bool, chunks: int) -> bytes:
    body: dict = {"model": f"bench-{chunks}", "input": PROMPT}
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------------ client


def _request_bytes(port: int, body: bytes) -> bytes:
    return (f"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"accept: text/event-stream, application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive) of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection") != "close"


def _answer_ok(status: int, body: bytes, stream: bool, chunks: int) -> bool:
    if status != 200:
        return False
    if stream:
        return body.count(b'"response.output_text.delta"') == chunks and b'"response.completed"' in body
    return sum(body.count(w) for w in WORDS) >= chunks and b'"status":"completed"' in body


async def _drive(port: int, total: int, concurrency: int, stream: bool, chunks: int, check: bool = True) -> dict:
    request = _request_bytes(port, body_for(stream, chunks))
    remaining = total
    failures: list[str] = []

    async def worker() -> None:
        nonlocal remaining
        reader = writer = None
        while remaining > 0:
            remaining -= 1
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, body, keep = await _read_reply(reader)
            if check and not _answer_ok(status, body, stream, chunks) and len(failures) < 5:
                failures.append(f"{status}: {body[:300]!r}")
            if not keep:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"seconds": time.perf_counter() - t0, "failures": failures}


_FLOOR_BODY = b'{"object":"response","status":"completed"}'


async def _floor_app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    """The least an ASGI app can do per request under the bridge's uvicorn settings: read the body,
    answer a fixed JSON object. Its CPU per request is the floor of any route."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": _FLOOR_BODY})


def floor_main(port: int) -> None:
    import uvicorn

    uvicorn.run(_floor_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False)  # fmt: skip


def measure_floor(args: argparse.Namespace, log_dir: Path) -> dict:
    port = free_port()
    proc = start("floor", [sys.executable, __file__, "floor", str(port)], log_dir)
    if not wait_port(port, 30, proc):
        raise RuntimeError(f"floor app did not start: {proc.tail()}")
    try:
        _drive_floor = [sys.executable, __file__, "client", "--port", str(port), "-n", str(args.warmup), "-c", "4",
                        "--no-check"]  # fmt: skip
        subprocess.run(_drive_floor, capture_output=True, timeout=120)
        settle(proc.pid)
        user0, sys0 = cpu_split([proc.pid])
        subprocess.run([*_drive_floor[:6], str(args.requests), "-c", str(args.concurrency), "--no-check"],
                       capture_output=True, timeout=600)  # fmt: skip
        user1, sys1 = cpu_split([proc.pid])
    finally:
        proc.stop()
    ms = ((user1 - user0) + (sys1 - sys0)) * 1000 / args.requests
    print(f"  floor (bare ASGI app, same uvicorn settings) c={args.concurrency}: cpu/request={ms:.3f} ms", flush=True)
    return {"store": "-", "kind": "floor", "concurrency": args.concurrency, "cpu_ms_per_request": round(ms, 3),
            "failures": []}  # fmt: skip


def client_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("-n", type=int, required=True)
    parser.add_argument("-c", type=int, required=True)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--chunks", type=int, default=CHUNKS)
    parser.add_argument("--no-check", action="store_true", help="do not check the answers (the floor app)")
    args = parser.parse_args(argv)
    try:
        import uvloop  # the client's own cost is not measured, but a cheap client leaves the cores to the bridge

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_drive(args.port, args.n, args.c, args.stream, args.chunks, not args.no_check))
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------ harness


def _run_client(port: int, n: int, c: int, stream: bool, chunks: int) -> dict:
    cmd = [sys.executable, __file__, "client", "--port", str(port), "-n", str(n), "-c", str(c), "--chunks", str(chunks)]
    if stream:
        cmd.append("--stream")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"client failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_split(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of `pids`, from /proc/PID/stat (utime, stime)."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / TICKS, system / TICKS


def _profile(args: argparse.Namespace, pid: int, port: int, store: str, stream: bool, chunks: int) -> list[dict]:
    """A concurrent phase of its own under py-spy (its CPU is not counted: sampling stops the
    process); py-spy's raw stacks go to PREFIX-STORE-KIND.txt, the top self shares are returned."""
    from profiling import analyse

    raw = Path(f"{args.profile}-{store}-{'stream' if stream else 'json'}{chunks}.txt")
    raw.parent.mkdir(parents=True, exist_ok=True)
    settle(pid)
    profiler = subprocess.Popen([args.py_spy, "record", "--pid", str(pid), "--rate", "500", "--format", "raw",
                                 "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(1.0)
    _run_client(port, args.requests, args.concurrency, stream, chunks)
    profiler.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
    profiler.wait(60)
    return analyse(raw, top=args.top)["self"] if raw.exists() else []


def _callgrind_phase(args: argparse.Namespace, pid: int, port: int, store: str, kind: str, concurrency: int,
                     stream: bool, chunks: int, log_dir: Path) -> dict:  # fmt: skip
    """One phase counted by callgrind: instructions the bridge executed (user space, all threads)
    per request. Deterministic to a few per cent whatever the machine's load, unlike CPU time; the
    kernel's share (socket writes, fsync) is not in it."""
    control = ["callgrind_control"]
    before = set(log_dir.glob(f"callgrind-{store}.out*"))
    subprocess.run([*control, "-i", "on", str(pid)], capture_output=True, check=True, timeout=120)
    result = _run_client(port, args.requests, concurrency, stream, chunks)
    subprocess.run([*control, "-d", f"{kind}-c{concurrency}", str(pid)], capture_output=True, check=True,
                   timeout=300)  # fmt: skip
    subprocess.run([*control, "-i", "off", str(pid)], capture_output=True, check=True, timeout=120)
    dumps = sorted(set(log_dir.glob(f"callgrind-{store}.out*")) - before, key=lambda p: p.stat().st_mtime)
    instructions = 0
    for line in dumps[-1].read_text(errors="replace").splitlines() if dumps else ():
        if line.startswith(("summary:", "totals:")):
            instructions = int(line.split()[1])
    per_request = instructions / args.requests
    print(f"  store={store:<6} {kind:<8} c={concurrency:<3} instructions/request={per_request / 1e6:.3f} M"
          f"  ({dumps[-1].name if dumps else 'no dump'})"
          + (f"  FAILURES: {result['failures']}" if result["failures"] else ""), flush=True)  # fmt: skip
    return {"store": store, "kind": kind, "concurrency": concurrency, "requests": args.requests,
            "instructions_per_request": round(per_request), "cpu_ms_per_request": 0.0,
            "failures": result["failures"], "dump": str(dumps[-1]) if dumps else None}  # fmt: skip


def measure(store: str, args: argparse.Namespace, log_dir: Path) -> list[dict]:
    backend_port, bridge_port = free_port(), free_port()
    spec = store
    if store == "sqlite":  # a fresh database file per run, so earlier runs' rows do not weigh
        db = log_dir / f"request_cost-{os.getpid()}.db"
        for leftover in log_dir.glob(f"{db.name}*"):
            leftover.unlink()
        log_dir.mkdir(parents=True, exist_ok=True)
        spec = f"sqlite:///{db}"
    fresh = None
    if store == "postgresql":  # a fresh schema on the local server (bench/targets.py), dropped afterwards
        from targets import FreshSchema

        fresh = FreshSchema()
        spec = fresh()
    backend = start(f"backend-{store}", [sys.executable, str(BENCH / "backend.py"), "--port", str(backend_port)], log_dir)
    if not wait_port(backend_port, 20, backend):
        raise RuntimeError(f"backend did not start: {backend.tail()}")
    prefix: list[str] = []
    if args.callgrind:  # counting starts only for each measured phase (callgrind_control -i on)
        for old in log_dir.glob(f"callgrind-{store}.out*"):  # a dump is found as the file that appeared
            old.unlink()
        prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                  f"--callgrind-out-file={log_dir / f'callgrind-{store}.out'}"]  # fmt: skip
    bridge = start(f"bridge-{store}", [*prefix, sys.executable, "-m", "server", "serve", "--upstream",
                                       f"http://127.0.0.1:{backend_port}/v1", "--store", spec,
                                       "--port", str(bridge_port)], log_dir, cwd=REPO)  # fmt: skip
    if not wait_port(bridge_port, 600 if args.callgrind else 60, bridge):
        raise RuntimeError(f"bridge did not start: {bridge.tail()}")
    rows = []
    try:
        phases = [(False, args.chunks)] + [(True, int(n)) for n in args.stream_chunks.split(",") if n.strip()]
        for stream, chunks in phases:
            _run_client(bridge_port, args.warmup, 4, stream, chunks)  # imports, caches, pooled connections
            for concurrency in (1, args.concurrency):
                settle(bridge.pid)
                pids = tree(bridge.pid)
                kind = f"stream{chunks}" if stream else "json"
                load_before = loadavg()
                if args.callgrind:
                    rows.append(_callgrind_phase(args, bridge.pid, bridge_port, store, kind, concurrency, stream,
                                                 chunks, log_dir))  # fmt: skip
                    continue
                user0, sys0 = cpu_split(pids)
                result = _run_client(bridge_port, args.requests, concurrency, stream, chunks)
                user1, sys1 = cpu_split(pids)
                user_ms, sys_ms = ((b - a) * 1000 / args.requests for a, b in ((user0, user1), (sys0, sys1)))
                row = {
                    "store": store, "kind": kind, "concurrency": concurrency, "requests": args.requests,
                    "cpu_ms_per_request": round(user_ms + sys_ms, 3),
                    "user_ms": round(user_ms, 3), "system_ms": round(sys_ms, 3),
                    "requests_per_s": round(args.requests / result["seconds"], 1),
                    "failures": result["failures"], "loadavg": load_before,
                }  # fmt: skip
                rows.append(row)
                print(f"  store={store:<6} {kind:<8} c={concurrency:<3} cpu/request={row['cpu_ms_per_request']:.3f} ms"
                      f" (user {user_ms:.3f} sys {sys_ms:.3f})"
                      f"  {row['requests_per_s']:>8.1f} req/s  load={load_before[0]:.2f}"
                      + (f"  FAILURES: {result['failures']}" if result["failures"] else ""), flush=True)  # fmt: skip
            if args.profile and chunks == args.chunks:
                rows[-1]["profile"] = _profile(args, bridge.pid, bridge_port, store, stream, chunks)
    finally:
        bridge.stop()
        backend.stop()
        if fresh is not None:
            fresh.cleanup()
    return rows


def _print_fixed_cost(rows: list[dict]) -> None:
    """A stream's cost split into a fixed part and a per-chunk part, from two chunk counts."""
    by = {(r["store"], r["kind"], r["concurrency"]): r["cpu_ms_per_request"] for r in rows}
    streams = sorted({int(k[1][6:]) for k in by if k[1].startswith("stream")})
    if len(streams) < 2:
        return
    low, high = streams[0], streams[-1]
    print(f"\nstream cost split (from stream{low} and stream{high}):")
    for (store, kind, c), high_ms in sorted(by.items()):
        if kind != f"stream{high}" or (store, f"stream{low}", c) not in by:
            continue
        low_ms = by[(store, f"stream{low}", c)]
        per_chunk = (high_ms - low_ms) / (high - low)
        print(f"  store={store:<6} c={c:<3} fixed={low_ms - low * per_chunk:.3f} ms  per chunk={per_chunk * 1000:.2f} us")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(sys.argv[2:])
        return
    if len(sys.argv) > 2 and sys.argv[1] == "floor":
        floor_main(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--requests", type=int, default=2000, help="requests per phase (default 2000)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections of the concurrent phase")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=CHUNKS, help="content chunks per answer (default 64)")
    parser.add_argument("--stream-chunks", default="64,1",
                        help="chunks per streamed answer, one phase each (default 64,1: the two give the "
                             "per-chunk and the fixed part of a stream's cost; empty: non-streaming only)")
    parser.add_argument("--store", default="none,memory",
                        help="comma-separated --store values; `sqlite` is a fresh database file in bench/.work, "
                        "`postgresql` a fresh schema on the local server (BENCH_PG_DSN)")
    parser.add_argument("--profile", metavar="PREFIX", help="py-spy the concurrent phases into PREFIX-*.txt")
    parser.add_argument("--top", type=int, default=12, help="functions listed per profile")
    parser.add_argument("--py-spy", default=str(Path(sys.executable).with_name("py-spy")))
    parser.add_argument("--floor", action="store_true",
                        help="also measure a bare ASGI app under the same uvicorn settings (the floor)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--callgrind", action="store_true",
                        help="run the bridge under valgrind's callgrind and report instructions per request "
                             "instead of CPU time (deterministic on a busy machine; use -n 200 --warmup 50: "
                             "~50x slower); dumps in bench/.work/request_cost, for callgrind_annotate")  # fmt: skip
    args = parser.parse_args()
    log_dir = BENCH / ".work" / "request_cost"
    print(f"load average before: {loadavg()}  (cores: {os.cpu_count()})", flush=True)
    rows: list[dict] = []
    try:
        if args.floor:
            rows.append(measure_floor(args, log_dir))
        for store in args.store.split(","):
            rows += measure(store.strip(), args, log_dir)
    finally:
        stop_all()
    for row in rows:
        if "profile" in row:
            print(f"\nprofile store={row['store']} {row['kind']} c={row['concurrency']} (self %):")
            for entry in row["profile"]:
                print(f"  {entry['percent']:5.1f}  {entry['function']}")
    _print_fixed_cost(rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if any(row["failures"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
