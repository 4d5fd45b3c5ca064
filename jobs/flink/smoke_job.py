"""Smoke job: Kafka bytes in -> per-key count in Python ValueState -> Kafka bytes out, EXACTLY_ONCE.

It proves the Flink plumbing (connector jars, bytes source and keyed sink, Python keyed state,
checkpoints, Kafka transactions) without any streamwarden logic. Input values look like
``b"<key>|<id>"``; each output has Kafka key ``<key>`` and value
``b"<key>|<id>|<count of key so far>|<processing wall time in us>"``.

    python jobs/flink/smoke_job.py --bootstrap-servers 127.0.0.1:9092 --input in --output out \\
        --stop-at in:0:5000,in:1:5000 --mode thread

The last stdout line is JSON with the timings (seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

T_START = time.monotonic()

from pyflink.common import Row, WatermarkStrategy  # noqa: E402
from pyflink.common.typeinfo import Types  # noqa: E402
from pyflink.datastream import KeyedProcessFunction, RuntimeContext  # noqa: E402

from streamwarden.jobs.config import KafkaConfig  # noqa: E402
from streamwarden.jobs.flink.env import (  # noqa: E402
    FlinkConfig,
    bytes_type,
    create_env,
    kafka_bytes_sink,
    kafka_bytes_source,
    keyed_bytes_type,
)
from streamwarden.jobs.flink.state import bytes_value_state  # noqa: E402


class CountPerKey(KeyedProcessFunction):  # type: ignore[misc]
    """Counts elements per key in a ValueState holding an 8-byte big-endian integer."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.count = bytes_value_state(runtime_context, "count", ttl_ms=3_600_000)

    def process_element(self, value: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        raw = self.count.value()
        n = (int.from_bytes(raw, "big") if raw else 0) + 1
        self.count.update(n.to_bytes(8, "big"))
        yield Row(value[: value.index(b"|")], b"%s|%d|%d" % (value, n, time.time_ns() // 1000))


def _key(value: bytes) -> str:
    return value[: value.index(b"|")].decode()


def parse_stop_at(spec: str) -> dict[tuple[str, int], int]:
    """``topic:partition:offset,...`` -> ``{(topic, partition): offset}``."""
    out: dict[tuple[str, int], int] = {}
    for item in filter(None, spec.split(",")):
        topic, partition, offset = item.rsplit(":", 2)
        out[(topic, int(partition))] = int(offset)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap-servers", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--output", required=True)
    ap.add_argument("--group-id", default="streamwarden-smoke")
    ap.add_argument(
        "--stop-at", default="", help="topic:partition:offset,... (bounded run); empty = unbounded"
    )
    ap.add_argument("--mode", choices=["thread", "process"], default="thread")
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--checkpoint-interval-ms", type=int, default=1000)
    ap.add_argument("--guarantee", choices=["exactly_once", "at_least_once"], default="exactly_once")
    ap.add_argument("--transactional-id-prefix", default="sw-smoke")
    ap.add_argument(
        "--no-ship-jars",
        action="store_true",
        help="do not add the connector jars to pipeline.jars (the cluster has them in lib/)",
    )
    ap.add_argument("--max-restarts", type=int, default=0, help="fixed-delay restarts before the job fails")
    args = ap.parse_args(argv)

    checkpoint_dir = args.checkpoint_dir or Path(tempfile.mkdtemp(prefix="sw-smoke-ckpt-")).as_uri()
    cfg = FlinkConfig(  # type: ignore[call-arg]
        execution_mode=args.mode,
        parallelism=args.parallelism,
        checkpoint_dir=checkpoint_dir,
        checkpoint_interval_ms=args.checkpoint_interval_ms,
        ship_connector_jars=not args.no_ship_jars,
        extra={
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": str(args.max_restarts),
            "restart-strategy.fixed-delay.delay": "1 s",
        },
    )
    kafka = KafkaConfig(bootstrap_servers=args.bootstrap_servers)  # type: ignore[call-arg]
    env = create_env(cfg)
    t_env = time.monotonic()

    stop_at = parse_stop_at(args.stop_at) if args.stop_at else None
    source = kafka_bytes_source(kafka, args.input, args.group_id, start_from="committed", stop_at=stop_at)
    sink = kafka_bytes_sink(
        kafka,
        args.output,
        guarantee=args.guarantee,
        transactional_id_prefix=args.transactional_id_prefix,
        keyed=True,
    )
    (
        env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka-in", type_info=bytes_type())
        .uid("smoke-source")
        .key_by(_key, key_type=Types.STRING())
        .process(CountPerKey(), output_type=keyed_bytes_type())
        .uid("smoke-count")
        .name("count-per-key")
        .sink_to(sink)
        .uid("smoke-sink")
        .name("kafka-out")
    )
    t_submit = time.monotonic()
    env.execute("streamwarden-smoke")
    t_done = time.monotonic()
    print(
        json.dumps(
            {
                "mode": args.mode,
                "gateway_start_s": round(t_env - T_START, 3),
                "execute_s": round(t_done - t_submit, 3),
                "total_s": round(t_done - T_START, 3),
                "execute_wall_start_us": int((time.time() - (t_done - t_submit)) * 1e6),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
