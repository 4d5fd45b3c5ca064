"""The one logging setup of every command: level, text or JSON lines, librdkafka's logs included.

confluent-kafka clients made by ``jobs.kafka_io`` log through the ``streamwarden.kafka`` logger
(librdkafka's ``logger=`` hook), so they follow ``--log-level`` and ``--log-format`` like the rest.
A client that cannot reach its broker repeats the same error every second or so: ``RepeatFilter``
lets each distinct message through once per ``window_s`` and counts the rest.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from enum import StrEnum
from typing import Any


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message, and any ``extra``."""

    _RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._RESERVED and not key.startswith("_"):
                out[key] = (
                    value if isinstance(value, str | int | float | bool) or value is None else repr(value)
                )
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class RepeatFilter(logging.Filter):
    """Drops a message identical to one logged less than ``window_s`` ago (same logger and level)."""

    def __init__(self, window_s: float = 30.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._last: dict[tuple[str, int, str], float] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        now = record.created
        last = self._last.get(key)
        if last is not None and now - last < self.window_s:
            self.suppressed += 1
            return False
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[key] = now
        return True


_HANDLER_NAME = "streamwarden"


def configure_logging(level: str = "info", fmt: str = "text", stream: Any = None) -> logging.Handler:
    """Install (or replace) the one handler on the root logger; safe to call more than once."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if fmt == LogFormat.json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RepeatFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Beam and PyFlink are chatty at INFO; keep them at WARNING unless debugging.
    if level != LogLevel.debug:
        for noisy in ("apache_beam", "pyflink", "py4j"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
