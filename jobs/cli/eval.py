"""``streamwarden eval``: detection quality per scenario, time to action and latency of one engine on
labeled traffic; ``streamwarden eval shadow``: two policies (or model versions) side by side.

The traffic is generated for a seed (``operators.traffic``) or read from files (``--events FILE``:
length-delimited ``Event`` protobufs, ``--labels FILE``: JSON-lines labels, as written by
``streamwarden generate --to file``). It runs through one engine:

- ``replay``: ``operators.pipeline.replay_actions`` in this process (the engines' reference);
- ``beam``: the Beam job (DirectRunner) against the embedded broker (or ``--bootstrap``);
- ``flink``: the Flink job on a local MiniCluster against the embedded broker (or ``--bootstrap``).

Actions are joined with the labels by ``operators.evaluation`` (every definition is in
``operators/evaluation/report.py``). An engine that is not available is an error (exit code 3), never
skipped. Latency: replay = wall time from handing a record to the pipeline to its decision (scoring runs
in micro-batches); beam/flink = decision time minus the time the record was produced, with the whole
stream produced first (a backlog: the job's start-up and queueing included, so it is an upper bound, not
a live-load figure; ``streamwarden bench beam|flink`` measure latency under a fixed offered load).
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from streamwarden.jobs.config import JobConfig, KafkaConfig, TopicsConfig
from streamwarden.operators.errors import ConfigError, StreamwardenError
from streamwarden.operators.evaluation import EvaluationReport, compare_policies
from streamwarden.operators.evaluation.harness import (
    LabeledTraffic,
    first_actions,
    format_table,
    latencies_ms,
    score_run,
    summary,
    traffic_from_files,
    traffic_from_spec,
)
from streamwarden.operators.evaluation.html import render_html
from streamwarden.operators.evaluation.report import OverallReport
from streamwarden.operators.evaluation.shadow import PolicyDiff, RuleDiff
from streamwarden.operators.pipeline import Stages, StagesConfig, replay_actions
from streamwarden.operators.traffic import TrafficSpec, load_spec, small_spec
from streamwarden.schemas import streamwarden_pb2 as pb

DEFAULT_EVAL_SEED = 2
"""Held-out traffic: the shipped models were trained on seed 1."""
EXIT_CONFIG = 2
EXIT_ENGINE = 3


class EngineName(StrEnum):
    replay = "replay"
    beam = "beam"
    flink = "flink"


class EngineUnavailable(StreamwardenError):
    """The chosen engine cannot run here (not built yet, or failed to start)."""


@dataclass
class EngineRun:
    """What one engine emitted for one stream, and how long it took."""

    engine: str
    actions: list[pb.Action]
    ingest_ms: dict[str, int]
    """Event id → wall ms the record entered the engine (replay) or was produced (beam, flink)."""
    latency_basis: str
    wall_s: float
    counters: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- engines


def run_replay(traffic: LabeledTraffic, config: StagesConfig) -> EngineRun:
    """``replay_actions`` over the records in arrival order, in this process."""
    stages = Stages.build(config)
    ingest: dict[str, int] = {}

    def records() -> Iterator[bytes]:
        for payload, eid in zip(traffic.payloads, traffic.event_ids, strict=True):
            if eid is not None:
                ingest.setdefault(eid, int(time.time() * 1000))
            yield payload

    started = time.perf_counter()
    result = replay_actions(records(), stages, feature_records=False)
    wall_s = time.perf_counter() - started
    c = result.counters
    return EngineRun(
        "replay",
        result.actions,
        ingest,
        "in-process replay: wall time from handing the record to the pipeline to its decision "
        "(scoring in micro-batches of 512)",
        wall_s,
        {
            "records": c.records,
            "events": c.events,
            "dead_letters": dict(c.dead_letters),
            "actions": dict(c.actions),
            "suppressed_actions": c.suppressed_actions,
            "imputed_vectors": c.imputed_vectors,
        },
    )


def _topics(tag: str) -> TopicsConfig:
    prefix = f"eval-{tag}-{uuid.uuid4().hex[:8]}"
    return TopicsConfig(  # type: ignore[call-arg]
        events=f"{prefix}-events",
        actions=f"{prefix}-actions",
        deadletter=f"{prefix}-deadletter",
        features=f"{prefix}-features",
    )


def _produce(kafka: KafkaConfig, topic: str, traffic: LabeledTraffic) -> dict[str, int]:
    """Produce every record (keyed by actor account) to one partition; event id → produce wall ms."""
    from streamwarden.jobs.kafka_io import CheckedProducer

    producer = CheckedProducer.create(kafka, **{"linger.ms": 20, "batch.num.messages": 10_000})
    sent: dict[str, int] = {}
    for payload, key, eid in zip(traffic.payloads, traffic.keys, traffic.event_ids, strict=True):
        if eid is not None:
            sent.setdefault(eid, int(time.time() * 1000))
        producer.produce(topic, payload, key, partition=0)
    producer.flush(120.0)
    return sent


def _decode_actions(values: list[bytes | None]) -> list[pb.Action]:
    return [pb.Action.FromString(v) for v in values if v]


_BACKLOG = (
    "{engine} on Kafka, backlog mode: the whole stream was produced, then the job started and drained it; "
    "latency = decision time - produce time, so it includes the job's start-up and queueing behind the "
    "backlog (an upper bound, not a live-load figure: see streamwarden bench {name})"
)


def run_beam_engine(traffic: LabeledTraffic, job: JobConfig) -> EngineRun:
    """The Beam job (DirectRunner) over the stream, produced to ``job``'s Kafka first."""
    try:
        from streamwarden.jobs.beam.kafka_source import ReadOptions
        from streamwarden.jobs.beam.pipeline import job_metrics, run_beam
        from streamwarden.jobs.kafka_io import drain, ensure_topics
    except ImportError as exc:
        raise EngineUnavailable(f"the Beam engine is not available: {exc}") from exc
    topics = job.topics
    ensure_topics(
        job.kafka, [topics.events, topics.actions, topics.deadletter, topics.features], partitions=1
    )
    sent = _produce(job.kafka, topics.events, traffic)
    started = time.perf_counter()
    options = ReadOptions(  # type: ignore[call-arg]
        start="earliest", max_records=len(traffic.payloads), idle_timeout_s=30.0, bundle_max_ms=100
    )
    try:
        result = run_beam(job, read_options=options)
    except (StreamwardenError, ImportError, NotImplementedError) as exc:
        raise EngineUnavailable(f"the Beam job failed: {exc}") from exc
    wall_s = time.perf_counter() - started
    m = job_metrics(result)
    written = m.counter(f"kafka_sink.{topics.actions}.records_written")
    records = drain(
        job.kafka, topics.actions, expected_count=written or None, idle_timeout_s=3.0, max_wait_s=120
    )
    actions = _decode_actions([r.value for r in records])
    counters = {
        "records": m.counter("records_in"),
        "events": m.counter("events"),
        "dead_letters": {
            k.split(".", 1)[1]: v for k, v in m.counters.items() if k.startswith("dead_letters.")
        },
        "actions": {k.split(".", 1)[1]: v for k, v in m.counters.items() if k.startswith("actions.")},
        "suppressed_actions": m.counter("actions_suppressed"),
        "actions_read_back": len(actions),
    }
    return EngineRun(
        "beam", actions, sent, _BACKLOG.format(engine="Beam DirectRunner", name="beam"), wall_s, counters
    )


