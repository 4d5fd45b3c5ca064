"""Drive the Flink job against a real broker, check it, and benchmark it (``streamwarden bench flink``).

Helpers used by the tests and the benchmark: produce traffic with known end offsets, run
``jobs/flink/job.py`` on a local MiniCluster in its own process group, read an output topic with a
``read_committed`` consumer, and compare the job's actions with ``operators.pipeline.replay_actions``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from confluent_kafka import TopicPartition

import streamwarden
from streamwarden.jobs.config import JobConfig, KafkaConfig, TopicsConfig
from streamwarden.jobs.flink.env import FlinkConfig
from streamwarden.jobs.flink.job import FlinkJobOptions, Layout
from streamwarden.jobs.kafka_io import make_consumer, make_producer
from streamwarden.schemas import streamwarden_pb2 as pb

REPO_ROOT = Path(streamwarden.__file__).resolve().parents[1]
"""The directory that holds the ``streamwarden`` package (the repository, or site-packages)."""
JOB_FILE = Path(__file__).resolve().parents[1] / "flink" / "job.py"


# ---------------------------------------------------------------- producing and reading


def produce(
    kafka: KafkaConfig,
    topic: str,
    payloads: Iterable[bytes],
    *,
    partitions: int = 1,
    keys: Iterable[bytes | None] | None = None,
    pace_per_s: float | None = None,
) -> dict[tuple[str, int], int]:
    """Write ``payloads`` round-robin over ``partitions`` (optionally at ``pace_per_s``); return the end
    offset (exclusive) of each partition, for ``--bounded``."""
    producer = make_producer(kafka, linger_ms=5)
    ends: dict[tuple[str, int], int] = {(topic, p): 0 for p in range(partitions)}
    failures: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))
            return
        k = (msg.topic(), msg.partition())
        ends[k] = max(ends.get(k, 0), msg.offset() + 1)

    key_iter: Iterator[bytes | None] = iter(keys) if keys is not None else iter(())
    started = time.monotonic()
    for i, payload in enumerate(payloads):
        key = next(key_iter, None)
        if pace_per_s:
            ahead_s = i / pace_per_s - (time.monotonic() - started)
            if ahead_s > 0:
                producer.poll(0)
                time.sleep(ahead_s)
        while True:
            try:
                producer.produce(topic, payload, key=key, partition=i % partitions, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 2000 == 0:
            producer.poll(0)
    remaining = producer.flush(60)
    if failures or remaining:
        raise RuntimeError(f"input not delivered: {remaining} pending, errors {failures[:3]}")
    return ends


def stop_at_arg(ends: dict[tuple[str, int], int]) -> str:
    """``--bounded`` value of ``produce``'s end offsets."""
    return ",".join(f"{t}:{p}:{o}" for (t, p), o in sorted(ends.items()))


@dataclass(frozen=True)
class OutRecord:
    """One output record: Kafka key, value, and the broker's append time stamp (ms)."""

    key: bytes | None
    value: bytes
    timestamp_ms: int


def read_topic(
    kafka: KafkaConfig,
    topic: str,
    *,
    partitions: int = 1,
    expected: int | None = None,
    timeout_s: float = 30.0,
    settle_s: float = 1.5,
    committed: bool = True,
) -> list[OutRecord]:
    """Every record of ``topic`` from offset 0 (``read_committed`` unless ``committed=False``; ``assign()``:
    no group wait). Reads until ``expected`` records arrived plus ``settle_s`` (to catch duplicates), or
    until nothing new came for ``settle_s`` when ``expected`` is None, or ``timeout_s``."""
    isolation = "read_committed" if committed else "read_uncommitted"
    consumer = make_consumer(kafka, f"flink-check-{topic}-{time.time_ns()}", isolation_level=isolation)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[OutRecord] = []
    deadline = time.monotonic() + timeout_s
    last_progress = time.monotonic()
    settle_until: float | None = None
    try:
        while time.monotonic() < deadline:
            got = consumer.consume(10_000, 0.2)
            for msg in got:
                value = msg.value()
                if msg.error() is None and value is not None:
                    out.append(OutRecord(msg.key(), value, msg.timestamp()[1]))
            now = time.monotonic()
            if got:
                last_progress = now
            if expected is None:
                if now - last_progress >= settle_s:
                    break
            elif settle_until is None and len(out) >= expected:
                settle_until = now + settle_s
            elif settle_until is not None and now >= settle_until:
                break
    finally:
        consumer.close()
    return out


