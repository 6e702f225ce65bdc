"""Draw one run's results as a PNG: ``chart.py RESULT.json OUT.png`` (runs in bench/.venvs/tools).

Three panels: throughput per phase (log scale, since the targets differ by orders of magnitude),
latency at concurrency 1 (non-streaming p50 and time to first event), and memory holding 1,000
idle streams.
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


def main(src: str, dst: str) -> None:
    with open(src) as f:
        run = json.load(f)
    targets = [t for t in run["targets"] if t.get("phases")]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5), gridspec_kw={"width_ratios": [3, 1.4, 1]})
    width = 0.8 / max(1, len(targets))
    ax = axes[0]
    for i, t in enumerate(targets):
        values = [t["phases"].get(p, {}).get("rate") or 0.0 for p, _ in THROUGHPUT]
        xs = [j + i * width for j in range(len(THROUGHPUT))]
        ax.bar(xs, values, width, label=t["label"])
    ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(THROUGHPUT))])
    ax.set_xticklabels([label for _, label in THROUGHPUT])
    ax.set_yscale("log")
    ax.set_ylabel("streams (or requests) per second, log scale")
    ax.set_title("Throughput")
    ax.legend(fontsize=8)
    ax = axes[1]
    metrics = [("non-stream p50", lambda t: t["phases"].get("ns_c1", {}).get("p50_ms")),
               ("first event p50", lambda t: (t.get("ttfe") or {}).get("ttfe_p50_ms"))]
    for i, t in enumerate(targets):
        values = [f(t) or 0.0 for _, f in metrics]
        ax.bar([j + i * width for j in range(len(metrics))], values, width, label=t["label"])
    ax.set_xticks([j + width * (len(targets) - 1) / 2 for j in range(len(metrics))])
    ax.set_xticklabels([m for m, _ in metrics])
    ax.set_yscale("log")
    ax.set_ylabel("ms at concurrency 1, log scale")
    ax.set_title("Latency")
    ax = axes[2]
    names = [t["label"].replace("responses-bridge ", "bridge\n") for t in targets]
    ax.bar(range(len(targets)), [(t.get("idle") or {}).get("rss_peak_mb") or 0.0 for t in targets],
           color=[f"C{i}" for i in range(len(targets))])
    ax.axhline(200, color="red", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(targets)))
    ax.set_xticklabels(names, fontsize=7)
    ax.set_ylabel("peak RSS, MB")
    ax.set_title("1,000 idle streams")
    m = run["machine"]
    fig.suptitle(f"responses-bridge benchmark, {run['started']} — {m['nproc']} cores ({m['cpu']}), "
                 f"shared by backend, target and load generator")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
