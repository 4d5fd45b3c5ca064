"""``streamwarden demo`` / ``make demo``: the embedded default, end to end, with a live summary.

Four parts run in one process:

- the embedded broker (tansu, memory only) with the job's topics;
- the generator (a thread): live labeled traffic, event time = now, every abuse scenario, paced by
  arrival time; when one round of traffic ends the next starts (new seed), so the demo runs until stopped;
- the Beam job (a thread, DirectRunner): ``events`` → ``actions``, ``events.deadletter`` and ``alerts``;
- the watcher (the main thread): reads ``actions``, ``events.deadletter`` and ``alerts`` with ``assign()`` (no group
  join wait) and prints every few seconds what came in, what the job decided, how fast (decision time -
  the time the generator produced the event) and which attacks have been caught so far, judged against
  the generator's ground-truth labels.

Ctrl-C (SIGINT), SIGTERM or ``--duration-s`` stop the generator, the job (after its current bundle), the
watcher and the broker, in that order; a second Ctrl-C aborts the wait.
"""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streamwarden.deploy.broker import EmbeddedBroker
from streamwarden.jobs.cli.generate import KafkaSink, run_generate
from streamwarden.jobs.cli.options import MetricsPortOpt
from streamwarden.jobs.config import JobConfig, KafkaConfig, TopicsConfig
from streamwarden.jobs.kafka_io import create_local_topics, embedded_kafka_config, make_consumer, poll_batch
from streamwarden.operators.anomaly.spec import DEFAULT_SPEC_PATH
from streamwarden.operators.evaluation import percentile
from streamwarden.operators.evaluation.report import counted, subject_of
from streamwarden.operators.pipeline import dead_letter_reason
from streamwarden.operators.traffic import (
    SCENARIO_NAMES,
    Label,
    TrafficRecord,
    TrafficSpec,
    iter_traffic,
    labels,
    load_spec,
)
from streamwarden.schemas import streamwarden_pb2 as pb

DEMO_ANOMALY_SPEC = DEFAULT_SPEC_PATH.parent / "demo_metrics.yaml"
"""The demo's anomaly spec (global per-type rates in 5 s buckets)."""

PARTITIONS = 3
"""Partitions of every demo topic."""

DEMO_ORGANIC_EVENTS_PER_S = 50.0
"""Daily-mean organic rate of the demo traffic (the diurnal factor makes it ~40-65/s): with the attacks on
top, peaks stay under ~200 events/s, which the Beam DirectRunner job keeps up with on a shared core."""

PRODUCE_TIMES_KEEP_S = 300.0
"""How long the generator's event id → produce time entries are kept for the latency figures."""


DEMO_LEAD_IN_S = 5.0
"""Seconds of organic traffic before the first attack of a round."""

DEMO_BACKFILL_BUCKETS = 36
"""Buckets of organic history the demo's anomaly series are warmed up from (3 minutes of 5 s buckets)."""