def broker_isolates_transactions(kafka: KafkaConfig, topic: str) -> bool:
    """Whether ``read_committed`` consumers of this broker skip aborted transactions: writes one record
    in a transaction to ``topic`` (a scratch topic), aborts it and reads the topic back. The embedded
    tansu broker (0.6.0) does not: it shows aborted and still-open transactional records to
    ``read_committed`` readers, so exactly-once output cannot be observed on it."""
    from confluent_kafka import Producer

    conf = {**{k: v for k, v in kafka.client_config().items()}, "transactional.id": f"probe-{time.time_ns()}"}
    producer = Producer(conf)
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted-probe")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed-probe")
    producer.commit_transaction(30)
    seen = [r.value for r in read_topic(kafka, topic, expected=1, settle_s=1.0, timeout_s=15)]
    return seen == [b"committed-probe"]


def action_ids(records: Iterable[OutRecord]) -> list[str]:
    return [pb.Action.FromString(r.value).action_id for r in records]


# ---------------------------------------------------------------- running the job


def write_job_config(path: Path, job: JobConfig) -> Path:
    """Write ``job`` as the YAML ``--config`` file of ``jobs/flink/job.py``."""
    data = job.model_dump(mode="json", exclude_none=True)
    secret = job.kafka.sasl_password
    if secret is not None:
        data["kafka"]["sasl_password"] = secret.get_secret_value()
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def job_args(
    config_path: Path,
    *,
    flink: FlinkConfig | None = None,
    options: FlinkJobOptions | None = None,
    stop_at: dict[tuple[str, int], int] | None = None,
) -> list[str]:
    """Arguments of ``jobs/flink/job.py`` (also usable after ``flink run -py job.py``)."""
    args = ["--config", str(config_path)]
    if stop_at:
        args += ["--bounded", stop_at_arg(stop_at)]
    if flink is not None:
        args += ["--flink-json", flink.model_dump_json(exclude_unset=True)]
    if options is not None:
        args += ["--options-json", options.model_dump_json(exclude_unset=True)]
    return args


@dataclass
class JobProcess:
    """``python jobs/flink/job.py ARGS`` (a MiniCluster) in its own process group."""

    args: list[str]
    log_dir: Path
    proc: subprocess.Popen[str] | None = None
    output: str = ""
    started_s: float = field(default_factory=time.monotonic)

    def start(self) -> JobProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "FLINK_LOG_DIR": str(self.log_dir)}
        self._out = (self.log_dir / "job.out").open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, str(JOB_FILE), *self.args],
            cwd=REPO_ROOT,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # the gateway JVM joins this group, so kill() takes it too
        )
        self.started_s = time.monotonic()
        return self

    def wait(self, timeout_s: float = 300.0) -> dict[str, Any]:
        """Wait for a bounded run to end; its last JSON line. Raises with the output's tail on failure."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"flink job did not finish in {timeout_s:.0f} s:\n{self.tail()}") from None
        finally:
            self._out.close()
        self.output = (self.log_dir / "job.out").read_text(encoding="utf-8", errors="replace")
        if self.proc.returncode != 0:
            raise RuntimeError(f"flink job failed ({self.proc.returncode}):\n{self.tail()}")
        return dict(json.loads(self.output.strip().splitlines()[-1]))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self, chars: int = 6000) -> str:
        with contextlib.suppress(OSError, ValueError):  # the log may be closed already
            self._out.flush()
        text = (self.log_dir / "job.out").read_text(encoding="utf-8", errors="replace")
        return text[-chars:]

    def __enter__(self) -> JobProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def run_bounded(
    config_path: Path,
    log_dir: Path,
    stop_at: dict[tuple[str, int], int],
    *,
    flink: FlinkConfig | None = None,
    options: FlinkJobOptions | None = None,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Run the job on a MiniCluster until it reached ``stop_at``; its JSON report."""
    proc = JobProcess(job_args(config_path, flink=flink, options=options, stop_at=stop_at), log_dir)
    with proc:
        return proc.wait(timeout_s)