def run_flink_engine(traffic: LabeledTraffic, job: JobConfig, log_dir: Path) -> EngineRun:
    """The Flink job (local MiniCluster, its own process) over the stream, bounded at the produced end."""
    try:
        from streamwarden.jobs.bench.flink import produce, read_topic, run_bounded, write_job_config
        from streamwarden.jobs.flink.job import FlinkJobOptions
        from streamwarden.jobs.kafka_io import ensure_topics
    except ImportError as exc:
        raise EngineUnavailable(f"the Flink engine is not available: {exc}") from exc
    topics = job.topics
    ensure_topics(
        job.kafka, [topics.events, topics.actions, topics.deadletter, topics.features], partitions=1
    )
    # produce() reports end offsets, not per-record times: every record is stamped with the time the
    # produce call started, so latency is over-, never under-stated.
    started_ms = int(time.time() * 1000)
    sent = {eid: started_ms for eid in traffic.event_ids if eid is not None}
    ends = produce(job.kafka, topics.events, traffic.payloads, keys=traffic.keys)
    config_path = write_job_config(log_dir / "job.yaml", job.model_copy(update={"engine": "flink"}))
    started = time.perf_counter()
    try:
        options = FlinkJobOptions(job_name="streamwarden-eval")  # type: ignore[call-arg]
        report = run_bounded(config_path, log_dir, ends, options=options, timeout_s=900)
    except (RuntimeError, StreamwardenError, NotImplementedError) as exc:
        raise EngineUnavailable(f"the Flink job failed: {str(exc)[-2000:]}") from exc
    wall_s = time.perf_counter() - started
    out = read_topic(job.kafka, topics.actions, expected=None, timeout_s=120, settle_s=3.0)
    actions = _decode_actions([r.value for r in out])
    return EngineRun(
        "flink",
        actions,
        sent,
        _BACKLOG.format(engine="Flink MiniCluster", name="flink"),
        wall_s,
        {"records": len(traffic.payloads), "actions_read_back": len(actions), "job": report},
    )