def demo_anomaly_spec(directory: Path, seed: int, now_ms: int, organic_events_per_s: float) -> Path:
    """Write the demo's anomaly spec (``operators/anomaly/demo_metrics.yaml``) plus a backfill: the
    bucket counts of organic traffic from the same traffic model (another seed) over the
    ``DEMO_BACKFILL_BUCKETS`` buckets before ``now_ms``, so alerts are possible from the first live bucket."""
    import yaml

    from streamwarden.operators.anomaly.series import SeriesAggregator, bucket_start
    from streamwarden.operators.anomaly.spec import parse_anomaly_spec
    from streamwarden.schemas.codec import decode_event

    raw = yaml.safe_load(DEMO_ANOMALY_SPEC.read_text(encoding="utf-8"))
    spec = parse_anomaly_spec(raw, str(DEMO_ANOMALY_SPEC))
    bucket_ms = spec.defaults.bucket_ms
    end_ms = bucket_start(now_ms, bucket_ms)
    start_ms = end_ms - DEMO_BACKFILL_BUCKETS * bucket_ms
    history = demo_spec(seed + 7_919, start_ms, (end_ms - start_ms) / 1000.0, organic_events_per_s)
    agg = SeriesAggregator(spec)
    for record in iter_traffic(history):
        if record.scenario is None and record.malformed is None and start_ms <= record.event_time_ms < end_ms:
            event = decode_event(record.payload, now_ms=None)
            if isinstance(event, pb.Event):
                agg.on_event(event)
    values: dict[tuple[str, str], list[float]] = {}
    for bucket in agg.advance_to(end_ms + 10 * bucket_ms):
        if bucket.start_ms < end_ms:
            row = values.setdefault((bucket.metric, bucket.series_key), [0.0] * DEMO_BACKFILL_BUCKETS)
            row[(bucket.start_ms - start_ms) // bucket_ms] = bucket.value
    raw["backfill"] = [
        {"metric": metric, "series_key": key, "start_ms": start_ms, "values": row}
        for (metric, key), row in sorted(values.items())
    ]
    path = directory / "demo_anomaly_spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def demo_spec(
    seed: int,
    start_ms: int,
    traffic_duration_s: float,
    organic_events_per_s: float,
    lead_in_s: float = DEMO_LEAD_IN_S,
) -> TrafficSpec:
    """The default traffic spec starting at ``start_ms``, shrunk to ``traffic_duration_s`` of event time
    (scenario windows scale along, sizes stay: each attack is as large as in the default, only denser),
    the attacks moved earlier together so the first starts ``lead_in_s`` in, and the organic rate lowered
    to ``organic_events_per_s``."""
    spec = load_spec(None, seed=seed, start_ms=start_ms).scaled_to(traffic_duration_s)
    data = spec.model_dump()
    data["organic_events_per_s"] = organic_events_per_s
    scenarios = data["scenarios"]
    shift_s = min(scenarios[n]["start_offset_s"] for n in SCENARIO_NAMES) - lead_in_s
    if shift_s > 0:
        for name in SCENARIO_NAMES:
            scenarios[name]["start_offset_s"] -= shift_s
    return TrafficSpec.model_validate(data)


# ---------------------------------------------------------------- what the watcher keeps


@dataclass
class _Scenario:
    """One scenario across the rounds so far."""

    starts_ms: list[int] = field(default_factory=list)
    """Start of the scenario in each round (event time = wall time in the demo)."""
    entities: set[tuple[str, str]] = field(default_factory=set)
    """Labeled entities whose label window has started."""
    caught: set[tuple[str, str]] = field(default_factory=set)
    targets: set[tuple[str, str]] = field(default_factory=set)
    """Unlabeled subjects actioned on the scenario's events (the content or accounts it targeted)."""
    rules: Counter[str] = field(default_factory=Counter)
    first_caught_after_ms: int | None = None
    """Decision time of the first action on one of its entities - the start of that round's scenario."""


PANEL_WIDTH = 120
"""Columns of the live panel (fits a 120-column terminal)."""


