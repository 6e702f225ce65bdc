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
    ("RSS holding 1,000 idle streams, peak MB", _key("idle", "rss_peak_mb"), False, None),
    ("RSS before those streams, MB", _key("idle", "rss_baseline_mb"), False, None),
    ("target CPU ms per stream, 64 chunks, 16 conc.", _cpu_ms("s64_c16"), False, None),
    ("target CPU ms per stream, 64 chunks paced, 16 conc.", _cpu_ms("p64_c16"), False, None),
    ("target CPU ms per stream, 512 chunks, 16 conc.", _cpu_ms("s512_c16"), False, None),
    ("target CPU ms per non-streaming request, 16 conc.", _cpu_ms("ns_c16"), False, None),
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
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


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
            if value is not None and base and t is not direct and not label.startswith("new upstream") and label.split(",")[0] not in (
                    "CPU cores used by backend meanwhile",
                    "CPU cores used by wrk meanwhile", "CPU cores used by everything else meanwhile"):
                cell += f" ({value / base:.2f}x)"
            cells.append(cell + _errors(t, phase))
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
    return "\n".join(lines)


def _get(run: dict, key: str) -> dict | None:
    return next((t for t in run["targets"] if t["key"] == key and t.get("status") == "measured"), None)


def targets_verdict(run: dict) -> list[str]:
    """The issue's targets, each judged from this run's figures (PASS / FAIL / not measurable)."""
    out = []
    direct, relay = _get(run, "direct"), _get(run, "codex-relay")
    bridges = [t for t in run["targets"] if t["key"].startswith("bridge-") and t.get("status") == "measured"]
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
    b = next((t for t in run["targets"] if t.get("profile")), None)
    if not b:
        return []
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
        "## The issue's targets, judged from this run",
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