def run_engine(
    engine: EngineName,
    traffic: LabeledTraffic,
    config: StagesConfig,
    *,
    bootstrap: str | None = None,
) -> EngineRun:
    """Run ``traffic`` through ``engine``; ``EngineUnavailable`` if it cannot run here."""
    if engine is EngineName.replay:
        return run_replay(traffic, config)
    job_fields: dict[str, Any] = {
        "topics": _topics(engine.value),
        "group_id": f"streamwarden-eval-{uuid.uuid4().hex[:8]}",
        "engine": engine.value,
        "policy": config.policy,
        "feature_spec": config.feature_spec,
    }
    if config.model_cards is not None:
        if len(config.model_cards) != 1:
            raise ConfigError(f"the {engine.value} job takes one model card, got {len(config.model_cards)}")
        job_fields["model_card"] = config.model_cards[0]

    def run(kafka: KafkaConfig) -> EngineRun:
        job = JobConfig(kafka=kafka, **job_fields)
        if engine is EngineName.beam:
            return run_beam_engine(traffic, job)
        with tempfile.TemporaryDirectory(prefix="streamwarden-eval-flink-") as tmp:
            return run_flink_engine(traffic, job, Path(tmp))

    if bootstrap is not None:
        from streamwarden.jobs.kafka_io import embedded_kafka_config

        return run(embedded_kafka_config(bootstrap))
    from streamwarden.deploy.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        return run(embedded_kafka_config(broker.bootstrap_servers))


# ---------------------------------------------------------------- shared CLI plumbing


def load_traffic(
    seed: int | None,
    spec_path: Path | None,
    small: bool,
    duration_s: float | None,
    events: Path | None,
    labels_path: Path | None,
    variant: str | None = None,
) -> LabeledTraffic:
    """The labeled traffic the options describe (files, a sampled variant, or generated for a seed)."""
    if (events is None) != (labels_path is None):
        raise ConfigError("--events and --labels go together")
    if events is not None and labels_path is not None:
        if seed is not None or spec_path is not None or small or duration_s is not None or variant:
            raise ConfigError(
                "--events/--labels read traffic from files: do not combine with "
                "--seed/--spec/--small/--duration-s/--variant"
            )
        return traffic_from_files(events, labels_path)
    if variant is not None:
        from streamwarden.operators.traffic.variants import SPLITS, default_seeds, variant_spec

        if spec_path is not None or small:
            raise ConfigError("--variant samples its own spec: do not combine with --spec/--small")
        if variant not in SPLITS:
            raise ConfigError(f"--variant: unknown split {variant!r}; known: {list(SPLITS)}")
        chosen = default_seeds(variant)[0] if seed is None else seed
        vspec = variant_spec(variant, chosen)
        if duration_s is not None:
            vspec = vspec.scaled_to(duration_s)
        return traffic_from_spec(vspec, f"variant {variant} seed {chosen}, {vspec.duration_s:g} s")
    if small and spec_path is not None:
        raise ConfigError("--small and --spec are exclusive")
    chosen = DEFAULT_EVAL_SEED if seed is None else seed
    spec: TrafficSpec = small_spec(chosen) if small else load_spec(spec_path, seed=chosen)
    if duration_s is not None:
        spec = spec.scaled_to(duration_s)
    what = "small spec" if small else (str(spec_path) if spec_path is not None else "default spec")
    return traffic_from_spec(spec, f"seed {chosen}, {what}, {spec.duration_s:g} s")


