"""The streamwarden job on Flink: read → decode → velocity → assemble → score → decide → cooldown → write.

::

    KafkaSource(events) ─ DecodeFn ─┬─ dead letters ─────────────────────────────────▶ KafkaSink(deadletter)
                                    └─ (route, facts, event time) ─ timestamps + watermarks (bounded
                                       out-of-orderness, idleness) ─ keyBy(entity)
         ─ VelocityFn [keyed: entity] ─ keyBy(event id) ─ AssembleFn [keyed: event id]
         ─ ScoreFn (chained) or keyBy(shard) ─ ScoreBatchFn [micro-batch] ─ DecideFn ─┬─ features ─▶ KafkaSink(features)
         ─ keyBy(subject) ─ CooldownFn [keyed: subject] ─▶ KafkaSink(actions, EXACTLY_ONCE)
              └─ StatementsFunction (chained; enforcing restrictions) ─▶ KafkaSink(statements)

Every function is a thin adapter over ``operators.pipeline.Stages`` (files named as in ``jobs/beam/``).
Keyed streams are built from ``Row(key, value)`` outputs with Java's key selector, so no extra Python
key-extraction operator runs between two Python stages; consecutive Python functions on a forward
edge are fused into one Python operator by PyFlink. Every stateful operator has a ``uid``.

Run it locally (a MiniCluster) or submit it to a cluster::

    python jobs/flink/job.py --config job.yaml [--bounded events:0:10000]
    flink run -py jobs/flink/job.py -pyexec PY -pyclientexec PY -- --config job.yaml

``--config`` is a ``JobConfig`` YAML (``jobs/config.py``). Under ``flink run`` the cluster's Flink
configuration is used as is unless ``--flink-json`` is given; locally ``FlinkConfig`` defaults apply.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if __package__ in (None, ""):  # run as a file (python jobs/flink/job.py, flink run -py): repo on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamwarden.jobs.config import JobConfig, load_config
from streamwarden.jobs.config import stages_config as config_stages
from streamwarden.jobs.flink.env import FlinkConfig, Guarantee, StartFrom
from streamwarden.operators.config_io import format_validation_error
from streamwarden.operators.errors import ConfigError
from streamwarden.operators.pipeline import StagesConfig

if TYPE_CHECKING:
    from pyflink.common import JobExecutionResult
    from pyflink.datastream import DataStream, KeyedStream, StreamExecutionEnvironment

__all__ = [
    "FlinkJobOptions",
    "build_job",
    "job_env",
    "main",
    "parse_stop_at",
    "resolve_layout",
    "run_flink_job",
    "stages_config",
]

Layout = Literal["auto", "staged", "fused"]

DEFAULT_FLINK_EXTRA: dict[str, str] = {
    # Each keyed exchange flushes a partly filled network buffer after this long (Flink: 100 ms); with
    # four exchanges between an event and its action that default alone can add 400 ms.
    "execution.buffer-timeout.interval": "10 ms",
    # Heap timers: one per event in the assembly; RocksDB timers cost a RocksDB write and delete each.
    "state.backend.rocksdb.timer-service.factory": "HEAP",
    "restart-strategy.type": "fixed-delay",
    "restart-strategy.fixed-delay.attempts": "3",
    "restart-strategy.fixed-delay.delay": "1 s",
}
"""Applied by ``run_flink_job`` under any key ``FlinkConfig.extra`` does not set."""


class FlinkJobOptions(BaseModel):
    """How the Flink binding runs the job (the job itself is a ``JobConfig``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guarantee: Guarantee = Field(
        "exactly_once",
        description="Delivery of the actions, dead-letter and feature sinks: exactly_once (Kafka "
        "transactions committed on checkpoints; readers use read_committed) or at_least_once.",
    )
    transactional_id_prefix: str | None = Field(
        None,
        description="Prefix of the sinks' Kafka transactional ids (one per sink is derived from it); must be "
        "unique per job and stable across restarts. None = '<group_id>'.",
    )
    start_from: StartFrom = Field(
        "committed", description="Where a fresh start reads: the group's committed offsets (else earliest)."
    )
    out_of_orderness_ms: int | None = Field(
        None,
        ge=0,
        description="Watermark = max event time - this; None = the feature spec's allowed lateness.",
    )
    idleness_ms: int = Field(
        10_000,
        ge=0,
        description="A decode subtask without input this long stops holding back the watermark; 0 = never.",
    )
    score_batch: int = Field(
        64,
        ge=1,
        description="Vectors per ONNX run: >1 micro-batches in a keyed stage of its own (buffer kept in "
        "state, flushed when full, after score_flush_ms, and at the end of a bounded input); 1 scores "
        "each vector inline in the assembly's Python operator.",
    )
    score_flush_ms: int = Field(
        20, ge=1, description="Longest wait of a partial micro-batch (score_batch > 1)."
    )
    velocity_compact_every: int = Field(
        32, ge=1, description="Velocity: rewrite a key's window bytes after this many logged events."
    )
    velocity_cache_keys: int = Field(
        200_000, ge=1, description="Velocity: live window states cached per instance."
    )
    expiry_tick_ms: int = Field(
        60_000, ge=1, description="Granularity of the expiry timers of window and cooldown state."
    )
    check_future: bool = Field(
        True, description="Dead-letter events stamped too far ahead of the wall clock."
    )
    partition_discovery_ms: int | None = Field(
        60_000, description="How often the source looks for new partitions; None = never."
    )
    fail_once_after: tuple[int, str] | None = Field(
        None,
        description="Test hook: (n, marker file): the decode instance reading its n-th record fails the job "
        "once (while the marker does not exist).",
    )
    alerts: bool = Field(
        True, description="Run the anomaly stage (series points → AnomalyOperator per series → alerts topic)."
    )
    anomaly_spec: Path | None = Field(None, description="Anomaly metrics YAML; None = the shipped default.")
    layout: Layout = Field(
        "auto",
        description="fused: the whole pipeline in one keyed Python operator called once per batch of "
        "records (parallelism 1 only; jobs/flink/fused.py, speed in the README); staged: one keyed "
        "Python operator per stage, keyed by entity, event and subject (scales out with parallelism); "
        "auto: fused at parallelism 1, else staged.",
    )
    fused_batch: int = Field(
        256, ge=1, description="Fused layout: most records per call of the Python operator."
    )
    fused_batch_ms: int = Field(
        10, ge=1, description="Fused layout: longest a record waits for its batch to fill."
    )
    naive: bool = Field(
        False,
        description="Benchmark baseline: window and assembly state read and written per element (no "
        "caches, no log), the way a direct port of the operators would do it.",
    )
    job_name: str = Field("streamwarden", min_length=1, description="Flink job name.")


def resolve_layout(options: FlinkJobOptions, parallelism: int) -> Layout:
    """The layout the job runs: ``auto`` is fused at parallelism 1 (and not naive), else staged;
    ``ConfigError`` for a fused layout it cannot run."""
    if options.layout == "auto":
        return "fused" if parallelism == 1 and not options.naive else "staged"
    if options.layout == "fused" and parallelism != 1:
        raise ConfigError(
            f"layout fused runs the pipeline in one subtask; parallelism {parallelism} needs layout staged"
        )
    if options.layout == "fused" and options.naive:
        raise ConfigError("naive is a baseline of the staged layout: set layout staged (or auto)")
    return options.layout


def stages_config(job: JobConfig, options: FlinkJobOptions | None = None) -> StagesConfig:
    """The operators' configuration of a job, with the job's out-of-orderness bound."""
    return config_stages(job, options.out_of_orderness_ms if options is not None else None)


def parse_stop_at(spec: str) -> dict[tuple[str, int], int]:
    """``topic:partition:offset,...`` → ``{(topic, partition): offset}`` (the end, exclusive)."""
    out: dict[tuple[str, int], int] = {}
    for item in filter(None, spec.split(",")):
        try:
            topic, partition, offset = item.rsplit(":", 2)
            out[(topic, int(partition))] = int(offset)
        except ValueError as exc:
            raise ConfigError(f"--bounded: {item!r} is not topic:partition:offset") from exc
    return out


# ---------------------------------------------------------------- graph helpers


def _java_only_properties(job: JobConfig) -> dict[str, str]:
    """Consumer settings whose librdkafka and Java names differ and that ``jobs.flink.env`` passes
    through unrenamed: the fetch wait (the embedded broker answers a fetch only when it expires, so the
    Java default of 500 ms would add half a second to every fetch)."""
    wait = job.kafka.extra.get("fetch.wait.max.ms")
    return {"fetch.max.wait.ms": wait} if wait is not None else {}


def key_by_field0(ds: DataStream, key_type: Any, value_type: Any) -> KeyedStream:
    """``ds`` emits ``Row(key, value)``: key it by field 0 with the Java selector PyFlink's ``key_by``
    uses after its own Python key-extraction operator, which this skips."""
    from pyflink.common.typeinfo import Types
    from pyflink.datastream import KeyedStream
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    j_keyed = ds._j_data_stream.keyBy(
        gateway.jvm.KeyByKeySelector(), Types.ROW([key_type]).get_java_type_info()
    )
    return KeyedStream(j_keyed, value_type, ds)


def one_key_per_subtask(parallelism: int, max_parallelism: int, prefix: str = "s") -> list[str]:
    """Keys ``<prefix><n>`` such that each of the ``parallelism`` subtasks of a stage keyed by
    ``key_by_field0`` owns exactly one, found with Flink's own key-group assignment (through the
    gateway, for the key the Java selector builds: a one-field ``Row``)."""
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    assign = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment.assignKeyToParallelOperator
    found: dict[int, str] = {}
    n = 0
    while len(found) < parallelism:
        key = f"{prefix}{n}"
        row = jvm.org.apache.flink.types.Row(1)
        row.setField(0, key)
        found.setdefault(int(assign(row, max_parallelism, parallelism)), key)
        n += 1
        if n > 100_000 * parallelism:
            raise ConfigError(f"no key for every one of {parallelism} subtasks")
    return [found[i] for i in range(parallelism)]


def _with_event_time(
    ds: DataStream, row_type: Any, out_of_orderness_ms: int, idleness_ms: int, name: str = "event-time"
) -> DataStream:
    """``ds`` emits ``(row, event time ms)``: stamp each row with its event time and generate bounded
    out-of-orderness watermarks (with idleness), all in Java (what PyFlink's
    ``assign_timestamps_and_watermarks`` does after its own Python extraction operator)."""
    from pyflink.common import Duration, WatermarkStrategy
    from pyflink.datastream import DataStream as PyDataStream
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(out_of_orderness_ms))
    if idleness_ms > 0:
        strategy = strategy.with_idleness(Duration.of_millis(idleness_ms))
    eventtime = jvm.org.apache.flink.streaming.api.functions.python.eventtime
    stamped = ds._j_data_stream.assignTimestampsAndWatermarks(
        strategy._j_watermark_strategy.withTimestampAssigner(eventtime.CustomTimestampAssigner())
    )
    stamped.name(name).uid(name)
    rows = stamped.map(eventtime.RemoveTimestampMapFunction(), row_type.get_java_type_info())
    rows.name(f"{name}-rows")
    return PyDataStream(rows)


