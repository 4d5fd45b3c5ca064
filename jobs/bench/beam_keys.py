"""Memory of the Beam job's velocity key store per live key, and process RSS with 1M live keys.

``python -m streamwarden.jobs.bench.beam_keys [--keys 1000000] [--job-keys 300000]``

Each figure is measured in a fresh child process (RSS growth is only meaningful in a process that has
not freed memory before), on LOGIN events that each name a new account, IP and device (three new keys)
and one of 50 ASNs, all within one minute of event time, so no key expires while they are counted:

1. **store**: ``VelocityFn.process`` (the job's DoFn code: fan-out facts in, ``KeyStateStore`` of
   live ``KeyState`` objects by key, expiry index) called directly, without a runner: bytes of RSS
   growth per live key, and the process's RSS once ``--keys`` keys are live;
2. **replay core** (the baseline, in the same run): ``VelocityPipeline`` (the compiled batch engine's own
   key table, ``bench velocity``'s memory figure) on the same events;
3. **job** (``--job-keys``, 0 = skip): the whole Beam job (``run_beam``: Kafka read from the embedded
   broker, a separate process, in bundles of at most 100 ms, decode, velocity, assembly, scoring,
   decisions, sinks) on the DirectRunner over the same kind of events, produced first: the velocity
   stage's live keys (counters ``new_keys`` - ``expired_keys``) and the process's RSS after the run (and its peak), which include Beam,
   ONNX Runtime and the Kafka clients.

The last line is one JSON object.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from typing import Annotated, Any

import typer

ASNS = 50
CHUNK = 10_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _event(j: int) -> Any:
    from streamwarden.operators.features.synth import T0_MS
    from streamwarden.schemas import streamwarden_pb2 as pb

    ev = pb.Event(event_id=f"m{j}", event_time_ms=T0_MS + j % 60_000, type=pb.Event.LOGIN, schema_version=1)
    ev.actor.account_id = f"acct-{j:08d}"
    ev.actor.ip = f"10.{j >> 16 & 255}.{j >> 8 & 255}.{j & 255}"
    ev.actor.device_id = f"dev-{j:08d}"
    ev.actor.asn = 64_500 + j % ASNS
    return ev


def _measure_store(n_keys: int) -> dict[str, Any]:
    from streamwarden.jobs.beam.decode import WithEventPartial
    from streamwarden.jobs.beam.velocity import VelocityFn
    from streamwarden.operators.features.replay import GC_THRESHOLD
    from streamwarden.operators.pipeline import Stages, StagesConfig

    config = StagesConfig()
    stages = Stages.shared(config)
    fn = VelocityFn(config)
    fn.setup()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)  # as the job's workers run (operators/features/replay.tuned_gc)
    store = fn._keys.store
    before = _rss_bytes()
    j = 0
    started = time.process_time()
    while len(store) < n_keys:
        for i in range(j, j + CHUNK):
            fanned = stages.fan_out(_event(i))
            keys = fanned.keys
            list(fn.process((keys[0], WithEventPartial(fanned.facts))))
            for key in keys[1:]:
                list(fn.process((key, fanned.facts)))
        j += CHUNK
    cpu_s = time.process_time() - started
    gc.collect()
    after = _rss_bytes()
    return {
        "live_keys": len(store),
        "bytes_per_key": (after - before) / len(store),
        "rss_bytes": after,
        "events": j,
        "us_per_event": 1e6 * cpu_s / j,
    }


def _measure_replay(n_keys: int) -> dict[str, Any]:
    from streamwarden.operators.features.replay import VelocityPipeline
    from streamwarden.operators.features.spec import load_spec

    pipe = VelocityPipeline(load_spec(None))
    gc.collect()
    before = _rss_bytes()
    j = 0
    while pipe.live_keys < n_keys:
        pipe.process_events([_event(i) for i in range(j, j + CHUNK)])
        j += CHUNK
    gc.collect()
    after = _rss_bytes()
    return {
        "live_keys": pipe.live_keys,
        "bytes_per_key": (after - before) / pipe.live_keys,
        "rss_bytes": after,
    }


def _measure_job(n_keys: int) -> dict[str, Any]:
    from streamwarden.deploy.broker import EmbeddedBroker
    from streamwarden.jobs.beam.kafka_source import ReadOptions
    from streamwarden.jobs.beam.pipeline import job_metrics, run_beam
    from streamwarden.jobs.config import JobConfig, TopicsConfig
    from streamwarden.jobs.kafka_io import create_local_topics, embedded_kafka_config, make_producer

    n_events = -(-(n_keys - ASNS) // 3)
    with EmbeddedBroker() as broker:
        kafka = embedded_kafka_config(broker.bootstrap_servers)
        topics = TopicsConfig(  # type: ignore[call-arg]
            events="keys-events",
            actions="keys-actions",
            deadletter="keys-deadletter",
            features="keys-features",
        )
        create_local_topics(
            broker.bootstrap_servers, [topics.events, topics.actions, topics.deadletter, topics.features], 1
        )
        producer = make_producer(kafka, **{"linger.ms": 20, "batch.num.messages": 10_000})
        for i in range(n_events):
            while True:
                try:
                    producer.produce(topics.events, _event(i).SerializeToString())
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 1000 == 0:
                producer.poll(0)
        producer.flush(120)
        del producer
        gc.collect()
        before = _rss_bytes()
        job = JobConfig(kafka=kafka, topics=topics, group_id="bench-keys")  # type: ignore[call-arg]
        started = time.monotonic()
        result = run_beam(job, read_options=ReadOptions(max_records=n_events, bundle_max_ms=100))  # type: ignore[call-arg]
        wall_s = time.monotonic() - started
        after = _rss_bytes()
    metrics = job_metrics(result)
    events = metrics.counter("events")
    live = metrics.counter("new_keys") - metrics.counter("expired_keys")
    return {
        "events": events,
        "live_keys": live,
        "rss_bytes": after,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_before_bytes": before,
        "bytes_per_key": (after - before) / live if live else None,
        "events_per_s": events / wall_s if wall_s else 0.0,
    }


_MEASURES = {"store": _measure_store, "replay": _measure_replay, "job": _measure_job}


def _child(what: str, n_keys: int) -> dict[str, Any]:
    """Run one measure in a fresh interpreter; it prints its dict as JSON on its last line."""
    out = subprocess.run(
        [sys.executable, "-m", "streamwarden.jobs.bench.beam_keys", "--child", what, "--keys", str(n_keys)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(
    keys: Annotated[int, typer.Option(help="Live keys for the store and replay-core figures.")] = 1_000_000,
    job_keys: Annotated[int, typer.Option(help="Live keys for the whole-job figure (0: skip).")] = 300_000,
    child: Annotated[str, typer.Option(hidden=True)] = "",
) -> None:
    if child:
        print(json.dumps(_MEASURES[child](keys)))
        return
    store = _child("store", keys)
    replay = _child("replay", keys)
    mib = 1 << 20
    print(
        f"Beam velocity key store: {store['bytes_per_key']:.0f} B of process memory per live key at "
        f"{store['live_keys']:,} keys; process RSS {store['rss_bytes'] / mib:,.0f} MiB "
        f"({store['us_per_event']:.1f} µs CPU per event through VelocityFn.process)"
    )
    print(
        f"replay core (baseline, same run): {replay['bytes_per_key']:.0f} B per live key at "
        f"{replay['live_keys']:,} keys; process RSS {replay['rss_bytes'] / mib:,.0f} MiB"
    )
    job: dict[str, Any] | None = None
    if job_keys:
        job = _child("job", job_keys)
        per_key = job["bytes_per_key"]
        print(
            f"whole Beam job (Kafka read, DirectRunner, 100 ms bundles): {job['events']:,} events, "
            f"{job['live_keys']:,} live keys at the end, process RSS {job['rss_bytes'] / mib:,.0f} MiB "
            f"(peak {job['peak_rss_bytes'] / mib:,.0f} MiB; "
            f"{'n/a' if per_key is None else f'{per_key:.0f}'} B per live key over the RSS before the run, "
            f"everything included), {job['events_per_s']:,.0f} events/s"
        )
    print(
        json.dumps(
            {
                "bench": "beam_keys",
                "store_bytes_per_key": round(store["bytes_per_key"]),
                "store_live_keys": store["live_keys"],
                "store_rss_bytes": store["rss_bytes"],
                "replay_bytes_per_key": round(replay["bytes_per_key"]),
                "replay_live_keys": replay["live_keys"],
                "job_live_keys": job["live_keys"] if job else None,
                "job_rss_bytes": job["rss_bytes"] if job else None,
                "job_peak_rss_bytes": job["peak_rss_bytes"] if job else None,
                "job_bytes_per_key": round(job["bytes_per_key"]) if job and job["bytes_per_key"] else None,
            }
        )
    )


if __name__ == "__main__":
    typer.run(main)