class DemoState:
    """Everything the live summary shows; fed by the generator thread and the watcher (main) thread.

    Only the main thread reads it; the generator thread adds rounds (under a lock) and produce times
    (single dict/deque operations, atomic under the GIL)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[TrafficSpec, list[Label]]] = []
        self._not_started: list[Label] = []
        self.labeled: dict[tuple[str, str], set[str]] = {}
        self.produced = 0
        self.produced_events: dict[str, tuple[int, str | None]] = {}
        """Event id → (produce time, scenario or None for organic)."""
        self._produce_order: deque[tuple[int, str]] = deque()
        self.actions = 0
        self.counted_actions = 0
        self.by_verdict: Counter[str] = Counter()
        self.by_verdict_mode: Counter[tuple[str, str]] = Counter()
        """Actions by (verdict, mode): what was enforced and what only ran in shadow mode."""
        self.by_rule: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.alerts: Counter[str] = Counter()
        """Anomaly alerts by ``metric status``."""
        self.latencies_ms: list[float] = []
        self.recent_latencies_ms: list[float] = []
        self.scenarios: dict[str, _Scenario] = {name: _Scenario() for name in SCENARIO_NAMES}
        self.organic_subjects: set[tuple[str, str]] = set()
        """Unlabeled subjects actioned on an organic event: possible false positives."""

    # ---- generator side

    def add_round(self, spec: TrafficSpec) -> None:
        """A new round of traffic starts: its ground truth becomes known to the watcher."""
        labs = labels(spec)
        with self._lock:
            self._pending.append((spec, labs))

    def produced_record(self, record: TrafficRecord, now_ms: int) -> None:
        self.produced += 1
        if record.malformed is None:
            event_id = pb.Event.FromString(record.payload).event_id
            self.produced_events[event_id] = (now_ms, record.scenario)
            self._produce_order.append((now_ms, event_id))

    # ---- watcher side

    def refresh(self, now_ms: int) -> None:
        """Fold in new rounds, note which labeled entities have started, forget old produce times."""
        with self._lock:
            pending, self._pending = self._pending, []
        for spec, labs in pending:
            for name in SCENARIO_NAMES:
                sc = getattr(spec.scenarios, name)
                if sc.enabled:
                    self.scenarios[name].starts_ms.append(spec.start_ms + round(sc.start_offset_s * 1000))
            for lab in labs:
                self.labeled.setdefault((lab.entity_kind, lab.entity_id), set()).add(lab.scenario)
            self._not_started.extend(labs)
        waiting = []
        for lab in self._not_started:
            if lab.start_ms <= now_ms:
                self.scenarios[lab.scenario].entities.add((lab.entity_kind, lab.entity_id))
            else:
                waiting.append(lab)
        self._not_started = waiting
        horizon = now_ms - round(PRODUCE_TIMES_KEEP_S * 1000)
        while self._produce_order and self._produce_order[0][0] < horizon:
            _, event_id = self._produce_order.popleft()
            self.produced_events.pop(event_id, None)

    def on_action(self, action: pb.Action) -> None:
        self.actions += 1
        self.by_verdict[pb.Action.Verdict.Name(action.verdict)] += 1
        self.by_verdict_mode[(pb.Action.Verdict.Name(action.verdict), pb.Action.Mode.Name(action.mode))] += 1
        for rule in action.reasons:
            self.by_rule[rule] += 1
        produced_ms, trigger = self.produced_events.get(action.event_id, (None, None))
        if produced_ms is not None:
            latency = float(action.decision_time_ms - produced_ms)
            self.latencies_ms.append(latency)
            self.recent_latencies_ms.append(latency)
        if not counted(action, None, include_shadow_mode=False):
            return
        self.counted_actions += 1
        subject = subject_of(action)
        names = self.labeled.get(subject)
        if not names:
            if trigger is not None:  # e.g. the content or account an attack targeted
                self.scenarios[trigger].targets.add(subject)
            else:
                self.organic_subjects.add(subject)
            return
        for name in names:
            sc = self.scenarios[name]
            sc.entities.add(subject)
            sc.caught.add(subject)
            sc.rules.update(action.reasons)
            started = [t for t in sc.starts_ms if t <= action.event_time_ms]
            if sc.first_caught_after_ms is None and started:
                sc.first_caught_after_ms = action.decision_time_ms - max(started)

    def on_alert(self, alert: pb.AnomalyAlert) -> None:
        self.alerts[f"{alert.metric} {pb.AnomalyAlert.Status.Name(alert.status)}"] += 1

    def on_dead_letter(self, letter: pb.DeadLetter) -> None:
        self.dead_letters[dead_letter_reason(letter)] += 1

    def caught(self) -> list[str]:
        """Scenarios with at least one labeled entity actioned, in ``SCENARIO_NAMES`` order."""
        return [name for name in SCENARIO_NAMES if self.scenarios[name].caught]

    # ---- rendering

    def summary(self, elapsed_s: float, rate_now_per_s: float, now_ms: int, *, final: bool = False) -> str:
        recent, self.recent_latencies_ms = self.recent_latencies_ms, []
        lines = [
            f"[{elapsed_s:6.1f}s] events in: {self.produced} ({rate_now_per_s:.0f}/s now, "
            f"{self.produced / max(elapsed_s, 1e-9):.0f}/s avg) | actions: {self.actions} "
            f"({self.counted_actions} enforced) | dead letters: {sum(self.dead_letters.values())}"
            + (" | final" if final else ""),
            f"  latency ms (decision - produce): {_percentiles(self.latencies_ms)}"
            + (f"; last interval {_percentiles(recent)}" if recent and not final else ""),
            f"  by verdict, enforced: {_counts(self._verdicts('ENFORCE'))}",
            f"  by verdict, shadow mode: {_counts(self._verdicts('SHADOW_MODE'))}",
            f"  by rule:    {_counts(self.by_rule)}",
            f"  dead letters by reason: {_counts(self.dead_letters)}",
            f"  anomaly alerts: {_counts(self.alerts)}",
            "  scenarios:",
        ]
        for name in SCENARIO_NAMES:
            lines.append(f"    {name:<20} {self._scenario_line(self.scenarios[name], now_ms)}")
        lines.append(
            f"    {'organic':<20} {len(self.organic_subjects)} unlabeled subjects actioned on organic "
            "events (possible false positives)"
        )
        return "\n".join(lines)

    def _verdicts(self, mode: str) -> Counter[str]:
        return Counter({v: n for (v, m), n in self.by_verdict_mode.items() if m == mode})

    def panel(self, elapsed_s: float, rate_now_per_s: float, now_ms: int) -> Any:
        """The live panel (rich): the same figures as ``summary``, verdicts by mode in their own table,
        redrawn in place on a terminal; at most ``PANEL_WIDTH`` columns wide."""
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table

        head = Table.grid(padding=(0, 2))
        head.add_row(
            f"events in {self.produced} ({rate_now_per_s:.0f}/s now)",
            f"actions {self.actions} ({self.counted_actions} enforced)",
            f"dead letters {sum(self.dead_letters.values())}",
        )
        head.add_row(f"latency ms {_percentiles(self.latencies_ms)}", "", "")
        verdicts = Table(title="actions by verdict and mode", title_justify="left", expand=False)
        verdicts.add_column("verdict")
        modes = sorted({m for _, m in self.by_verdict_mode}) or ["ENFORCE"]
        for mode in modes:
            verdicts.add_column(mode.lower(), justify="right")
        for verdict in sorted({v for v, _ in self.by_verdict_mode}):
            verdicts.add_row(verdict.lower(), *(str(self.by_verdict_mode[(verdict, m)]) for m in modes))
        scenarios = Table(title="scenarios", title_justify="left", expand=False)
        scenarios.add_column("scenario")
        scenarios.add_column("status", max_width=PANEL_WIDTH - 30, overflow="fold")
        for name in SCENARIO_NAMES:
            scenarios.add_row(name, self._scenario_line(self.scenarios[name], now_ms))
        scenarios.add_row(
            "organic", f"{len(self.organic_subjects)} unlabeled subjects actioned (possible FPs)"
        )
        tail = Table.grid(padding=(0, 1))
        tail.add_row("rules", _counts(self.by_rule))
        tail.add_row("dead letters", _counts(self.dead_letters))
        tail.add_row("anomaly alerts", _counts(self.alerts))
        return Panel(
            Group(head, verdicts, scenarios, tail),
            title=f"streamwarden demo  {elapsed_s:.0f} s",
            width=PANEL_WIDTH,
        )

    @staticmethod
    def _scenario_line(sc: _Scenario, now_ms: int) -> str:
        if sc.caught:
            after = (
                f"{sc.first_caught_after_ms / 1000:.1f} s after it started"
                if sc.first_caught_after_ms is not None
                else ""
            )
            rules = ", ".join(r for r, _ in sc.rules.most_common(3))
            targets = f", {len(sc.targets)} targets protected" if sc.targets else ""
            return (
                f"CAUGHT {after}: {len(sc.caught)}/{len(sc.entities)} labeled entities actioned"
                f"{targets} (rules: {rules})"
            )
        if sc.entities:
            return f"running, not caught yet ({len(sc.entities)} entities)"
        upcoming = [t for t in sc.starts_ms if t > now_ms]
        if upcoming:
            return f"starts in {(min(upcoming) - now_ms) / 1000:.0f} s"
        return "-"


def _live_panel() -> Any:
    """A started ``rich.live.Live`` when stdout is a terminal, else None."""
    if not sys.stdout.isatty():
        return None
    from rich.console import Console
    from rich.live import Live

    live = Live(console=Console(width=PANEL_WIDTH), auto_refresh=False, transient=False)
    live.start()
    return live


def _percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p95, p99 = (percentile(values, p) for p in (50, 95, 99))
    return f"p50 {p50:.0f} p95 {p95:.0f} p99 {p99:.0f} max {max(values):.0f} (n={len(values)})"


def _counts(counter: Counter[str]) -> str:
    return " ".join(f"{k}={v}" for k, v in counter.most_common()) or "none"


# ---------------------------------------------------------------- the parts


class _RecordingSink(KafkaSink):
    """``KafkaSink`` that tells the demo state what it produced and when."""

    def __init__(self, kafka: KafkaConfig, topic: str, state: DemoState) -> None:
        super().__init__(kafka, topic)
        self._state = state

    def write(self, record: TrafficRecord) -> None:
        super().write(record)
        self.producer.poll(0)
        self._state.produced_record(record, int(time.time() * 1000))


def _paced(stop: threading.Event, records: Iterator[TrafficRecord]) -> Iterator[TrafficRecord]:
    """Each record at its arrival time (wall clock = event time), until ``stop``; waits in short slices
    so a stop request is seen promptly."""
    for record in records:
        while (delay_s := record.arrival_ms / 1000.0 - time.time()) > 0:
            if stop.wait(min(delay_s, 0.2)):
                return
        if stop.is_set():
            return
        yield record


def _generate(
    kafka: KafkaConfig,
    topic: str,
    state: DemoState,
    stop: threading.Event,
    seed: int,
    traffic_duration_s: float,
    organic_events_per_s: float,
) -> None:
    """Rounds of live traffic until ``stop``: each round starts now, with the next seed."""
    round_no = 0
    while not stop.is_set():
        spec = demo_spec(seed + round_no, int(time.time() * 1000), traffic_duration_s, organic_events_per_s)
        state.add_round(spec)
        run_generate(spec, _RecordingSink(kafka, topic, state), records=_paced(stop, iter_traffic(spec)))
        round_no += 1


class _Stopper:
    """SIGINT/SIGTERM set ``stop``; a second SIGINT raises ``KeyboardInterrupt`` (abort the clean stop)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Stopper:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def demo_cmd(
    duration_s: Annotated[
        float, typer.Option(help="Stop after this many seconds (0 = run until Ctrl-C).", min=0)
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Traffic seed (each later round of traffic adds one).")] = 1,
    report_every_s: Annotated[float, typer.Option(help="Seconds between summaries.", min=0.2)] = 5.0,
    traffic_duration_s: Annotated[
        float,
        typer.Option(help="Event-time length of one round of traffic; scenario windows scale along.", min=10),
    ] = 180.0,
    organic_events_per_s: Annotated[
        float, typer.Option(help="Daily-mean organic event rate (attacks come on top).", min=0)
    ] = DEMO_ORGANIC_EVENTS_PER_S,
    metrics_port: MetricsPortOpt = None,
) -> None:
    """Run the embedded default: broker, live generated traffic with attacks, the Beam job, a live summary."""
    from streamwarden.jobs.beam.pipeline import new_stop_token, request_stop, run_beam_in_process

    logging.getLogger("apache_beam").setLevel(logging.ERROR)  # start-up notices would drown the summary
    topics = TopicsConfig()  # type: ignore[call-arg]
    stop = threading.Event()
    state = DemoState()
    t0 = time.monotonic()
    spec_dir = tempfile.TemporaryDirectory(prefix="streamwarden-demo-")
    anomaly_spec = demo_anomaly_spec(Path(spec_dir.name), seed, int(time.time() * 1000), organic_events_per_s)
    with spec_dir, _Stopper(stop), EmbeddedBroker() as broker:
        create_local_topics(
            broker.bootstrap_servers,
            [topics.events, topics.deadletter, topics.actions, topics.alerts],
            partitions=PARTITIONS,
        )
        kafka = embedded_kafka_config(broker.bootstrap_servers)
        typer.echo(
            f"embedded broker: {broker.bootstrap_servers} (pid {broker.pid}); topics {topics.events} -> "
            f"{topics.actions}, {topics.deadletter}"
        )
        errors: list[tuple[str, BaseException]] = []
        token = new_stop_token()
        job = JobConfig(kafka=kafka, topics=topics, group_id="streamwarden-demo")  # type: ignore[call-arg]
        metrics = None
        if metrics_port is not None:  # the same /metrics and /healthz as `run --metrics-port`
            from streamwarden.jobs.cli.run import start_metrics

            metrics = start_metrics(job, metrics_port)

        def run_job() -> None:
            try:
                run_beam_in_process(
                    broker.bootstrap_servers, token, job=job, kafka=kafka, anomaly_spec=anomaly_spec
                )
            except BaseException as exc:  # reported by the main thread
                errors.append(("beam job", exc))
                stop.set()

        def run_generator() -> None:
            try:
                _generate(kafka, topics.events, state, stop, seed, traffic_duration_s, organic_events_per_s)
            except BaseException as exc:  # reported by the main thread
                errors.append(("generator", exc))
                stop.set()

        job_thread = threading.Thread(target=run_job, name="beam-job", daemon=True)
        job_thread.start()
        review = _start_review(kafka, topics)
        generator = threading.Thread(target=run_generator, name="generator", daemon=True)
        generator.start()
        typer.echo(
            f"beam job (DirectRunner, in-process): {topics.events} -> {topics.actions}, {topics.deadletter}, "
            f"{topics.alerts}; "
            f"traffic: {organic_events_per_s:g}/s organic + 5 attacks per {traffic_duration_s:g} s round; "
            f"{'Ctrl-C stops' if not duration_s else f'stops after {duration_s:g} s (or Ctrl-C)'}"
        )
        watcher = make_consumer(kafka, "streamwarden-demo-watch")
        watcher.assign(
            [
                TopicPartition(topic, p, OFFSET_BEGINNING)
                for topic in (topics.actions, topics.deadletter, topics.alerts)
                for p in range(PARTITIONS)
            ]
        )
        last_report = time.monotonic()
        last_produced = 0
        live = _live_panel()  # a terminal gets one panel redrawn in place; logs and pipes get text
        try:
            while not stop.is_set():
                _drain(watcher, topics, state)
                now = time.monotonic()
                if now - last_report >= (report_every_s if live is None else min(report_every_s, 1.0)):
                    now_ms = int(time.time() * 1000)
                    state.refresh(now_ms)
                    rate = (state.produced - last_produced) / (now - last_report)
                    last_report, last_produced = now, state.produced
                    if live is None:
                        typer.echo(state.summary(now - t0, rate, now_ms))
                    else:
                        live.update(state.panel(now - t0, rate, now_ms), refresh=True)
                if duration_s and now - t0 >= duration_s:
                    break
            if live is not None:
                live.stop()
            if not errors:
                typer.echo("stopping: generator, then the job (after its current bundle) ...")
        finally:
            stop.set()
            generator.join(timeout=15)
            request_stop(token)
            job_thread.join(timeout=60)
            if job_thread.is_alive():
                typer.echo("warning: the beam job did not stop within 60 s", err=True)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:  # the job's last outputs
                if not _drain(watcher, topics, state):
                    break
            watcher.close()
            review.stop()
            if metrics is not None:
                metrics[1].stop()
                metrics[0].stop()
        now_ms = int(time.time() * 1000)
        state.refresh(now_ms)
        elapsed = time.monotonic() - t0
        typer.echo(state.summary(elapsed, state.produced / max(elapsed, 1e-9), now_ms, final=True))
        caught = state.caught()
        typer.echo(f"scenarios caught: {len(caught)}/{len(SCENARIO_NAMES)} ({', '.join(caught) or 'none'})")
    typer.echo(f"broker stopped ({broker.bootstrap_servers})")
    for where, exc in errors:
        typer.echo(f"error in the {where}: {exc!r}", err=True)
    if errors:
        raise typer.Exit(1)


def _start_review(kafka: KafkaConfig, topics: TopicsConfig) -> Any:
    """The review console next to the job (SEND_TO_REVIEW actions become jobs; decisions go to labels)."""
    import tempfile

    from streamwarden.jobs.review.service import DEMO_REVIEWER, start_demo_review

    create_local_topics(kafka.bootstrap_servers, [topics.labels], partitions=PARTITIONS)
    review = start_demo_review(
        kafka, topics.actions, topics.labels, tempfile.mkdtemp(prefix="streamwarden-review-")
    )
    typer.echo(f"review console: {review.url}  (log in as {DEMO_REVIEWER[0]} / {DEMO_REVIEWER[1]})")
    return review


def _drain(consumer: Any, topics: TopicsConfig, state: DemoState) -> int:
    """Read what is there on the output topics (waits up to 0.2 s); returns how many messages."""
    msgs = poll_batch(consumer, max_batch=1000, timeout_s=0.2)
    for msg in msgs:
        value = msg.value() or b""
        if msg.topic() == topics.actions:
            state.on_action(pb.Action.FromString(value))
        elif msg.topic() == topics.alerts:
            state.on_alert(pb.AnomalyAlert.FromString(value))
        else:
            state.on_dead_letter(pb.DeadLetter.FromString(value))
    return len(msgs)