def topic_partitions(job: JobConfig, timeout_s: float = 10.0) -> tuple[int, ...]:
    """The events topic's partitions now (empty if the broker does not know the topic yet: the decode
    stage's clock then learns partitions from their first record)."""
    from confluent_kafka import KafkaException

    from streamwarden.jobs.kafka_io import make_admin

    try:
        listed = make_admin(job.kafka).list_topics(job.topics.events, timeout=timeout_s)
    except KafkaException:
        return ()
    meta = listed.topics.get(job.topics.events)
    if meta is None or meta.error is not None:
        return ()
    return tuple(sorted(meta.partitions))


# ---------------------------------------------------------------- the job


def build_job(
    env: StreamExecutionEnvironment,
    job: JobConfig,
    options: FlinkJobOptions | None = None,
    *,
    bounded_stop_at: Mapping[tuple[str, int], int] | None = None,
    parallelism: int | None = None,
) -> None:
    """Add the whole job to ``env``: Kafka source, the stages and the sinks of ``job.topics``."""
    from pyflink.common import WatermarkStrategy
    from pyflink.common.typeinfo import Types

    from streamwarden.jobs.flink.assemble import AssembleFunction
    from streamwarden.jobs.flink.cooldown import CooldownFunction
    from streamwarden.jobs.flink.decide import DecideFunction, features_tag
    from streamwarden.jobs.flink.decode import DecodeFunction, points_tag
    from streamwarden.jobs.flink.env import bytes_type, kafka_bytes_sink, kafka_bytes_source, keyed_bytes_type
    from streamwarden.jobs.flink.guard import dead_letters
    from streamwarden.jobs.flink.score import ScoreBatchFunction, ScoreFunction, ToScoreShard
    from streamwarden.jobs.flink.statements import StatementsFunction
    from streamwarden.jobs.flink.velocity import NaiveVelocityFunction, VelocityFunction
    from streamwarden.operators.pipeline import Stages

    opts = options or FlinkJobOptions()  # type: ignore[call-arg]
    config = stages_config(job, opts)
    stages = Stages.build(config)  # start-up errors (spec, policy, model cards) name the file here
    topics = job.topics
    prefix = opts.transactional_id_prefix or job.group_id
    string, pickled, raw = Types.STRING(), Types.PICKLED_BYTE_ARRAY(), bytes_type()
    route_type = Types.ROW([string, raw])

    source = kafka_bytes_source(
        job.kafka,
        topics.events,
        job.group_id,
        start_from=opts.start_from,
        stop_at=bounded_stop_at,
        partition_discovery_ms=opts.partition_discovery_ms,
        properties=_java_only_properties(job),
        with_metadata=True,
    )
    records = env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka-events", type_info=raw).uid(
        "events-source"
    )
    p = parallelism or env.get_parallelism()

    def sink(stream: DataStream, topic: str, name: str) -> None:
        stream.sink_to(
            kafka_bytes_sink(
                job.kafka,
                topic,
                guarantee=opts.guarantee,
                transactional_id_prefix=f"{prefix}-{name}",
                keyed=True,
            )
        ).name(f"kafka-{name}").uid(f"{name}-sink")

    if resolve_layout(opts, p) == "fused":
        _fused_graph(records, job, opts, config, sink)
        return
    max_p = env.get_max_parallelism()
    if max_p <= 0:
        from pyflink.java_gateway import get_gateway

        ranges = get_gateway().jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment
        max_p = int(ranges.computeDefaultMaxParallelism(p))
    decoded = (
        records.process(
            DecodeFunction(
                config,
                topic=topics.events,
                partitions=topic_partitions(job),
                check_future=opts.check_future,
                fail_once_after=opts.fail_once_after,
                alerts=opts.alerts,
                anomaly_spec=opts.anomaly_spec,
                velocity_subtasks=(p, max_p),
            ),
            output_type=Types.TUPLE([route_type, Types.LONG()]),
        )
        .name("decode")
        .uid("decode")
    )
    routes = _with_event_time(decoded, route_type, stages.out_of_orderness_ms, opts.idleness_ms)
    velocity = (
        NaiveVelocityFunction(config)
        if opts.naive
        else VelocityFunction(
            config,
            compact_every=opts.velocity_compact_every,
            cache_keys=opts.velocity_cache_keys,
            expiry_tick_ms=opts.expiry_tick_ms,
            route_subtasks=(p, max_p),
        )
    )
    partials = (
        key_by_field0(routes, string, raw)
        .process(velocity, output_type=route_type)
        .name("velocity")
        .uid("velocity")
    )
    vectors = (
        key_by_field0(partials, string, raw)
        .process(AssembleFunction(config, cache_events=0 if opts.naive else 100_000), output_type=pickled)
        .name("assemble")
        .uid("assemble")
    )
    if opts.score_batch <= 1:
        scored = vectors.process(ScoreFunction(config), output_type=pickled).name("score").uid("score")
    else:
        # One buffer per subtask: at parallelism 1 vectors are scored in arrival order.
        sharded = vectors.process(ToScoreShard(one_key_per_subtask(p, max_p)), output_type=route_type).name(
            "score-shard"
        )
        scored = (
            key_by_field0(sharded, string, raw)
            .process(
                ScoreBatchFunction(config, max_batch=opts.score_batch, flush_ms=opts.score_flush_ms),
                output_type=pickled,
            )
            .name("score")
            .uid("score-batch")
        )
    decided = (
        scored.process(DecideFunction(config, write_features=job.write_features), output_type=route_type)
        .name("decide")
        .uid("decide")
    )
    actions = (
        key_by_field0(decided, string, raw)
        .process(CooldownFunction(config, expiry_tick_ms=opts.expiry_tick_ms), output_type=keyed_bytes_type())
        .name("cooldown")
        .uid("cooldown")
    )
    statements = (
        actions.flat_map(StatementsFunction(config), output_type=keyed_bytes_type())
        .name("statements")
        .uid("statements")
    )

    if opts.alerts:
        _alerts_graph(
            decoded.get_side_output(points_tag()), opts, stages.out_of_orderness_ms, sink, topics.alerts
        )
    sink(actions, topics.actions, "actions")
    sink(statements, topics.statements, "statements")
    sink(dead_letters(decoded, partials, vectors, scored, decided), topics.deadletter, "deadletter")
    if job.write_features:
        sink(decided.get_side_output(features_tag()), topics.features, "features")