def job_config_for(kafka: KafkaConfig, topics: Sequence[str], group_id: str, **overrides: Any) -> JobConfig:
    """A ``JobConfig`` for ``topics = [events, actions, deadletter, features]``."""
    events, actions, deadletter, features = topics
    return JobConfig(
        kafka=kafka,
        topics=TopicsConfig(events=events, actions=actions, deadletter=deadletter, features=features),  # type: ignore[call-arg]
        group_id=group_id,
        engine="flink",
        **overrides,
    )


# ---------------------------------------------------------------- benchmark


def _event_index(payloads: Sequence[bytes]) -> dict[str, int]:
    """Event id → position in the input, for the valid records."""
    out: dict[str, int] = {}
    for i, payload in enumerate(payloads):
        eid = _event_id(payload)
        if eid:
            out.setdefault(eid, i)
    return out


def _event_id(payload: bytes) -> str:
    """The event id of an ``Event`` payload, or "" if it does not parse."""
    try:
        return pb.Event.FromString(payload).event_id
    except Exception:
        return ""


def _percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ascending ``ordered`` (nearest rank below), rounded to 0.1."""
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def sustained_rate(actions: Sequence[pb.Action], index: dict[str, int]) -> tuple[float, float]:
    """``(events/s, seconds measured)``: input records between the first and the last action's event,
    divided by the wall time between their decisions (so job start-up and the final checkpoint are not
    counted)."""
    points = sorted((a.decision_time_ms, index[a.event_id]) for a in actions if a.event_id in index)
    if len(points) < 2:
        return 0.0, 0.0
    (t0, i0), (t1, i1) = points[0], points[-1]
    span_s = (t1 - t0) / 1000
    return ((i1 - i0) / span_s if span_s > 0 else 0.0), span_s


@dataclass
class BenchRun:
    """One bounded throughput run."""

    name: str
    events_per_s: float
    measured_s: float
    records: int
    actions: int
    wall_s: float
    stage_cpu_s: dict[str, float] = field(default_factory=dict)
    """Cluster runs: CPU seconds of each TaskManager process, by the tasks it ran."""


def _throughput_run(
    name: str,
    kafka: KafkaConfig,
    create_topics: Any,
    work: Path,
    payloads: Sequence[bytes],
    keys: Sequence[bytes],
    *,
    parallelism: int,
    mode: str = "thread",
    naive: bool = False,
    state_backend: str = "rocksdb",
    alerts: bool = False,
    score_batch: int | None = None,
    layout: Layout = "staged",
) -> BenchRun:
    stamp = time.time_ns()
    topics = [f"bench-{name}-{t}-{stamp}" for t in ("events", "actions", "deadletter", "features")]
    create_topics(topics, parallelism)
    ends = produce(kafka, topics[0], payloads, keys=keys, partitions=parallelism)
    job = job_config_for(kafka, topics, f"bench-{name}-{stamp}")
    flink = FlinkConfig(  # type: ignore[call-arg]
        execution_mode=mode,  # type: ignore[arg-type]
        parallelism=parallelism,
        checkpoint_dir=(work / name / "ckpt").as_uri(),
        checkpoint_timeout_ms=600_000,
        state_backend=state_backend,  # type: ignore[arg-type]
    )
    options = FlinkJobOptions(check_future=False, naive=naive, alerts=alerts, layout=layout)  # type: ignore[call-arg]
    if score_batch is not None:
        options = options.model_copy(update={"score_batch": score_batch})
    started = time.monotonic()
    run_bounded(
        write_job_config(work / f"{name}.yaml", job),
        work / name,
        ends,
        flink=flink,
        options=options,
        timeout_s=1800,
    )
    wall_s = time.monotonic() - started
    actions = [pb.Action.FromString(r.value) for r in read_topic(kafka, topics[1], partitions=parallelism)]
    rate, measured_s = sustained_rate(actions, _event_index(payloads))
    return BenchRun(name, round(rate, 1), round(measured_s, 2), len(payloads), len(actions), round(wall_s, 1))


def _cluster_throughput_run(
    name: str,
    kafka: KafkaConfig,
    create_topics: Any,
    work: Path,
    payloads: Sequence[bytes],
    keys: Sequence[bytes],
    *,
    parallelism: int = 1,
    state_backend: str = "rocksdb",
    taskmanager_memory: str = "1024m",
    layout: Layout = "staged",
) -> BenchRun:
    """The job on a standalone cluster on this machine (``LocalFlinkCluster``) of ``parallelism``
    one-slot TaskManagers: each runs one whole subtask of the pipeline in its own JVM, so in its own
    Python interpreter (the layout of ``deploy/flink/``). ``stage_cpu_s``: CPU each TaskManager used."""
    from streamwarden.jobs.flink.cluster import LocalFlinkCluster

    stamp = time.time_ns()
    topics = [f"bench-{name}-{t}-{stamp}" for t in ("events", "actions", "deadletter", "features")]
    create_topics(topics, parallelism)
    ends = produce(kafka, topics[0], payloads, keys=keys, partitions=parallelism)
    job = job_config_for(kafka, topics, f"bench-{name}-{stamp}")
    options = FlinkJobOptions(check_future=False, alerts=False, layout=layout)  # type: ignore[call-arg]
    flink = FlinkConfig(  # type: ignore[call-arg]
        parallelism=parallelism,
        checkpoint_dir=(work / name / "ckpt").as_uri(),
        checkpoint_timeout_ms=600_000,
        state_backend=state_backend,  # type: ignore[arg-type]
        ship_connector_jars=False,
    )
    args = job_args(write_job_config(work / f"{name}.yaml", job), flink=flink, options=options, stop_at=ends)
    cluster = LocalFlinkCluster(
        work / name / "cluster", task_slots=1, taskmanagers=parallelism, taskmanager_memory=taskmanager_memory
    )
    started = time.monotonic()
    try:
        cluster.start(timeout_s=180)
        idle = cluster.taskmanager_cpu_s()
        job_id = cluster.submit(JOB_FILE, args, timeout_s=300)
        status = cluster.wait_for_status(job_id, ["FINISHED", "FAILED", "CANCELED"], timeout_s=1800)
        if status != "FINISHED":
            raise RuntimeError(f"cluster run {name}: job {status}: {cluster.job_exceptions(job_id)}")
        cpu = cluster.taskmanager_cpu_s()
    finally:
        cluster.stop()
    wall_s = time.monotonic() - started
    actions = [pb.Action.FromString(r.value) for r in read_topic(kafka, topics[1], partitions=parallelism)]
    rate, measured_s = sustained_rate(actions, _event_index(payloads))
    run = BenchRun(name, round(rate, 1), round(measured_s, 2), len(payloads), len(actions), round(wall_s, 1))
    # CPU while the job ran: minus each TaskManager's own start-up (the Python stages' imports and
    # model loading stay in, as they would in any job's first seconds).
    idle_by_tm = {name.split(":", 1)[0]: s for name, s in idle.items()}
    run.stage_cpu_s = {
        name: round(max(0.0, s - idle_by_tm.get(name.split(":", 1)[0], 0.0)), 2) for name, s in cpu.items()
    }
    return run


RELAXED_CHECKPOINT_MS = 5_000
"""Checkpoint interval of the second latency run (the default is ``FlinkConfig.checkpoint_interval_ms``)."""


def _latency_run(
    kafka: KafkaConfig,
    create_topics: Any,
    work: Path,
    payloads: Sequence[bytes],
    keys: Sequence[bytes],
    *,
    rate_per_s: float,
    duration_s: float,
    checkpoint_interval_ms: int | None = None,
    layout: Layout = "staged",
    alerts: bool = False,
) -> dict[str, Any]:
    """Event → action latency at a fixed offered load: the job runs first (warmed up by a few garbage
    records, whose dead letters say it is up); records are then produced at ``rate_per_s`` and every
    action's arrival at a consumer is timed against its event's produce time. ``checkpoint_interval_ms``
    overrides ``FlinkConfig``'s (each checkpoint pauses the pipeline briefly: barrier alignment and the
    RocksDB snapshot of every stateful operator)."""
    import threading

    stamp = time.time_ns()
    topics = [f"bench-lat-{t}-{stamp}" for t in ("events", "actions", "deadletter", "features")]
    create_topics(topics, 1)
    n = min(len(payloads), max(1, int(rate_per_s * duration_s)))
    warmup = 20
    job = job_config_for(kafka, topics, f"bench-lat-{stamp}")
    extra: dict[str, Any] = {}
    if checkpoint_interval_ms is not None:
        extra["checkpoint_interval_ms"] = checkpoint_interval_ms
    flink = FlinkConfig(checkpoint_dir=(work / f"latency-{stamp}" / "ckpt").as_uri(), **extra)
    # at_least_once: records become visible when written; exactly_once adds the wait for the checkpoint
    # that commits them (up to the checkpoint interval) for read_committed readers on a real Kafka.
    options = FlinkJobOptions(  # type: ignore[call-arg]
        check_future=False, guarantee="at_least_once", alerts=alerts, layout=layout
    )
    args = job_args(
        write_job_config(work / f"latency-{stamp}.yaml", job),
        flink=flink,
        options=options,
        stop_at={(topics[0], 0): warmup + n},
    )
    received: dict[str, float] = {}
    stop = threading.Event()
    event_ids = [_event_id(p) for p in payloads[:n]]  # parsed before, not while producing at the rate

    def consume() -> None:
        consumer = make_consumer(kafka, f"bench-lat-{stamp}")
        consumer.assign([TopicPartition(topics[1], 0, 0)])
        try:
            while not stop.is_set():
                for msg in consumer.consume(1000, 0.05):
                    value = msg.value()
                    if msg.error() is None and value is not None:
                        received.setdefault(pb.Action.FromString(value).event_id, time.time())
        finally:
            consumer.close()

    with JobProcess(args, work / f"latency-{stamp}") as proc:
        produce(kafka, topics[0], [b"\xffwarm-up"] * warmup)
        if len(read_topic(kafka, topics[2], expected=warmup, timeout_s=180, settle_s=0.2)) < warmup:
            raise RuntimeError(f"the latency job did not start:\n{proc.tail()}")
        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        sent: dict[str, float] = {}
        # a producer as the job's own clients are configured (linger 5 ms): with linger 0 every record
        # is a request, and on 2 cores the broker then took 0.75 of a core at 1,000 records/s
        producer = make_producer(kafka, linger_ms=5)
        started = time.monotonic()
        for i, (payload, key, eid) in enumerate(zip(payloads[:n], keys[:n], event_ids[:n], strict=True)):
            ahead_s = i / rate_per_s - (time.monotonic() - started)
            if ahead_s > 0:
                time.sleep(ahead_s)
            if eid:
                sent.setdefault(eid, time.time())
            producer.produce(topics[0], payload, key=key)
            producer.poll(0)
        producer.flush(30)
        produce_s = time.monotonic() - started
        proc.wait(timeout_s=600)
        time.sleep(1.0)
        stop.set()
        reader.join(10)
    by_send = sorted((sent[e], (received[e] - sent[e]) * 1000) for e in received if e in sent)
    lat_ms = sorted(ms for _, ms in by_send)
    if not lat_ms:
        raise RuntimeError("the latency run produced no actions")
    # p99 per fifth of the run (by send time): a start-up transient shows in the first fifth only
    fifths = [
        sorted(ms for _, ms in by_send[i * len(by_send) // 5 : (i + 1) * len(by_send) // 5]) for i in range(5)
    ]

    return {
        "offered_per_s": round(rate_per_s, 1),
        "achieved_offered_per_s": round(n / produce_s, 1),
        "records": n,
        "actions_timed": len(lat_ms),
        "p50_ms": _percentile(lat_ms, 0.50),
        "p95_ms": _percentile(lat_ms, 0.95),
        "p99_ms": _percentile(lat_ms, 0.99),
        "max_ms": round(lat_ms[-1], 1),
        "p99_ms_by_fifth": [_percentile(f, 0.99) if f else None for f in fifths],
    }


def bench_flink_cmd(
    quick: Annotated[bool, typer.Option(help="Smaller runs: a CI-sized smoke of the benchmark.")] = False,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option("--bootstrap", help="Use this broker instead of starting the embedded one."),
    ] = None,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster/--no-cluster",
            help="Also run on a standalone cluster of one-slot TaskManagers (a JVM, so a Python "
            "interpreter, each): one, and two at parallelism 2.",
        ),
    ] = True,
) -> None:
    """The Flink job's sustained events/s (events → actions), p99 latency and layouts, with the naive
    binding as the baseline in the same run. MiniCluster runs: the fused layout (the whole pipeline in
    one Python operator, ``jobs/flink/fused.py``) with the anomaly stage on, as the default job runs
    (``events_per_s``), and without it on RocksDB and on the heap backend (like for like with the
    staged and naive runs, which run without it); the staged layout (a Python operator per stage) at parallelism 1 and 2; the
    naive staged binding. Cluster runs (one-slot TaskManagers, as deploy/flink/ lays them out): the
    fused layout on one TaskManager, the staged one on one and on two at parallelism 2 (one interpreter
    per subtask), with the CPU each TaskManager used. Then p50/p95/p99 event→action latency of the
    default job at half its rate with 1 s, 5 s and 10 s checkpoints. The fused runs take a longer
    stream (same generator and seed) so that their measured span is several seconds. One JSON line per
    run, the summary JSON line last."""
    from streamwarden.jobs.cli.broker import broker_or_external
    from streamwarden.operators.traffic import iter_traffic, small_spec

    records = list(iter_traffic(small_spec(seed=5, duration_s=120.0 if quick else 240.0)))
    payloads = [r.payload for r in records]
    keys = [r.account_id.encode() for r in records]
    long_records = list(iter_traffic(small_spec(seed=5, duration_s=600.0 if quick else 1800.0)))
    long_payloads = [r.payload for r in long_records]
    long_keys = [r.account_id.encode() for r in long_records]
    naive_n = 2_000 if quick else 5_000
    with contextlib.ExitStack() as stack:
        kafka, create = stack.enter_context(broker_or_external(bootstrap_servers))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sw-bench-flink-")))
        runs: dict[str, BenchRun] = {}
        shapes_mini: tuple[tuple[str, Layout, int, bool, str, bool, int], ...] = (
            ("fused", "fused", 1, False, "rocksdb", False, len(long_payloads)),
            ("fused_hashmap", "fused", 1, False, "hashmap", False, len(long_payloads)),
            ("fused_alerts", "fused", 1, False, "rocksdb", True, len(long_payloads)),
            ("staged_p1", "staged", 1, False, "rocksdb", False, len(payloads)),
            ("staged_p2", "staged", 2, False, "rocksdb", False, len(payloads)),
            # thread mode like the rest: in process mode a bundle releases its decisions at once, and
            # the action-time window then measured 0.16 s (9.5k events/s) in one run
            ("naive", "staged", 1, True, "rocksdb", False, naive_n),
        )
        for name, layout, parallelism, naive, backend, alerts, n in shapes_mini:
            fused = layout == "fused"
            run = _throughput_run(
                name,
                kafka,
                create,
                work,
                (long_payloads if fused else payloads)[:n],
                (long_keys if fused else keys)[:n],
                parallelism=parallelism,
                naive=naive,
                state_backend=backend,
                alerts=alerts,
                layout=layout,
            )
            runs[name] = run
            record = {
                "run": name,
                "where": "minicluster",
                "layout": layout,
                "mode": "thread",
                "parallelism": parallelism,
                "state_backend": backend,
                "alerts": alerts,
            }
            typer.echo(json.dumps({**record, **{k: v for k, v in run.__dict__.items() if k != "name"}}))
        if cluster:
            shapes: tuple[tuple[str, Layout, int], ...] = (
                ("cluster_fused_1tm", "fused", 1),
                ("cluster_1tm", "staged", 1),
                ("cluster_2tm", "staged", 2),
            )
            for name, layout, parallelism in shapes:
                fused = layout == "fused"
                run = _cluster_throughput_run(
                    name,
                    kafka,
                    create,
                    work,
                    long_payloads if fused else payloads,
                    long_keys if fused else keys,
                    parallelism=parallelism,
                    layout=layout,
                )
                runs[name] = run
                record = {
                    "run": name,
                    "where": "standalone cluster",
                    "layout": layout,
                    "parallelism": parallelism,
                }
                typer.echo(json.dumps({**record, **{k: v for k, v in run.__dict__.items() if k != "name"}}))
        offered = max(1.0, runs["fused_alerts"].events_per_s / 2)  # half the default job's rate
        latency: dict[int, dict[str, Any]] = {}
        for interval_ms in (1_000, 5_000, 10_000):
            latency[interval_ms] = _latency_run(
                kafka,
                create,
                work,
                long_payloads,
                long_keys,
                rate_per_s=offered,
                duration_s=15.0 if quick else 40.0,
                checkpoint_interval_ms=interval_ms,
                layout="fused",
                alerts=True,
            )
            typer.echo(
                json.dumps({"run": f"latency_checkpoint_{interval_ms // 1000}s", **latency[interval_ms]})
            )
    naive_rate = runs["naive"].events_per_s
    default_latency = latency[FlinkConfig().checkpoint_interval_ms]  # type: ignore[call-arg]

    def rate(name: str) -> float | None:
        return runs[name].events_per_s if name in runs else None

    two, one = rate("cluster_2tm"), rate("cluster_1tm")
    fused_rate = runs["fused"].events_per_s  # like for like with the staged and naive runs (no alerts)
    summary = {
        "events_per_s": runs["fused_alerts"].events_per_s,
        "deployment": "the default job (fused layout, anomaly stage on), MiniCluster, parallelism 1, "
        "thread mode, RocksDB, checkpoints every 1 s",
        "events_per_s_without_alerts": fused_rate,
        "events_per_s_fused_hashmap": runs["fused_hashmap"].events_per_s,
        "events_per_s_fused_cluster_1tm": rate("cluster_fused_1tm"),
        "events_per_s_staged_p1": runs["staged_p1"].events_per_s,
        "events_per_s_staged_p2": runs["staged_p2"].events_per_s,
        "fused_vs_staged_p1": round(fused_rate / runs["staged_p1"].events_per_s, 2),
        "events_per_s_1tm": one,
        "events_per_s_2tm": two,
        "scaling_2tm": round(two / one, 2) if two and one else None,
        "scaling_shape": "staged layout, one-slot TaskManagers (the fused layout runs at parallelism 1 only)",
        "naive_events_per_s": naive_rate,
        "speedup_vs_naive": round(fused_rate / naive_rate, 2) if naive_rate else None,
        "p50_ms": default_latency["p50_ms"],
        "p95_ms": default_latency["p95_ms"],
        "p99_ms": default_latency["p99_ms"],
        "p99_ms_checkpoint_5s": latency[5_000]["p99_ms"],
        "p99_ms_checkpoint_10s": latency[10_000]["p99_ms"],
        "offered_per_s": default_latency["offered_per_s"],
        "quick": quick,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    typer.echo(json.dumps(summary))