SeedOpt = Annotated[
    int | None, typer.Option(help=f"Traffic seed (default {DEFAULT_EVAL_SEED}: held out from training).")
]
SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="TrafficSpec YAML (default: the built-in 10-minute spec).")
]
SmallOpt = Annotated[bool, typer.Option("--small", help="Use the small 2-minute spec (tests, demos).")]
DurationOpt = Annotated[
    float | None, typer.Option(help="Event-time length, s; scenario windows scale along.", min=1)
]
EventsOpt = Annotated[
    Path | None, typer.Option("--events", help="Read events from this length-delimited Event protobuf file.")
]
LabelsOpt = Annotated[
    Path | None, typer.Option("--labels", help="Ground-truth labels (JSON lines) for --events.")
]
VariantOpt = Annotated[
    str | None,
    typer.Option(
        "--variant",
        help="Sample an adversarial variant of this split (train|holdout|unseen|outside) for --seed.",
    ),
]
ActionsOutOpt = Annotated[
    Path | None,
    typer.Option(
        "--actions-out", help="Write the run's actions here (.jsonl: JSON lines; else delimited protobuf)."
    ),
]


def _fail(code: int, exc: BaseException) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(code)


# ---------------------------------------------------------------- eval


def evaluate_engine(
    traffic: LabeledTraffic,
    engine: EngineName,
    config: StagesConfig,
    *,
    bootstrap: str | None = None,
) -> tuple[EngineRun, EvaluationReport, dict[str, Any]]:
    """Run and score: the engine's output, the report and the JSON summary of ``eval --json``."""
    run = run_engine(engine, traffic, config, bootstrap=bootstrap)
    report = score_run(traffic, run.actions, run.ingest_ms)
    meta: dict[str, Any] = {
        "engine": run.engine,
        "source": traffic.source,
        "policy": str(config.policy) if config.policy is not None else "(default)",
        "records": len(traffic.payloads),
        "events": len(traffic.events),
        "labels": len(traffic.labels),
        "actions": len(run.actions),
        "wall_s": round(run.wall_s, 3),
        "records_per_s": round(len(traffic.payloads) / run.wall_s, 1) if run.wall_s > 0 else None,
        "latency_basis": run.latency_basis,
        "counters": run.counters,
    }
    return run, report, summary(report, **meta)


