"""``streamwarden train`` and ``streamwarden models ...``: train and export the models, read their cards,
report the policy's per-rule precision."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from streamwarden.models.policy_report import evaluate_policy
from streamwarden.models.train import (
    DEFAULT_CREATED_MS,
    DEFAULT_EVAL_SEED,
    DEFAULT_SEED,
    TARGET_PRECISION,
    compare_cards,
    report,
    train,
)
from streamwarden.operators.errors import StreamwardenError
from streamwarden.operators.policy import DEFAULT_POLICY_PATH
from streamwarden.operators.scoring import MODELS_DIR


def train_cmd(
    seed: Annotated[int, typer.Option(help="Traffic seed of the training data.")] = DEFAULT_SEED,
    eval_seed: Annotated[
        int, typer.Option(help="Traffic seed of the held-out evaluation data.")
    ] = DEFAULT_EVAL_SEED,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder receiving <name>/model.onnx and model.yaml (default: ./trained-models; with --check: "
            "the shipped models). A job uses them through its config's model_card."
        ),
    ] = None,
    target_precision: Annotated[
        float, typer.Option(min=0.5, max=1.0, help="Precision the threshold is chosen for.")
    ] = TARGET_PRECISION,
    duration_s: Annotated[
        float | None, typer.Option(help="Event-time length of each traffic run (default: the spec's).")
    ] = None,
    created_ms: Annotated[
        int, typer.Option(help="Timestamp written into the cards (fixed by default for reproducible bytes).")
    ] = DEFAULT_CREATED_MS,
    check: Annotated[
        bool,
        typer.Option("--check", help="Train into a temporary folder and compare with the shipped cards."),
    ] = False,
    dataset: Annotated[
        Path | None,
        typer.Option(
            help="Train on this dataset file (streamwarden feedback build) instead of --seed's traffic."
        ),
    ] = None,
    variants: Annotated[
        bool,
        typer.Option(
            "--variants",
            help="Train on --seed's default traffic plus the sampled adversarial variants; thresholds on "
            "held-out variants (models/train_variants.py).",
        ),
    ] = False,
    lofo: Annotated[
        Path | None,
        typer.Option(help="With --variants: also write leave-one-family-out gbt models to DIR/<family>/gbt."),
    ] = None,
) -> None:
    """Train the gbt and logreg models on replayed features, export ONNX and write model cards."""
    # Never into the installed package by default: a retrain is an artifact the user names and reviews.
    out = out if out is not None else (MODELS_DIR if check else Path("trained-models"))
    if variants:
        from streamwarden.models.train_variants import train_variants

        if check:
            with tempfile.TemporaryDirectory() as tmp:
                paths = train_variants(
                    Path(tmp), default_seed=seed, target_precision=target_precision, created_ms=created_ms
                )
                problems = compare_cards(paths, out)
            for p in problems:
                typer.echo(f"DIFFERS: {p}", err=True)
            if problems:
                raise typer.Exit(1)
            typer.echo(f"reproduced: {', '.join(sorted(paths))} match {out}")
            return
        paths = train_variants(
            out, default_seed=seed, lofo_dir=lofo, target_precision=target_precision, created_ms=created_ms
        )
        report(list(paths.values()))
        return
    if dataset is not None and check:
        typer.echo(
            "error: --check reproduces the shipped cards from --seed; do not combine it with --dataset",
            err=True,
        )
        raise typer.Exit(2)
    if check:
        with tempfile.TemporaryDirectory() as tmp:
            result = train(
                Path(tmp), seed=seed, eval_seed=eval_seed, target_precision=target_precision,
                duration_s=duration_s, created_ms=created_ms,
            )  # fmt: skip
            problems = compare_cards(result.card_paths, out)
        if problems:
            for p in problems:
                typer.echo(f"DIFFERS: {p}", err=True)
            raise typer.Exit(1)
        typer.echo(f"reproduced: {', '.join(sorted(result.card_paths))} match {out} ({result.seconds:.1f} s)")
        return
    try:
        result = train(
            out, seed=seed, eval_seed=eval_seed, target_precision=target_precision,
            duration_s=duration_s, created_ms=created_ms, dataset=dataset,
        )  # fmt: skip
    except StreamwardenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"trained {len(result.card_paths)} models in {result.seconds:.1f} s")
    report(list(result.card_paths.values()))


def models_report_cmd(
    cards: Annotated[
        list[Path] | None, typer.Argument(help="Model card YAML files (default: every shipped model).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json/--no-json", help="Also print one JSON line with every figure.")
    ] = False,
) -> None:
    """Print the held-out precision, recall and PR-AUC of the model cards, overall and per scenario."""
    paths = list(cards) if cards else sorted(MODELS_DIR.glob("*/model.yaml"))
    if not paths:
        typer.echo(f"no model cards under {MODELS_DIR}; run `streamwarden train`", err=True)
        raise typer.Exit(1)
    rows = report(paths)
    if as_json:
        typer.echo(json.dumps(rows, sort_keys=True))


def policy_report_cmd(
    seed: Annotated[int, typer.Option(help="Traffic seed to evaluate on (default: the held-out seed).")] = (
        DEFAULT_EVAL_SEED
    ),
    policy: Annotated[
        Path, typer.Option(help="Policy YAML (default: the shipped policy).", show_default=False)
    ] = DEFAULT_POLICY_PATH,
    duration_s: Annotated[float | None, typer.Option(help="Event-time length of the traffic run.")] = None,
) -> None:
    """Per-rule precision and per-scenario recall of the policy on labelled held-out traffic."""
    result = evaluate_policy(seed, policy_path=policy, duration_s=duration_s)
    typer.echo(
        f"policy {result['policy_version']} on seed {seed} ({result['events']} events), {result['model_version']}"
    )
    typer.echo(f"  {'rule':28s} {'mode':8s} {'actions':>8s} {'event_prec':>10s} {'subj_prec':>10s}")
    for rule_id, m in result["rules"].items():
        ep = "-" if m["event_precision"] is None else f"{m['event_precision']:.4f}"
        sp = "-" if m["subject_precision"] is None else f"{m['subject_precision']:.4f}"
        typer.echo(f"  {rule_id:28s} {m['mode']:8s} {m['actions']:8d} {ep:>10s} {sp:>10s}")
    typer.echo(f"  {'scenario':28s} {'positives':>9s} {'recall (covered by enforced action)':>36s}")
    for name, m in result["scenarios"].items():
        typer.echo(f"  {name:28s} {m['positives']:9d} {m['recall']:36.4f}")
    typer.echo(
        f"  organic events covered by an enforced action: {result['organic_events_enforced']} of "
        f"{result['organic_events']} ({result['organic_false_positive_rate']:.4%})"
    )
    typer.echo(
        json.dumps(result, sort_keys=True, default=lambda o: o.item() if isinstance(o, np.generic) else o)
    )
