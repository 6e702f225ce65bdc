"""`server.accesslog.TextFormatter` writes exactly what `logging.Formatter(TEXT_FORMAT)` writes
(it caches the second's timestamp and skips the %-formatting of the line)."""

from __future__ import annotations

import logging
import sys

from server.accesslog import TEXT_FORMAT, TextFormatter
from server.cli import TEXT_LOG_FORMAT


def _record(created: float, msg: str = "%s %s", args: tuple = ("a", 1), exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("responses_bridge.access", logging.INFO, __file__, 1, msg, args, exc_info, "f")
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    return record


def test_the_same_lines_as_the_standard_formatter() -> None:
    assert TEXT_LOG_FORMAT == TEXT_FORMAT
    fast, standard = TextFormatter(TEXT_LOG_FORMAT), logging.Formatter(TEXT_LOG_FORMAT)
    # the same second twice (the cached stamp), the next second, a minute and a day later, back again
    for created in (1_796_128_229.001, 1_796_128_229.999, 1_796_128_230.5, 1_796_128_290.0, 1_796_214_629.25,
                    1_796_128_229.5):  # fmt: skip
        for record in (_record(created), _record(created, "plain %%", ()), _record(created, exc=True)):
            assert fast.format(record) == standard.format(_copy(record)), created


def test_another_format_or_date_format_takes_the_standard_way() -> None:
    record = _record(1_796_128_229.25)
    assert TextFormatter("%(levelname)s %(message)s").format(record) == "INFO a 1"
    dated = TextFormatter(TEXT_FORMAT, "%H:%M")
    assert dated.format(record) == logging.Formatter(TEXT_FORMAT, "%H:%M").format(_copy(record))


def _copy(record: logging.LogRecord) -> logging.LogRecord:
    copy = logging.makeLogRecord(dict(record.__dict__))
    copy.exc_text = None
    return copy
