"""`streamwarden bench scorer` runs on the shipped models and prints one JSON line last."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from streamwarden.jobs.bench.scorer import bench_scorer_cmd


def test_bench_scorer_prints_figures_and_json_last():
    app = typer.Typer()
    app.command()(bench_scorer_cmd)
    result = CliRunner().invoke(app, ["--seconds", "0.05", "--latency-calls", "100"])
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    assert last["bench"] == "scorer" and last["default_model"] == "gbt"
    assert set(last["models"]) == {"gbt", "logreg"}
    for m in last["models"].values():
        assert all(m[f"rows_per_s_batch{b}"] > 0 for b in (1, 64, 256, 1024))
        assert 0 < m["p50_ms_batch1"] <= m["p99_ms_batch1"]
        assert 0 < m["p50_ms_batch256"] <= m["p99_ms_batch256"]
    assert last["p99_ms_batch256"] == last["models"]["gbt"]["p99_ms_batch256"]
    assert last["rows_per_s_batch256"] == last["models"]["gbt"]["rows_per_s_batch256"]
    assert last["decisions_per_s"] > 0 and last["actions_per_decision"] >= 0
