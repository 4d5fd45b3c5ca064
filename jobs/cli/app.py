"""The ``streamwarden`` command line: every command is registered here, by name.

A command's module is imported only when that command runs or shows its own ``--help``: Beam, PyFlink,
scikit-learn and ONNX Runtime take seconds to import, and ``streamwarden --help`` should not pay for
them. The group listings show the short help written next to each registration below (a test checks it
against the command's docstring).
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup, TyperOption


class Lazy(NamedTuple):
    """A command (or a whole ``typer.Typer`` group) at ``target`` = ``"module:attribute"``."""

    target: str
    short_help: str


#: group name -> command name -> where it lives. The one place where commands are registered.
COMMANDS: dict[str, dict[str, Lazy]] = {
    "streamwarden": {
        "run": Lazy(
            "streamwarden.jobs.cli.run:run_cmd",
            "Run the streamwarden job: events in, actions (and dead letters, features) out.",
        ),
        "demo": Lazy(
            "streamwarden.jobs.cli.demo:demo_cmd",
            "Run the embedded default: broker, live generated traffic with attacks, the Beam job, a live "
            "summary.",
        ),
        "broker": Lazy(
            "streamwarden.jobs.cli.broker:run_foreground_cmd",
            "Run the embedded Kafka-compatible broker (tansu, in memory) until Ctrl-C or SIGTERM.",
        ),
        "generate": Lazy(
            "streamwarden.jobs.cli.generate:generate_cmd",
            "Generate labeled platform traffic (organic users plus abuse scenarios), deterministic by seed.",
        ),
        "train": Lazy(
            "streamwarden.jobs.cli.models:train_cmd",
            "Train the gbt and logreg models on replayed features, export ONNX and write model cards.",
        ),
        "eval": Lazy(
            "streamwarden.jobs.cli.eval:eval_app",
            "Detection quality on labeled traffic; shadow comparison of two policies.",
        ),
    },
    "bench": {
        "generate": Lazy(
            "streamwarden.jobs.cli.generate:bench_generate_cmd",
            "Generator throughput to memory (the generator alone), to a file, and to Kafka (embedded "
            "broker).",
        ),
        "scorer": Lazy(
            "streamwarden.jobs.bench.scorer:bench_scorer_cmd",
            "Scorer rows/s at batch 1/64/256/1024 and p50/p99 per call per model; decider decisions/s.",
        ),
        "velocity": Lazy(
            "streamwarden.jobs.bench.velocity:bench_velocity_cmd",
            "Velocity core (batch and per-key paths) vs naive oracle: events/s, flat ratio, bytes and memory per key; JSON line last.",
        ),
        "beam": Lazy(
            "streamwarden.jobs.bench.beam:bench_beam_cmd",
            "Sustained events/s and event→action latency of the Beam job, next to the plain-Python replay.",
        ),
        "flink": Lazy(
            "streamwarden.jobs.bench.flink:bench_flink_cmd",
            "The Flink job's sustained events/s (events → actions), p99 latency and layouts",
        ),
        "all": Lazy(
            "streamwarden.jobs.bench.all:bench_all_cmd",
            "Every benchmark in one go (velocity, scorer, beam, flink): one JSON object of figures and "
            "ratios.",
        ),
    },
    "feedback": {
        "build": Lazy(
            "streamwarden.jobs.cli.feedback:feedback_build_cmd",
            "Join reviewer decisions with the feature log into a training dataset (``train --dataset``).",
        ),
    },
    "anomaly": {
        "score": Lazy(
            "streamwarden.jobs.cli.anomaly:score_cmd",
            "Backtest a series: score every row with the streaming detector and alert lifecycle.",
        ),
        "eval": Lazy(
            "streamwarden.jobs.cli.anomaly:eval_cmd",
            "Evaluate detectors on synthetic series: precision, recall, detection delay, false alerts per "
            "day.",
        ),
    },
    "models": {
        "report": Lazy(
            "streamwarden.jobs.cli.models:models_report_cmd",
            "Print the held-out precision, recall and PR-AUC of the model cards, overall and per scenario.",
        ),
        "policy-report": Lazy(
            "streamwarden.jobs.cli.models:policy_report_cmd",
            "Per-rule precision and per-scenario recall of the policy on labelled held-out traffic.",
        ),
    },
    "flink": {
        "jars": Lazy(
            "streamwarden.jobs.cli.flink:jars_cmd",
            "Fetch (if needed) the pinned Kafka connector jars, build the job's own jar, print their paths.",
        ),
        "cluster-start": Lazy(
            "streamwarden.jobs.cli.flink:cluster_start_cmd",
            "Start a local standalone Flink cluster bound to 127.0.0.1 and print its REST URL.",
        ),
        "cluster-submit": Lazy(
            "streamwarden.jobs.cli.flink:cluster_submit_cmd",
            "Submit a Python job (detached) to the cluster started by 'cluster-start'; print its job id.",
        ),
        "cluster-stop": Lazy(
            "streamwarden.jobs.cli.flink:cluster_stop_cmd",
            "Stop the cluster started by 'cluster-start' and kill any process it left behind.",
        ),
        "smoke": Lazy(
            "streamwarden.jobs.cli.flink:smoke_cmd",
            "Run the Flink smoke job (bytes in -> keyed Python state -> EXACTLY_ONCE out) on a MiniCluster "
            "per mode.",
        ),
    },
    "review": {
        "serve": Lazy(
            "streamwarden.jobs.cli.review:serve_cmd",
            "Run the review service: consume actions into review queues, serve the console, produce labels.",
        ),
        "migrate": Lazy(
            "streamwarden.jobs.cli.review:migrate_cmd",
            "Create or upgrade the review store's schema (Alembic migrations to the latest revision).",
        ),
        "add-user": Lazy(
            "streamwarden.jobs.cli.review:add_user_cmd",
            "Add a console user (argon2id-hashed password) or a service account.",
        ),
        "api-key": Lazy(
            "streamwarden.jobs.cli.review:api_key_cmd",
            "Issue a new API key for a user (replaces the old one); printed once, only its hash is stored.",
        ),
    },
    "transparency": {
        "statements": Lazy(
            "streamwarden.jobs.cli.transparency:statements_cmd",
            "Write a period's statements of reasons as the Transparency Database API's batch JSON.",
        ),
        "report": Lazy(
            "streamwarden.jobs.cli.transparency:report_cmd",
            "Compute the transparency report of a period (DSA Art. 15) as text, JSON, CSV and HTML.",
        ),
    },
    "policy": {
        "validate": Lazy(
            "streamwarden.jobs.cli.policy:validate_cmd",
            "Check a policy file: syntax, rule fields, and every name against the feature spec and the models.",
        ),
        "test": Lazy(
            "streamwarden.jobs.cli.policy:policy_test_cmd",
            "Run golden cases (YAML: event, features, scores, the rules expected to fire) against a policy.",
        ),
        "diff": Lazy(
            "streamwarden.jobs.cli.policy:diff_cmd",
            "Which rules a new policy adds, removes or changes, and whether its version was bumped.",
        ),
    },
    "actions": {
        "tail": Lazy(
            "streamwarden.jobs.cli.actions:tail_cmd",
            "Follow the actions topic and print each Action (Ctrl-C to stop).",
        ),
    },
    "deadletter": {
        "tail": Lazy(
            "streamwarden.jobs.cli.deadletter:tail_cmd",
            "Follow the dead-letter topic and print each DeadLetter (Ctrl-C to stop).",
        ),
        "replay": Lazy(
            "streamwarden.jobs.cli.deadletter:replay_cmd",
            "Re-submit dead-lettered records (those the current decoder now accepts) to the events topic.",
        ),
    },
    "alerts": {
        "tail": Lazy(
            "streamwarden.jobs.cli.alerts:tail_cmd",
            "Follow the alerts topic and print each AnomalyAlert (Ctrl-C to stop).",
        ),
    },
}


_display_type_rich = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx: Any) -> str | None:
    """Typer shows ``<bool>`` next to ``--json/--no-json``; a flag takes no value, so show no type."""
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]


def load(lazy: Lazy, name: str) -> Any:
    """The click command of ``lazy`` (imports its module)."""
    module, attribute = lazy.target.split(":")
    obj = getattr(importlib.import_module(module), attribute)
    if isinstance(obj, typer.Typer):
        return typer.main.get_group(obj)
    single = typer.Typer(add_completion=False)
    single.command(name)(obj)
    return typer.main.get_command(single)


class LazyGroup(TyperGroup):
    """A group whose registered commands (``COMMANDS[group name]``) are imported on first use; while it
    formats its own help it lists them by their short help without importing anything."""

    _listing = False

    def _lazy(self) -> dict[str, Lazy]:
        return COMMANDS.get(self.name or "", {})

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in self._lazy() if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        lazy = self._lazy().get(cmd_name)
        if cmd_name in self.commands or lazy is None:
            return super().get_command(ctx, cmd_name)
        if self._listing:
            return TyperCommand(cmd_name, help=lazy.short_help, short_help=lazy.short_help)
        command = load(lazy, cmd_name)
        self.commands[cmd_name] = command
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def _group(name: str, help_text: str, **kwargs: Any) -> typer.Typer:
    return typer.Typer(name=name, cls=LazyGroup, help=help_text, add_completion=False, **kwargs)


app = _group(
    "streamwarden", "Real-time anti-abuse stream processing on Beam and Flink.", no_args_is_help=True
)
bench_app = _group(
    "bench",
    "Benchmarks: each prints its figures and one JSON line last. With no subcommand: all of them.",
)
_GROUPS: dict[str, typer.Typer] = {
    "bench": bench_app,
    "feedback": _group("feedback", "Reviewer decisions to training data.", no_args_is_help=True),
    "anomaly": _group("anomaly", "Anomaly detectors: backtest and evaluate.", no_args_is_help=True),
    "models": _group("models", "Model cards and policy reports.", no_args_is_help=True),
    "flink": _group(
        "flink", "Flink: connector jars, a local standalone cluster, smoke checks.", no_args_is_help=True
    ),
    "alerts": _group("alerts", "Read the alerts topic.", no_args_is_help=True),
    "actions": _group("actions", "Read the actions topic.", no_args_is_help=True),
    "policy": _group("policy", "Check a policy before it reaches a job.", no_args_is_help=True),
    "deadletter": _group(
        "deadletter", "Read the dead-letter topic; re-submit fixed records.", no_args_is_help=True
    ),
    "review": _group("review", "Human review: queues, console, decisions as labels.", no_args_is_help=True),
    "transparency": _group(
        "transparency", "DSA statements of reasons and the transparency report.", no_args_is_help=True
    ),
}
for _name, _sub in _GROUPS.items():
    app.add_typer(_sub, name=_name)


@bench_app.callback(invoke_without_command=True)
def _bench_all_by_default(
    ctx: typer.Context,
    quick: bool = typer.Option(False, help="Smaller workloads; the whole run within about a minute."),
) -> None:
    """Run every benchmark (velocity, scorer, beam, flink) when no subcommand is given."""
    if ctx.invoked_subcommand is None:
        from streamwarden.jobs.bench.all import bench_all_cmd

        bench_all_cmd(quick=quick, only=None)


@app.command()
def version() -> None:
    """Print the streamwarden version and the schema version it speaks."""
    from importlib.metadata import version as _v

    from streamwarden.schemas.codec import SCHEMA_VERSION

    typer.echo(f"streamwarden {_v('streamwarden')} (event schema v{SCHEMA_VERSION})")


if __name__ == "__main__":
    app()
