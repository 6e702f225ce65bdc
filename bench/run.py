"""One command for the side-by-side benchmark: ``python bench/run.py`` (``--quick`` for a short run).

What it does, in order, all in one run so every ratio compares figures taken minutes apart on the same
machine:

1. installs what is missing (wrk from Debian's packages; matplotlib + py-spy, codex-relay and LiteLLM
   each into its own venv under bench/.venvs/), recording any install that fails and going on;
2. starts the fast scripted backend (bench/backend.py);
3. for each target (the backend itself; the floor, a byte-copying proxy written here; this bridge with
   --workers 1 and 2 on bodies that say ``"store": false`` as Codex does; this bridge on bodies with no
   ``store`` field, so the default applies and every response is stored, in a fresh SQLite file and in a
   fresh schema on the local PostgreSQL server; codex-relay; LiteLLM):
   starts it fresh, checks one answer of each kind is whole, measures the memory it needs to hold
   1,000 idle streams (first, while the process is fresh), restarts it, measures time to first event
   at concurrency 1, then
   the wrk throughput phases (64- and 512-chunk streams at 16 and 256 concurrent, the 64-chunk stream
   paced by the backend at 16 and 256, non-streaming at 16 and at 1), sampling the target's, the
   backend's (and for PostgreSQL the database server's) CPU and peak RSS from /proc during each;
   stops it and drops the store it made;
4. profiles this bridge (--workers 1) with py-spy under the 64-chunk, 16-concurrent load;
5. runs bench/translator_bench.py when it exists;
6. writes bench/results/<date>-<machine>.json, a PNG chart and bench/results/latest.md, prints the table.

``--growth`` runs the other benchmark instead, cost as the work grows (bench/growth.py):
``previous_response_id`` chains of 1 to 1,000 turns, and 10,000 stored responses with 1,000 concurrent
streams.

Every phase is bounded in time and every process started is stopped, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import install
import procs
import profiling
import report
from targets import BENCH, REPO, WORK, Target, all_targets, backend_argv, postgres_reachable, project_python
from wrkload import run_wrk

# (name, model, stream, connections); "bench-64p" is the paced stream (one write per frame)
PHASES = [
    ("s64_c16", "bench-64", True, 16),
    ("p64_c16", "bench-64p", True, 16),
    ("p64_c256", "bench-64p", True, 256),
    ("s64_c256", "bench-64", True, 256),
    ("s512_c16", "bench-512", True, 16),
    ("s512_c256", "bench-512", True, 256),
    ("ns_c16", "bench-64", False, 16),
    ("ns_c1", "bench-64", False, 1),
]
LOGS = WORK / "logs"


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    py = subprocess.run([project_python(), "-c", "import sys; print(sys.version.split()[0])"],
                        capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 1048576, 1),
            "python": py, "kernel": platform.release(), "machine": platform.machine()}


def machine_slug(info: dict) -> str:
    cpu = re.sub(r"\(r\)|\(tm\)|processor|cpu|@.*", "", info["cpu"].lower())
    cpu = re.sub(r"[^a-z0-9]+", "-", cpu).strip("-")
    return f"{info['nproc']}cpu-{cpu}"[:60]


def loadgen(args: list[str], timeout: float) -> dict:
    cmd = [project_python(), str(BENCH / "loadgen.py"), *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": f"no output (exit {done.returncode}): {done.stderr[-300:]}"}
    return json.loads(lines[-1])


def backend_stats(port: int) -> dict:
    """The backend's counters (one process's view: exact with --backend-procs 1)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/_bench/stats")
        return json.loads(conn.getresponse().read())
    except (OSError, ValueError):
        return {}
    finally:
        conn.close()


def client_args(target: Target, port: int, model: str, stream: bool) -> list[str]:
    return ["--port", str(port), "--path", target.path, "--kind", target.kind,
            "--body", target.body(model, stream), "--api-key", "bench"]