def _alerts_graph(
    points: DataStream, opts: FlinkJobOptions, out_of_orderness_ms: int, sink: Callable[..., None], topic: str
) -> None:
    """Series points ``(Row(series, point), event time)`` → event time → ``AnomalyFunction`` → alerts."""
    from pyflink.common.typeinfo import Types

    from streamwarden.jobs.flink.alerts import AnomalyFunction, anomaly_spec
    from streamwarden.jobs.flink.env import bytes_type, keyed_bytes_type

    string, route_type = Types.STRING(), Types.ROW([Types.STRING(), bytes_type()])
    spec = anomaly_spec(opts.anomaly_spec)  # a bad spec fails here, naming the file
    stamped = _with_event_time(
        points,
        route_type,
        spec.alert_out_of_orderness_ms(out_of_orderness_ms),
        opts.idleness_ms,
        name="points-event-time",
    )
    alerts = (
        key_by_field0(stamped, string, bytes_type())
        .process(AnomalyFunction(opts.anomaly_spec), output_type=keyed_bytes_type())
        .name("anomaly")
        .uid("anomaly")
    )
    sink(alerts, topic, "alerts")


def _fused_graph(
    records: DataStream,
    job: JobConfig,
    opts: FlinkJobOptions,
    config: StagesConfig,
    sink: Callable[..., None],
) -> None:
    """The fused layout (``jobs/flink/fused.py``): records batched and keyed in Java (``RecordBatcher``)
    to one ``FusedFunction``."""
    from pyflink.common.typeinfo import Types
    from pyflink.datastream import DataStream as PyDataStream
    from pyflink.java_gateway import get_gateway

    from streamwarden.jobs.flink.alerts import anomaly_spec
    from streamwarden.jobs.flink.decide import features_tag
    from streamwarden.jobs.flink.decode import dead_letter_tag
    from streamwarden.jobs.flink.env import bytes_type, keyed_bytes_type
    from streamwarden.jobs.flink.fused import FUSED_KEY, FusedFunction, alerts_tag
    from streamwarden.jobs.flink.record_jar import BATCHER_CLASS
    from streamwarden.jobs.flink.statements import StatementsFunction

    string, raw = Types.STRING(), bytes_type()
    row_type = Types.ROW([string, raw])
    if opts.alerts:
        anomaly_spec(opts.anomaly_spec)  # a bad spec fails here, naming the file
    batcher = get_gateway().jvm
    for part in BATCHER_CLASS.split("."):
        batcher = getattr(batcher, part)
    batches = records._j_data_stream.transform(
        "fused-batch",
        row_type.get_java_type_info(),
        batcher(FUSED_KEY, opts.fused_batch, opts.fused_batch_ms),
    )
    batches.uid("fused-batch")
    fused = FusedFunction(
        config,
        topic=job.topics.events,
        partitions=topic_partitions(job),
        check_future=opts.check_future,
        write_features=job.write_features,
        expiry_tick_ms=opts.expiry_tick_ms,
        alerts=opts.alerts,
        anomaly_spec=opts.anomaly_spec,
        fail_once_after=opts.fail_once_after,
    )
    actions = (
        key_by_field0(PyDataStream(batches), string, raw)
        .process(fused, output_type=keyed_bytes_type())
        .name("fused")
        .uid("fused")
    )
    statements = (
        actions.flat_map(StatementsFunction(config), output_type=keyed_bytes_type())
        .name("statements")
        .uid("statements")
    )
    topics = job.topics
    if opts.alerts:  # the anomaly stage runs inside the fused operator (a second one would share its GIL)
        sink(actions.get_side_output(alerts_tag()), topics.alerts, "alerts")
    sink(actions, topics.actions, "actions")
    sink(statements, topics.statements, "statements")
    sink(actions.get_side_output(dead_letter_tag()), topics.deadletter, "deadletter")
    if job.write_features:
        sink(actions.get_side_output(features_tag()), topics.features, "features")


