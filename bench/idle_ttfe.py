"""Only the idle-stream and time-to-first-event phases of bench/run.py, for quick before/after figures.

``python bench/idle_ttfe.py --only bridge-w1,bridge-sqlite-w1,bridge-pg-w1`` starts the bench backend,
then for each target: a fresh start, the 1,000 idle streams (peak RSS of the process tree, as run.py
measures it), a fresh start again, time to first event at concurrency 1 (``--ttfe-seconds``, repeated
``--ttfe-repeat`` times, the median of the p50s reported, since one short run on a busy machine is
noisy).  It calls run.py's own functions, so the figures are measured exactly as the full run does;
the wrk phases, the profiles and the report are skipped.  One JSON line per target on stdout.
"""

from __future__ import annotations

import argparse
import atexit
import json
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procs
from run import LOGS, client_args, loadgen, measure_idle, start_target, wait_first_answer
from targets import all_targets, backend_argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="idle-stream RSS and time to first event only")
    parser.add_argument("--only", default="bridge-w1,bridge-sqlite-w1,bridge-pg-w1")
    parser.add_argument("--idle-streams", type=int, default=1000)
    parser.add_argument("--idle-hold", type=float, default=3.0)
    parser.add_argument("--ttfe-seconds", type=float, default=3.0)
    parser.add_argument("--ttfe-repeat", type=int, default=3)
    parser.add_argument("--ttfe-pause-ms", type=float, default=0.0,
                        help="the client waits this long after each answer (bench/loadgen.py --pause-ms)")
    parser.add_argument("--no-idle", dest="idle", action="store_false")
    parser.add_argument("--no-ttfe", dest="ttfe", action="store_false")
    opts = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    atexit.register(procs.stop_all)
    only = [k for k in opts.only.split(",") if k]
    targets = [t for t in all_targets([1], [1]) if t.key in only]
    backend_port = procs.free_port()
    backend = procs.start("backend", backend_argv(backend_port, 1), LOGS)
    if not procs.wait_port(backend_port, 20, backend):
        print(backend.tail(), file=sys.stderr)
        return 1
    upstream = f"http://127.0.0.1:{backend_port}/v1"
    for target in targets:
        out: dict = {"key": target.key, "loadavg": procs.loadavg()}
        try:
            if opts.idle:
                proc, port = start_target(target, upstream, backend)
                wait_first_answer(target, port, target.ready_timeout)
                out["idle"] = measure_idle(target, port, proc.pid, opts.idle_streams, opts.idle_hold)
                proc.stop()
            if opts.ttfe:
                proc, port = start_target(target, upstream, backend)
                wait_first_answer(target, port, target.ready_timeout)
                runs = [loadgen(["ttfe", "--duration", str(opts.ttfe_seconds), "--pause-ms", str(opts.ttfe_pause_ms),
                                 *client_args(target, port, "bench-64", True)], opts.ttfe_seconds + 60)
                        for _ in range(opts.ttfe_repeat)]
                p50s = [r["ttfe_p50_ms"] for r in runs if "ttfe_p50_ms" in r]
                out["ttfe_p50_ms_runs"] = [round(x, 3) for x in p50s]
                out["ttfe_p50_ms"] = round(statistics.median(p50s), 3) if p50s else None
                proc.stop()
        finally:
            if target.cleanup is not None:
                target.cleanup()
        out["loadavg_end"] = procs.loadavg()
        print(json.dumps(out), flush=True)
    backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
