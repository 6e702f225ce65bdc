"""Where the bridge spends its time under load: py-spy samples, reduced to named hot spots.

py-spy's ``raw`` output is one collapsed stack per line (``frame;frame;... count``), each frame
``function (file:line)``.  From it we compute, for every function, its *self* share (samples where it
is the innermost frame) and its *total* share (samples where it is anywhere on the stack), both as a
percentage of all non-idle samples, which is what an engineer needs to decide what to optimise.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

_REPO = str(Path(__file__).resolve().parent.parent) + "/"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    """``func (path/to/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``: readable, and lines merged."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/", "lib/python3.13/", _REPO):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def analyse(raw: Path, top: int = 40) -> dict:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        samples += n
        self_counts[frames[-1]] += n
        for f in set(frames):
            total_counts[f] += n
    if samples == 0:
        return {"samples": 0, "self": [], "total": []}

    def pct(counter: Counter[str], n: int = top) -> list[dict]:
        return [{"function": f, "percent": round(100.0 * c / samples, 1)} for f, c in counter.most_common(n)]

    by_package: Counter[str] = Counter()
    for f, c in self_counts.items():
        by_package[package_of(f)] += c
    # project frames below the entry chain (main, serve: on every stack) are the informative ones
    own = Counter({f: c for f, c in total_counts.items()
                   if package_of(f) in ("server", "translator") and c < 0.9 * samples})
    return {"samples": samples, "self": pct(self_counts), "total": pct(total_counts),
            "self_by_package": pct(by_package, 20), "project_total": pct(own)}


PACKAGES = ("server", "translator", "uvicorn", "starlette", "httpx", "httpcore", "h11", "anyio", "asyncio",
            "orjson", "contextlib", "sniffio")


def package_of(function: str) -> str:
    """The package a shortened frame belongs to (``f (pkg/mod.py)`` -> ``pkg``), for a per-layer view."""
    path = function.rsplit("(", 1)[-1]
    head = path.split("/", 1)[0].rstrip(")").removesuffix(".py")
    return head if head in PACKAGES else "other (" + head + ")"


def record(py_spy: str, pid: int, seconds: float, out: Path, fmt: str, rate: int = 250) -> subprocess.Popen:
    """Start py-spy recording pid (and its subprocesses) for `seconds`; the caller waits for it."""
    cmd = [py_spy, "record", "--pid", str(pid), "--subprocesses", "--rate", str(rate),
           "--duration", str(int(max(1, seconds))), "--format", fmt, "--output", str(out), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