def eval_cmd(
    ctx: typer.Context,
    seed: SeedOpt = None,
    spec: SpecOpt = None,
    small: SmallOpt = False,
    duration_s: DurationOpt = None,
    events: EventsOpt = None,
    labels_path: LabelsOpt = None,
    variant: VariantOpt = None,
    actions_out: ActionsOutOpt = None,
    engine: Annotated[EngineName, typer.Option(help="Engine to evaluate.")] = EngineName.replay,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: the shipped policy).")] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(help="beam/flink: use this Kafka (plaintext) instead of starting the embedded broker."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json/--no-json", help="Print one JSON object last instead of the table.")
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write an HTML report with plots here.")
    ] = None,
) -> None:
    """Precision/recall per scenario, organic false-positive rate, time to action and latency of one engine.

    Registered as the callback of the ``eval`` group (``invoke_without_command=True``), so that
    ``streamwarden eval [OPTIONS]`` evaluates and ``streamwarden eval shadow ...`` runs the subcommand."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        traffic = load_traffic(seed, spec, small, duration_s, events, labels_path, variant)
        config = StagesConfig(policy=policy)
        if not as_json:
            typer.echo(
                f"{traffic.source}: {len(traffic.payloads)} records, {len(traffic.labels)} labels, "
                f"scenarios {', '.join(traffic.scenarios)}; engine {engine.value} ..."
            )
        run, report, result = evaluate_engine(traffic, engine, config, bootstrap=bootstrap)
    except EngineUnavailable as exc:
        raise _fail(EXIT_ENGINE, exc) from exc
    except StreamwardenError as exc:
        raise _fail(EXIT_CONFIG, exc) from exc
    if actions_out is not None:
        from streamwarden.operators.evaluation.actions_io import write_actions

        write_actions(actions_out, run.actions)
    if html is not None:
        meta = {k: v for k, v in result.items() if k not in ("overall", "scenarios", "counters")}
        page = render_html(
            report,
            first_actions(run.actions, traffic.labels, traffic.event_scenarios),
            traffic.labels,
            latencies_ms(run.actions, run.ingest_ms),
            start_ms=traffic.start_ms,
            end_ms=traffic.end_ms,
            meta=meta,
            title=f"streamwarden eval: {run.engine}, {traffic.source}",
            actions=run.actions,
            thresholds=Stages.build(config).scoring.thresholds,
        )
        html.write_text(page, encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True, allow_nan=False))
        return
    typer.echo(
        f"{run.engine}: {len(run.actions)} actions in {run.wall_s:.1f} s "
        f"({result['records_per_s'] or 0:,.0f} records/s); counters {run.counters}"
    )
    typer.echo(format_table(report, run.latency_basis))
    if html is not None:
        typer.echo(f"wrote {html}")


# ---------------------------------------------------------------- shadow


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _delta(value: float | None) -> str:
    return "" if value is None or value == 0 else f" ({value:+.3f})"


def _overall_line(label: str, a: OverallReport, b: OverallReport) -> str:
    return (
        f"{label}: {a.counted_actions} -> {b.counted_actions} actions, precision {_fmt(a.precision)} -> "
        f"{_fmt(b.precision)}{_delta(_change(a.precision, b.precision))}, recall {_fmt(a.recall)} -> "
        f"{_fmt(b.recall)}{_delta(_change(a.recall, b.recall))}, false positives {a.false_positives} -> "
        f"{b.false_positives}"
    )


def _change(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


_MODE_NAMES = {"enforce": "ENFORCE", "shadow": "SHADOW_MODE"}
"""A policy file's mode spelling → the Action.Mode name the rows show for rules that took actions."""


def _declared(d: RuleDiff) -> str:
    """Where the rule is defined: both policies, only A (removed), only B (new), or unknown (-)."""
    if d.declared_mode_a is not None and d.declared_mode_b is None:
        return "removed in B"
    if d.declared_mode_b is not None and d.declared_mode_a is None:
        return "new in B"
    return ""


