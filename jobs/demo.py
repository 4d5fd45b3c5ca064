"""``streamwarden demo`` / ``make demo``: the embedded default, end to end, with a live summary.

Starts the embedded broker, produces live generated traffic (event time = now, with every abuse
scenario), and consumes the ``events`` topic, printing counts per event type and per scenario every
few seconds. Ctrl-C (or ``--duration-s``) stops the generator, the consumer and the broker, in that order.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Annotated

import typer

from deploy.broker import EmbeddedBroker
from jobs.config import TopicsConfig
from jobs.generate import KafkaSink, Pacer, run_generate
from jobs.kafka_io import make_consumer, poll_batch
from operators.traffic import Label, TrafficRecord, TrafficSpec, iter_traffic, labels, load_spec
from schemas import streamwarden_pb2 as pb
from schemas.codec import SourceRef, decode_event

_EVENT_TYPES = {v: k.lower() for k, v in pb.Event.Type.items()}


class LabelIndex:
    """Which scenario, if any, an event's actor (account, ip, device) belonged to at its event time."""

    def __init__(self, truth: list[Label]) -> None:
        self._spans: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
        for lab in truth:
            self._spans.setdefault((lab.entity_kind, lab.entity_id), []).append(
                (lab.start_ms, lab.end_ms, lab.scenario)
            )

    def scenario_of(self, event: pb.Event) -> str:
        actor = event.actor
        for kind, ident in (("account", actor.account_id), ("ip", actor.ip), ("device", actor.device_id)):
            for start_ms, end_ms, scenario in self._spans.get((kind, ident), ()):
                if start_ms <= event.event_time_ms < end_ms:
                    return scenario
        return "organic"


def _until(stop: threading.Event, records: Iterator[TrafficRecord]) -> Iterator[TrafficRecord]:
    for record in records:
        if stop.is_set():
            return
        yield record


def demo_cmd(
    duration_s: Annotated[
        float, typer.Option(help="Stop after this many seconds (0 = run until Ctrl-C).", min=0)
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Traffic seed.")] = 1,
    report_every_s: Annotated[float, typer.Option(help="Seconds between summary lines.", min=0.2)] = 3.0,
    traffic_duration_s: Annotated[
        float, typer.Option(help="Event-time length of the generated traffic; scenarios scale along.", min=10)
    ] = 180.0,
) -> None:
    """Run the embedded default: broker, live generated traffic, consumer, live summary."""
    topics = TopicsConfig()  # type: ignore[call-arg]
    stop = threading.Event()
    with EmbeddedBroker() as broker:
        broker.create_topics([topics.events, topics.deadletter, topics.actions, topics.alerts], partitions=3)
        typer.echo(f"embedded broker: {broker.bootstrap_servers} (topics: {topics.events}, ...)")
        spec: TrafficSpec = load_spec(None, seed=seed, start_ms=int(time.time() * 1000)).scaled_to(
            traffic_duration_s
        )
        index = LabelIndex(labels(spec))
        kafka = broker.kafka_config()
        producer_error: list[BaseException] = []

        def produce() -> None:
            try:
                run_generate(
                    spec,
                    KafkaSink(kafka, topics.events),
                    pacer=Pacer(live=True),
                    records=_until(stop, iter_traffic(spec)),
                )
            except BaseException as exc:  # surfaced by the main thread
                producer_error.append(exc)

        generator = threading.Thread(target=produce, name="generator", daemon=True)
        generator.start()
        consumer = make_consumer(kafka, "streamwarden-demo")
        consumer.subscribe([topics.events])
        by_type: Counter[str] = Counter()
        by_scenario: Counter[str] = Counter()
        dead: Counter[str] = Counter()
        t0 = last = time.monotonic()
        total = 0
        try:
            while not stop.is_set():
                for msg in poll_batch(consumer, max_batch=1000, timeout_s=0.2):
                    src = SourceRef(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
                    out = decode_event(msg.value(), src, now_ms=int(time.time() * 1000))
                    total += 1
                    if isinstance(out, pb.DeadLetter):
                        dead[pb.DeadLetter.ErrorKind.Name(out.error_kind)] += 1
                    else:
                        by_type[_EVENT_TYPES[out.type]] += 1
                        by_scenario[index.scenario_of(out)] += 1
                now = time.monotonic()
                if now - last >= report_every_s:
                    last = now
                    typer.echo(_summary(now - t0, total, by_type, by_scenario, dead))
                if producer_error:
                    raise producer_error[0]
                if duration_s and now - t0 >= duration_s:
                    break
        except KeyboardInterrupt:
            typer.echo("stopping ...")
        finally:
            stop.set()
            generator.join(timeout=10)
            consumer.close()
        typer.echo(_summary(time.monotonic() - t0, total, by_type, by_scenario, dead))
    typer.echo("broker stopped")


def _summary(
    elapsed_s: float, total: int, by_type: Counter[str], by_scenario: Counter[str], dead: Counter[str]
) -> str:
    types = " ".join(f"{k}={v}" for k, v in by_type.most_common())
    scen = " ".join(f"{k}={v}" for k, v in by_scenario.most_common())
    dl = " ".join(f"{k}={v}" for k, v in dead.most_common()) or "none"
    return (
        f"[{elapsed_s:6.1f}s] events={total} ({total / max(elapsed_s, 1e-9):.0f}/s)\n"
        f"  by type:     {types}\n  by scenario: {scen}\n  dead letters: {dl}"
    )
