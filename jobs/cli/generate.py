"""``streamwarden generate``: labeled synthetic traffic to Kafka or to a file; ``streamwarden bench generate``.

The traffic itself comes from ``operators.traffic`` (pure, deterministic); this module only paces it
and writes it out. Kafka records are keyed by the actor account id, so one account's events keep their
order within a partition. Files are length-delimited protobuf (``schemas.codec.read_delimited``). The
ground truth goes to a separate JSON-lines labels file, never into the events.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Annotated, BinaryIO, Protocol, Self

import typer

from streamwarden.jobs.config import KafkaConfig, load_config
from streamwarden.jobs.kafka_io import CheckedProducer, embedded_kafka_config, ensure_topics
from streamwarden.operators.errors import ConfigError, StreamwardenError
from streamwarden.operators.traffic import (
    SCENARIO_NAMES,
    TrafficRecord,
    TrafficSpec,
    iter_traffic,
    labels,
    load_spec,
    write_labels,
)
from streamwarden.operators.traffic.wire import varint

#: Producer settings for bulk generation: bigger batches than the latency-oriented defaults.
BULK_PRODUCER = {"linger.ms": 20, "batch.num.messages": 10_000, "queue.buffering.max.messages": 500_000}


class Sink(Protocol):
    """Where generated records go."""

    def write(self, record: TrafficRecord) -> None: ...

    def close(self) -> None:
        """Flush everything; raise if anything was lost."""


class MemorySink:
    """Keeps only counts: the baseline that measures the generator alone."""

    def __init__(self) -> None:
        self.records = 0
        self.bytes = 0

    def write(self, record: TrafficRecord) -> None:
        self.records += 1
        self.bytes += len(record.payload)

    def close(self) -> None:
        return None


class FileSink:
    """Length-delimited protobuf, the format of ``schemas.codec.write_delimited``/``read_delimited``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: BinaryIO = path.open("wb")
        self.records = 0

    def write(self, record: TrafficRecord) -> None:
        payload = record.payload
        self._out.write(varint(len(payload)) + payload)
        self.records += 1

    def close(self) -> None:
        self._out.close()


class KafkaSink:
    """Produces each record to ``topic`` keyed by its actor account (no key for garbage records)."""

    def __init__(self, cfg: KafkaConfig, topic: str) -> None:
        self.topic = topic
        self.producer = CheckedProducer.create(cfg, **BULK_PRODUCER)
        self.records = 0

    def write(self, record: TrafficRecord) -> None:
        key = record.account_id.encode() if record.account_id else None
        self.producer.produce(self.topic, record.payload, key)
        self.records += 1

    def close(self) -> None:
        """Wait for every delivery; raises ``DeliveryError`` if any record was not delivered."""
        self.producer.flush(timeout_s=60.0)


@dataclass
class GenerateStats:
    """What one run wrote."""

    records: int = 0
    malformed: int = 0
    late: int = 0
    by_scenario: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def records_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        parts = ", ".join(f"{name}={n}" for name, n in sorted(self.by_scenario.items()))
        return (
            f"{self.records} records in {self.elapsed_s:.2f} s ({self.records_per_s:,.0f}/s): "
            f"{self.malformed} malformed, {self.late} late; {parts}"
        )


