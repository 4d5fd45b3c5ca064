"""``streamwarden bench all``: every benchmark (velocity, scorer, beam, flink) in one go, one JSON object.

Each benchmark runs in its own Python process (``python -m jobs.bench_all MODULE:FUNCTION ARGS...``
calls its command function), one after the other so they do not compete for the CPU, on a fixed
workload (each benchmark's fixed seeds; ``--quick``: smaller workloads). Its figures are the last JSON
line it prints. A benchmark that fails, is not built yet or runs out of time is reported as
``{"error": ...}`` — never left out. The ratios are computed from figures measured in this run.

``--quick`` gives the whole run a budget of ``QUICK_BUDGET_S`` seconds; each benchmark gets at most
its own time limit and what is left of the budget.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

import streamwarden

REPO_ROOT = Path(streamwarden.__file__).resolve().parents[1]
"""The directory that holds the ``streamwarden`` package (the repository, or site-packages)."""
QUICK_BUDGET_S = 58.0


@dataclass(frozen=True)
class Bench:
    """One benchmark: its command function, arguments and time limits per mode."""

    name: str
    target: str
    """``module:function`` of its typer command function."""
    full_args: tuple[str, ...]
    quick_args: tuple[str, ...]
    full_timeout_s: float
    quick_timeout_s: float


BENCHES: tuple[Bench, ...] = (
    Bench(
        "scorer",
        "streamwarden.jobs.bench.scorer:bench_scorer_cmd",
        (),
        ("--seconds", "0.1", "--latency-calls", "300"),
        600.0,
        12.0,
    ),
    Bench(
        "velocity",
        "streamwarden.jobs.bench.velocity:bench_velocity_cmd",
        ("--seed", "1"),
        (
            "--seed",
            "1",
            "--events",
            "5000",
            "--naive-events",
            "1000",
            "--memory-keys",
            "30000",
            "--no-replay",
            "--repeats",
            "1",
        ),
        900.0,
        25.0,
    ),
    Bench(
        "beam",
        "streamwarden.jobs.bench.beam:bench_beam_cmd",
        ("--seed", "1"),
        ("--seed", "1", "--quick", "--records", "2000", "--latency-s", "4", "--rate", "500"),
        900.0,
        30.0,
    ),
    Bench("flink", "streamwarden.jobs.bench.flink:bench_flink_cmd", (), ("--quick",), 1800.0, 45.0),
)
NAMES: tuple[str, ...] = tuple(b.name for b in BENCHES)


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object, or None."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
    return None


def _error_summary(stderr: str, stdout: str, code: int) -> str:
    lines = [x for x in (stderr or stdout).strip().splitlines() if x.strip()]
    # The exception line of a traceback, else the last line printed.
    for line in reversed(lines):
        if "Error" in line or "error:" in line or "Exception" in line:
            return f"exit code {code}: {line.strip()[:500]}"
    return f"exit code {code}: {lines[-1].strip()[:500] if lines else 'no output'}"


def run_one(bench: Bench, args: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """Run one benchmark in its own process group; ``{"figures": ..., "wall_s": ...}`` or ``{"error": ...}``."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamwarden.jobs.bench.all", bench.target, *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its broker, JVMs and workers share the group: a timeout ends them all
    )
    try:
        stdout, stderr = proc.communicate(timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        wall_s = time.monotonic() - started
        return {
            "error": f"did not finish within {timeout_s:.0f} s (time limit of this mode)",
            "wall_s": round(wall_s, 1),
        }
    wall_s = round(time.monotonic() - started, 1)
    figures = last_json_object(stdout)
    if proc.returncode != 0 or figures is None:
        if proc.returncode == 0:
            return {"error": "finished without printing a JSON line", "wall_s": wall_s}
        return {
            "error": f"{bench.target}: {_error_summary(stderr, stdout, proc.returncode)}",
            "wall_s": wall_s,
        }
    return {"figures": figures, "wall_s": wall_s}


def _events_per_s(figures: dict[str, Any] | None) -> float | None:
    """A benchmark's sustained events/s: ``events_per_s``, else the best ``events_per_s*`` figure."""
    if not figures:
        return None
    value = figures.get("events_per_s")
    if isinstance(value, int | float):
        return float(value)
    found = [
        float(v) for k, v in figures.items() if k.startswith("events_per_s") and isinstance(v, int | float)
    ]
    return max(found) if found else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Cross-benchmark ratios of this run (None where a figure is missing)."""
    fig: dict[str, dict[str, Any]] = {name: r.get("figures") or {} for name, r in results.items()}
    vel, sco, beam, flink = (fig.get(n, {}) for n in ("velocity", "scorer", "beam", "flink"))
    velocity = _events_per_s(vel)
    beam_eps = _events_per_s(beam)
    flink_eps = _events_per_s(flink)
    replay = (
        vel.get("replay_events_per_s") or beam.get("replay_events_per_s") or flink.get("replay_events_per_s")
    )
    return {
        "replay_events_per_s": replay,
        "velocity_batch_events_per_s": vel.get("batch_events_per_s"),
        "velocity_per_key_update_us": vel.get("per_key_update_with_encode_us"),
        "velocity_engine_to_naive_same_events": _ratio(
            vel.get("engine_events_per_s_same_prefix"), vel.get("naive_events_per_s")
        ),
        "velocity_flat_ratio": vel.get("flat_ratio"),
        "scorer_rows_batch256_to_velocity_events": _ratio(sco.get("rows_per_s_batch256"), velocity),
        "decider_decisions_to_velocity_events": _ratio(sco.get("decisions_per_s"), velocity),
        "beam_to_replay": _ratio(beam_eps, replay),
        "beam_to_velocity": _ratio(beam_eps, velocity),
        "flink_to_replay": _ratio(flink_eps, replay),
        "flink_to_beam": _ratio(flink_eps, beam_eps),
    }


def run_all(quick: bool, only: Sequence[str] = (), log: Any = print) -> dict[str, Any]:
    """Run the selected benchmarks in order; the combined JSON object."""
    started = time.monotonic()
    deadline = started + QUICK_BUDGET_S if quick else None
    results: dict[str, dict[str, Any]] = {}
    for bench in BENCHES:
        if only and bench.name not in only:
            results[bench.name] = {"skipped": "not selected (--only)"}
            continue
        limit = bench.quick_timeout_s if quick else bench.full_timeout_s
        if deadline is not None:
            left = deadline - time.monotonic()
            if left < 2:
                results[bench.name] = {
                    "error": f"not run: the --quick budget of {QUICK_BUDGET_S:.0f} s was used up"
                }
                log(f"{bench.name}: not run (budget used up)")
                continue
            limit = min(limit, left)
        args = bench.quick_args if quick else bench.full_args
        log(f"{bench.name}: {bench.target} {' '.join(args)} (limit {limit:.0f} s) ...")
        results[bench.name] = run_one(bench, args, limit)
        r = results[bench.name]
        log(f"{bench.name}: {'ERROR ' + r['error'] if 'error' in r else 'ok'} ({r.get('wall_s', 0)} s)")
    return {
        "bench": "all",
        "mode": "quick" if quick else "full",
        "wall_s": round(time.monotonic() - started, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "benchmarks": results,
        "ratios": ratios(results),
    }


def bench_all_cmd(
    quick: Annotated[
        bool, typer.Option(help=f"Smaller workloads; the whole run within {QUICK_BUDGET_S:.0f} s.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option(help=f"Run only these (repeatable): {', '.join(NAMES)}.")
    ] = None,
) -> None:
    """Every benchmark in one go (velocity, scorer, beam, flink): one JSON object of figures and ratios."""
    unknown = sorted(set(only or ()) - set(NAMES))
    if unknown:
        typer.echo(f"error: unknown benchmark(s) {unknown}; known: {list(NAMES)}", err=True)
        raise typer.Exit(2)
    result = run_all(quick, only or (), log=typer.echo)
    typer.echo(json.dumps(result, sort_keys=True))


def _main(argv: list[str]) -> None:
    """``python -m jobs.bench_all MODULE:FUNCTION ARGS...``: run one command function as a CLI."""
    module, function = argv[0].split(":")
    app = typer.Typer(add_completion=False)
    app.command()(getattr(importlib.import_module(module), function))
    app(argv[1:], prog_name=argv[0])


if __name__ == "__main__":
    _main(sys.argv[1:])