def measure_idle(target: Target, port: int, root_pid: int, streams: int, hold: float) -> dict:
    """Open `streams` stalled streams through the target, hold them, sample the target's RSS."""
    baseline = procs.rss_bytes(procs.tree(root_pid))
    cmd = [project_python(), str(BENCH / "loadgen.py"), "idle", "--streams", str(streams),
           "--hold", str(hold + 60), "--timeout", "60", *client_args(target, port, "bench-stall", True)]
    with procs.Sampler(root_pid, interval=0.05) as sampler:
        child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 text=True, start_new_session=True)
        opened: dict = {}
        try:
            deadline = time.monotonic() + 120
            line = ""
            while time.monotonic() < deadline:
                line = child.stdout.readline() if child.stdout else ""
                if not line or line.startswith("{"):
                    break
            opened = json.loads(line) if line.startswith("{") else {"held": 0, "errors": {"no output": 1}}
            time.sleep(hold)  # all streams are open and idle now: the sampler records the peak
            rss_held = procs.rss_bytes(procs.tree(root_pid))
            rest = child.communicate(timeout=30)[0]  # closes its stdin: the signal to let go
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    done = next((json.loads(ln) for ln in rest.splitlines() if ln.startswith("{")), {})
    mb = 1024 * 1024
    return {
        "streams": streams, "held": opened.get("held", 0), "errors": opened.get("errors", {}),
        "open_seconds": opened.get("open_seconds"),
        "closed_by_server_during_hold": done.get("closed_by_server_during_hold"),
        "rss_baseline_mb": round(baseline / mb, 1), "rss_held_mb": round(rss_held / mb, 1),
        "rss_peak_mb": round(sampler.peak / mb, 1),
    }


def start_target(target: Target, upstream: str, backend: procs.Proc) -> tuple[procs.Proc, int]:
    if target.key == "direct":
        return backend, int(upstream.rsplit(":", 1)[1].split("/")[0])
    port = procs.free_port()
    proc = procs.start(target.key, target.argv(port, upstream), LOGS, env=target.env, cwd=WORK)
    if not procs.wait_port(port, target.ready_timeout, proc):
        tail = proc.tail()
        proc.stop()
        raise RuntimeError(f"{target.label} did not listen on port {port}: {tail}")
    return proc, port


def wait_first_answer(target: Target, port: int, timeout: float) -> dict:
    """Poll until a whole 64-chunk stream comes back (servers may listen before they can answer)."""
    deadline = time.monotonic() + timeout
    result: dict = {}
    while time.monotonic() < deadline:
        result = loadgen(["check", "--stream", "--pieces", "64", *client_args(target, port, "bench-64", True)], 60)
        if result.get("ok"):
            return result
        time.sleep(0.5)
    return result