class Pacer:
    """Holds the caller back to a wall-clock schedule: ``rate_per_s`` records per second, or (live) each
    record's arrival time in ms since epoch. Sleeps in slices, checking every ``check_every`` records."""

    def __init__(
        self,
        *,
        rate_per_s: float = 0.0,
        live: bool = False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        check_every: int = 64,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.live = live
        self.clock = clock
        self.sleep = sleep
        self.check_every = max(1, check_every) if rate_per_s > 0 else 1
        self._t0 = clock()
        self._n = 0

    def wait(self, record: TrafficRecord) -> None:
        """Block until ``record`` is due."""
        if self.live:
            due_s = record.arrival_ms / 1000.0
        elif self.rate_per_s > 0:
            self._n += 1
            if self._n % self.check_every:
                return
            due_s = self._t0 + self._n / self.rate_per_s
        else:
            return
        delay = due_s - self.clock()
        if delay > 0:
            self.sleep(delay)


def run_generate(
    spec: TrafficSpec,
    sink: Sink,
    *,
    pacer: Pacer | None = None,
    records: Iterable[TrafficRecord] | None = None,
) -> GenerateStats:
    """Write every record of ``spec`` (or the given ``records``) to ``sink``, paced by ``pacer``; close the
    sink (which raises if records were lost) and return what was written."""
    stats = GenerateStats()
    t0 = time.perf_counter()
    by_scenario: Counter[str] = Counter()
    malformed = late = 0
    n = 0
    try:
        for record in iter_traffic(spec) if records is None else records:
            if pacer is not None:
                pacer.wait(record)
            sink.write(record)
            n += 1
            if record.malformed is not None:
                malformed += 1
            else:
                by_scenario[record.scenario or "organic"] += 1
                late += record.arrival_ms != record.event_time_ms
    finally:
        sink.close()
    stats.elapsed_s = time.perf_counter() - t0
    stats.records, stats.malformed, stats.late, stats.by_scenario = n, malformed, late, by_scenario
    return stats


class Target(StrEnum):
    kafka = "kafka"
    file = "file"


def _kafka_config(config: Path | None, bootstrap: str | None) -> tuple[KafkaConfig, str]:
    job = load_config(config)
    kafka = job.kafka
    if bootstrap:
        kafka = kafka.model_copy(update={"bootstrap_servers": bootstrap})
    return kafka, job.topics.events


def generate_cmd(
    seed: Annotated[int | None, typer.Option(help="Random seed (default: the spec's, 1).")] = None,
    spec: Annotated[
        Path | None, typer.Option("--spec", help="TrafficSpec YAML (default: the built-in 10-minute spec).")
    ] = None,
    rate: Annotated[
        float, typer.Option(help="Wall-clock pacing in records/s; 0 = as fast as possible.", min=0)
    ] = 0.0,
    duration_s: Annotated[
        float | None,
        typer.Option(help="Event-time length of the run, seconds; scenario windows scale along.", min=1),
    ] = None,
    to: Annotated[Target, typer.Option("--to", help="Where the events go.")] = Target.kafka,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default: from --config / environment).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Job config YAML, for Kafka settings and topic names.")
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="Topic to produce to (default: the events topic).")
    ] = None,
    partitions: Annotated[int, typer.Option(help="Partitions when the topic has to be created.", min=1)] = 3,
    out: Annotated[
        Path | None, typer.Option(help="Output file for --to file (length-delimited protobuf).")
    ] = None,
    labels_path: Annotated[
        Path | None, typer.Option("--labels", help="Write the ground-truth labels (JSON lines) here.")
    ] = None,
    live: Annotated[
        bool, typer.Option(help="Event time starts now and records go out in real time (by arrival time).")
    ] = False,
    now: Annotated[
        bool, typer.Option(help="Event time starts now instead of the spec's fixed start (not paced).")
    ] = False,
    disable: Annotated[
        list[str] | None,
        typer.Option(help=f"Turn a scenario off (repeatable): {', '.join(SCENARIO_NAMES)}."),
    ] = None,
) -> None:
    """Generate labeled platform traffic (organic users plus abuse scenarios), deterministic by seed."""
    try:
        if live and rate > 0:
            raise ConfigError("--live paces by event time; do not combine it with --rate")
        start_ms = int(time.time() * 1000) if (live or now) else None
        traffic = load_spec(spec, seed=seed, start_ms=start_ms)
        if duration_s is not None:
            traffic = traffic.scaled_to(duration_s)
        if disable:
            traffic = traffic.without_scenarios(*disable)
        sink: Sink
        if to is Target.file:
            if out is None:
                raise ConfigError("--to file needs --out FILE")
            sink = FileSink(out)
            where = str(out)
        else:
            kafka, events_topic = _kafka_config(config, bootstrap)
            name = topic or events_topic
            ensure_topics(kafka, [name], partitions=partitions)
            sink = KafkaSink(kafka, name)
            where = f"{kafka.bootstrap_servers}/{name}"
        if labels_path is not None:
            n = write_labels(labels_path, labels(traffic))
            typer.echo(f"wrote {n} labels to {labels_path}")
        pacer = Pacer(rate_per_s=rate, live=live) if (rate > 0 or live) else None
        stats = run_generate(traffic, sink, pacer=pacer)
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{where}: {stats.summary()}")
    for name in SCENARIO_NAMES:
        if getattr(traffic.scenarios, name).enabled and not stats.by_scenario[name]:
            typer.echo(
                f"warning: scenario {name} produced no events (its window is too short or outside the run)"
            )


