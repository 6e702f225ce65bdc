"""Draw one run's results as a PNG: ``chart.py RESULT.json OUT.png`` (runs in bench/.venvs/tools).

Four panels: throughput per phase (log scale, since the targets differ by orders of magnitude),
latency at concurrency 1 (non-streaming p50 and time to first event), CPU per request and per stream,
and memory holding 1,000 idle streams.  The floor (the byte-copying proxy) is hatched and labelled as
a floor in every panel: it is a reference, not a competitor.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

THROUGHPUT = [("s64_c16", "64 ch. c16"), ("s64_c256", "64 ch. c256"), ("p64_c16", "64 paced c16"),
              ("p64_c256", "64 paced c256"), ("s512_c16", "512 ch. c16"),
              ("s512_c256", "512 ch. c256"), ("ns_c16", "non-stream c16")]


def _cpu_ms(t: dict, phase: str) -> float:
    p = (t.get("phases") or {}).get(phase, {})
    return 1000.0 * p["cpu_cores"] / p["rate"] if p.get("rate") and p.get("cpu_cores") is not None else 0.0


def _style(t: dict, i: int) -> dict:
    style: dict = {"color": f"C{i}", "label": t["label"]}
    if t.get("floor") or t["key"] == "floor":
        style.update(hatch="//", edgecolor="black", label="floor: byte-copying proxy")
    return style


def _grouped(ax, targets: list[dict], metrics: list[tuple[str, object]], width: float) -> None:
    for i, t in enumerate(targets):
        values = [f(t) or 0.0 for _, f in metrics]  # type: ignore[operator]
        ax.bar([j + i * width for j in range(len(metrics))], values, width, **_style(t, i))
    ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels([m for m, _ in metrics], fontsize=8)


def growth(run: dict, dst: str) -> None:
    """The growth run (bench/growth.py): per-turn bridge CPU and wall time along the chain, and the
    sampled variants (stored / read only / inline) per depth, one colour per store."""
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    for i, (store, res) in enumerate((run.get("chain") or {}).items()):
        cols = res.get("per_turn") or []
        turns = cols if isinstance(cols, list) else [dict(zip(cols, v, strict=True)) for v in zip(*cols.values(), strict=True)]
        if not turns:
            continue
        xs = [t["turn"] for t in turns]
        axes[0].plot(xs, [t["cpu_ms"] for t in turns], ".", markersize=2, color=f"C{i}", alpha=0.5,
                     label=f"{store}: bridge CPU per turn")
        axes[0].plot(xs, [t["wall_ms"] for t in turns], "-", linewidth=0.6, color=f"C{i}", alpha=0.6,
                     label=f"{store}: wall time per turn")
        samples = res.get("samples") or {}
        depths = sorted(int(d) for d in samples)
        for style, variant in (("o-", "stored"), ("s--", "read_only"), ("^:", "inline")):
            ys = [samples[str(d)].get(variant, {}).get("cpu_ms_p50") for d in depths]
            axes[1].plot(depths, ys, style, color=f"C{i}", label=f"{store}: {variant.replace('_', ' ')}")
    axes[0].set_xlabel("turn (depth of the previous_response_id chain)")
    axes[0].set_ylabel("ms")
    axes[0].set_title("Building the chain, turn by turn")
    axes[0].legend(fontsize=8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("depth of history (turns), log scale")
    axes[1].set_ylabel("bridge CPU ms per request (median)")
    axes[1].set_title("stored vs read only (store: false) vs history sent inline (no store)")
    axes[1].legend(fontsize=7)
    m = run["machine"]
    fig.suptitle(f"responses-bridge, cost as the work grows, {run['started']} — {m['nproc']} cores, "
                 f"load average at start {m.get('loadavg_at_start')}")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


def main(src: str, dst: str) -> None:
    with open(src) as f:
        run = json.load(f)
    if "chain" in run:
        growth(run, dst)
        return
    targets = [t for t in run["targets"] if t.get("phases")]
    fig, axes = plt.subplots(1, 4, figsize=(22, 6.5), gridspec_kw={"width_ratios": [3.2, 1.3, 1.3, 1.2]})
    width = 0.8 / max(1, len(targets))
    ax = axes[0]
    _grouped(ax, targets, [(label, lambda t, p=p: t["phases"].get(p, {}).get("rate")) for p, label in THROUGHPUT],
             width)
    ax.set_yscale("log")
    ax.set_ylabel("streams (or requests) per second, log scale")
    ax.set_title("Throughput")
    ax.legend(fontsize=7, loc="upper right")
    ax = axes[1]
    _grouped(ax, targets, [("non-stream p50", lambda t: t["phases"].get("ns_c1", {}).get("p50_ms")),
                           ("first event p50", lambda t: (t.get("ttfe") or {}).get("ttfe_p50_ms"))], width)
    ax.set_yscale("log")
    ax.set_ylabel("ms at concurrency 1, log scale")
    ax.set_title("Latency")
    ax = axes[2]
    _grouped(ax, targets, [("per non-stream\nrequest", lambda t: _cpu_ms(t, "ns_c16")),
                           ("per 64-chunk\nstream", lambda t: _cpu_ms(t, "s64_c16"))], width)
    ax.set_ylabel("target CPU ms (16 concurrent)")
    ax.set_title("CPU per request")
    ax = axes[3]
    names = [("floor: byte-copying proxy" if t["key"] == "floor" else t["label"]).replace(", ", ",\n")
             for t in targets]
    for i, t in enumerate(targets):
        style = _style(t, i)
        style.pop("label")
        ax.bar([i], [(t.get("idle") or {}).get("rss_peak_mb") or 0.0], **style)
    ax.axhline(70, color="red", linestyle="--", linewidth=1, label="70 MB target")
    ax.set_xticks(range(len(targets)))
    ax.set_xticklabels(names, fontsize=6, rotation=60, ha="right")
    ax.set_ylabel("peak RSS, MB")
    held = max(((t.get("idle") or {}).get("streams") or 0 for t in targets), default=0)
    ax.set_title(f"{held:,} idle streams")
    ax.legend(fontsize=7)
    m = run["machine"]
    fig.suptitle(f"responses-bridge benchmark, {run['started']} — {m['nproc']} cores ({m['cpu']}), "
                 f"shared by backend, target and load generator; load average at start "
                 f"{m.get('loadavg_at_start')}")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
