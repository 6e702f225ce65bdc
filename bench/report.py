"""Turning one run's JSON into the table people read: Markdown (with targets judged) and a PNG chart.

Every figure is shown beside the direct backend's and as a ratio to it, because absolute numbers on a
2-core machine shared by backend, bridge and load generator mean little on their own; ratios taken in
one run are what compare.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

Getter = Callable[[dict], float | None]


def _phase(name: str, field: str) -> Getter:
    def get(t: dict) -> float | None:
        return (t.get("phases") or {}).get(name, {}).get(field)

    return get


def _cpu_ms(name: str) -> Getter:
    """CPU milliseconds the target spent per stream (or request): robust to a busy shared machine,
    since it does not depend on how much CPU the target managed to get, only on what it needed."""

    def get(t: dict) -> float | None:
        phase = (t.get("phases") or {}).get(name, {})
        rate, cores = phase.get("rate"), phase.get("cpu_cores")
        return 1000.0 * cores / rate if rate and cores is not None else None

    return get


def _key(section: str, field: str) -> Getter:
    def get(t: dict) -> float | None:
        value = (t.get(section) or {}).get(field)
        return value if isinstance(value, int | float) else None

    return get


def _store_cpu_ms(name: str) -> Getter:
    """CPU milliseconds the store's database server (PostgreSQL) spent per stream or request."""

    def get(t: dict) -> float | None:
        phase = (t.get("phases") or {}).get(name, {})
        rate, cores = phase.get("rate"), phase.get("store_server_cpu_cores")
        return 1000.0 * cores / rate if rate and cores is not None else None

    return get


def per_chunk_us(t: dict) -> float | None:
    """CPU microseconds per content chunk: the 512-chunk stream's CPU minus the 64-chunk stream's, over
    the 448 chunks between them (what is left is the cost each chunk adds)."""
    a, b = _cpu_ms("s64_c16")(t), _cpu_ms("s512_c16")(t)
    return 1000.0 * (b - a) / 448 if a is not None and b is not None else None


def fixed_ms(t: dict, ref: dict | None, phase: str = "ns_c16") -> float | None:
    """The fixed cost per request: the target's CPU ms per request minus the reference's (the floor
    proxy, or the direct backend) for the same request, so what is left is what the target does
    beyond receiving a request and moving the backend's answer."""
    mine = _cpu_ms(phase)(t)
    theirs = _cpu_ms(phase)(ref) if ref else None
    return mine - theirs if mine is not None and theirs is not None else None


def stream_fixed_ms(t: dict, ref: dict | None) -> float | None:
    """The fixed cost per stream: CPU per 64-chunk stream, minus 64 chunks at the per-chunk cost,
    minus the reference's CPU per 64-chunk stream."""
    mine, chunk = _cpu_ms("s64_c16")(t), per_chunk_us(t)
    theirs = _cpu_ms("s64_c16")(ref) if ref else None
    if mine is None or chunk is None or theirs is None:
        return None
    return mine - 64 * chunk / 1000.0 - theirs


#: The client's pause after each answer in bench/run.py's second time-to-first-event phase: long
#: enough for an idle CPU to slow down (a commit's fsync is 1-2 ms), far shorter than a person's or an
#: agent's turn. Here because the labels below name it; run.py measures with it.
TTFE_PAUSE_MS = 5.0
_BETWEEN = f"{TTFE_PAUSE_MS:g} ms between requests"
#: The two time-to-first-event phases: (key in a target's results, what the label adds).
TTFE_PHASES = (("ttfe", ""), ("ttfe_paused", f", {_BETWEEN}"))

