"""Drive and check the Flink smoke job (:mod:`jobs.flink.smoke_job`) against a real broker.

Input records are ``b"k<key>|<id>"``; the job answers each with key ``k<key>`` and value
``b"k<key>|<id>|<count>|<t_us>"``.
``check_outputs`` lists every way the output breaks exactly-once or the per-key state (problems are
data, so one call reports them all).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

import streamwarden
from streamwarden.jobs.config import KafkaConfig
from streamwarden.jobs.kafka_io import make_consumer, make_producer

REPO_ROOT = Path(streamwarden.__file__).resolve().parents[1]
"""The directory that holds the ``streamwarden`` package (the repository, or site-packages)."""
SMOKE_JOB = Path(__file__).resolve().with_name("smoke_job.py")
SMOKE_KEYS = 500


def produce_smoke_input(
    kafka: KafkaConfig, topic: str, ids: range, partitions: int, keys: int = SMOKE_KEYS
) -> dict[tuple[str, int], int]:
    """Write one record per id, round-robin over ``partitions``; return the end offset of each partition."""
    producer = make_producer(kafka, linger_ms=5)
    ends: dict[tuple[str, int], int] = {}
    failures: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))
            return
        key = (msg.topic(), msg.partition())
        ends[key] = max(ends.get(key, 0), msg.offset() + 1)

    for i in ids:
        producer.produce(topic, b"k%d|%d" % (i % keys, i), partition=i % partitions, on_delivery=on_delivery)
        if i % 5000 == 0:
            producer.poll(0)
    remaining = producer.flush(30)
    if failures or remaining:
        raise RuntimeError(f"smoke input not delivered: {remaining} pending, errors {failures[:3]}")
    return ends


def stop_at_arg(ends: dict[tuple[str, int], int]) -> str:
    return ",".join(f"{t}:{p}:{o}" for (t, p), o in sorted(ends.items()))


def read_committed(
    kafka: KafkaConfig,
    topic: str,
    partitions: int,
    expected: int,
    timeout_s: float = 60.0,
    settle_s: float = 2.0,
) -> list[tuple[bytes | None, bytes]]:
    """Every committed ``(key, value)`` of ``topic`` from offset 0 (``read_committed``, ``assign()``: no group wait).

    Reads until ``expected`` records arrived plus ``settle_s`` more (to catch duplicates), or ``timeout_s``.
    """
    consumer = make_consumer(kafka, f"smoke-check-{topic}", isolation_level="read_committed")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[tuple[bytes | None, bytes]] = []
    deadline, settle_until = time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline and (settle_until is None or time.monotonic() < settle_until):
            for msg in consumer.consume(10_000, 0.2):
                value = msg.value()
                if msg.error() is None and value is not None:
                    values.append((msg.key(), value))
            if settle_until is None and len(values) >= expected:
                settle_until = time.monotonic() + settle_s
    finally:
        consumer.close()
    return values


@dataclass(frozen=True)
class SmokeResult:
    """What the output says: problems (empty = correct) and the keyed stage's processing rate."""

    outputs: int
    problems: tuple[str, ...]
    events_per_s: float
    first_output_us: int


