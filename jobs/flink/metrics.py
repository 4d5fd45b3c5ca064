"""Flink metrics of the streamwarden stages: counters batched in Python, pushed to the JVM in bulk.

With Flink's Prometheus reporter (``deploy/flink/config.yaml``) a counter ``n`` of this group is exported
as ``flink_taskmanager_job_task_operator_streamwarden_<n>``; the key/value groups of ``inc_labelled``
become labels and their keys (sorted) part of the name:
``..._streamwarden_mode_rule_verdict_actions_by_rule{rule="...", verdict="...", mode="..."}`` (the same
labels as the Beam/local ``streamwarden_actions_total``, ``jobs/observability.py``).

Beyond counters (what works in PyFlink 2.3's thread mode, checked in its ``fn_execution/metrics/embedded``):
a Python ``gauge`` is a Java gauge that calls back into Python from the reporter's thread, and a Python
``distribution`` is only a Java gauge holding the last value set. So ``histogram`` registers Flink's own
``DescriptiveStatisticsHistogram`` on the Java group (``pemja.findClass``; the Prometheus reporter
exports it as a summary: ``..._<name>{quantile="0.5"|...|"0.999"}`` and ``..._<name>_count``), and
``info`` uses the last-value gauge as a settable one: 1 on the group of the current value of a label
(``..._<label>_<name>{<label>="v3"} 1``), 0 on the value it replaced (hot reload). Neither calls
Python from another thread.
"""

from __future__ import annotations

from typing import Any

from pyflink.datastream import RuntimeContext

METRICS_GROUP = "streamwarden"
PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def prometheus_reporter(port: int) -> dict[str, str]:
    """The Flink settings of the Prometheus reporter on ``port`` (as in ``deploy/flink/config.yaml``)."""
    return {
        "metrics.reporter.prom.factory.class": PROMETHEUS_FACTORY,
        "metrics.reporter.prom.port": str(port),
    }


def expose_reporter_to_local_gateway() -> None:
    """A cluster loads the reporter from ``plugins/``; PyFlink's local MiniCluster loads no plugins, so put
    the plugin jar PyFlink ships on the gateway JVM's class path (PyFlink appends ``HADOOP_CLASSPATH``),
    where Flink's ServiceLoader finds the factory. Call before the first PyFlink environment is made."""
    import os
    from pathlib import Path

    import pyflink

    jars = sorted((Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus").glob("*.jar"))
    if not jars:
        raise FileNotFoundError("PyFlink's plugins/metrics-prometheus jar is missing")
    current = os.environ.get("HADOOP_CLASSPATH", "")
    if str(jars[0]) not in current.split(os.pathsep):
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(p for p in (current, str(jars[0])) if p)


class StageCounters:
    """Flink counters (group ``streamwarden``) incremented locally and pushed every ``every``
    increments (each push is a call into the JVM in thread mode) and on ``flush()``."""

    def __init__(self, runtime_context: RuntimeContext, names: tuple[str, ...], every: int = 1000) -> None:
        self._group = runtime_context.get_metrics_group().add_group(METRICS_GROUP)
        self._counters: dict[str, Any] = {}
        self._pending: dict[str, int] = {}
        self._labelled: dict[str, Any] = {}
        self._histograms: list[Histogram] = []
        self._info: dict[str, Any] = {}
        self._info_current: dict[str, str] = {}
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
        """A counter for a name not known in advance (created on first use), pushed at once: these count
        rare things (dead letters by kind) that a batch of ``every`` would hide until the job stops."""
        counter = self._counters.get(name)
        if counter is None:
            counter = self._counters[name] = self._group.counter(name)
        counter.inc(n)

    def inc_labelled(self, name: str, n: int = 1, **labels: str) -> None:
        """Counter ``name`` inside key/value groups ``labels`` (Prometheus labels), pushed at once: these
        count rare things (actions), where a batch of ``every`` would hide a rule for a long time."""
        key = name + "".join(f"\x1f{k}={v}" for k, v in sorted(labels.items()))
        counter = self._labelled.get(key)
        if counter is None:
            group = self._group
            for label, value in sorted(labels.items()):
                group = group.add_group(label, value)
            counter = self._labelled[key] = group.counter(name)
        counter.inc(n)

    def histogram(self, name: str, window: int = 1024, every: int = 64) -> Histogram:
        """A Flink histogram ``name`` over the last ``window`` values (see the module), fed in batches of
        ``every`` values (and on ``flush``)."""
        histogram = Histogram(self._group, name, window, every)
        self._histograms.append(histogram)
        return histogram

    def info(self, name: str, **labels: str) -> None:
        """Gauge ``name`` = 1 inside the key/value groups ``labels`` (a Prometheus info metric, e.g. the
        running policy version); the gauge of the labels it had before for ``name`` goes to 0."""
        key = name + "".join(f"\x1f{k}={v}" for k, v in sorted(labels.items()))
        previous = self._info_current.get(name)
        if previous == key:
            return
        if previous is not None:
            self._info[previous].update(0)
        gauge = self._info.get(key)
        if gauge is None:
            group = self._group
            for label, value in sorted(labels.items()):
                group = group.add_group(label, value)
            gauge = self._info[key] = group.distribution(name)  # a last-value gauge in thread mode
        gauge.update(1)
        self._info_current[name] = key

    def flush(self) -> None:
        for name, pending in self._pending.items():
            if pending:
                self._counters[name].inc(pending)
                self._pending[name] = 0
        for histogram in self._histograms:
            histogram.flush()


class Histogram:
    """A Flink ``DescriptiveStatisticsHistogram`` on a metric group (thread mode: the Java group behind
    PyFlink's wrapper); values are buffered and pushed every ``every`` values. Where that Java group is
    not reachable (PyFlink's process mode), the group's ``distribution`` stands in."""

    def __init__(self, group: Any, name: str, window: int, every: int) -> None:
        self._every = every
        self._buffer: list[int] = []
        self._java: Any = None
        inner = getattr(group, "_metrics", None)
        if inner is not None:
            try:
                from pemja import findClass

                histogram_class = findClass("org.apache.flink.runtime.metrics.DescriptiveStatisticsHistogram")
                self._java = inner.histogram(name, histogram_class(window))
            except Exception:  # not in thread mode: fall back below
                self._java = None
        self._target: Any = self._java if self._java is not None else group.distribution(name)

    def update(self, value: int) -> None:
        buffer = self._buffer
        buffer.append(value)
        if len(buffer) >= self._every:
            self.flush()

    def flush(self) -> None:
        target = self._target
        for value in self._buffer:
            target.update(value)
        self._buffer.clear()
