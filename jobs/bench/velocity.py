"""``streamwarden bench velocity``: the compiled window core's two entry points next to the naive oracle.

In one process and on the same generated events (decoded before timing):

* **batch path** (replay/backtests): ``VelocityPipeline.process_events`` — decoded events in, one NumPy
  array of vectors out, no Python object per event or key update; also from facts extracted in Python
  (``process_facts``), and the Python fan-out's own rate;
* **per-key path** (Beam/Flink): ``KeyState.on_event`` plus ``encode_state`` per key update, µs each;
* the **naive oracle** (per key the raw events, rescanned on every event) on a prefix of the stream;
* the **flat ratio**: batch throughput with ~10 and ~10,000 events per key in the window;
* encoded bytes per key, and process memory per live key once 1M keys are live;
* the whole pipeline (``replay_actions``: decode, gate, windows, scoring, decisions) events/s, with the
  share of its time per stage (cProfile).

Throughput is events per CPU second of this process (``time.process_time``): the machine is shared.
The last line is one JSON object.
"""

from __future__ import annotations

import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer

from streamwarden.operators.features.assemble import Assembler, event_partial
from streamwarden.operators.features.fanout import EntityKey, EventFacts, FanOut
from streamwarden.operators.features.naive import NaiveKeyState, NaivePlan
from streamwarden.operators.features.replay import VelocityPipeline, tuned_gc
from streamwarden.operators.features.spec import (
    ENTITY_KIND_VALUES,
    ENTITY_KINDS,
    FeatureSpec,
    default_spec,
    parse_spec,
)
from streamwarden.operators.features.state_codec import encode_state
from streamwarden.operators.features.synth import T0_MS, random_stream, steady_stream
from streamwarden.operators.features.window import KeyState, compile_plans
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import decode_event

SMALL_POPULATION = 10
LARGE_POPULATION = 10_000
FLAT_SPACING_MS = 100
FLAT_BUCKET_MS = 1_000
FLAT_GROUPS = 5
MEMORY_KEYS = 1_000_000


def _workload(n_events: int, seed: int) -> tuple[str, list[pb.Event]]:
    """Generated traffic (``operators.traffic``) if available, else a synthetic random stream."""
    try:
        from streamwarden.operators.traffic import TrafficSpec, iter_traffic
    except ImportError:
        return "synthetic", random_stream(seed, n_events, n_accounts=20_000, n_ips=5_000)
    duration_s = 600.0
    tspec = TrafficSpec.model_validate(
        {"seed": seed, "duration_s": duration_s, "organic_events_per_s": n_events / duration_s}
    )
    events = []
    for rec in iter_traffic(tspec):
        ev = decode_event(rec.payload)
        if isinstance(ev, pb.Event):
            events.append(ev)
    return "generated", events


def _cpu(fn: Callable[[], object]) -> float:
    """CPU seconds of ``fn()``."""
    c0 = time.process_time()
    fn()
    return max(time.process_time() - c0, 1e-9)


