"""``streamwarden bench scorer``: ONNX scorer throughput and latency per shipped model, decider speed.

For each model: rows/s at micro-batch 1, 64, 256 and 1024, and per-call latency p50/p99 at batch 1
and 256 (one onnxruntime thread, like one engine task per core). Then decisions/s of the default
policy (decider alone, and decider plus cooldown gate). The last line is one JSON object; for the
default model it has ``p99_ms_batch256`` and ``rows_per_s_batch256`` (targets: <= 1 ms, >= 100k/s).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
import typer

from streamwarden.operators.policy import DEFAULT_POLICY_PATH, CooldownTable, Decider, load_policy
from streamwarden.operators.scoring import DEFAULT_MODEL, Scorer, ScoringEngine, default_card_paths
from streamwarden.schemas import streamwarden_pb2 as pb

BATCHES = (1, 64, 256, 1024)
LATENCY_BATCHES = (1, 256)
TARGET_P99_MS_BATCH256 = 1.0
TARGET_ROWS_PER_S_BATCH256 = 100_000


def _rows(n_features: int, n: int, seed: int) -> npt.NDArray[np.float32]:
    """Feature-like rows: non-negative, heavy-tailed counts and [0, 1] ratios, seeded."""
    rng = np.random.default_rng(seed)
    counts = rng.gamma(shape=0.7, scale=20.0, size=(n, n_features))
    ratios = rng.random(size=(n, n_features))
    use_ratio = rng.random(n_features) < 0.3
    return np.where(use_ratio, ratios, np.floor(counts)).astype(np.float32)


def _throughput(scorer: Scorer, rows: npt.NDArray[np.float32], batch: int, seconds: float) -> float:
    """Rows per second scoring back-to-back micro-batches of ``batch`` rows for about ``seconds``."""
    n = rows.shape[0]
    starts = list(range(0, n - batch + 1, batch)) or [0]
    scorer.score_batch(rows[:batch])  # warm-up
    done = 0
    calls = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        s = starts[calls % len(starts)]
        scorer.score_batch(rows[s : s + batch])
        done += batch
        calls += 1
        if calls % 16 == 0 and time.perf_counter() >= deadline:
            break
    return done / (time.perf_counter() - t0)


def _latencies_ms(
    scorer: Scorer, rows: npt.NDArray[np.float32], batch: int, calls: int
) -> tuple[float, float]:
    """p50 and p99 of per-call wall time (ms) over ``calls`` calls of ``batch`` rows."""
    n = rows.shape[0]
    for _ in range(50):
        scorer.score_batch(rows[:batch])
    samples = np.empty(calls, dtype=np.float64)
    for i in range(calls):
        s = (i * batch) % max(1, n - batch)
        chunk = rows[s : s + batch]
        t0 = time.perf_counter_ns()
        scorer.score_batch(chunk)
        samples[i] = (time.perf_counter_ns() - t0) / 1e6
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


_EVENT_TYPES = (
    pb.Event.PLAY,
    pb.Event.COMMENT,
    pb.Event.LOGIN_FAILED,
    pb.Event.FOLLOW,
    pb.Event.SIGNUP,
    pb.Event.LIKE,
)


def _decider_rates(
    engine: ScoringEngine, rows: npt.NDArray[np.float32], policy_path: Path, seconds: float
) -> dict[str, float]:
    """Decisions per second of the policy on pre-scored rows (with and without the cooldown gate)."""
    names = engine.scorers[0].card.feature_names
    policy = load_policy(policy_path, feature_names=names, model_names=engine.names)
    decider = Decider(policy, names, clock=lambda: 0, thresholds=engine.thresholds, model_names=engine.names)
    n = min(4096, rows.shape[0])
    scores = engine.score_rows(rows[:n])
    vectors = [rows[i].tolist() for i in range(n)]
    events = [
        pb.Event(
            event_id=f"e{i}",
            event_time_ms=1_700_000_000_000 + i * 10,
            type=_EVENT_TYPES[i % len(_EVENT_TYPES)],
            actor=pb.Actor(
                account_id=f"a{i % 97}", ip=f"10.0.{i % 13}.1", device_id=f"d{i % 89}", asn=64500 + i % 5
            ),
            target=pb.Target(account_id=f"t{i % 7}", content_id=f"c{i % 11}"),
        )
        for i in range(n)
    ]
    version = engine.model_version
    out: dict[str, float] = {}
    rates: dict[str, list[float]] = {"decisions_per_s": [], "decisions_per_s_gated": []}
    for _ in range(3):  # alternate the two variants and keep the median: the machine may be shared
        for label, gated in (("decisions_per_s", False), ("decisions_per_s_gated", True)):
            table = CooldownTable(policy)
            done = 0
            actions = 0
            t0 = time.perf_counter()
            deadline = t0 + seconds / 3
            while time.perf_counter() < deadline:
                for i in range(n):
                    acts = decider.decide(events[i], vectors[i], scores[i], version)
                    if gated:
                        acts = table.filter(acts)
                    actions += len(acts)
                done += n
            rates[label].append(done / (time.perf_counter() - t0))
            out[label.replace("decisions_per_s", "actions_per_decision")] = actions / max(1, done)
    for label, values in rates.items():
        out[label] = float(np.median(values))
    return out


def run_bench(
    card_paths: list[Path],
    *,
    policy_path: Path = DEFAULT_POLICY_PATH,
    seconds: float = 0.5,
    latency_calls: int = 2000,
    threads: int = 1,
    default_model: str = DEFAULT_MODEL,
) -> dict[str, Any]:
    """All measurements as one dict (also what the command prints last, as JSON)."""
    engine = ScoringEngine.from_cards(card_paths, feature_names=None, intra_op_threads=threads)
    n_features = engine.scorers[0].n_features
    rows = _rows(n_features, 16_384, seed=7)
    models: dict[str, dict[str, float]] = {}
    for scorer in engine.scorers:
        m: dict[str, float] = {}
        for batch in BATCHES:
            m[f"rows_per_s_batch{batch}"] = round(_throughput(scorer, rows, batch, seconds), 1)
        for batch in LATENCY_BATCHES:
            p50, p99 = _latencies_ms(scorer, rows, batch, latency_calls if batch == 1 else latency_calls // 2)
            m[f"p50_ms_batch{batch}"] = round(p50, 4)
            m[f"p99_ms_batch{batch}"] = round(p99, 4)
        models[scorer.name] = m
    decider = _decider_rates(engine, rows, policy_path, seconds)
    main = models.get(default_model) or next(iter(models.values()))
    result: dict[str, Any] = {
        "bench": "scorer",
        "default_model": default_model if default_model in models else next(iter(models)),
        "model_version": engine.model_version,
        "n_features": n_features,
        "onnx_threads": threads,
        "p99_ms_batch256": main["p99_ms_batch256"],
        "rows_per_s_batch256": main["rows_per_s_batch256"],
        "p50_ms_batch1": main["p50_ms_batch1"],
        "p99_ms_batch1": main["p99_ms_batch1"],
        "decisions_per_s": round(decider["decisions_per_s"], 1),
        "decisions_per_s_gated": round(decider["decisions_per_s_gated"], 1),
        "actions_per_decision": round(decider["actions_per_decision"], 4),
        "models": models,
        "target_p99_ms_batch256": TARGET_P99_MS_BATCH256,
        "target_rows_per_s_batch256": TARGET_ROWS_PER_S_BATCH256,
        "meets_targets": main["p99_ms_batch256"] <= TARGET_P99_MS_BATCH256
        and main["rows_per_s_batch256"] >= TARGET_ROWS_PER_S_BATCH256,
        "python": platform.python_version(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    return result


def bench_scorer_cmd(
    models: Annotated[
        list[Path] | None,
        typer.Option("--model", help="Model card YAML to bench (repeatable); default: every shipped model."),
    ] = None,
    policy: Annotated[
        Path,
        typer.Option(
            help="Policy YAML for the decider figures (default: the shipped policy).", show_default=False
        ),
    ] = DEFAULT_POLICY_PATH,
    seconds: Annotated[float, typer.Option(min=0.05, help="Seconds per throughput measurement.")] = 0.5,
    latency_calls: Annotated[
        int, typer.Option(min=100, help="Calls per latency percentile (batch 1).")
    ] = 2000,
    threads: Annotated[int, typer.Option(min=0, help="onnxruntime intra-op threads (0 = its default).")] = 1,
) -> None:
    """Scorer rows/s at batch 1/64/256/1024 and p50/p99 per call per model; decider decisions/s."""
    cards = list(models) if models else default_card_paths()
    result = run_bench(
        cards, policy_path=policy, seconds=seconds, latency_calls=latency_calls, threads=threads
    )
    for name, m in result["models"].items():
        rates = "  ".join(f"b{b}={m[f'rows_per_s_batch{b}']:,.0f}" for b in BATCHES)
        typer.echo(f"{name:8s} rows/s  {rates}")
        typer.echo(
            f"{name:8s} latency  b1 p50={m['p50_ms_batch1']:.4f} ms p99={m['p99_ms_batch1']:.4f} ms   "
            f"b256 p50={m['p50_ms_batch256']:.4f} ms p99={m['p99_ms_batch256']:.4f} ms"
        )
    typer.echo(
        f"decider  {result['decisions_per_s']:,.0f} decisions/s ({result['decisions_per_s_gated']:,.0f} with "
        f"cooldown gate), {result['actions_per_decision']:.3f} actions per decision"
    )
    verdict = "meets" if result["meets_targets"] else "MISSES"
    typer.echo(
        f"{result['default_model']}: p99 {result['p99_ms_batch256']:.3f} ms at batch 256 (target <= "
        f"{TARGET_P99_MS_BATCH256} ms), {result['rows_per_s_batch256']:,.0f} rows/s (target >= "
        f"{TARGET_ROWS_PER_S_BATCH256:,}) -> {verdict} targets"
    )
    typer.echo(json.dumps(result, sort_keys=True))
