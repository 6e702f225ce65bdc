"""Cost as the work grows: long ``previous_response_id`` chains, and a store holding many responses.

``python bench/growth.py`` (or ``python bench/run.py --growth``; ``--quick`` for a smoke run) runs two
modes against this bridge (``--workers 1``), once per store (a fresh SQLite file, a fresh PostgreSQL
schema), on the same fast backend as bench/run.py:

``chain``
    One conversation of ``--turns`` turns (default 1,000), each turn a non-streaming request whose
    ``previous_response_id`` is the turn before, so the bridge loads the whole history from its store,
    sends it upstream, and stores the new turn.  Every turn's wall time and the bridge's CPU time are
    recorded (CPU from /proc/<pid>/task/*/schedstat, nanoseconds, read before and after each request:
    the bridge does nothing else meanwhile).  At the sampled depths (``--sample``, default 1, 10, 100,
    1,000) three requests are repeated ``--repeat`` times, branching off the turn at that depth:

    - ``stored``: ``previous_response_id`` with the default store (read the chain, write one response);
    - ``read only``: the same with ``"store": false`` (read the chain, write nothing);
    - ``inline``: the same history sent by the client as ``input`` items with ``"store": false``
      (no store at all: what sending the history upstream costs by itself).

    ``stored - inline`` is the store's share (loading the chain and writing the new turn) beyond
    sending the history upstream; ``stored - read only`` is the write alone.  The report says whether
    that share stays flat or grows with the depth, and how fast.

``scale``
    Fill the store with ``--fill`` responses (default 10,000; non-streaming, 32 at once), then run
    ``--streams`` (default 1,000) 64-chunk paced streams all at once, then hold as many idle streams:
    peak RSS, errors and wall time of each step, and that the oldest and newest stored responses still
    come back whole.

Writes bench/results/<date>-<machine>-growth.json and bench/results/growth-latest.md (``-quick``
variants for a quick run).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime as dt
import json
import os
import resource
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen
import procs
from targets import BENCH, WORK, Target, all_targets, backend_argv, postgres_reachable

LOGS = WORK / "logs"
MODEL = "bench-64"


class Client:
    """One keep-alive HTTP/1.1 connection to the bridge (reconnects when the server closes it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict, timeout: float = 120.0) -> tuple[int, bytes, float]:
        """(status, body, wall seconds)."""
        raw = json.dumps(body, separators=(",", ":")).encode()
        request = loadgen.build_request("127.0.0.1", self.port, path, raw, "bench")
        return await self._send(request, timeout)

    async def get(self, path: str, timeout: float = 60.0) -> tuple[int, bytes, float]:
        request = (f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{self.port}\r\n"
                   "authorization: Bearer bench\r\n\r\n").encode()
        return await self._send(request, timeout)

    async def _send(self, request: bytes, timeout: float) -> tuple[int, bytes, float]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        t0 = time.perf_counter()
        self.writer.write(request)
        try:
            reply = await asyncio.wait_for(loadgen.read_reply(self.reader, t0), timeout)
        except BaseException:
            self.close()
            raise
        if reply.headers.get("connection", "").lower() == "close":
            self.close()
        return reply.status, reply.body, time.perf_counter() - t0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _text(response: dict) -> str:
    return "".join(part.get("text", "") for item in response.get("output", []) if item.get("type") == "message"
                   for part in item.get("content", []))


