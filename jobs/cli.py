"""The ``streamwarden`` command line. Each command lives with the code it drives; this file wires them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="streamwarden",
    help="Real-time anti-abuse stream processing on Beam and Flink.",
    no_args_is_help=True,
    add_completion=False,
)
bench_app = typer.Typer(
    help="Benchmarks: each prints its figures and one JSON line last. With no subcommand: all of them."
)
app.add_typer(bench_app, name="bench")
eval_app = typer.Typer(help="Detection quality on labeled traffic; shadow comparison of two policies.")
app.add_typer(eval_app, name="eval")
feedback_app = typer.Typer(help="Reviewer decisions to training data.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@bench_app.callback(invoke_without_command=True)
def _bench_all_by_default(
    ctx: typer.Context,
    quick: bool = typer.Option(False, help="Smaller workloads; the whole run within about a minute."),
) -> None:
    """Run every benchmark (velocity, scorer, beam, flink) when no subcommand is given."""
    if ctx.invoked_subcommand is None:
        from jobs.bench_all import bench_all_cmd

        bench_all_cmd(quick=quick, only=None)


anomaly_app = typer.Typer(help="Anomaly detectors: backtest and evaluate.", no_args_is_help=True)
app.add_typer(anomaly_app, name="anomaly")
models_app = typer.Typer(help="Model cards and policy reports.", no_args_is_help=True)
app.add_typer(models_app, name="models")
flink_app = typer.Typer(
    help="Flink: connector jars, a local standalone cluster, smoke checks.", no_args_is_help=True
)
app.add_typer(flink_app, name="flink")
alerts_app = typer.Typer(help="Read the alerts topic.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@app.command()
def version() -> None:
    """Print the streamwarden version and the schema version it speaks."""
    from importlib.metadata import version as _v

    from schemas.codec import SCHEMA_VERSION

    typer.echo(f"streamwarden {_v('streamwarden')} (event schema v{SCHEMA_VERSION})")


def _register() -> None:
    from deploy.broker import run_foreground_cmd
    from jobs.alerts_cli import tail_cmd
    from jobs.anomaly_cli import eval_cmd as anomaly_eval_cmd
    from jobs.anomaly_cli import score_cmd
    from jobs.bench_all import bench_all_cmd
    from jobs.bench_beam import bench_beam_cmd
    from jobs.bench_flink import bench_flink_cmd
    from jobs.bench_scorer import bench_scorer_cmd
    from jobs.bench_velocity import bench_velocity_cmd
    from jobs.demo import demo_cmd
    from jobs.eval import eval_cmd, shadow_cmd
    from jobs.feedback import feedback_build_cmd
    from jobs.flink.cluster import cluster_start_cmd, cluster_stop_cmd, cluster_submit_cmd
    from jobs.flink.connector import jars_cmd
    from jobs.flink.smoke_check import smoke_cmd
    from jobs.generate import bench_generate_cmd, generate_cmd
    from jobs.run import run_cmd
    from models.policy_report import policy_report_cmd
    from models.train import models_report_cmd, train_cmd

    app.command("run")(run_cmd)
    app.command("demo")(demo_cmd)
    app.command("broker")(run_foreground_cmd)
    app.command("generate")(generate_cmd)
    bench_app.command("generate")(bench_generate_cmd)
    anomaly_app.command("score")(score_cmd)
    anomaly_app.command("eval")(anomaly_eval_cmd)
    alerts_app.command("tail")(tail_cmd)
    app.command("train")(train_cmd)
    models_app.command("report")(models_report_cmd)
    models_app.command("policy-report")(policy_report_cmd)
    bench_app.command("scorer")(bench_scorer_cmd)
    bench_app.command("velocity")(bench_velocity_cmd)
    bench_app.command("beam")(bench_beam_cmd)
    bench_app.command("flink")(bench_flink_cmd)
    bench_app.command("all")(bench_all_cmd)
    eval_app.callback(invoke_without_command=True)(eval_cmd)
    eval_app.command("shadow")(shadow_cmd)
    feedback_app.command("build")(feedback_build_cmd)
    flink_app.command("jars")(jars_cmd)
    flink_app.command("cluster-start")(cluster_start_cmd)
    flink_app.command("cluster-submit")(cluster_submit_cmd)
    flink_app.command("cluster-stop")(cluster_stop_cmd)
    flink_app.command("smoke")(smoke_cmd)


_register()

if __name__ == "__main__":
    app()