class NaivePipeline:
    """The baseline chain: same fan-out and assembly, naive per-key state."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.fanout = FanOut(spec)
        self.plans = {ENTITY_KIND_VALUES[k]: NaivePlan(spec, k) for k in spec.kinds()}
        self.states: dict[EntityKey, NaiveKeyState] = {}
        self.assembler = Assembler(spec, timeout_ms=10_000)

    def process(self, event: pb.Event) -> object:
        facts, keys = self.fanout(event)
        now = facts.time_ms
        out = self.assembler.add(event_partial(facts), now)
        for key in keys:
            st = self.states.get(key)
            if st is None:
                st = self.states[key] = NaiveKeyState(self.plans[key[0]])
            out = self.assembler.add(st.on_event(facts), now)
        return out

    def preload(self, events: list[pb.Event]) -> None:
        """Fill the per-key event lists without rescanning (to reach a large population quickly)."""
        for ev in events:
            facts, keys = self.fanout(ev)
            for key in keys:
                st = self.states.get(key)
                if st is None:
                    st = self.states[key] = NaiveKeyState(self.plans[key[0]])
                st.events.append(facts)
                st.high_ms = max(st.high_ms, facts.time_ms)


def _run_naive(pipe: NaivePipeline, events: list[pb.Event]) -> None:
    for ev in events:
        pipe.process(ev)


def _batch_rate(spec: FeatureSpec, events: list[pb.Event], repeats: int) -> tuple[float, float, float]:
    """Best of ``repeats``: events/s of the batch path from decoded events (``process_events``: the
    core reads the facts), from facts extracted beforehand (``process_facts``), and of the Python
    fan-out alone (``FanOut``, what ``process_batch`` adds to ``process_facts``)."""
    fan = FanOut(spec)
    facts = [fan(ev)[0] for ev in events]
    n = len(events)
    best_events = max(n / _cpu(lambda: VelocityPipeline(spec).process_events(events)) for _ in range(repeats))
    best_facts = max(n / _cpu(lambda: VelocityPipeline(spec).process_facts(facts)) for _ in range(repeats))
    fanout = max(n / _cpu(lambda: [fan(ev) for ev in events]) for _ in range(repeats))
    return best_events, best_facts, fanout


def _flat_spec(spec: FeatureSpec, length_ms: int, bucket_ms: int) -> FeatureSpec:
    """The spec with every entity on one window of the given geometry (same aggregations)."""
    data = spec.model_dump()
    data["windows"] = {"w": {"length_ms": length_ms, "bucket_ms": bucket_ms}}
    for ent in data["entities"].values():
        ent["windows"] = ["w"]
    return parse_spec(data, "(flat benchmark spec)")


def _flat(
    spec: FeatureSpec, population: int, seed: int, measure: int, naive_measure: int
) -> dict[str, float]:
    """Batch throughput (from decoded events) and naive throughput once each key holds ~``population`` events
    in its window: the same stream for every population, only the window length changes."""
    length_ms = population * FLAT_SPACING_MS
    fspec = _flat_spec(spec, length_ms, FLAT_BUCKET_MS)
    warm = FLAT_GROUPS * population
    events = steady_stream(
        seed, warm + measure, groups=FLAT_GROUPS, events_per_window=population, window_ms=length_ms
    )
    pipe = VelocityPipeline(fspec)
    pipe.process_events(events[:warm])
    tail = events[warm:]
    ours = measure / _cpu(lambda: pipe.process_events(tail))
    naive = NaivePipeline(fspec)
    naive.preload(events[:warm])
    base = naive_measure / _cpu(lambda: _run_naive(naive, events[warm : warm + naive_measure]))
    return {"ours": ours, "naive": base}


def _per_key(spec: FeatureSpec, events: list[pb.Event]) -> dict[str, float]:
    """µs per key update on the per-key path: ``on_event`` alone, and ``on_event`` + ``encode_state``
    (what a Beam/Flink binding does per update), over every key update of ``events``."""
    fan = FanOut(spec)
    plans = compile_plans(spec)
    updates: list[tuple[EntityKey, EventFacts]] = []
    for ev in events:
        facts, keys = fan(ev)
        updates.extend((k, facts) for k in keys)
    states: dict[EntityKey, KeyState] = {k: KeyState(plans[k[0]]) for k, _ in updates}

    def apply_only() -> None:
        for key, facts in updates:
            states[key].on_event(facts)

    def apply_encode() -> None:
        for key, facts in updates:
            st = states[key]
            st.on_event(facts)
            encode_state(st)

    def loop_only() -> None:
        for key, _ in updates:
            states[key]

    base = _cpu(loop_only)
    on_event = _cpu(apply_only) - base
    states = {k: KeyState(plans[k[0]]) for k, _ in updates}
    both = _cpu(apply_encode) - base
    n = len(updates)
    return {"updates": n, "on_event_us": 1e6 * on_event / n, "on_event_encode_us": 1e6 * both / n}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_per_key(spec: FeatureSpec, n_keys: int) -> dict[str, float]:
    """Process memory per live key: RSS growth while the batch engine takes LOGIN events that each
    name a new account, IP and device (3 new keys each, plus a few shared ASNs), made in chunks."""
    gc.collect()
    pipe = VelocityPipeline(spec)
    before = _rss_bytes()
    chunk = 10_000
    i = 0
    while pipe.live_keys < n_keys:
        batch = []
        for j in range(i, i + chunk):
            ev = pb.Event(event_id=f"m{j}", event_time_ms=T0_MS + j, type=pb.Event.LOGIN, schema_version=1)
            ev.actor.account_id = f"acct-{j:08d}"
            ev.actor.ip = f"10.{j >> 16 & 255}.{j >> 8 & 255}.{j & 255}"
            ev.actor.device_id = f"dev-{j:08d}"
            ev.actor.asn = 64_500 + j % 50
            batch.append(ev)
        pipe.process_events(batch)
        i += chunk
        del batch
    gc.collect()
    grown = _rss_bytes() - before
    return {"live_keys": pipe.live_keys, "bytes_per_key": grown / pipe.live_keys}


def _replay_actions(events: list[pb.Event], top: int) -> tuple[float, str]:
    """Events/s of the whole pipeline (``replay_actions``) and its cProfile split by function."""
    from streamwarden.operators.pipeline import Stages, StagesConfig, iter_kafka_like, replay_actions

    stages = Stages.build(StagesConfig())
    payloads = [ev.SerializeToString() for ev in events]
    cpu = _cpu(lambda: replay_actions(iter_kafka_like(payloads, "events"), stages, feature_records=False))
    prof = cProfile.Profile()
    prof.enable()
    replay_actions(iter_kafka_like(payloads[:20_000], "events"), stages, feature_records=False)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    lines = [f"  {'self %':>6}  {'calls':>9}  function"]
    for (path, line, name), (_, ncalls, tottime, _, _) in rows:
        where = f"{os.path.basename(path)}:{line}({name})" if line else name
        lines.append(f"  {100 * tottime / total:6.1f}  {ncalls:9d}  {where}")
    return len(payloads) / cpu, "\n".join(lines)


def bench_velocity_cmd(
    events: Annotated[int, typer.Option(help="Approximate number of generated events to run.")] = 100_000,
    naive_events: Annotated[
        int, typer.Option(help="Events of the same stream to run through the naive baseline.")
    ] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the workload.")] = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Batch runs over the workload; the best counts.")] = 3,
    memory_keys: Annotated[
        int, typer.Option(help="Live keys for the memory figure (0 = skip).", min=0)
    ] = MEMORY_KEYS,
    replay: Annotated[bool, typer.Option(help="Also time the whole pipeline (replay_actions).")] = True,
) -> None:
    """Velocity core (batch and per-key paths) vs naive oracle: events/s, flat ratio, bytes and memory per key; JSON line last."""
    spec = default_spec()
    kind, stream = _workload(events, seed)
    typer.echo(f"workload: {kind} traffic, {len(stream)} valid events, {len(spec.feature_names())} features")
    with tuned_gc():
        result = _measure(spec, kind, stream, naive_events, seed, repeats, memory_keys, replay)
    typer.echo(json.dumps(result))


def _measure(
    spec: FeatureSpec,
    kind: str,
    stream: list[pb.Event],
    naive_events: int,
    seed: int,
    repeats: int,
    memory_keys: int,
    replay: bool,
) -> dict[str, Any]:
    batch, batch_facts, python_fanout = _batch_rate(spec, stream, repeats)
    pipe = VelocityPipeline(spec)
    pipe.process_events(stream)
    n_keys = pipe.live_keys
    fan = FanOut(spec)
    keys_per_event = sum(len(fan(e)[1]) for e in stream) / max(1, len(stream))
    typer.echo(
        f"batch path: {batch:,.0f} events/s from decoded events (process_events), {batch_facts:,.0f} "
        f"events/s from Python-extracted facts (process_facts; the Python fan-out alone runs "
        f"{python_fanout:,.0f} events/s) (CPU, best of {repeats}); {keys_per_event:.2f} keys/event, "
        f"{n_keys} live keys"
    )
    per_key = _per_key(spec, stream[: min(len(stream), 50_000)])
    typer.echo(
        f"per-key path: on_event {per_key['on_event_us']:.2f} µs, on_event + encode_state "
        f"{per_key['on_event_encode_us']:.2f} µs per key update ({per_key['updates']:.0f} updates)"
    )

    sizes: dict[int, list[int]] = {}
    for k, size in pipe.core.encoded_sizes():
        sizes.setdefault(k, []).append(size)
    names = {ENTITY_KIND_VALUES[k]: k for k in ENTITY_KINDS}
    for k, v in sorted(sizes.items()):
        typer.echo(
            f"  state bytes {names[k]:>15}: median {statistics.median(v):6.0f}  mean {sum(v) / len(v):7.1f}  "
            f"max {max(v):6d}  keys {len(v)}"
        )
    all_sizes = sorted(s for v in sizes.values() for s in v)
    median_bytes = statistics.median(all_sizes)
    mean_bytes = sum(all_sizes) / len(all_sizes)
    typer.echo(
        f"  state bytes per key: median {median_bytes:.0f}, mean {mean_bytes:.1f}, "
        f"p99 {all_sizes[int(0.99 * (len(all_sizes) - 1))]}"
    )

    prefix = stream[: min(naive_events, len(stream))]
    naive = len(prefix) / _cpu(lambda: _run_naive(NaivePipeline(spec), prefix))
    ours_prefix, _, _ = _batch_rate(spec, prefix, 1)
    typer.echo(
        f"same first {len(prefix)} events: batch {ours_prefix:,.0f}/s, naive {naive:,.0f}/s "
        f"(x{ours_prefix / naive:.1f})"
    )
    small = _flat(spec, SMALL_POPULATION, seed, measure=50_000, naive_measure=2_000)
    large = _flat(spec, LARGE_POPULATION, seed, measure=50_000, naive_measure=40)
    flat_ratio = large["ours"] / small["ours"]
    naive_flat = large["naive"] / small["naive"]
    typer.echo(
        f"flat: batch {small['ours']:,.0f}/s at ~{SMALL_POPULATION} and {large['ours']:,.0f}/s at "
        f"~{LARGE_POPULATION} events per key per window (ratio {flat_ratio:.2f}); naive "
        f"{small['naive']:,.0f}/s and {large['naive']:,.1f}/s (ratio {naive_flat:.4f})"
    )
    memory: dict[str, float] = {}
    if memory_keys:
        memory = _memory_per_key(spec, memory_keys)
        typer.echo(
            f"memory: {memory['bytes_per_key']:.0f} B of process memory per live key at "
            f"{memory['live_keys']:,.0f} keys (batch engine)"
        )
    replay_eps = None
    if replay:
        replay_eps, profile = _replay_actions(stream, 14)
        typer.echo(
            f"whole pipeline (replay_actions: decode, gate, windows, scoring, decisions): {replay_eps:,.0f} events/s"
        )
        typer.echo("profile of replay_actions (top by self time):\n" + profile)
    typer.echo(f"machine: load average {os.getloadavg()[0]:.2f}")
    return {
        "bench": "velocity",
        "workload": kind,
        "events": len(stream),
        "features": len(spec.feature_names()),
        "keys_per_event": round(keys_per_event, 3),
        "events_per_s": round(batch),
        "batch_events_per_s": round(batch),
        "batch_events_per_s_from_facts": round(batch_facts),
        "python_fanout_events_per_s": round(python_fanout),
        "per_key_on_event_us": round(per_key["on_event_us"], 3),
        "per_key_update_with_encode_us": round(per_key["on_event_encode_us"], 3),
        "naive_events_per_s": round(naive),
        "engine_events_per_s_same_prefix": round(ours_prefix),
        "batch_to_naive_same_events": round(ours_prefix / naive, 2),
        "flat_ratio": round(flat_ratio, 3),
        "events_per_s_small_window": round(small["ours"]),
        "events_per_s_large_window": round(large["ours"]),
        "naive_flat_ratio": round(naive_flat, 5),
        "bytes_per_key_median": median_bytes,
        "bytes_per_key": round(mean_bytes, 1),
        "live_keys": n_keys,
        "memory_bytes_per_live_key": round(memory["bytes_per_key"]) if memory else None,
        "memory_live_keys": memory.get("live_keys"),
        "replay_events_per_s": round(replay_eps) if replay_eps else None,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    typer.run(bench_velocity_cmd)
