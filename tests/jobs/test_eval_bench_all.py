"""``streamwarden bench all``: each benchmark in its own process, its last JSON line collected; failures
and time-outs reported as errors, never dropped; ratios from the figures of the run."""

from __future__ import annotations

import json
from typing import Any

import typer
from typer.testing import CliRunner

from streamwarden.jobs.bench.all import BENCHES, Bench, bench_all_cmd, last_json_object, ratios, run_one

SCORER = next(b for b in BENCHES if b.name == "scorer")


def test_last_json_object() -> None:
    text = 'figures\n{"a": 1}\nmore\n{"b": 2}\n[1, 2]\n{broken\n'
    assert last_json_object(text) == {"b": 2}
    assert last_json_object("no json here") is None


def test_ratios_from_figures_of_one_run() -> None:
    results: dict[str, dict[str, Any]] = {
        "velocity": {"figures": {"events_per_s": 20_000, "naive_events_per_s": 5_000,
                                 "engine_events_per_s_same_prefix": 15_000, "flat_ratio": 0.9}},
        "scorer": {"figures": {"rows_per_s_batch256": 200_000, "decisions_per_s": 30_000}},
        "beam": {"figures": {"events_per_s": 500, "replay_events_per_s": 10_000}},
        "flink": {"error": "not built"},
    }  # fmt: skip
    r = ratios(results)
    assert r["velocity_engine_to_naive_same_events"] == 3.0 and r["velocity_flat_ratio"] == 0.9
    assert r["scorer_rows_batch256_to_velocity_events"] == 10.0
    assert r["decider_decisions_to_velocity_events"] == 1.5
    assert r["beam_to_replay"] == 0.05 and r["beam_to_velocity"] == 0.025
    assert r["flink_to_beam"] is None and r["flink_to_replay"] is None


def test_run_one_reports_errors_and_timeouts() -> None:
    broken = Bench("broken", "streamwarden.jobs.bench.all:no_such_command", (), (), 60, 60)
    failed = run_one(broken, (), timeout_s=60)
    assert "figures" not in failed and "no_such_command" in failed["error"]
    slow = run_one(SCORER, ("--seconds", "5"), timeout_s=1.5)
    assert slow["error"].startswith("did not finish within 2 s")


def test_bench_all_reports_every_benchmark() -> None:
    app = typer.Typer()
    app.command("all")(bench_all_cmd)
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, ["all", "--quick", "--only", "scorer"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["mode"] == "quick" and set(out["benchmarks"]) == {"velocity", "scorer", "beam", "flink"}
    scorer = out["benchmarks"]["scorer"]
    assert "error" not in scorer, scorer
    assert scorer["figures"]["bench"] == "scorer" and scorer["figures"]["rows_per_s_batch256"] > 0
    assert out["benchmarks"]["beam"] == {"skipped": "not selected (--only)"}
    bad = CliRunner().invoke(app, ["all", "--only", "nope"])
    assert bad.exit_code == 2 and "unknown benchmark" in bad.output