def under_cluster_client() -> bool:
    """True when this process is the client of ``flink run`` (the gateway is the CLI's)."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def job_env(flink: FlinkConfig | None, *, apply_defaults: bool = True) -> StreamExecutionEnvironment:
    """The execution environment: ``FlinkConfig`` settings (plus ``DEFAULT_FLINK_EXTRA``), or, with
    ``flink`` None, the settings the process was started with (``flink run``)."""
    from pyflink.datastream import StreamExecutionEnvironment

    from streamwarden.jobs.flink.env import create_env

    if flink is None:
        return StreamExecutionEnvironment.get_execution_environment()
    if apply_defaults:
        flink = flink.model_copy(update={"extra": {**DEFAULT_FLINK_EXTRA, **flink.extra}})
    return create_env(flink)


def run_flink_job(
    job_config: JobConfig,
    flink_config: FlinkConfig | None = None,
    *,
    bounded_stop_at: Mapping[tuple[str, int], int] | None = None,
    options: FlinkJobOptions | None = None,
) -> JobExecutionResult:
    """Build and run the job, blocking until it ends (a bounded run: once every partition reached its
    ``bounded_stop_at`` offset and the last checkpoint committed the output; unbounded: until
    cancelled). Run from a plain Python process this is a local MiniCluster; ``flink_config`` None
    uses ``FlinkConfig()`` defaults locally and the cluster's configuration under ``flink run``."""
    if flink_config is None and not under_cluster_client():
        flink_config = FlinkConfig()  # type: ignore[call-arg]
    env = job_env(flink_config)
    opts = options or FlinkJobOptions()  # type: ignore[call-arg]
    build_job(
        env,
        job_config,
        opts,
        bounded_stop_at=bounded_stop_at,
        parallelism=flink_config.parallelism if flink_config is not None else None,
    )
    return env.execute(opts.job_name)