def format_diff(diff: PolicyDiff) -> str:
    """Per rule: actions on each side, how many differ, modes, precision and recall A → B; then the
    enforced totals, the shadow-mode totals apart, and the rules that never fired."""
    head = (
        f"{'rule':<28} {'A':>6} {'B':>6} {'only A':>6} {'only B':>6} {'both':>6}  {'mode A -> B':<26} "
        f"{'precision A -> B':<26} {'recall A -> B':<26}"
    )
    lines = [head, "-" * len(head)]
    for rule, d in diff.rules.items():
        mode_a = "/".join(d.modes_a) or _MODE_NAMES.get(d.declared_mode_a or "", "-")
        mode_b = "/".join(d.modes_b) or _MODE_NAMES.get(d.declared_mode_b or "", "-")
        prec = f"{_fmt(d.precision_a)} -> {_fmt(d.precision_b)}{_delta(d.precision_change)}"
        rec = f"{_fmt(d.recall_a)} -> {_fmt(d.recall_b)}{_delta(d.recall_change)}"
        notes = [n for n in (_declared(d), "never fired" if rule in diff.never_fired_either else "") if n]
        lines.append(
            f"{rule:<28} {d.actions_a:>6} {d.actions_b:>6} {d.only_in_a:>6} {d.only_in_b:>6} {d.in_both:>6}  "
            f"{f'{mode_a} -> {mode_b}':<26} {prec:<26} {rec:<26}"
            + (f"  [{', '.join(notes)}]" if notes else "")
        )
        for ex in d.examples_only_in_a[:2]:
            lines.append(f"{'':<30}only in A: {ex}")
        for ex in d.examples_only_in_b[:2]:
            lines.append(f"{'':<30}only in B: {ex}")
    lines.append("-" * len(head))
    lines.append(_overall_line("enforced (ENFORCE-mode actions only)", diff.overall_a, diff.overall_b))
    lines.append(_overall_line("shadow mode (recorded, not enforced)", diff.shadow_a, diff.shadow_b))
    lines.append(
        f"never fired: in A {', '.join(diff.never_fired_a) or '-'}; in B {', '.join(diff.never_fired_b) or '-'}"
    )
    return "\n".join(lines)


def policy_rules(path: Path | None) -> dict[str, str]:
    """Rule id -> declared mode of the policy at ``path`` (the shipped one for ``None``), in order."""
    from streamwarden.operators.policy import DEFAULT_POLICY_PATH, load_policy

    policy = load_policy(path if path is not None else DEFAULT_POLICY_PATH)
    return {rule.id: rule.mode for rule in policy.rules}


def run_shadow(
    traffic: LabeledTraffic, config_a: StagesConfig, config_b: StagesConfig, *, max_examples: int = 5
) -> tuple[PolicyDiff, EngineRun, EngineRun]:
    """Both configurations replayed over the same traffic, compared rule by rule (every rule of both
    policies listed, those that never fired included)."""
    run_a = run_replay(traffic, config_a)
    run_b = run_replay(traffic, config_b)
    diff = compare_policies(
        run_a.actions,
        run_b.actions,
        traffic.labels,
        max_examples=max_examples,
        rules_a=policy_rules(config_a.policy),
        rules_b=policy_rules(config_b.policy),
    )
    return diff, run_a, run_b


def shadow_cmd(
    policy_a: Annotated[Path, typer.Option("--policy-a", help="Policy A (e.g. the one in production).")],
    policy_b: Annotated[Path, typer.Option("--policy-b", help="Policy B (e.g. the candidate).")],
    model_a: Annotated[
        list[Path] | None,
        typer.Option("--model-a", help="Model card(s) for A (repeatable; default: shipped)."),
    ] = None,
    model_b: Annotated[
        list[Path] | None,
        typer.Option("--model-b", help="Model card(s) for B (repeatable; default: shipped)."),
    ] = None,
    seed: SeedOpt = None,
    spec: SpecOpt = None,
    small: SmallOpt = False,
    duration_s: DurationOpt = None,
    events: EventsOpt = None,
    labels_path: LabelsOpt = None,
    max_examples: Annotated[int, typer.Option(help="Differing actions listed per rule.", min=0)] = 5,
    as_json: Annotated[
        bool, typer.Option("--json/--no-json", help="Print one JSON object last instead of the table.")
    ] = False,
) -> None:
    """Shadow-mode comparison: two policies (or model versions) on the same labeled traffic, per rule."""
    try:
        traffic = load_traffic(seed, spec, small, duration_s, events, labels_path)
        config_a = StagesConfig(policy=policy_a, model_cards=tuple(model_a) if model_a else None)
        config_b = StagesConfig(policy=policy_b, model_cards=tuple(model_b) if model_b else None)
        diff, run_a, run_b = run_shadow(traffic, config_a, config_b, max_examples=max_examples)
    except StreamwardenError as exc:
        raise _fail(EXIT_CONFIG, exc) from exc
    result = {
        "source": traffic.source,
        "policy_a": str(policy_a),
        "policy_b": str(policy_b),
        "actions_a": len(run_a.actions),
        "actions_b": len(run_b.actions),
        **diff.as_dict(),
    }
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True, allow_nan=False))
        return
    typer.echo(
        f"{traffic.source}: A = {policy_a} ({len(run_a.actions)} actions), "
        f"B = {policy_b} ({len(run_b.actions)} actions)"
    )
    typer.echo(format_diff(diff))