# ---------------------------------------------------------------- benchmark


class _Timer:
    """Wall and process CPU time of a block (CPU includes librdkafka's threads)."""

    def __enter__(self) -> Self:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.elapsed_s = time.perf_counter() - self.t0
        self.cpu_s = time.process_time() - self.c0


@dataclass(frozen=True)
class _Figure:
    records: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        return self.records / self.wall_s

    @property
    def per_cpu_s(self) -> float:
        return self.records / self.cpu_s if self.cpu_s > 0 else 0.0

    def line(self, name: str, detail: str) -> str:
        return (
            f"{name:<7} {self.records} records{detail}, {self.wall_s:.2f} s wall, {self.cpu_s:.2f} s CPU: "
            f"{self.per_s:,.0f} records/s ({self.per_cpu_s:,.0f} per CPU-second)"
        )


def _measure(spec: TrafficSpec, sink: Sink) -> _Figure:
    with _Timer() as timer:
        stats = run_generate(spec, sink)
    return _Figure(stats.records, timer.elapsed_s, timer.cpu_s)


def bench_generate_cmd(
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    duration_s: Annotated[
        float | None, typer.Option(help="Event-time length (default: the built-in spec's 600 s).", min=1)
    ] = None,
    partitions: Annotated[int, typer.Option(help="Partitions of the benchmark topic.", min=1)] = 3,
    bootstrap: Annotated[
        str | None, typer.Option(help="Use this Kafka instead of starting the embedded broker.")
    ] = None,
) -> None:
    """Generator throughput to memory (the generator alone), to a file, and to Kafka (embedded broker)."""
    spec = TrafficSpec.model_validate({"seed": seed})
    if duration_s is not None:
        spec = spec.scaled_to(duration_s)
    reference_ms = 1000 * min(timeit.repeat("sum(range(1_000_000))", number=1, repeat=5))
    typer.echo(
        f"# generate benchmark: python {platform.python_version()}, seed {seed}, "
        f"{spec.duration_s:g} s of event time; wall-clock rates, CPU-second rates in brackets"
    )
    typer.echo(
        f"# machine speed reference: sum(range(10**6)) takes {reference_ms:.1f} ms "
        "(about 12-15 ms on an idle core here; more means other processes share the CPU)"
    )
    memory = MemorySink()
    mem = _measure(spec, memory)
    typer.echo(mem.line("memory:", f", {memory.bytes / max(1, memory.records):.0f} B avg"))
    with tempfile.TemporaryDirectory(prefix="streamwarden-bench-") as tmp:
        path = Path(tmp) / "events.pb"
        in_file = _measure(spec, FileSink(path))
        typer.echo(in_file.line("file:", f", {os.path.getsize(path) / 1e6:.1f} MB"))
    topic = f"bench-generate-{seed}"
    if bootstrap is not None:
        kafka = _bench_kafka(spec, embedded_kafka_config(bootstrap), topic, partitions)
    else:
        from streamwarden.deploy.broker import EmbeddedBroker

        with EmbeddedBroker() as broker:
            kafka = _bench_kafka(spec, embedded_kafka_config(broker.bootstrap_servers), topic, partitions)
    typer.echo(kafka.line("kafka:", f" delivered to {partitions} partitions"))
    result = {
        "events_per_s_kafka": round(kafka.per_s),
        "events_per_s_memory": round(mem.per_s),
        "events_per_s_file": round(in_file.per_s),
        "ratio": round(kafka.per_s / mem.per_s, 3),
        "events_per_cpu_s_memory": round(mem.per_cpu_s),
        "records": mem.records,
        "python_reference_ms": round(reference_ms, 1),
    }
    typer.echo(json.dumps(result))


def _bench_kafka(spec: TrafficSpec, cfg: KafkaConfig, topic: str, partitions: int) -> _Figure:
    """Producing ``spec`` to ``topic``, generation included, until every delivery is confirmed."""
    ensure_topics(cfg, [topic], partitions=partitions)
    sink = KafkaSink(cfg, topic)
    figure = _measure(spec, sink)
    if sink.producer.delivered != figure.records:
        raise StreamwardenError(f"benchmark: {sink.producer.delivered} of {figure.records} records delivered")
    return figure
