"""Where the memory of held idle streams goes: tracemalloc and object counts inside the real server.

``python bench/idle_memory.py --streams 1000 [--store sqlite|postgresql|none]`` starts the bench
backend and the bridge (``--workers 1``, the same command line as bench/run.py's rows) under
``-X tracemalloc``, opens the streams with bench/loadgen.py's ``idle`` mode (the ``bench-stall`` model:
one chunk, then silence), and asks the bridge (SIGUSR1, handled by the small wrapper below) for a
snapshot before and while the streams are held. It prints the RSS of both moments (from /proc), the
Python heap growth per stream by allocation site (tracemalloc, ``--frames`` deep), and the growth in
live objects per type (``gc.get_objects``), so what each held stream keeps can be read off directly.
The RSS figure is inflated by tracemalloc's own bookkeeping; the bench's figure is bench/idle_ttfe.py.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs
from run import LOGS, client_args
from targets import BENCH, REPO, WORK, FreshSchema, FreshSQLite, Target, backend_argv, project_python

#: The server side: run the bridge's CLI with a SIGUSR1 handler that dumps a snapshot and type counts.
_WRAPPER = r"""
import gc, json, os, signal, sys, tracemalloc
from collections import Counter
out = os.environ["IDLE_MEMORY_OUT"]
n = [0]
def dump(*_):
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    snap.dump(f"{out}.{n[0]}.snap")
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    with open(f"{out}.{n[0]}.types", "w") as f:
        json.dump(counts, f)
    n[0] += 1
signal.signal(signal.SIGUSR1, dump)
from server.cli import main
sys.exit(main(sys.argv[1:]))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--store", choices=["none", "sqlite", "postgresql"], default="none")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--top", type=int, default=25)
    opts = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    atexit.register(procs.stop_all)
    backend_port = procs.free_port()
    backend = procs.start("backend", backend_argv(backend_port, 1), LOGS)
    procs.wait_port(backend_port, 20, backend)
    upstream = f"http://127.0.0.1:{backend_port}/v1"
    store_spec: list[str] = []
    cleanup = None
    if opts.store == "sqlite":
        fresh = FreshSQLite("idle-memory")
        store_spec, cleanup = ["--store", fresh()], fresh.cleanup
    elif opts.store == "postgresql":
        schema = FreshSchema()
        store_spec, cleanup = ["--store", schema()], schema.cleanup
    port = procs.free_port()
    out = WORK / "idle-memory"
    for old in WORK.glob("idle-memory.*"):
        old.unlink()
    argv_server = [project_python(), "-X", f"tracemalloc={opts.frames}", "-c", _WRAPPER, "serve",
                   "--upstream", upstream, "--port", str(port), "--workers", "1", *store_spec]
    bridge = procs.start("idle-memory-bridge", argv_server, LOGS,
                         env={"PYTHONPATH": str(REPO), "IDLE_MEMORY_OUT": str(out)}, cwd=WORK)
    try:
        if not procs.wait_port(port, 60, bridge):
            print(bridge.tail(), file=sys.stderr)
            return 1
        target = Target("bridge", "bridge", "responses", lambda p, u: [], stored=opts.store != "none")
        check = subprocess.run([project_python(), str(BENCH / "loadgen.py"), "check", "--stream", "--pieces", "64",
                                *client_args(target, port, "bench-64", True)], capture_output=True, text=True)
        print("check:", check.stdout.strip())

        def snapshot(n: int) -> tuple[tracemalloc.Snapshot, dict[str, int], int]:
            os.kill(bridge.pid, signal.SIGUSR1)
            path = Path(f"{out}.{n}.types")
            deadline = time.monotonic() + 120
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
            return (tracemalloc.Snapshot.load(f"{out}.{n}.snap"), json.loads(path.read_text()),
                    procs.rss_bytes([bridge.pid]))

        snap0, types0, rss0 = snapshot(0)
        cmd = [project_python(), str(BENCH / "loadgen.py"), "idle", "--streams", str(opts.streams), "--hold", "300",
               "--timeout", "60", *client_args(target, port, "bench-stall", True)]
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert child.stdout is not None
        print("idle:", child.stdout.readline().strip())
        time.sleep(1.0)
        rss_held = procs.rss_bytes([bridge.pid])
        snap1, types1, rss1 = snapshot(1)
        child.communicate(timeout=60)
        n = opts.streams
        mb = 1024 * 1024
        stats = snap1.compare_to(snap0, "traceback")
        grown = sum(s.size_diff for s in stats)
        print(f"RSS before {rss0 / mb:.1f} MB, held {rss_held / mb:.1f} MB ({(rss_held - rss0) / n / 1024:.1f} KB/stream;"
              f" tracemalloc itself inflates both); Python heap growth {grown / mb:.2f} MB"
              f" = {grown / n:.0f} B/stream; RSS after snapshot {rss1 / mb:.1f} MB")
        print(f"\n== top {opts.top} allocation sites by growth (bytes per stream, blocks per stream)")
        for s in stats[: opts.top]:
            print(f"{s.size_diff / n:8.0f} B {s.count_diff / n:6.2f} blk")
            for line in s.traceback.format()[-2 * opts.frames:]:
                if line.strip().startswith("File"):
                    print("      ", line.strip().replace(str(REPO) + "/", "").replace(sys.prefix, "<venv>"))
        print("\n== live objects per type, growth per stream")
        diff = {k: types1.get(k, 0) - types0.get(k, 0) for k in set(types0) | set(types1)}
        for name, d in sorted(diff.items(), key=lambda kv: -kv[1])[:40]:
            if d / n >= 0.5:
                print(f"{d / n:7.2f}  {name}")
    finally:
        bridge.stop()
        backend.stop()
        if cleanup is not None:
            cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
