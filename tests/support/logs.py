"""Records of one logger, captured by a handler on that logger itself.

pytest's `caplog` listens on the root logger, so it misses a logger whose `propagate` was turned off
(the CLI's logging setup does that for `responses_bridge` when a test runs it in-process); a handler
on the logger sees every record whatever ran before, and only once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured(name: str = "responses_bridge", level: int = logging.WARNING) -> Iterator[list[logging.LogRecord]]:
    """The records `name` logs at `level` or above while the block runs (the list fills as they come)."""
    logger = logging.getLogger(name)
    handler = _ListHandler()
    handler.setLevel(level)
    saved = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)
