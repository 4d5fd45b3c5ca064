"""``streamwarden bench beam``: the Beam job on the DirectRunner against the embedded broker.

Three figures from one run, on the same generated traffic:

1. **Sustained throughput**: a backlog of records is produced first, then the job drains it; events/s
   is records over the time the job spent processing (first to last bundle with records, from the
   ``active_wall_ms`` metric: start-up excluded).
2. **Latency at a fixed offered load** (default 1,000 records/s): the job runs live while a paced
   producer sends records; for every action, latency = the action's Kafka timestamp (set when the job
   produced it, within a bundle's flush of delivery) minus the wall time its event was sent.
3. **The ceiling**: ``operators.pipeline.replay_actions`` over the same records in plain Python.

The last line is one JSON object with ``events_per_s``, ``p95_ms`` and ``replay_events_per_s``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import typer

from streamwarden.deploy.broker import EmbeddedBroker
from streamwarden.jobs.config import JobConfig, KafkaConfig, TopicsConfig
from streamwarden.jobs.kafka_io import (
    create_local_topics,
    drain,
    embedded_kafka_config,
    make_consumer,
    make_producer,
)
from streamwarden.operators.pipeline import Stages, iter_kafka_like, replay_actions
from streamwarden.operators.traffic import TrafficRecord, iter_traffic, load_spec, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb


@dataclass(frozen=True)
class _Throughput:
    records: int
    events: int
    active_s: float
    wall_s: float
    cpu_s: float
    """CPU time of this process (the job and its Kafka clients) during the run, start-up included."""

    @property
    def per_s(self) -> float:
        return self.records / self.active_s if self.active_s > 0 else 0.0

    @property
    def per_cpu_s(self) -> float:
        return self.records / self.cpu_s if self.cpu_s > 0 else 0.0


def _records(n: int, seed: int, *, small: bool = False) -> list[TrafficRecord]:
    """``n`` records of generated traffic, repeated with fresh seeds if needed: the default spec (60k
    accounts, scenarios from minute 2), or ``small_spec`` (3k accounts, every scenario within 2 minutes:
    many actions to time)."""
    out: list[TrafficRecord] = []
    while len(out) < n:
        s = seed + len(out)
        spec = small_spec(seed=s) if small else load_spec(None, seed=s)
        for rec in iter_traffic(spec):
            out.append(rec)
            if len(out) == n:
                break
    return out


def _topics(broker: EmbeddedBroker, tag: str) -> TopicsConfig:
    topics = TopicsConfig(  # type: ignore[call-arg]
        events=f"bench-{tag}-events",
        actions=f"bench-{tag}-actions",
        deadletter=f"bench-{tag}-deadletter",
        features=f"bench-{tag}-features",
    )
    create_local_topics(
        broker.bootstrap_servers, [topics.events, topics.actions, topics.deadletter, topics.features], 1
    )
    return topics


def _produce(kafka: KafkaConfig, topic: str, records: list[TrafficRecord]) -> None:
    producer = make_producer(kafka, **{"linger.ms": 20, "batch.num.messages": 10_000})
    for i, rec in enumerate(records):
        while True:
            try:
                producer.produce(topic, rec.payload, rec.account_id.encode() or None)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)


def _throughput(
    kafka: KafkaConfig, broker: EmbeddedBroker, records: list[TrafficRecord], bundle_ms: int
) -> _Throughput:
    from streamwarden.jobs.beam.kafka_source import ReadOptions
    from streamwarden.jobs.beam.pipeline import job_metrics, run_beam

    job = JobConfig(kafka=kafka, topics=_topics(broker, "tput"), group_id="bench-tput")  # type: ignore[call-arg]
    _produce(kafka, job.topics.events, records)
    started, cpu0 = time.monotonic(), time.process_time()
    result = run_beam(job, read_options=ReadOptions(max_records=len(records), bundle_max_ms=bundle_ms))  # type: ignore[call-arg]
    wall_s, cpu_s = time.monotonic() - started, time.process_time() - cpu0
    m = job_metrics(result)
    count, _, first_ms, last_ms = m.distributions.get("active_wall_ms", (0, 0, 0, 0))
    active_s = (last_ms - first_ms) / 1000 if count else wall_s
    return _Throughput(m.counter("records_in"), m.counter("events"), active_s, wall_s, cpu_s)


def _paced(records: list[TrafficRecord], rate_per_s: float) -> Iterator[TrafficRecord]:
    t0 = time.time()
    for i, rec in enumerate(records):
        due = t0 + i / rate_per_s
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        yield rec


def _percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    k = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return sorted_ms[k]


def _latency(
    kafka: KafkaConfig,
    broker: EmbeddedBroker,
    records: list[TrafficRecord],
    rate_per_s: float,
    bundle_ms: int,
) -> tuple[list[float], int, int]:
    """Latencies (ms) of every action at the offered load, the records sent, and the records the job read."""
    from streamwarden.jobs.beam.kafka_source import ReadOptions, request_stop
    from streamwarden.jobs.beam.pipeline import job_metrics, new_stop_token, run_beam_in_process

    job = JobConfig(kafka=kafka, topics=_topics(broker, "lat"), group_id="bench-lat")  # type: ignore[call-arg]
    token = new_stop_token()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["result"] = run_beam_in_process(
                kafka.bootstrap_servers,
                token,
                job=job,
                kafka=kafka,
                read_options=ReadOptions(bundle_max_ms=bundle_ms),  # type: ignore[call-arg]
            )
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="beam-bench", daemon=True)
    worker.start()
    _wait_until_reading(kafka, job)
    sent: dict[str, float] = {}
    producer = make_producer(kafka, **{"linger.ms": 0})
    for rec in _paced(records, rate_per_s):
        producer.produce(job.topics.events, rec.payload, rec.account_id.encode() or None)
        if rec.malformed is None:
            sent[_event_id(rec.payload)] = time.time() * 1000
        producer.poll(0)
    producer.flush(30)
    _wait_for_commit(kafka, job, len(records) + 1, timeout_s=120)  # + the warm-up record
    request_stop(token)
    worker.join(timeout=120)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    read = job_metrics(outcome["result"]).counter("records_in") if "result" in outcome else 0  # type: ignore[arg-type]
    latencies = []
    for msg in drain(kafka, job.topics.actions, idle_timeout_s=2):
        action = pb.Action.FromString(msg.value or b"")
        t_sent = sent.get(action.event_id)
        if t_sent is not None and msg.timestamp_ms is not None:
            latencies.append(msg.timestamp_ms - t_sent)
    return sorted(latencies), len(records), read


def _event_id(payload: bytes) -> str:
    return pb.Event.FromString(payload).event_id


def _wait_until_reading(kafka: KafkaConfig, job: JobConfig, timeout_s: float = 60) -> None:
    """Block until the job has started (its models are loaded and the reader has committed once)."""
    producer = make_producer(kafka)
    producer.produce(job.topics.events, b"")  # an undecodable warm-up record: one dead letter
    producer.flush(10)
    _wait_for_commit(kafka, job, 1, timeout_s)


def _wait_for_commit(kafka: KafkaConfig, job: JobConfig, offset: int, timeout_s: float) -> None:
    from confluent_kafka import TopicPartition

    consumer = make_consumer(kafka, job.group_id)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            (tp,) = consumer.committed([TopicPartition(job.topics.events, 0)], timeout=10)
            if tp.offset >= offset:
                return
            time.sleep(0.2)
    finally:
        consumer.close()


def _replay(records: list[TrafficRecord]) -> float:
    from streamwarden.jobs.config import stages_config

    stages = Stages.build(stages_config(JobConfig()))  # type: ignore[call-arg]
    payloads = [r.payload for r in records]
    started = time.perf_counter()
    replay_actions(iter_kafka_like(payloads, "events"), stages, feature_records=False)
    return len(payloads) / (time.perf_counter() - started)


def bench_beam_cmd(
    quick: Annotated[bool, typer.Option(help="Smaller workloads (about a minute in all).")] = False,
    records: Annotated[
        int | None,
        typer.Option(help="Backlog size for the throughput run (default 30,000; --quick 8,000).", min=100),
    ] = None,
    rate: Annotated[float, typer.Option(help="Offered load of the latency run, records/s.", min=1)] = 1_000.0,
    latency_s: Annotated[
        float | None, typer.Option(help="Length of the latency run, s (default 30; --quick 10).", min=1)
    ] = None,
    bundle_max_ms: Annotated[int, typer.Option(help="Longest bundle of the Kafka read, ms.", min=1)] = 100,
    seed: Annotated[int, typer.Option(help="Traffic seed.")] = 1,
) -> None:
    """Sustained events/s and event→action latency of the Beam job, next to the plain-Python replay."""
    n = records if records is not None else (8_000 if quick else 30_000)
    duration_s = latency_s if latency_s is not None else (10.0 if quick else 30.0)
    n_latency = int(rate * duration_s)
    workload = _records(n, seed)
    live = _records(n_latency, seed, small=True)
    with EmbeddedBroker() as broker:
        kafka = embedded_kafka_config(broker.bootstrap_servers)
        typer.echo(
            f"embedded broker {broker.bootstrap_servers}; DirectRunner, 1 worker, bundles <= {bundle_max_ms} ms"
        )
        tput = _throughput(kafka, broker, workload[:n], bundle_max_ms)
        typer.echo(
            f"throughput: {tput.records} records ({tput.events} events) in {tput.active_s:.2f} s of processing "
            f"({tput.wall_s:.1f} s with start-up, {tput.cpu_s:.1f} s CPU): {tput.per_s:,.0f} records/s "
            f"({tput.per_cpu_s:,.0f} per CPU-second incl. start-up)"
        )
        latencies, sent, read = _latency(kafka, broker, live, rate, bundle_max_ms)
    p50, p95, p99 = (_percentile(latencies, q) for q in (0.50, 0.95, 0.99))
    typer.echo(
        f"latency at {rate:,.0f} records/s for {duration_s:.0f} s (small_spec traffic): {sent} sent, "
        f"{read} read (incl. 1 warm-up), "
        f"{len(latencies)} actions: event->action p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"
    )
    replay_per_s = _replay(workload[:n])
    typer.echo(
        f"replay (plain Python, same {n} records): {replay_per_s:,.0f} records/s; "
        f"Beam reaches {tput.per_s / replay_per_s:.0%} of it"
    )
    typer.echo(
        json.dumps(
            {
                "events_per_s": round(tput.per_s, 1),
                "p50_ms": round(p50, 1),
                "p95_ms": round(p95, 1),
                "p99_ms": round(p99, 1),
                "offered_per_s": rate,
                "actions_measured": len(latencies),
                "replay_events_per_s": round(replay_per_s, 1),
                "beam_to_replay": round(tput.per_s / replay_per_s, 3),
                "records": tput.records,
                "events_per_cpu_s": round(tput.per_cpu_s, 1),
                "bundle_max_ms": bundle_max_ms,
            }
        )
    )