def stop_after(job: JobConfig, max_records: int) -> dict[tuple[str, int], int]:
    """Stopping offsets ``max_records`` past where the job's group would start, per partition of the
    events topic (its committed offset, else the partition's first offset)."""
    from confluent_kafka import TopicPartition

    from streamwarden.jobs.kafka_io import make_consumer

    topic = job.topics.events
    consumer = make_consumer(job.kafka, job.group_id)
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise ConfigError(f"topics.events: topic {topic!r} not found on {job.kafka.bootstrap_servers}")
        partitions = sorted(meta.partitions)
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        out: dict[tuple[str, int], int] = {}
        for tp in committed:
            start = tp.offset if tp.offset >= 0 else consumer.get_watermark_offsets(tp, timeout=10)[0]
            out[(topic, tp.partition)] = start + max_records
        return out
    finally:
        consumer.close()


def run_flink(
    job: JobConfig,
    *,
    max_records: int | None = None,
    idle_timeout_s: float | None = None,
    metrics_port: int | None = None,
) -> None:
    """``streamwarden run --engine flink``: the job on a local MiniCluster with ``FlinkConfig()``
    defaults, unbounded until Ctrl-C, or bounded ``max_records`` past the group's committed offsets
    (per partition). A streaming Flink job has no idle stop, so ``idle_timeout_s`` is refused.
    ``metrics_port``: Flink's Prometheus reporter serves every Flink metric there (the streamwarden
    group's counters included), as on a cluster configured from ``deploy/flink/config.yaml``."""
    if idle_timeout_s is not None:
        raise ConfigError(
            "--idle-timeout-s is not supported with --engine flink; use --max-records or Ctrl-C"
        )
    stop_at = stop_after(job, max_records) if max_records is not None else None
    print(
        f"flink job: {job.kafka.bootstrap_servers} {job.topics.events} -> {job.topics.actions} "
        f"(group {job.group_id}){' bounded' if stop_at else '; Ctrl-C stops it'}",
        flush=True,
    )
    flink_config = None
    if metrics_port is not None:
        from streamwarden.jobs.flink.metrics import expose_reporter_to_local_gateway, prometheus_reporter

        expose_reporter_to_local_gateway()
        flink_config = FlinkConfig(extra=prometheus_reporter(metrics_port))  # type: ignore[call-arg]
        print(
            f"flink metrics: http://127.0.0.1:{metrics_port}/metrics (Flink's Prometheus reporter)",
            flush=True,
        )
    started = time.monotonic()
    try:
        run_flink_job(job, flink_config, bounded_stop_at=stop_at)
    except KeyboardInterrupt:
        print("stopped; the group resumes from the last checkpoint's offsets", flush=True)
        return
    print(f"flink job finished in {time.monotonic() - started:.1f} s", flush=True)


