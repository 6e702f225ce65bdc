"""Starting, watching and stopping the benchmark's processes, and reading their cost from /proc.

Every process the benchmark starts gets its own session (process group), so stopping it also stops
whatever it forked (uvicorn workers, LiteLLM's children), and nothing the benchmark did not start is
ever signalled.  Memory and CPU are read from /proc for a whole process tree, because a bridge with
``--workers 2`` is three processes and its cost is their sum.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
_started: list[Proc] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    """A process group the benchmark owns, with its output in a log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(grace)
        # children that outlived their parent are still in the group we created
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        if self in _started:
            _started.remove(self)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Proc:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )
    proc = Proc(name, popen, log)
    _started.append(proc)
    return proc


def stop_all() -> None:
    """Stop every process group still running (called on exit, also after errors and Ctrl-C)."""
    for proc in list(reversed(_started)):
        proc.stop(grace=3.0)


def wait_port(port: int, timeout: float, proc: Proc | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            return False
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc (children files are per thread, so scan stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / TICKS


@dataclass
class Sampler:
    """Samples a process tree's RSS (peak) and CPU time (delta) over one phase, in a thread."""

    root: int
    interval: float = 0.1
    peak: int = 0
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    t_start: float = 0.0
    t_end: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _pids: list[int] = field(default_factory=list)

    def __enter__(self) -> Sampler:
        self._pids = tree(self.root)
        self.cpu_start = cpu_seconds(self._pids)
        self.t_start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            if n % 20 == 0:
                self._pids = tree(self.root)  # workers may come and go
            self.peak = max(self.peak, rss_bytes(self._pids))
            n += 1
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes(self._pids))
        self.cpu_end = cpu_seconds(self._pids)
        self.t_end = time.monotonic()

    @property
    def cores(self) -> float:
        """CPU used over the phase, in cores (1.0 = one core fully busy)."""
        elapsed = self.t_end - self.t_start
        return (self.cpu_end - self.cpu_start) / elapsed if elapsed > 0 else 0.0


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / TICKS, total / TICKS


def settle(root: int, quiet_cores: float = 0.05, window: float = 0.3, limit: float = 15.0) -> float:
    """Wait until a process tree is (nearly) idle, e.g. still draining streams the load generator
    abandoned when its phase ended; returns the seconds waited, so a slow drain is visible."""
    t0 = time.monotonic()
    pids = tree(root)
    while time.monotonic() - t0 < limit:
        before = cpu_seconds(pids)
        time.sleep(window)
        if (cpu_seconds(pids) - before) / window < quiet_cores:
            break
    return round(time.monotonic() - t0, 2)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def cpu_ns(pids: list[int]) -> int:
    """CPU time of the processes' live threads in nanoseconds, from /proc/<pid>/task/*/schedstat.

    Finer than ``cpu_seconds`` (clock ticks, 10 ms), so a handful of requests can be measured; it
    misses threads that ended in between, which is why phases use ``cpu_seconds``."""
    total = 0
    for p in pids:
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tasks:
            try:
                total += int(Path(f"/proc/{p}/task/{t}/schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return total