def measure_target(target: Target, upstream: str, backend: procs.Proc, opts: argparse.Namespace,
                   wrk: str, py_spy: str | None, results_dir: Path) -> dict:
    out: dict = {"key": target.key, "label": target.label, "note": target.note, "loadavg_at_start": procs.loadavg()}
    proc, port = start_target(target, upstream, backend)
    try:
        checks = {"stream_64": wait_first_answer(target, port, target.ready_timeout)}
        checks["stream_512"] = loadgen(["check", "--stream", "--pieces", "512",
                                        *client_args(target, port, "bench-512", True)], 60)
        checks["paced_64"] = loadgen(["check", "--stream", "--pieces", "64",
                                      *client_args(target, port, "bench-64p", True)], 60)
        checks["nonstream_64"] = loadgen(["check", "--pieces", "64", *client_args(target, port, "bench-64", False)], 60)
        out["checks"] = checks
        out["status"] = "measured" if all(c.get("ok") for c in checks.values()) else "answers incomplete"
        summary = ", ".join(f"{k}={v.get('ok')}" for k, v in checks.items())
        print(f"  checks: {summary}", flush=True)

        out["idle"] = measure_idle(target, port, proc.pid, opts.idle_streams, opts.idle_hold)
        out["idle"]["settle_seconds"] = procs.settle(proc.pid)
        print(f"  idle: {out['idle']}", flush=True)
        if proc is not backend:
            # a fresh process for the load phases, so streams the idle phase left behind (a target
            # may still be holding upstream streams its clients abandoned) cost the load nothing
            proc.stop()
            proc, port = start_target(target, upstream, backend)
            wait_first_answer(target, port, target.ready_timeout)

        out["ttfe"] = loadgen(["ttfe", "--duration", str(opts.ttfe_seconds),
                               *client_args(target, port, "bench-64", True)], opts.ttfe_seconds + 60)
        print(f"  ttfe: {out['ttfe']}", flush=True)
        # The same with the client pausing after each answer, as a real client does between turns:
        # the request then meets a CPU that went idle (docs/benchmarks.md, "after a pause").
        out["ttfe_paused"] = loadgen(["ttfe", "--duration", str(opts.ttfe_seconds), "--pause-ms", str(report.TTFE_PAUSE_MS),
                                      *client_args(target, port, "bench-64", True)], opts.ttfe_seconds + 60)
        print(f"  ttfe, {report.TTFE_PAUSE_MS:g} ms between requests: {out['ttfe_paused']}", flush=True)

        url = f"http://127.0.0.1:{port}{target.path}"
        out["phases"] = {}
        for name, model, stream, conns in PHASES:
            stats0 = backend_stats(opts.backend_port)
            store_pids0 = target.store_pids() if target.store_pids else []
            store0 = {p: procs.cpu_seconds([p]) for p in store_pids0}
            busy0, total0 = procs.system_cpu()
            kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            with procs.Sampler(proc.pid) as own, procs.Sampler(backend.pid) as back:
                res = run_wrk(wrk, url, target.body(model, stream), conns, opts.seconds, WORK / "lua",
                              f"{target.key}-{name}", timeout_s=max(10.0, opts.seconds))
            kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            busy1, total1 = procs.system_cpu()
            store_pids1 = target.store_pids() if target.store_pids else []
            # backends that ended during the phase are lost; ones that began in it count from zero
            store_cpu = sum(procs.cpu_seconds([p]) - store0.get(p, 0.0) for p in store_pids1)
            elapsed = own.t_end - own.t_start
            ncpu = os.cpu_count() or 1
            system_cores = (busy1 - busy0) / (total1 - total0) * ncpu if total1 > total0 else 0.0
            wrk_cores = ((kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)) / elapsed
            phase = res.to_json()
            phase["cpu_cores"] = round(own.cores, 2)
            phase["backend_cpu_cores"] = round(back.cores, 2) if target.key != "direct" else None
            phase["wrk_cpu_cores"] = round(wrk_cores, 2)
            phase["system_cpu_cores"] = round(system_cores, 2)
            store_cores = store_cpu / elapsed if target.store_pids and elapsed > 0 else 0.0
            phase["store_server_cpu_cores"] = round(store_cores, 3) if target.store_pids else None
            phase["store_server_processes"] = len(store_pids1) if target.store_pids else None
            ours = own.cores + (back.cores if target.key != "direct" else 0.0) + wrk_cores + store_cores
            phase["other_cpu_cores"] = round(max(0.0, system_cores - ours), 2)
            phase["rss_peak_mb"] = round(own.peak / 1048576, 1)
            phase["settle_seconds"] = procs.settle(proc.pid)
            stats1 = backend_stats(opts.backend_port)
            if stats0 and stats1 and target.key != "direct":
                reqs = stats1["requests"] - stats0["requests"]
                phase["upstream_requests"] = reqs
                phase["upstream_connections"] = stats1["connections"] - stats0["connections"]
                phase["upstream_connections_per_request"] = (
                    round(phase["upstream_connections"] / reqs, 3) if reqs else None)
            out["phases"][name] = phase
            print(f"  {name}: {phase['rate']:.1f}/s p50 {phase['p50_ms']:.2f} ms p99 {phase['p99_ms']:.2f} ms"
                  f" errors {phase['errors']} cpu {phase['cpu_cores']} wrk {phase['wrk_cpu_cores']}"
                  f" others {phase['other_cpu_cores']} settle {phase['settle_seconds']} s"
                  f" upstream conns/req {phase.get('upstream_connections_per_request')}", flush=True)

        if opts.profile and target.key in opts.profile_targets and py_spy:
            out["profile"] = profile_bridge(target, port, proc.pid, wrk, py_spy, opts, results_dir)
    finally:
        if proc is not backend:
            proc.stop()
    return out