def _model(cls: type[BaseModel], text: str | None, flag: str) -> Any:
    if text is None:
        return None
    try:
        return cls.model_validate(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag}: not JSON: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(format_validation_error(flag, exc)) from exc


def main(argv: list[str] | None = None) -> int:
    """``python jobs/flink/job.py --config FILE [--bounded ...]``; prints one JSON line when it ends."""
    ap = argparse.ArgumentParser(description="The streamwarden job on Flink.")
    ap.add_argument("--config", type=Path, default=None, help="JobConfig YAML (jobs/config.py).")
    ap.add_argument(
        "--bounded", default="", help="topic:partition:end_offset,... : stop there (bounded run)."
    )
    ap.add_argument("--flink-json", default=None, help="FlinkConfig as JSON (jobs/flink/env.py).")
    ap.add_argument("--options-json", default=None, help="FlinkJobOptions as JSON.")
    args = ap.parse_args(argv)
    started = time.monotonic()
    try:
        job = load_config(args.config)
        flink: FlinkConfig | None = _model(FlinkConfig, args.flink_json, "--flink-json")
        options: FlinkJobOptions | None = _model(FlinkJobOptions, args.options_json, "--options-json")
        stop_at = parse_stop_at(args.bounded) if args.bounded else None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_flink_job(job, flink, bounded_stop_at=stop_at, options=options)
    report: dict[str, Any] = {"wall_s": round(time.monotonic() - started, 3)}
    try:
        report["job_id"] = str(result.get_job_id())
        report["net_runtime_ms"] = result.get_net_runtime()
    except Exception:  # detached submission under flink run -d: no result yet
        report["job_id"] = None
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
