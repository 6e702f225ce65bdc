"""Metrics across processes: what a scrape reads when several workers (`serve --workers N`) each
write the library's per-process files into one directory (`PROMETHEUS_MULTIPROC_DIR`), and the
separate `--metrics-port` listener.

`scrape_registry` sums every process's files (`MultiProcessCollector`), first marking dead the
workers that exited without a shutdown, so the `livesum` streams-in-flight gauge counts live
processes only. Why apart from server/metrics.py: these are process plumbing (files, pids, a
listener thread) with no knowledge of what is measured.
"""

from __future__ import annotations

import os
import re
from typing import Any

from prometheus_client import (
    CollectorRegistry,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from server.stores.common import pid_alive

__all__ = ["MULTIPROC_ENV", "MetricsServer", "mark_dead_workers", "multiprocess_dir", "scrape_registry", "start_metrics_server"]


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    """The multiprocess directory this process writes to, or None (single process)."""
    return os.environ.get(MULTIPROC_ENV) or None


def scrape_registry(registry: CollectorRegistry | None, directory: str | None) -> CollectorRegistry:
    """What a scrape reads: the process's own registry, or every process's files summed."""
    if directory is None:
        assert registry is not None
        return registry
    mark_dead_workers(directory)
    merged = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(merged, path=directory)
    return merged


def mark_dead_workers(directory: str) -> None:
    """Drop the live-gauge files of processes that no longer exist (a worker killed without a shutdown),
    so `livesum` gauges count live workers only. Counters and histograms of a dead worker are kept:
    what it counted happened."""
    pids = set()
    for name in os.listdir(directory):
        found = _LIVE_GAUGE_FILE.match(name)
        if found:
            pids.add(int(found.group(1)))
    for pid in pids:
        if not pid_alive(pid):
            prometheus_multiprocess.mark_process_dead(pid, directory)


class MetricsServer:
    """The separate `/metrics` listener (`--metrics-port`): the library's HTTP server in a thread."""

    def __init__(self, server: Any, thread: Any) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_metrics_server(host: str, port: int, registry: CollectorRegistry | None, directory: str | None) -> MetricsServer:
    """Serve the metrics on `host:port` (OSError when it cannot bind). With `directory`, each scrape
    sums every worker's files; otherwise it reads `registry`."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=_LazyScrape(registry, directory))
    return MetricsServer(server, thread)


class _LazyScrape(CollectorRegistry):
    """A registry whose collection is `scrape_registry` at scrape time (dead workers marked then)."""

    def __init__(self, registry: CollectorRegistry | None, directory: str | None) -> None:
        super().__init__(auto_describe=False)
        self._source = registry
        self._directory = directory

    def collect(self) -> Any:
        yield from scrape_registry(self._source, self._directory).collect()