# (label, getter, higher is better, phase whose errors to flag)
ROWS: list[tuple[str, Getter, bool, str | None]] = [
    ("streams/s, 64 chunks, 16 concurrent", _phase("s64_c16", "rate"), True, "s64_c16"),
    ("streams/s, 64 chunks, 256 concurrent", _phase("s64_c256", "rate"), True, "s64_c256"),
    ("streams/s, 64 chunks paced, 16 concurrent", _phase("p64_c16", "rate"), True, "p64_c16"),
    ("streams/s, 64 chunks paced, 256 concurrent", _phase("p64_c256", "rate"), True, "p64_c256"),
    ("streams/s, 512 chunks, 16 concurrent", _phase("s512_c16", "rate"), True, "s512_c16"),
    ("streams/s, 512 chunks, 256 concurrent", _phase("s512_c256", "rate"), True, "s512_c256"),
    ("whole-stream latency p50 ms, 64 chunks, 16 conc.", _phase("s64_c16", "p50_ms"), False, None),
    ("whole-stream latency p99 ms, 64 chunks, 16 conc.", _phase("s64_c16", "p99_ms"), False, None),
    ("non-streaming req/s, 16 concurrent", _phase("ns_c16", "rate"), True, "ns_c16"),
    ("non-streaming latency p50 ms, concurrency 1", _phase("ns_c1", "p50_ms"), False, "ns_c1"),
    ("non-streaming latency p99 ms, concurrency 1", _phase("ns_c1", "p99_ms"), False, None),
    ("time to first event p50 ms, concurrency 1", _key("ttfe", "ttfe_p50_ms"), False, None),
    ("time to first event p99 ms, concurrency 1", _key("ttfe", "ttfe_p99_ms"), False, None),
    (f"time to first event p50 ms, c1, {_BETWEEN}", _key("ttfe_paused", "ttfe_p50_ms"), False, None),
    (f"time to first event p99 ms, c1, {_BETWEEN}", _key("ttfe_paused", "ttfe_p99_ms"), False, None),
    ("RSS holding 1,000 idle streams, peak MB", _key("idle", "rss_peak_mb"), False, None),
    ("RSS before those streams, MB", _key("idle", "rss_baseline_mb"), False, None),
    ("target CPU ms per stream, 64 chunks, 16 conc.", _cpu_ms("s64_c16"), False, None),
    ("target CPU ms per stream, 64 chunks paced, 16 conc.", _cpu_ms("p64_c16"), False, None),
    ("target CPU ms per stream, 512 chunks, 16 conc.", _cpu_ms("s512_c16"), False, None),
    ("target CPU ms per non-streaming request, 16 conc.", _cpu_ms("ns_c16"), False, None),
    ("target CPU ms per non-streaming request, concurrency 1", _cpu_ms("ns_c1"), False, None),
    ("target CPU ms per stream, 64 chunks, 256 conc.", _cpu_ms("s64_c256"), False, None),
    ("target CPU µs per content chunk ((512 - 64 chunks) / 448)", per_chunk_us, False, None),
    ("PostgreSQL server CPU ms per non-streaming request, 16 conc.", _store_cpu_ms("ns_c16"), False, None),
    ("PostgreSQL server CPU ms per stream, 64 chunks, 16 conc.", _store_cpu_ms("s64_c16"), False, None),
    ("new upstream connections per stream, 64 chunks, 16 conc.",
     _phase("s64_c16", "upstream_connections_per_request"), False, None),
    ("new upstream connections per request, non-streaming, 16 conc.",
     _phase("ns_c16", "upstream_connections_per_request"), False, None),
    ("CPU cores used by target, 64 chunks, 16 conc.", _phase("s64_c16", "cpu_cores"), False, None),
    ("CPU cores used by backend meanwhile", _phase("s64_c16", "backend_cpu_cores"), False, None),
    ("CPU cores used by wrk meanwhile", _phase("s64_c16", "wrk_cpu_cores"), False, None),
    ("CPU cores used by everything else meanwhile", _phase("s64_c16", "other_cpu_cores"), False, None),
]


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _errors(t: dict, phase: str | None) -> str:
    if phase is None:
        return ""
    errs = (t.get("phases") or {}).get(phase, {}).get("errors") or {}
    return " ⚠" + ",".join(f"{k}:{v}" for k, v in errs.items()) if errs else ""