def check_outputs(records: Sequence[tuple[bytes | None, bytes]], expected_ids: range) -> SmokeResult:
    """Exactly one output per input id, per key the counts are exactly 1..n (state never lost or reset),
    and each record's Kafka key is its smoke key."""
    problems: list[str] = []
    values = [value for _, value in records]
    wrong_keys = [value for key, value in records if key != value.split(b"|", 1)[0]]
    if wrong_keys:
        problems.append(
            f"{len(wrong_keys)} records whose Kafka key is not their smoke key, e.g. {wrong_keys[:3]}"
        )
    ids = collections.Counter(int(v.split(b"|")[1]) for v in values)
    missing = [i for i in expected_ids if i not in ids]
    dups = sorted(i for i, c in ids.items() if c > 1)
    unexpected = sorted(set(ids) - set(expected_ids))
    if missing:
        problems.append(f"{len(missing)} ids without output, e.g. {missing[:5]}")
    if dups:
        problems.append(f"{len(dups)} ids with more than one output, e.g. {dups[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} outputs for ids never produced, e.g. {unexpected[:5]}")
    counts: dict[bytes, list[int]] = collections.defaultdict(list)
    stamps: list[int] = []
    for v in values:
        key, _, count, t_us = v.split(b"|")
        counts[key].append(int(count))
        stamps.append(int(t_us))
    bad_keys = [k for k, seen in counts.items() if sorted(seen) != list(range(1, len(seen) + 1))]
    if bad_keys:
        problems.append(f"{len(bad_keys)} keys whose counts are not 1..n, e.g. {bad_keys[:3]}")
    span_s = (max(stamps) - min(stamps)) / 1e6 if stamps else 0.0
    return SmokeResult(
        outputs=len(values),
        problems=tuple(problems),
        events_per_s=len(values) / span_s if span_s > 0 else 0.0,
        first_output_us=min(stamps) if stamps else 0,
    )


def smoke_job_args(
    kafka: KafkaConfig,
    source: str,
    sink: str,
    *,
    mode: str,
    checkpoint_dir: Path,
    stop_at: str = "",
    ship_jars: bool = True,
) -> list[str]:
    args = [
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--input",
        source,
        "--output",
        sink,
        "--group-id",
        f"smoke-{source}",
        "--transactional-id-prefix",
        f"smoke-{sink}",
        "--mode",
        mode,
        "--checkpoint-dir",
        checkpoint_dir.resolve().as_uri(),
    ]
    if stop_at:
        args += ["--stop-at", stop_at]
    if not ship_jars:
        args.append("--no-ship-jars")
    return args


def run_minicluster(args: Sequence[str], log_dir: Path, timeout_s: float = 180.0) -> dict[str, Any]:
    """``python smoke_job.py ARGS`` (a local MiniCluster) in its own process group; returns its JSON line."""
    env = {**os.environ, "FLINK_LOG_DIR": str(log_dir)}
    proc = subprocess.Popen(
        [sys.executable, str(SMOKE_JOB), *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the gateway JVM joins this group, so a timeout kills it too
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise RuntimeError(f"smoke job did not finish in {timeout_s:.0f} s:\n{out[-4000:]}") from None
    if proc.returncode != 0:
        raise RuntimeError(f"smoke job failed ({proc.returncode}):\n{out[-4000:]}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def run_smoke(
    kafka: KafkaConfig, create_topics: Any, work_dir: Path, *, mode: str, n: int, partitions: int = 2
) -> dict[str, Any]:
    """Produce ``n`` records, run the bounded smoke job on a MiniCluster, read and check the output."""
    source, sink = f"smoke-in-{mode}-{time.time_ns()}", f"smoke-out-{mode}-{time.time_ns()}"
    create_topics([source, sink], partitions)
    ids = range(n)
    ends = produce_smoke_input(kafka, source, ids, partitions)
    work_dir.mkdir(parents=True, exist_ok=True)
    timings = run_minicluster(
        smoke_job_args(
            kafka, source, sink, mode=mode, checkpoint_dir=work_dir / "ckpt", stop_at=stop_at_arg(ends)
        ),
        work_dir,
    )
    result = check_outputs(read_committed(kafka, sink, partitions, n), ids)
    return {
        "mode": mode,
        "events": n,
        "outputs": result.outputs,
        "problems": list(result.problems),
        "gateway_start_s": timings["gateway_start_s"],
        "execute_s": timings["execute_s"],
        "first_output_after_submit_s": round(
            (result.first_output_us - timings["execute_wall_start_us"]) / 1e6, 2
        ),
        "keyed_stage_events_per_s": round(result.events_per_s),
    }