def profile_bridge(target: Target, port: int, pid: int, wrk: str, py_spy: str, opts: argparse.Namespace,
                   results_dir: Path) -> dict:
    """py-spy under the 64-chunk/16-concurrent stream load and the non-streaming load."""
    url = f"http://127.0.0.1:{port}{target.path}"
    seconds = max(3.0, opts.seconds)
    svg_name = "profile.svg" if target.key == "bridge-w1" else f"profile-{target.key}.svg"
    found: dict = {}
    for label, model, stream, fmt, out in (
        ("stream_64_c16", "bench-64", True, "flamegraph", results_dir / svg_name),
        ("stream_64_c16", "bench-64", True, "raw", WORK / f"profile-{target.key}-stream.txt"),
        ("nonstream_c16", "bench-64", False, "raw", WORK / f"profile-{target.key}-nonstream.txt"),
    ):
        spy = profiling.record(py_spy, pid, seconds, out, fmt)
        time.sleep(0.5)
        run_wrk(wrk, url, target.body(model, stream), 16, seconds + 1, WORK / "lua", f"profile-{label}")
        try:
            log = spy.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            spy.kill()
            log = spy.communicate()[0]
        if fmt == "raw":
            if out.exists():
                found[label] = profiling.analyse(out)
            else:
                found[label] = {"samples": 0, "error": log[-500:]}
    svg = results_dir / svg_name
    found["flamegraph"] = os.path.relpath(svg, REPO) if svg.exists() else None
    return found