class Meter:
    """CPU of a set of processes in milliseconds, at nanosecond resolution."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def now(self) -> int:
        return procs.cpu_ns(self.pids)


async def chain_mode(port: int, bridge: Meter, backend: Meter, store_pids: Callable[[], list[int]] | None, turns: int,
                     sample: list[int], repeat: int) -> dict:
    client = Client(port)
    history: list[dict] = []  # the conversation as inline input items, for the `inline` variant
    prev: str | None = None
    per_turn: list[dict] = []
    ids: dict[int, str] = {}
    errors = 0
    t_start = time.perf_counter()
    for turn in range(1, turns + 1):
        prompt = f"Turn {turn}: write a few words."
        body: dict = {"model": MODEL, "input": prompt}
        if prev:
            body["previous_response_id"] = prev
        c0, b0 = bridge.now(), backend.now()
        status, raw, wall = await client.post("/v1/responses", body)
        c1, b1 = bridge.now(), backend.now()
        if status != 200:
            errors += 1
            print(f"  turn {turn}: status {status}: {raw[:200]!r}", flush=True)
            break
        response = json.loads(raw)
        prev = response["id"]
        ids[turn] = prev
        history += [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(response)}]
        per_turn.append({"turn": turn, "wall_ms": round(wall * 1000, 3), "cpu_ms": round((c1 - c0) / 1e6, 3),
                         "backend_cpu_ms": round((b1 - b0) / 1e6, 3)})
        if turn in sample or turn == turns:
            print(f"  turn {turn}: {wall * 1000:.2f} ms, bridge CPU {(c1 - c0) / 1e6:.2f} ms", flush=True)
    built = time.perf_counter() - t_start

    samples: dict[str, dict] = {}
    for depth in sample:
        if depth not in ids:
            continue
        base = ids[depth]
        upto = history[: 2 * depth]
        variants = {
            "stored": {"model": MODEL, "input": "One more turn.", "previous_response_id": base},
            "read_only": {"model": MODEL, "input": "One more turn.", "previous_response_id": base, "store": False},
            "inline": {"model": MODEL, "input": [*upto, {"role": "user", "content": "One more turn."}],
                       "store": False},
        }
        row: dict = {"history_items": len(upto),
                     "inline_body_bytes": len(json.dumps(variants["inline"], separators=(",", ":")))}
        for name, body in variants.items():
            walls, cpus, backs = [], [], []
            pg0 = {p: procs.cpu_ns([p]) for p in (store_pids() if store_pids else [])}
            for _ in range(repeat):
                c0, b0 = bridge.now(), backend.now()
                status, raw, wall = await client.post("/v1/responses", body)
                c1, b1 = bridge.now(), backend.now()
                if status != 200:
                    errors += 1
                    continue
                walls.append(wall * 1000)
                cpus.append((c1 - c0) / 1e6)
                backs.append((b1 - b0) / 1e6)
            pg_ns = sum(procs.cpu_ns([p]) - pg0.get(p, 0) for p in (store_pids() if store_pids else []))
            if not walls:
                row[name] = {"errors": repeat}
                continue
            row[name] = {"wall_ms_p50": round(statistics.median(walls), 3),
                         "cpu_ms_p50": round(statistics.median(cpus), 3),
                         "cpu_ms_mean": round(statistics.fmean(cpus), 3),
                         "backend_cpu_ms_p50": round(statistics.median(backs), 3),
                         "n": len(walls)}
            if store_pids:
                row[name]["store_server_cpu_ms_mean"] = round(pg_ns / 1e6 / len(walls), 3)
        for field in ("cpu_ms_p50", "wall_ms_p50"):
            s, r, i = (row.get(k, {}).get(field) for k in ("stored", "read_only", "inline"))
            if s is not None and i is not None:
                row[f"store_share_{field}"] = round(s - i, 3)
            if s is not None and r is not None:
                row[f"write_share_{field}"] = round(s - r, 3)
        samples[str(depth)] = row
        print(f"  depth {depth}: " + ", ".join(f"{k} {row[k].get('cpu_ms_p50')} ms CPU / {row[k].get('wall_ms_p50')} "
                                              "ms wall" for k in variants if k in row), flush=True)
    client.close()
    return {"turns": len(per_turn), "errors": errors, "build_seconds": round(built, 2), "per_turn": columns(per_turn),
            "samples": samples}


def columns(rows: list[dict]) -> dict[str, list]:
    """Rows of equal keys as one list per key: 1,000 turns take a few lines of JSON, not thousands."""
    return {key: [r[key] for r in rows] for key in (rows[0] if rows else {})}


def rows_of(cols: dict[str, list] | list[dict]) -> list[dict]:
    """The inverse of ``columns`` (and rows as they are, for results written before it)."""
    if isinstance(cols, list):
        return cols
    keys = list(cols)
    return [dict(zip(keys, values, strict=True)) for values in zip(*(cols[k] for k in keys), strict=True)]


async def _fill(port: int, n: int, concurrency: int) -> dict:
    """n stored non-streaming responses, `concurrency` keep-alive connections at once."""
    todo = iter(range(n))
    ids: list[str] = []
    errors: dict[str, int] = {}

    async def worker() -> None:
        client = Client(port)
        for i in todo:
            try:
                status, raw, _ = await client.post("/v1/responses", {"model": MODEL, "input": f"Fill {i}."})
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                client.close()
                continue
            if status == 200:
                ids.append(json.loads(raw)["id"])
            else:
                errors[f"status {status}"] = errors.get(f"status {status}", 0) + 1
        client.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    took = time.perf_counter() - t0
    return {"stored": len(ids), "errors": errors, "seconds": round(took, 2), "per_second": round(len(ids) / took, 1),
            "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}


async def _burst(port: int, n: int, model: str) -> dict:
    """n streams opened at once (one connection each); all must end with response.completed."""
    body = json.dumps({"model": model, "input": "Write a few words.", "stream": True}).encode()
    errors: dict[str, int] = {}
    lat: list[float] = []
    gate = asyncio.Semaphore(200)  # how many connect at once (the listen backlog); all stream together

    async def one() -> None:
        try:
            async with gate:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 60)
            t0 = time.perf_counter()
            writer.write(loadgen.build_request("127.0.0.1", port, "/v1/responses", body, "bench"))
            reply = await asyncio.wait_for(loadgen.read_reply(reader, t0), 300)
            writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        pieces = loadgen.count_pieces(reply.body, "responses")
        if reply.status != 200 or not pieces["terminal"] or pieces["text_pieces"] != 64:
            key = f"status {reply.status}" if reply.status != 200 else "incomplete"
            errors[key] = errors.get(key, 0) + 1
        else:
            lat.append(reply.t_end * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    took = time.perf_counter() - t0
    return {"streams": n, "completed": len(lat), "errors": errors, "seconds": round(took, 2),
            "stream_ms_p50": round(statistics.median(lat), 1) if lat else None,
            "stream_ms_max": round(max(lat), 1) if lat else None}


async def scale_mode(target: Target, port: int, pid: int, fill: int, streams: int, hold: float) -> dict:
    import run  # the idle-stream measurement is the main benchmark's, reused as is

    out: dict = {}
    mb = 1048576
    meter = Meter(procs.tree(pid))
    c0 = meter.now()
    with procs.Sampler(pid, interval=0.1) as s:
        out["fill"] = await _fill(port, fill, 32)
    out["fill"]["rss_peak_mb"] = round(s.peak / mb, 1)
    out["fill"]["cpu_ms_per_response"] = round((meter.now() - c0) / 1e6 / max(1, out["fill"]["stored"]), 3)
    out["rss_after_fill_mb"] = round(procs.rss_bytes(procs.tree(pid)) / mb, 1)
    print(f"  fill: {out['fill']}", flush=True)
    c0 = meter.now()
    with procs.Sampler(pid, interval=0.05) as s:
        out["burst"] = await _burst(port, streams, "bench-64p")
    out["burst"]["rss_peak_mb"] = round(s.peak / mb, 1)
    out["burst"]["cpu_ms_per_stream"] = round((meter.now() - c0) / 1e6 / max(1, out["burst"]["completed"]), 3)
    print(f"  {streams} concurrent streams: {out['burst']}", flush=True)
    procs.settle(pid)
    client = Client(port)
    checks = {}
    for which in ("first_id", "last_id"):
        rid = out["fill"].get(which)
        if rid:
            status, raw, wall = await client.get(f"/v1/responses/{rid}")
            ok = status == 200 and len(_text(json.loads(raw)).split()) == 64
            checks[which] = {"ok": ok, "status": status, "ms": round(wall * 1000, 2)}
    client.close()
    out["retrieve"] = checks
    out["idle"] = await asyncio.to_thread(run.measure_idle, target, port, pid, streams, hold)
    print(f"  retrieve: {checks}; idle: {out['idle']}", flush=True)
    return out


def dumps(result: dict) -> str:
    """Indented JSON, except that lists of numbers stay on one line (the per-turn columns)."""
    import re

    text = json.dumps(result, indent=2)
    return re.sub(r"\[\s*([-0-9.,\s]+?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]",
                  text)


def _start(target: Target, upstream: str) -> tuple[procs.Proc, int]:
    port = procs.free_port()
    proc = procs.start(f"growth-{target.key}", target.argv(port, upstream), LOGS, env=target.env, cwd=WORK)
    if not procs.wait_port(port, target.ready_timeout, proc):
        tail = proc.tail()
        proc.stop()
        raise RuntimeError(f"{target.label} did not listen on port {port}: {tail}")
    time.sleep(0.5)
    return proc, port


def growth_of(samples: dict, field: str) -> str:
    """How a per-depth figure grows: flat, or its slope per 1,000 turns of history."""
    pts = [(int(d), row[field]) for d, row in samples.items() if row.get(field) is not None]
    if len(pts) < 2:
        return "not enough samples"
    pts.sort()
    (d0, v0), (d1, v1) = pts[0], pts[-1]
    slope = (v1 - v0) / (d1 - d0) * 1000 if d1 > d0 else 0.0
    rel = v1 / v0 if v0 > 0 else float("inf")
    kind = "flat" if abs(v1 - v0) <= max(0.1, 0.25 * abs(v0)) else ("grows" if v1 > v0 else "falls")
    return f"{kind}: {v0:.3f} ms at depth {d0} → {v1:.3f} ms at depth {d1} ({slope:+.3f} ms per 1,000 turns, {rel:.2f}x)"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Cost as the work grows ({'quick run, ' if result['quick'] else ''}{result['started']})", "",
             f"{m['nproc']} cores ({m['cpu']}), load average at start {m['loadavg_at_start']}, at end "
             f"{m.get('loadavg_at_end')} (other sessions share the machine; CPU figures are the bridge's own "
             "and least disturbed by that). Command: `python bench/run.py --growth"
             f"{' --quick' if result['quick'] else ''}`.", ""]
    for store, res in result["chain"].items():
        if "error" in res:
            lines += [f"## Chain, {store}: failed: {res['error']}", ""]
            continue
        lines += [f"## `previous_response_id` chain, {store}: {res['turns']} turns in {res['build_seconds']} s, "
                  f"{res['errors']} errors", "",
                  "Per sampled depth, medians of the repeated requests (bridge CPU from schedstat, wall time at "
                  "the client):", "",
                  "| depth (turns of history) | history items | inline body bytes | stored: CPU ms | stored: wall ms "
                  "| read only: CPU ms | inline (no store): CPU ms | inline: wall ms | store share CPU ms "
                  "(stored - inline) | write share CPU ms (stored - read only) | store share wall ms |"
                  + (" PostgreSQL CPU ms / stored request |" if store == "postgresql" else ""),
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if store == "postgresql" else "")]
        for depth, row in res["samples"].items():
            def g(v: str, f: str, row: dict = row) -> str:
                value = row.get(v, {}).get(f)
                return "-" if value is None else f"{value:.3f}"
            cells = [depth, str(row["history_items"]), f"{row['inline_body_bytes']:,}", g("stored", "cpu_ms_p50"),
                     g("stored", "wall_ms_p50"), g("read_only", "cpu_ms_p50"), g("inline", "cpu_ms_p50"),
                     g("inline", "wall_ms_p50"), f"{row.get('store_share_cpu_ms_p50', 0):.3f}",
                     f"{row.get('write_share_cpu_ms_p50', 0):.3f}", f"{row.get('store_share_wall_ms_p50', 0):.3f}"]
            if store == "postgresql":
                cells.append(g("stored", "store_server_cpu_ms_mean"))
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"- store share of CPU (stored - inline): {growth_of(res['samples'], 'store_share_cpu_ms_p50')}",
                  f"- write alone (stored - read only): {growth_of(res['samples'], 'write_share_cpu_ms_p50')}",
                  f"- whole stored request, CPU: {growth_of({d: r.get('stored', {}) for d, r in res['samples'].items()}, 'cpu_ms_p50')}",
                  f"- inline (history sent upstream, no store), CPU: "
                  f"{growth_of({d: r.get('inline', {}) for d, r in res['samples'].items()}, 'cpu_ms_p50')}"]
        turns = rows_of(res["per_turn"])
        if turns:
            def window(lo: int, hi: int, turns: list[dict] = turns) -> str:
                sel = [t for t in turns if lo <= t["turn"] <= hi]
                if not sel:
                    return "-"
                return (f"{statistics.median(t['cpu_ms'] for t in sel):.3f} ms CPU, "
                        f"{statistics.median(t['wall_ms'] for t in sel):.3f} ms wall")
            lines.append(f"- while building the chain (median per turn): turns 1-10 {window(1, 10)}; "
                         f"91-100 {window(91, 100)}; 991-1,000 {window(991, 1000)}")
        lines.append("")
    for store, res in result["scale"].items():
        if "error" in res:
            lines += [f"## Scale, {store}: failed: {res['error']}", ""]
            continue
        f, b, i = res["fill"], res["burst"], res["idle"]
        lines += [f"## {f['stored']:,} stored responses, then {b['streams']:,} concurrent streams, {store}", "",
                  "| step | result |", "|---|---|",
                  f"| fill {f['stored']:,} responses (32 at once) | {f['seconds']} s, {f['per_second']}/s, errors "
                  f"{f['errors'] or 0}, {f['cpu_ms_per_response']} ms CPU each, peak RSS {f['rss_peak_mb']} MB |",
                  f"| RSS after the fill | {res['rss_after_fill_mb']} MB |",
                  f"| {b['streams']:,} paced 64-chunk streams at once | {b['completed']:,} completed in {b['seconds']} s, "
                  f"errors {b['errors'] or 0}, p50 {b['stream_ms_p50']} ms, max {b['stream_ms_max']} ms, "
                  f"{b['cpu_ms_per_stream']} ms CPU each, peak RSS {b['rss_peak_mb']} MB |",
                  "| oldest / newest stored response retrieved whole | "
                  + ", ".join(f"{k}: {v['ok']} ({v['ms']} ms)" for k, v in res["retrieve"].items()) + " |",
                  f"| {i['streams']:,} idle streams held | {i['held']:,} held, errors {i['errors'] or 0}, peak RSS "
                  f"{i['rss_peak_mb']} MB (before: {i['rss_baseline_mb']} MB) |", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cost as the work grows: long chains, a big store")
    parser.add_argument("--quick", action="store_true", help="100 turns, 1,000 stored, 200 streams")
    parser.add_argument("--turns", type=int, default=None, help="chain length (default 1000, quick 100)")
    parser.add_argument("--sample", default=None, help="depths to sample (default 1,10,100,1000)")
    parser.add_argument("--repeat", type=int, default=None, help="requests per sampled variant (default 15)")
    parser.add_argument("--fill", type=int, default=None, help="responses to store (default 10000, quick 1000)")
    parser.add_argument("--streams", type=int, default=None, help="concurrent streams (default 1000, quick 200)")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--modes", default="chain,scale")
    parser.add_argument("--results-dir", default=str(BENCH / "results"))
    opts = parser.parse_args(argv)
    turns = opts.turns or (100 if opts.quick else 1000)
    sample = [int(x) for x in (opts.sample or "1,10,100,1000").split(",") if x and int(x) <= turns]
    repeat = opts.repeat or (5 if opts.quick else 15)
    fill = opts.fill if opts.fill is not None else (1000 if opts.quick else 10_000)
    streams = opts.streams or (200 if opts.quick else 1000)
    modes = set(opts.modes.split(","))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    atexit.register(procs.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    WORK.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    import run

    info = run.machine()
    info["loadavg_at_start"] = procs.loadavg()
    result: dict = {"started": started.isoformat(timespec="seconds"), "quick": opts.quick, "machine": info,
                    "settings": {"turns": turns, "sample": sample, "repeat": repeat, "fill": fill,
                                 "streams": streams, "model": MODEL},
                    "chain": {}, "scale": {}}
    backend_port = procs.free_port()
    backend = procs.start("growth-backend", backend_argv(backend_port, 1), LOGS)
    if not procs.wait_port(backend_port, 20, backend):
        print(f"the bench backend did not start:\n{backend.tail()}", file=sys.stderr)
        return 1
    upstream = f"http://127.0.0.1:{backend_port}/v1"
    by_store = {t.key: t for t in all_targets([], [1])}
    keys = {"sqlite": "bridge-sqlite-w1", "postgresql": "bridge-pg-w1"}
    for store in [s for s in opts.stores.split(",") if s]:
        target = by_store[keys[store]]
        problem = postgres_reachable() if target.store_pids else None
        for mode in ("chain", "scale"):
            if mode not in modes:
                continue
            print(f"== {mode}, {store}", flush=True)
            if problem:
                result[mode][store] = {"error": f"PostgreSQL not reachable: {problem}"}
                continue
            proc = None
            try:
                proc, port = _start(target, upstream)
                if mode == "chain":
                    result[mode][store] = asyncio.run(chain_mode(
                        port, Meter(procs.tree(proc.pid)), Meter([backend.pid]), target.store_pids, turns,
                        sample, repeat))
                else:
                    result[mode][store] = asyncio.run(scale_mode(target, port, proc.pid, fill, streams,
                                                                 1.0 if opts.quick else 3.0))
            except Exception as exc:  # one mode failing must not lose the others' figures
                import traceback

                traceback.print_exc()
                result[mode][store] = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                if proc is not None:
                    proc.stop()
                if target.cleanup is not None:
                    target.cleanup()
    backend.stop()
    info["loadavg_at_end"] = procs.loadavg()
    result["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    results_dir = Path(opts.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if opts.quick else ""
    json_path = results_dir / f"{started:%Y-%m-%d}-{run.machine_slug(info)}-growth{suffix}.json"
    json_path.write_text(dumps(result) + "\n")
    png_path = json_path.with_suffix(".png")
    import install
    import report

    chart_status = report.chart(json_path, png_path, install.TOOLS.path("bin/python"))
    md = markdown(result) + f"\nRaw figures: `{json_path.name}`." + (
        f" Chart: `{png_path.name}`.\n" if png_path.exists() else f" (no chart: {chart_status})\n")
    (results_dir / f"growth-latest{suffix}.md").write_text(md)
    print(md)
    print(f"wrote {json_path}, {results_dir / f'growth-latest{suffix}.md'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
