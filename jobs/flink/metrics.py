"""Flink metrics of the streamwarden stages: counters batched in Python, pushed to the JVM in bulk."""

from __future__ import annotations

from typing import Any

from pyflink.datastream import RuntimeContext

METRICS_GROUP = "streamwarden"


class StageCounters:
    """Flink counters (group ``streamwarden``) incremented locally and pushed every ``every``
    increments (each push is a call into the JVM in thread mode) and on ``flush()``."""

    def __init__(self, runtime_context: RuntimeContext, names: tuple[str, ...], every: int = 1000) -> None:
        self._group = runtime_context.get_metrics_group().add_group(METRICS_GROUP)
        self._counters: dict[str, Any] = {}
        self._pending: dict[str, int] = {}
        self._every = every
        for name in names:
            self._add(name)

    def _add(self, name: str) -> None:
        self._counters[name] = self._group.counter(name)
        self._pending[name] = 0

    def inc(self, name: str, n: int = 1) -> None:
        pending = self._pending[name] + n
        if pending >= self._every:
            self._counters[name].inc(pending)
            pending = 0
        self._pending[name] = pending

    def inc_named(self, name: str, n: int = 1) -> None:
        """``inc`` for a name not known in advance (created on first use)."""
        if name not in self._pending:
            self._add(name)
        self.inc(name, n)

    def flush(self) -> None:
        for name, pending in self._pending.items():
            if pending:
                self._counters[name].inc(pending)
                self._pending[name] = 0