# ---------------------------------------------------------------- generalize


def _seeds(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(f"seeds must be comma-separated integers, got {text!r}") from exc


def _split_runs(
    split: str, seeds: list[int], configs: dict[str, StagesConfig], log: Any
) -> dict[str, list[Any]]:
    """Generate each variant once, replay it under every config; config name → scored runs."""
    from streamwarden.operators.evaluation.generalize import scored_run
    from streamwarden.operators.traffic.variants import variant_spec

    out: dict[str, list[Any]] = {name: [] for name in configs}
    for seed in seeds:
        if split == "in_distribution":
            traffic = traffic_from_spec(load_spec(None, seed=seed), f"seed {seed}, default spec")
        else:
            traffic = traffic_from_spec(variant_spec(split, seed), f"variant {split} seed {seed}")  # type: ignore[arg-type]
        for name, config in configs.items():
            run = run_replay(traffic, config)
            out[name].append(scored_run(traffic, run.actions, run.wall_s))
            log(
                f"  {split} seed {seed} [{name}]: {len(traffic.payloads)} records, {len(run.actions)} actions, "
                f"{len(traffic.payloads) / run.wall_s:,.0f} records/s"
            )
    return out


def format_generalization(result: dict[str, Any]) -> str:
    """Per split and family: precision, recall, median time to action; then trap false positives."""
    from streamwarden.operators.traffic import SCENARIO_NAMES

    head = f"{'split':<18} {'family':<20} {'labeled':>7} {'precision':>9} {'recall':>7} {'recall(all kinds)':>17} {'TTA p50 s':>9}"
    lines = [head, "-" * len(head)]
    for split, summary_ in result["splits"].items():
        for family in SCENARIO_NAMES:
            row = summary_["families"].get(family)
            if row is None or not row.get("labeled"):
                continue
            lines.append(
                f"{split:<18} {family:<20} {row['labeled']:>7} {_fmt(row['precision']):>9} "
                f"{_fmt(row['recall']):>7} {_fmt(row['recall_all_kinds']):>17} "
                f"{_fmt(row['time_to_action_s_p50'], '.1f'):>9}"
            )
        o = summary_["overall"]
        lines.append(
            f"{split:<18} {'overall':<20} {'':>7} {_fmt(o['precision']):>9} {_fmt(o['recall']):>7} "
            f"{_fmt(o['recall_all_kinds']):>17} {_fmt(o['time_to_action_s_p50'], '.1f'):>9}"
            f"   never acted on: {', '.join(o['never_actioned_kinds']) or '-'}"
        )
        lines.append("-" * len(head))
    lines.append("trap false positives (acted-on benign subjects / benign subjects):")
    for split, summary_ in result["splits"].items():
        traps = ", ".join(
            f"{k} {v['false_positives']}/{v['subjects']}"
            + (f" (+{v['collateral']} victims of attack events)" if v.get("collateral") else "")
            for k, v in summary_["traps"].items()
        )
        lines.append(f"  {split:<18} {traps or '-'}")
    return "\n".join(lines)


def generalize_cmd(
    seeds: Annotated[
        str, typer.Option(help="Unseen-seed and outside-range variant seeds (comma-separated).")
    ] = "300,301,302",
    in_dist_seed: Annotated[int, typer.Option(help="Seed of the default (in-distribution) spec run.")] = 2,
    lofo_dir: Annotated[
        Path | None,
        typer.Option(
            help="Leave-one-family-out models: DIR/<family>/gbt/model.yaml (streamwarden train --lofo DIR)."
        ),
    ] = None,
    lofo_seeds: Annotated[
        str | None, typer.Option(help="Seeds for the leave-one-family-out runs (default: --seeds).")
    ] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: the shipped policy).")] = None,
    as_json: Annotated[bool, typer.Option("--json/--no-json", help="Print one JSON object last.")] = False,
) -> None:
    """Generalization: in-distribution, unseen-seed, outside-range and leave-one-family-out tables (replay)."""
    from streamwarden.operators.evaluation.generalize import score_runs, split_summary
    from streamwarden.operators.traffic import SCENARIO_NAMES

    def log(msg: str) -> None:
        if not as_json:
            typer.echo(msg)
        else:
            typer.echo(msg, err=True)

    try:
        base = StagesConfig(policy=policy)
        seed_list = _seeds(seeds)
        result: dict[str, Any] = {"policy": str(policy) if policy else "(default)", "splits": {}}
        for split, split_seeds in (
            ("in_distribution", [in_dist_seed]),
            ("unseen", seed_list),
            ("outside", seed_list),
        ):
            runs = _split_runs(split, split_seeds, {"shipped": base}, log)["shipped"]
            result["splits"][split] = split_summary(score_runs(runs), runs, seeds=split_seeds)
        if lofo_dir is not None:
            configs = {}
            for family in SCENARIO_NAMES:
                card = lofo_dir / family / "gbt" / "model.yaml"
                if not card.is_file():
                    raise ConfigError(
                        f"{card}: no leave-one-family-out model (streamwarden train --lofo {lofo_dir})"
                    )
                configs[family] = StagesConfig(policy=policy, model_cards=(card,))
            lseeds = _seeds(lofo_seeds) if lofo_seeds else seed_list
            by_model = _split_runs("unseen", lseeds, configs, log)
            rows: dict[str, Any] = {}
            for family, runs in by_model.items():
                summary_ = split_summary(score_runs(runs), runs, seeds=lseeds, held_out=family)
                rows[family] = {
                    **summary_["families"].get(family, {"labeled": 0}),
                    "traps": summary_["traps"],
                }
            result["splits"]["leave_one_family_out"] = {
                "seeds": lseeds,
                "overall": {
                    "precision": None,
                    "recall": None,
                    "recall_all_kinds": None,
                    "time_to_action_s_p50": None,
                    "never_actioned_kinds": [],
                },
                "families": rows,
                "traps": {},
            }
    except StreamwardenError as exc:
        raise _fail(EXIT_CONFIG, exc) from exc
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True, allow_nan=False))
        return
    typer.echo(format_generalization(result))