def table(run: dict) -> str:
    targets = run["targets"]
    direct = next((t for t in targets if t["key"] == "direct"), None)
    header = "| metric | " + " | ".join(t["label"] for t in targets) + " |"
    lines = [header, "|---|" + "---|" * len(targets)]
    for label, get, _higher, phase in ROWS:
        cells = []
        base = get(direct) if direct else None
        for t in targets:
            value = get(t) if t.get("status") not in ("failed", "not installed") else None
            cell = _fmt(value)
            if value is not None and base and base > 0 and t is not direct and not label.startswith("new upstream") and label.split(",")[0] not in (
                    "CPU cores used by backend meanwhile",
                    "CPU cores used by wrk meanwhile", "CPU cores used by everything else meanwhile"):
                cell += f" ({value / base:.2f}x)"
            cells.append(cell + _errors(t, phase))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    floor = next((t for t in targets if t["key"] == "floor" and t.get("status") == "measured"), None)
    for label, ref in (("fixed cost: CPU ms per non-streaming request minus the floor's", floor),
                       ("fixed cost: CPU ms per non-streaming request minus the direct backend's", direct),
                       ("fixed cost per stream: CPU ms per 64-chunk stream - 64 x per-chunk - floor's", floor)):
        cells = []
        for t in targets:
            ok = t.get("status") not in ("failed", "not installed") and t is not ref and t is not direct
            value = (stream_fixed_ms(t, ref) if "per stream" in label else fixed_ms(t, ref)) if ok else None
            cells.append(_fmt(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    held = []
    for t in targets:
        idle = t.get("idle") or {}
        if not idle:
            held.append("-")
            continue
        errs = sum((idle.get("errors") or {}).values())
        held.append(f"{idle.get('held', 0)}/{idle.get('streams')} held, {errs} errors, "
                    f"{idle.get('closed_by_server_during_hold') or 0} dropped")
    lines.append("| idle streams held / errors | " + " | ".join(held) + " |")
    status = [t.get("status", "?") for t in targets]
    lines.append("| status | " + " | ".join(status) + " |")
    loads = [" ".join(f"{x:g}" for x in t["loadavg_at_start"]) if t.get("loadavg_at_start") else "-"
             for t in targets]
    lines.append("| load average when the target started | " + " | ".join(loads) + " |")
    return "\n".join(lines)


def _get(run: dict, key: str) -> dict | None:
    return next((t for t in run["targets"] if t["key"] == key and t.get("status") == "measured"), None)


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("MET" if ok else "NOT MET")


def _rate(t: dict | None, phase: str) -> float | None:
    return ((t or {}).get("phases") or {}).get(phase, {}).get("rate") or None


def _per_cpu(t: dict, floor: dict | None, relay: dict | None, phase: str) -> str:
    """The same comparison per CPU-second each target used (1 / CPU ms per request): what the ratio
    would be if every target had a core to itself, which a machine shared with other work cannot give."""
    mine = _cpu_ms(phase)(t)
    parts = []
    for ref, name in ((floor, "the floor"), (relay, "codex-relay")):
        theirs = _cpu_ms(phase)(ref) if ref else None
        if mine and theirs:
            parts.append(f"{theirs / mine:.2f}x {name}")
    return ("  - per CPU-second of the target instead: " + ", ".join(parts)) if parts else \
        "  - per CPU-second: not measurable"


def default_store_verdict(run: dict) -> list[str]:
    """The targets for the default (stored) path, each judged from this run's figures."""
    floor, relay = _get(run, "floor"), _get(run, "codex-relay")
    sqlite_rows = [t for t in run["targets"] if t["key"].startswith("bridge-sqlite-") and t.get("status") == "measured"]
    if not sqlite_rows:
        return ["- the default-store (SQLite) bridge was not measured in this run (see status row)"]
    out = []

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def fmt(r: float | None) -> str:
        return "-" if r is None else f"{r:.2f}x"

    for sq in sqlite_rows:
        w = sq["key"].rsplit("-", 1)[1]
        pg = _get(run, f"bridge-pg-{w}")
        nocodex = _get(run, f"bridge-{w}")
        name = sq["label"]
        for phase, what in (("s64_c16", "64-chunk"), ("p64_c16", "64-chunk paced")):
            r_floor, r_relay = ratio(_rate(sq, phase), _rate(floor, phase)), ratio(_rate(sq, phase), _rate(relay, phase))
            ok = None if r_floor is None or r_relay is None else (r_floor >= 0.6 and r_relay >= 3.0)
            out.append(f"- {_verdict(ok)}: {name}, {what} streams at 16 concurrent = {fmt(r_floor)} the floor "
                       f"(target ≥ 0.6x) and {fmt(r_relay)} codex-relay (target ≥ 3x)")
            out.append(_per_cpu(sq, floor, relay, phase))
        r = ratio(_rate(sq, "ns_c16"), _rate(relay, "ns_c16"))
        out.append(f"- {_verdict(None if r is None else r >= 0.5)}: {name}, non-streaming at 16 concurrent = "
                   f"{fmt(r)} codex-relay (target ≥ 0.5x)")
        out.append(_per_cpu(sq, floor, relay, "ns_c16"))
        for phase, what in (("s64_c16", "64-chunk streams"), ("p64_c16", "paced streams"),
                            ("ns_c16", "non-streaming")):
            r = ratio(_rate(pg, phase), _rate(sq, phase))
            out.append(f"- {_verdict(None if r is None else r >= 0.8)}: PostgreSQL ({w}), {what} at 16 concurrent = "
                       f"{fmt(r)} SQLite's (target ≥ 0.8x)")
        if pg:
            for phase, what in (("s64_c16", "64-chunk stream"), ("ns_c16", "non-streaming request")):
                b_pg, s_pg, b_sq = _cpu_ms(phase)(pg), _store_cpu_ms(phase)(pg), _cpu_ms(phase)(sq)
                if b_pg is not None and b_sq is not None:
                    out.append(f"  - CPU per {what}: PostgreSQL row {_fmt(b_pg)} ms in the bridge + "
                               f"{_fmt(s_pg)} ms in the database server, SQLite row {_fmt(b_sq)} ms (bridge, "
                               "SQLite included)")
        if nocodex:
            for phase, what in (("s64_c16", "64-chunk streams"), ("ns_c16", "non-streaming")):
                r = ratio(_rate(sq, phase), _rate(nocodex, phase))
                out.append(f"  - for scale: storing every response (SQLite) runs {what} at {fmt(r)} of store:false")
        for t in (sq, pg):
            if not t:
                continue
            for key, when in TTFE_PHASES:
                mine = (t.get(key) or {}).get("ttfe_p50_ms")
                theirs = ((relay or {}).get(key) or {}).get("ttfe_p50_ms")
                ok = None if mine is None or theirs is None else mine <= theirs
                out.append(f"- {_verdict(ok)}: {t['label']}, time to first event p50 at concurrency 1{when} = "
                           f"{_fmt(mine)} ms vs codex-relay's {_fmt(theirs)} ms (target ≤ codex-relay's)")
            f = fixed_ms(t, floor)
            out.append(f"- {_verdict(None if f is None else f <= 0.2)}: {t['label']}, fixed cost per non-streaming "
                       f"request (CPU minus the floor's) = {_fmt(f)} ms (target ≤ 0.2 ms)")
    for t in run["targets"]:
        if not t["key"].startswith("bridge-") or t.get("status") != "measured":
            continue
        idle = t.get("idle") or {}
        errs = sum((idle.get("errors") or {}).values()) + (idle.get("closed_by_server_during_hold") or 0)
        mb = idle.get("rss_peak_mb")
        ok = None if mb is None else (mb < 70 and errs == 0 and idle.get("held") == idle.get("streams"))
        out.append(f"- {_verdict(ok)}: {t['label']}, {idle.get('streams', 0):,} idle streams: peak RSS {_fmt(mb)} MB, "
                   f"{idle.get('held')}/{idle.get('streams')} held, {errs} errors (target < 70 MB)")
    return out


def targets_table(run: dict, workers: str = "w1") -> list[str]:
    """The default-path targets as one compact table (target, figure, met?), for docs/benchmarks.md."""
    floor, relay = _get(run, "floor"), _get(run, "codex-relay")
    sq, pg = _get(run, f"bridge-sqlite-{workers}"), _get(run, f"bridge-pg-{workers}")
    if not sq:
        return []

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def cpu_ratio(t: dict | None, ref: dict | None, phase: str) -> str:
        """ref's CPU per request over t's; PostgreSQL's database server CPU counts as t's own."""
        mine, theirs = _cpu_ms(phase)(t) if t else None, _cpu_ms(phase)(ref) if ref else None
        if mine is not None and t is not None:
            mine += _store_cpu_ms(phase)(t) or 0.0
        return f"{theirs / mine:.2f}x" if mine and theirs else "-"

    def row(what: str, value: float | None, fmt: str, ok: bool | None, per_cpu: str = "") -> str:
        shown = "-" if value is None else fmt.format(value)
        return f"| {what} | {shown} | {per_cpu or '-'} | {_verdict(ok)} |"

    out = ["| target | this run | per CPU-second instead (PostgreSQL: bridge + database server) | met? |",
           "|---|---|---|---|"]
    r = ratio(_rate(sq, "s64_c16"), _rate(floor, "s64_c16"))
    out.append(row("streaming (64 chunks), default SQLite, 16 concurrent ≥ 0.6x the floor", r, "{:.2f}x",
                   None if r is None else r >= 0.6, cpu_ratio(sq, floor, "s64_c16")))
    r = ratio(_rate(sq, "p64_c16"), _rate(floor, "p64_c16"))
    out.append(row("the same, paced backend", r, "{:.2f}x", None if r is None else r >= 0.6,
                   cpu_ratio(sq, floor, "p64_c16")))
    r = ratio(_rate(sq, "s64_c16"), _rate(relay, "s64_c16"))
    out.append(row("streaming (64 chunks), default SQLite, 16 concurrent ≥ 3x codex-relay", r, "{:.2f}x",
                   None if r is None else r >= 3.0, cpu_ratio(sq, relay, "s64_c16")))
    r = ratio(_rate(sq, "p64_c16"), _rate(relay, "p64_c16"))
    out.append(row("the same, paced backend", r, "{:.2f}x", None if r is None else r >= 3.0,
                   cpu_ratio(sq, relay, "p64_c16")))
    r = ratio(_rate(sq, "ns_c16"), _rate(relay, "ns_c16"))
    out.append(row("non-streaming, default SQLite, 16 concurrent ≥ 0.5x codex-relay", r, "{:.2f}x",
                   None if r is None else r >= 0.5, cpu_ratio(sq, relay, "ns_c16")))
    for phase, what in (("s64_c16", "64-chunk streams"), ("p64_c16", "paced streams"), ("ns_c16", "non-streaming")):
        r = ratio(_rate(pg, phase), _rate(sq, phase))
        out.append(row(f"PostgreSQL ≥ 0.8x SQLite, {what}, 16 concurrent", r, "{:.2f}x",
                       None if r is None else r >= 0.8, cpu_ratio(pg, sq, phase)))
    for key, when in TTFE_PHASES:
        theirs = ((relay or {}).get(key) or {}).get("ttfe_p50_ms")
        for t, name in ((sq, "SQLite"), (pg, "PostgreSQL")):
            mine = ((t or {}).get(key) or {}).get("ttfe_p50_ms")
            ok = None if mine is None or theirs is None else mine <= theirs
            out.append(row(f"time to first event p50 at c1{when} ≤ codex-relay's ({_fmt(theirs)} ms), {name}", mine,
                           "{:.3f} ms", ok))
    for t, name in ((_get(run, f"bridge-{workers}"), "store:false"), (sq, "SQLite"), (pg, "PostgreSQL")):
        idle = (t or {}).get("idle") or {}
        mb = idle.get("rss_peak_mb")
        errs = sum((idle.get("errors") or {}).values()) + (idle.get("closed_by_server_during_hold") or 0)
        ok = None if mb is None else (mb < 70 and errs == 0 and idle.get("held") == idle.get("streams"))
        out.append(row(f"{idle.get('streams', 1000):,} idle streams < 70 MB, {name}", mb, "{:.1f} MB", ok))
    for t, name in ((sq, "SQLite"), (pg, "PostgreSQL"), (_get(run, f"bridge-{workers}"), "store:false")):
        f = fixed_ms(t, floor) if t else None
        out.append(row(f"fixed cost per non-streaming request ≤ 0.2 ms CPU, {name}", f, "{:.3f} ms",
                       None if f is None else f <= 0.2))
    return out


def targets_verdict(run: dict) -> list[str]:
    """The earlier targets (store: false), each judged from this run's figures (PASS / FAIL)."""
    out = []
    direct, relay = _get(run, "direct"), _get(run, "codex-relay")
    bridges = [t for t in run["targets"] if t["key"].startswith("bridge-") and t.get("status") == "measured"
               and not t.get("stored")]
    if not bridges:
        return ["- the bridge was not measured in this run (see status row)"]
    for b in bridges:
        name = b["label"]
        for phase, what in (("s64_c16", "64-chunk"), ("p64_c16", "64-chunk paced"), ("s512_c16", "512-chunk")):
            rate = b["phases"][phase]["rate"]
            if relay:
                r = rate / relay["phases"][phase]["rate"] if relay["phases"][phase]["rate"] else float("inf")
                out.append(f"- {'PASS' if r >= 1.5 else 'FAIL'}: {name}, {what} streams at 16 concurrent = "
                           f"{r:.2f}x codex-relay (target ≥ 1.5x)")
                mine, theirs = _cpu_ms(phase)(b), _cpu_ms(phase)(relay)
                if mine and theirs:
                    out.append(f"  - CPU per stream: {mine:.3f} ms vs codex-relay's {theirs:.3f} ms "
                               f"(codex-relay needs {theirs / mine:.2f}x what the bridge needs)")
            if direct:
                r = rate / direct["phases"][phase]["rate"]
                out.append(f"- {'PASS' if r >= 0.5 else 'FAIL'}: {name}, {what} streams at 16 concurrent = "
                           f"{100 * r:.1f}% of the direct backend (target ≥ 50%)")
        if direct:
            added = b["phases"]["ns_c1"]["p50_ms"] - direct["phases"]["ns_c1"]["p50_ms"]
            out.append(f"- {'PASS' if added <= 1.0 else 'FAIL'}: {name}, added p50 latency, non-streaming, "
                       f"concurrency 1 = {added:.3f} ms (target ≤ 1 ms)")
        idle = b.get("idle") or {}
        errs = sum((idle.get("errors") or {}).values()) + (idle.get("closed_by_server_during_hold") or 0)
        ok = idle.get("held") == idle.get("streams") and errs == 0 and (idle.get("rss_peak_mb") or 1e9) < 200
        out.append(f"- {'PASS' if ok else 'FAIL'}: {name}, {idle.get('held')}/{idle.get('streams')} idle streams "
                   f"held, peak RSS {idle.get('rss_peak_mb')} MB, {errs} errors (target < 200 MB, no error)")
    return out


def profile_section(run: dict) -> list[str]:
    out: list[str] = []
    for b in run["targets"]:
        if b.get("profile"):
            out += _profile_of(b)
    return out


def _profile_of(b: dict) -> list[str]:
    prof = b["profile"]
    out = [f"## Where {b['label']} spends its time (py-spy)", ""]
    if prof.get("flamegraph"):
        out.append(f"Flame graph of the 64-chunk, 16-concurrent stream load: `{prof['flamegraph']}`.")
        out.append("")
    for label in ("stream_64_c16", "nonstream_c16"):
        p = prof.get(label) or {}
        if not p.get("samples"):
            out += [f"{label}: no samples ({p.get('error', '')})", ""]
            continue
        out += [f"### {label}: {p['samples']} samples (percent of non-idle samples)", "",
                "Self time by layer (innermost frame's package):", "",
                "| layer | self % |", "|---|---:|"]
        out += [f"| {g['function']} | {g['percent']} |" for g in p.get("self_by_package", [])[:12]]
        out += ["", "| self % | function (innermost frame) | | total % | project function (anywhere on stack) |",
                "|---:|---|---|---:|---|"]
        inner = p.get("project_total") or [f for f in p["total"] if f["percent"] < 90.0]
        rows = max(len(p["self"][:20]), len(inner[:20]))
        for i in range(rows):
            a = p["self"][i] if i < len(p["self"][:20]) else None
            c = inner[i] if i < len(inner[:20]) else None
            out.append(f"| {a['percent'] if a else ''} | {'`' + a['function'] + '`' if a else ''} | | "
                       f"{c['percent'] if c else ''} | {'`' + c['function'] + '`' if c else ''} |")
        out.append("")
    return out


def markdown(run: dict, json_name: str, png_name: str | None, chart_status: str) -> str:
    m = run["machine"]
    lines = [
        f"# Benchmark results ({'quick run, ' if run['quick'] else ''}{run['started']})",
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB memory, Linux {m['kernel']}, "
        f"Python {m['python']}. Backend, targets and load generator all share these cores; "
        f"load average at start {m.get('loadavg_at_start')}, at end {m.get('loadavg_at_end')}; "
        f"CPU busy before the run started anything: {m.get('background_cpu_cores_before')} cores "
        "(other work on the machine, and the kernel's loopback networking, show in the "
        "'everything else' row).",
        f"Each throughput phase: {run['phase_seconds']:g} s of wrk ({run['versions'].get('wrk', 'wrk')}); "
        f"bench backend: {run['backend']['procs']} process(es).",
        "Peers: " + ", ".join(f"{k} {v}" for k, v in run["versions"].items() if k != "wrk" and v) + ".",
        f"Raw figures: `{json_name}`." + (f" Chart: `{png_name}`." if png_name else f" (no chart: {chart_status})"),
        "",
        "Each cell: the figure, and in parentheses its ratio to the direct backend's. ⚠ marks errors wrk "
        "counted in that phase (non-2xx status, read errors, timeouts).",
        "",
        table(run),
        "",
        "Rows: `floor` is bench/floor_proxy.py, a byte-copying proxy (what moving these bytes costs in "
        "Python); `store:false` rows send `\"store\": false` as Codex does; `default store` rows send no "
        "`store` field, so every response is stored before it is answered. Fixed cost = the target's CPU "
        "per non-streaming request minus the floor's (or the direct backend's); per-chunk cost = (CPU per "
        "512-chunk stream - CPU per 64-chunk stream) / 448. CPU from /proc over each whole phase.",
        "",
        "## Targets for the default (stored) path, judged from this run",
        "",
        *targets_table(run),
        "",
        "In detail:",
        "",
        *default_store_verdict(run),
        "",
        "## Earlier targets (store: false), judged from this run",
        "",
        *targets_verdict(run),
        "",
    ]
    failed = {k: v for k, v in run["installs"].items() if v != "ok"}
    if failed:
        lines += ["## Installs that failed", ""]
        lines += [f"- {k}: {v}" for k, v in failed.items()]
        lines.append("")
    lines += profile_section(run)
    tr = run.get("translator") or {}
    lines += ["## Translator benchmark (bench/translator_bench.py)", ""]
    if tr.get("lines"):
        lines += ["```", *tr["lines"], "```"]
    else:
        lines.append(f"not run: {tr.get('status', 'absent')}")
    lines.append("")
    return "\n".join(lines)


def chart(json_path: Path, png_path: Path, tools_python: Path) -> str:
    """Draw the PNG with matplotlib from the tools venv (kept out of the project's dependencies)."""
    if not tools_python.exists():
        return "matplotlib venv missing"
    script = Path(__file__).resolve().parent / "chart.py"
    done = subprocess.run([str(tools_python), str(script), str(json_path), str(png_path)],
                          capture_output=True, text=True, timeout=120)
    return "ok" if done.returncode == 0 else f"chart.py failed: {done.stderr[-300:]}"


DOC_ROWS = (
    "streams/s, 64 chunks, 16 concurrent", "streams/s, 64 chunks paced, 16 concurrent",
    "streams/s, 512 chunks, 16 concurrent", "non-streaming req/s, 16 concurrent",
    "non-streaming latency p50 ms, concurrency 1", "time to first event p50 ms, concurrency 1",
    f"time to first event p50 ms, c1, {_BETWEEN}",
    "RSS holding 1,000 idle streams, peak MB", "target CPU ms per stream, 64 chunks, 16 conc.",
    "target CPU ms per stream, 64 chunks paced, 16 conc.", "target CPU ms per stream, 512 chunks, 16 conc.",
    "target CPU ms per non-streaming request, 16 conc.", "target CPU ms per non-streaming request, concurrency 1",
    "target CPU µs per content chunk ((512 - 64 chunks) / 448)",
    "PostgreSQL server CPU ms per non-streaming request, 16 conc.",
    "PostgreSQL server CPU ms per stream, 64 chunks, 16 conc.",
    "fixed cost: CPU ms per non-streaming request minus the floor's",
    "fixed cost per stream: CPU ms per 64-chunk stream - 64 x per-chunk - floor's",
    "CPU cores used by everything else meanwhile", "load average when the target started",
)


def docs_section(run: dict) -> str:
    """The rows docs/benchmarks.md quotes (a subset of latest.md's table) and the targets table."""
    full = table(run).splitlines()
    keep = full[:2] + [ln for ln in full[2:] if ln.split(" | ", 1)[0].lstrip("| ").strip() in DOC_ROWS]
    return "\n".join([*keep, "", *targets_table(run)])


def main(argv: list[str] | None = None) -> int:
    """``python bench/report.py RESULT.json``: rewrite latest.md (latest-quick.md) and the chart from a
    run's JSON, e.g. after the report's layout changed, without measuring again.
    ``python bench/report.py --docs RESULT.json`` prints the tables docs/benchmarks.md quotes."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import install

    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--docs":  # print the section docs/benchmarks.md quotes
        print(docs_section(json.loads(Path(args[1]).read_text())))
        return 0
    if len(args) != 1:
        print("usage: python bench/report.py RESULT.json", file=sys.stderr)
        return 2
    json_path = Path(args[0])
    run = json.loads(json_path.read_text())
    png_path = json_path.with_suffix(".png")
    status = chart(json_path, png_path, install.TOOLS.path("bin/python"))
    md = markdown(run, json_path.name, png_path.name if png_path.exists() else None, status)
    out = json_path.parent / ("latest-quick.md" if run.get("quick") else "latest.md")
    out.write_text(md)
    print(f"wrote {out}, {png_path if png_path.exists() else '(no chart: ' + status + ')'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
