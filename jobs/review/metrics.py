"""Prometheus metrics of the review service, read from the store at scrape time.

The queues live in the database that every review instance shares, so the figures are the store's, not
one process's: a collector queries it on each scrape (a few grouped ``COUNT``s) instead of counters
that each instance would keep for its own share. Served by ``jobs/observability.py``'s endpoint
(``review serve --metrics-port``) next to its ``streamwarden_up`` and ``/healthz``.

- ``streamwarden_review_pending_jobs{queue,status}``: open jobs (``pending``, ``claimed``) per queue;
- ``streamwarden_review_oldest_pending_age_seconds{queue}``: now minus the oldest open job's creation
  (0 for an empty queue): the review SLO's number;
- ``streamwarden_review_decisions_total{queue,decision}``: decisions held in the store (uphold,
  overturn, escalate); a counter: decisions are never deleted;
- ``streamwarden_review_outbox_backlog``: decided labels not yet produced to Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from streamwarden.jobs.review.store import ReviewStore


class ReviewCollector(Collector):
    """Queue depth, oldest open job's age, decisions and the label outbox, from ``store``."""

    def __init__(
        self,
        store: ReviewStore,
        queues: Sequence[str],
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._store = store
        self._queues = list(queues)
        self._clock_ms = clock_ms

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = self._clock_ms()
        pending = GaugeMetricFamily(
            "streamwarden_review_pending_jobs",
            "Open review jobs per queue and status.",
            labels=["queue", "status"],
        )
        oldest = GaugeMetricFamily(
            "streamwarden_review_oldest_pending_age_seconds",
            "Age of the oldest open job per queue (0 when the queue is empty).",
            labels=["queue"],
        )
        for q in self._store.queue_stats(self._queues):
            pending.add_metric([q.name, "pending"], q.pending)
            pending.add_metric([q.name, "claimed"], q.claimed)
            age = 0.0 if q.oldest_created_ms is None else max(0.0, (now - q.oldest_created_ms) / 1000)
            oldest.add_metric([q.name], age)
        decisions = CounterMetricFamily(
            "streamwarden_review_decisions",
            "Reviewer decisions per queue and decision.",
            labels=["queue", "decision"],
        )
        for (queue, decision), n in sorted(self._store.decision_counts().items()):
            decisions.add_metric([queue, decision], n)
        backlog = GaugeMetricFamily(
            "streamwarden_review_outbox_backlog", "Decided labels not yet produced to Kafka."
        )
        backlog.add_metric([], self._store.outbox_backlog())
        yield from (pending, oldest, decisions, backlog)


def register(
    store: ReviewStore, queues: Sequence[str], registry: CollectorRegistry = REGISTRY
) -> Callable[[], None]:
    """Register a ``ReviewCollector``; returns the function that unregisters it."""
    collector = ReviewCollector(store, queues)
    registry.register(collector)
    return lambda: registry.unregister(collector)
