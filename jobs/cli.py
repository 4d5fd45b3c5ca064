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
    help="Benchmarks: each prints its figures and one JSON line last.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


@app.command()
def version() -> None:
    """Print the streamwarden version and the schema version it speaks."""
    from importlib.metadata import version as _v

    from schemas.codec import SCHEMA_VERSION

    typer.echo(f"streamwarden {_v('streamwarden')} (event schema v{SCHEMA_VERSION})")


if __name__ == "__main__":
    app()
