"""Store write throughput: W concurrent writers each storing N responses, puts/s per engine and mode.

    python bench/store_bench.py                      # SQLite and PostgreSQL, grouped vs one commit per put
    python bench/store_bench.py --writers 16 --puts 500 --engines sqlite
    python bench/store_bench.py --source /tmp/main   # the same load on another checkout's server/ (e.g. main)
    python bench/store_bench.py --busy --engines sqlite   # while the event loop is kept busy, as under load

"grouped" is the store as shipped (group commit); "single" is the same store with ``max_batch=1`` (one
transaction, one fsync, per put: the behaviour before group commit). Each writer awaits its put before
the next, as the server does per request, so the figure is what concurrent requests get. PostgreSQL
runs in a schema of its own on ``--postgres`` (dropped afterwards). docs/store.md, "Group commit",
explains the figures. ``--busy`` keeps the event loop busy meanwhile (a task running ~50 µs slices of
Python with a yield between them, as a loop serving streams does): what matters to SQLite's worker
thread, which must win the GIL back from that loop after every statement. It adds the put latency
(p50/p99) and the slices the busy task got through. The loop is uvloop, as `serve` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def response(writer: int, n: int) -> tuple[dict, list[dict]]:
    rid = f"resp_w{writer}_{n}_{uuid.uuid4().hex[:8]}"
    body = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": "bench-model",
        "previous_response_id": None,
        "output": [
            {
                "id": f"msg_{rid}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "x" * 600, "annotations": []}],
            }
        ],
        "usage": {"input_tokens": 12, "output_tokens": 150, "total_tokens": 162},
    }
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "y" * 200}]}]
    return body, items


async def spin(stop: asyncio.Event, slices: list[int]) -> None:
    """Keep the loop busy: ~50 µs of Python, a yield, again (what serving many streams looks like)."""
    while not stop.is_set():
        total = 0
        for i in range(2000):
            total += i
        slices[0] += 1
        await asyncio.sleep(0)


async def run_one(
    open_store: Any, spec: str, writers: int, puts: int, max_batch: int | None, busy: bool = False
) -> tuple[float, Any, list[float], int]:
    store = open_store(spec)
    if max_batch is not None:
        if not hasattr(store, "max_batch"):
            raise SystemExit("this store has no max_batch (use the default mode on older code)")
        store.max_batch = max_batch
    await store.open()
    latencies: list[float] = []
    stop, slices = asyncio.Event(), [0]
    spinner = asyncio.create_task(spin(stop, slices)) if busy else None
    try:
        async def writer(w: int) -> None:
            for n in range(puts):
                body, items = response(w, n)
                began = time.perf_counter()
                await store.put(body, items, owner="bench")
                latencies.append(time.perf_counter() - began)

        start = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        elapsed = time.perf_counter() - start
        return writers * puts / elapsed, store, sorted(latencies), slices[0]
    finally:
        stop.set()
        if spinner is not None:
            await spinner
        await store.close()


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--puts", type=int, default=500, help="puts per writer")
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--modes", default="single,grouped")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--source", help="a checkout whose server/ package to measure instead of this one")
    parser.add_argument("--dir", help="where the SQLite file goes (default: a temporary directory)")
    parser.add_argument("--busy", action="store_true", help="keep the event loop busy meanwhile (see above)")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(args.source).resolve() if args.source else ROOT))
    open_store = importlib.import_module("server.store").open_store
    source = args.source or "this checkout"
    print(f"{args.writers} writers x {args.puts} puts, server/ from {source}, cpus={os.cpu_count()}")
    print(f"{'engine':<11} {'mode':<8} {'puts/s':>9} {'commits':>8} {'puts/commit':>12}"
          + (f" {'put p50 ms':>11} {'put p99 ms':>11} {'busy slices/s':>14}" if args.busy else ""))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for engine in args.engines.split(","):
            for mode in args.modes.split(","):
                max_batch = 1 if mode == "single" else None
                if args.source and mode == "single":
                    max_batch = None  # older code: one transaction per put is all it does
                schema = f"rb_bench_{uuid.uuid4().hex[:10]}"
                spec = f"sqlite:///{tmp}/{mode}.db" if engine == "sqlite" else f"{args.postgres}?schema={schema}"
                try:
                    rate, store, latencies, slices = await run_one(open_store, spec, args.writers, args.puts,
                                                                   max_batch, args.busy)
                finally:
                    if engine != "sqlite":
                        await drop_schema(args.postgres, schema)
                commits = getattr(store, "commits", None)
                per = f"{store.committed_writes / commits:.1f}" if commits else "-"
                line = f"{engine:<11} {mode:<8} {rate:>9.0f} {commits if commits is not None else '-':>8} {per:>12}"
                if args.busy:
                    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
                    seconds = args.writers * args.puts / rate
                    line += f" {p50 * 1e3:>11.1f} {p99 * 1e3:>11.1f} {slices / seconds:>14.0f}"
                print(line)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
