"""Memory of another process, read from /proc/PID/status, and a sampler that watches its peak.

Why not the kernel's peak alone (`VmHWM`): it is reset only by writing to /proc/PID/clear_refs,
which is allowed for a process the test started but not everywhere; the sampler reads `VmRSS`
every few milliseconds as well and keeps the larger of the two, and it can kill a process that
passes a hard ceiling, so a hostile case run against unfixed code cannot exhaust the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

__all__ = ["RssSampler", "read_status_kib", "reset_peak"]

MIB = 1024 * 1024


def read_status_kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB; 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return 0
    return 0


def reset_peak(pid: int) -> bool:
    """Reset the kernel's peak RSS (`VmHWM`) to the current RSS; False where not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples `pid`'s RSS in a thread; `peak_mib` is the largest seen (kernel peak included).

    `kill_above_mib`: SIGKILL the process when its RSS passes this, and record that it did."""

    def __init__(self, pid: int, interval: float = 0.01, kill_above_mib: float | None = None) -> None:
        self.pid = pid
        self.interval = interval
        self.kill_above_mib = kill_above_mib
        self.killed = False
        self.baseline_mib = read_status_kib(pid, "VmRSS") / 1024
        self._peak_kib = 0
        self._kernel_peak = reset_peak(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = read_status_kib(self.pid, "VmRSS")
            self._peak_kib = max(self._peak_kib, rss)
            if self.kill_above_mib is not None and rss / 1024 > self.kill_above_mib and not self.killed:
                self.killed = True
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
            time.sleep(self.interval)

    @property
    def peak_mib(self) -> float:
        kernel = read_status_kib(self.pid, "VmHWM") if self._kernel_peak else 0
        return max(self._peak_kib, kernel) / 1024

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.baseline_mib

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