def score_cmd(
    actions: Annotated[Path, typer.Option("--actions", help="Actions file (.jsonl or delimited protobuf).")],
    events: Annotated[Path, typer.Option("--events", help="The events file the actions were taken on.")],
    labels_path: Annotated[Path, typer.Option("--labels", help="Ground-truth labels (JSON lines).")],
    as_json: Annotated[bool, typer.Option("--json/--no-json", help="Print one JSON object last.")] = False,
) -> None:
    """Score an actions file (from any engine or tool) against labels, with the same report as eval."""
    from streamwarden.operators.evaluation.actions_io import read_actions

    try:
        traffic = traffic_from_files(events, labels_path)
        report = score_run(traffic, read_actions(actions))
    except StreamwardenError as exc:
        raise _fail(EXIT_CONFIG, exc) from exc
    if as_json:
        typer.echo(json.dumps(summary(report, source=traffic.source), sort_keys=True, allow_nan=False))
        return
    typer.echo(format_table(report))


eval_app = typer.Typer(
    name="eval",
    help="Detection quality on labeled traffic; shadow comparison of two policies.",
    add_completion=False,
)
eval_app.callback(invoke_without_command=True)(eval_cmd)
eval_app.command("shadow")(shadow_cmd)
eval_app.command("generalize")(generalize_cmd)
eval_app.command("score")(score_cmd)