def run_translator_bench(quick: bool) -> dict:
    script = BENCH / "translator_bench.py"
    if not script.exists():
        return {"status": "absent", "lines": []}
    cmd = [project_python(), str(script), *(["--quick"] if quick else [])]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        return {"status": "timed out after 300 s", "lines": []}
    if done.returncode != 0 and quick:  # it may not know --quick: try again without
        done = subprocess.run(cmd[:2], capture_output=True, text=True, timeout=300, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    parsed = []
    for ln in lines:
        if ln.lstrip().startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                parsed.append(json.loads(ln))
    return {"status": "ran" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-400:]}",
            "lines": lines[-40:], "json": parsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="side-by-side benchmark of Responses→chat bridges")
    parser.add_argument("--quick", action="store_true", help="3 s phases, 1 s holds (a smoke run)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each wrk phase (default 10, quick 3)")
    parser.add_argument("--only", default="",
                        help="comma-separated target keys (direct,floor,bridge-w1,bridge-w2,bridge-sqlite-w1,"
                             "bridge-pg-w1,codex-relay,litellm)")
    parser.add_argument("--skip", default="", help="comma-separated target keys not to measure")
    parser.add_argument("--workers", default="1,2", help="bridge --workers values to measure (store: false)")
    parser.add_argument("--stored-workers", default="1",
                        help="bridge --workers values to measure on the default (stored) path, SQLite and PostgreSQL")
    parser.add_argument("--growth", action="store_true",
                        help="run bench/growth.py instead: chains of 1-1,000 turns, 10,000 stored + 1,000 streams")
    parser.add_argument("--backend-procs", type=int, default=1, help="processes of the bench backend")
    parser.add_argument("--idle-streams", type=int, default=1000)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--profile-targets", default="bridge-w1,bridge-sqlite-w1",
                        help="targets to profile with py-spy after their phases (comma-separated keys)")
    parser.add_argument("--no-install", dest="install", action="store_false", help="skip installs, use what is there")
    parser.add_argument("--results-dir", default=str(BENCH / "results"))
    opts, rest = parser.parse_known_args(argv)
    if opts.growth:
        import growth

        return growth.main([*(["--quick"] if opts.quick else []), "--results-dir", opts.results_dir, *rest])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    opts.seconds = opts.seconds or (3.0 if opts.quick else 10.0)
    opts.profile_targets = {k for k in opts.profile_targets.split(",") if k}
    opts.ttfe_seconds = 2.0 if opts.quick else 5.0
    opts.idle_hold = 1.0 if opts.quick else 3.0

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))  # inherited by children
    atexit.register(procs.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results_dir = Path(opts.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)

    started = dt.datetime.now(dt.UTC)
    info = machine()
    info["loadavg_at_start"] = procs.loadavg()
    busy0, total0 = procs.system_cpu()
    time.sleep(3.0)
    busy1, total1 = procs.system_cpu()
    # what the machine was already doing before the benchmark started anything (other sessions' work)
    info["background_cpu_cores_before"] = round((busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1), 2)
    run: dict = {"started": started.isoformat(timespec="seconds"), "quick": opts.quick,
                 "phase_seconds": opts.seconds, "machine": info, "installs": {}, "versions": {}, "targets": []}

    wrk = install.ensure_wrk()
    run["versions"]["wrk"] = subprocess.run([wrk, "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    py_spy = None
    try:
        if opts.install:
            install.ensure_venv(install.TOOLS)
        if install.TOOLS.path("bin/py-spy").exists():
            py_spy = str(install.TOOLS.path("bin/py-spy"))
        run["installs"]["tools"] = "ok"
    except install.InstallError as exc:
        run["installs"]["tools"] = str(exc)

    only = {k for k in opts.only.split(",") if k}
    skip = {k for k in opts.skip.split(",") if k}
    workers = [int(w) for w in opts.workers.split(",") if w]
    stored_workers = [int(w) for w in opts.stored_workers.split(",") if w]
    targets = [t for t in all_targets(workers, stored_workers)
               if (not only or t.key in only) and t.key not in skip]
    pg_problem = postgres_reachable() if any(t.store_pids for t in targets) else None

    for t in targets:
        if t.venv is None:
            continue
        try:
            if opts.install:
                install.ensure_venv(t.venv)
            run["installs"][t.key] = "ok" if t.venv.path(t.venv.probe).exists() else "not installed (--no-install)"
        except install.InstallError as exc:
            run["installs"][t.key] = str(exc)
        dist = {"codex-relay": "codex-relay", "litellm": "litellm"}.get(t.key)
        if dist:
            run["versions"][t.key] = install.version_of(t.venv, dist)

    backend_port = procs.free_port()
    backend = procs.start("backend", backend_argv(backend_port, opts.backend_procs), LOGS)
    if not procs.wait_port(backend_port, 20, backend):
        print(f"the bench backend did not start:\n{backend.tail()}", file=sys.stderr)
        return 1
    upstream = f"http://127.0.0.1:{backend_port}/v1"
    opts.backend_port = backend_port
    run["backend"] = {"url": upstream, "procs": opts.backend_procs}

    for t in targets:
        print(f"== {t.label}", flush=True)
        if t.venv is not None and run["installs"].get(t.key) != "ok":
            run["targets"].append({"key": t.key, "label": t.label, "note": t.note, "status": "not installed",
                                   "detail": run["installs"].get(t.key)})
            print(f"  not installed: {run['installs'].get(t.key)}", flush=True)
            continue
        if t.store_pids and pg_problem:
            run["targets"].append({"key": t.key, "label": t.label, "note": t.note, "status": "failed",
                                   "detail": f"PostgreSQL not reachable: {pg_problem}"})
            print(f"  PostgreSQL not reachable: {pg_problem}", flush=True)
            continue
        try:
            run["targets"].append(measure_target(t, upstream, backend, opts, wrk, py_spy, results_dir))
        except Exception as exc:  # one target failing must not lose the others' figures
            traceback.print_exc()
            print(f"  failed: {type(exc).__name__}: {exc}", flush=True)
            run["targets"].append({"key": t.key, "label": t.label, "note": t.note, "status": "failed",
                                   "detail": f"{type(exc).__name__}: {exc}"})
        finally:
            if t.cleanup is not None:
                t.cleanup()
        run["targets"][-1].update(stored=t.stored, floor=t.floor)
    backend.stop()

    print("== translator benchmark", flush=True)
    run["translator"] = run_translator_bench(opts.quick)
    run["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    info["loadavg_at_end"] = procs.loadavg()

    stem = f"{started:%Y-%m-%d}-{machine_slug(info)}" + ("-quick" if opts.quick else "")
    json_path = results_dir / f"{stem}.json"
    json_path.write_text(json.dumps(run, indent=2) + "\n")
    png_path = results_dir / f"{stem}.png"
    chart_status = report.chart(json_path, png_path, install.TOOLS.path("bin/python"))
    md = report.markdown(run, json_path.name, png_path.name if png_path.exists() else None, chart_status)
    md_name = "latest-quick.md" if opts.quick else "latest.md"
    (results_dir / md_name).write_text(md)
    print()
    print(md)
    print(f"wrote {json_path}, {png_path if png_path.exists() else '(no chart)'}, {results_dir / md_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
