"""``streamwarden train --variants``: train on many sampled adversarial variants, choose thresholds on
held-out variants, evaluate on unseen ones; optionally one leave-one-family-out model per family.

Data (see ``operators/traffic/variants.py`` for the splits):

- **fit**: the default spec's seed 1 (the shapes the project started from, every event) plus the
  ``train`` variants ``TRAIN_SEEDS`` (knobs in the training ranges, traps on). Organic negatives of a
  variant are subsampled to ``NEGATIVE_KEEP`` by a hash of the event id and weighted by its inverse,
  so the fitted probabilities stay calibrated to the full stream (positives and every event of the
  default seed keep weight 1);
- **threshold**: the ``holdout`` variants ``HOLDOUT_SEEDS`` (every event): the lowest score whose
  event-level precision reaches the target. Never the rows the model was fitted on;
- **card metrics**: the ``unseen`` variant ``UNSEEN_SEEDS[0]`` (every event), scored by the exported ONNX.

Labels: ``models/train.py``'s rule (an event is positive for S iff an abusive label of S names one of its
actor entities within the label's span; benign trap labels never make an event positive).

Leave-one-family-out (``lofo_dir``): for each family F, the same data with every event of F removed
(fit and threshold rows), written to ``lofo_dir/F/gbt``: a model that never saw F.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamwarden.models.train import (
    DEFAULT_CREATED_MS,
    LABELING,
    TARGET_PRECISION,
    _label_index,
    choose_threshold,
    evaluate,
    label_event,
    make_estimators,
    replay_features,
    traffic_spec,
)
from streamwarden.operators.scoring import MODELS_DIR, Scorer
from streamwarden.operators.scoring.model_card import EvalMetrics, TrainingInfo
from streamwarden.operators.traffic import SCENARIO_NAMES, iter_traffic, labels
from streamwarden.operators.traffic.spec import TrafficSpec
from streamwarden.operators.traffic.variants import HOLDOUT_SEEDS, TRAIN_SEEDS, UNSEEN_SEEDS, variant_spec
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import decode_event

NEGATIVE_KEEP = 0.25
CAVEAT = (
    "Synthetic data only: trained and evaluated on streamwarden's own traffic generator (organic model, "
    "five abuse families with sampled evasion knobs, four benign traps). Real traffic differs; "
    "re-evaluate on labeled production data (streamwarden feedback build) before enforcing."
)


@dataclass(frozen=True)
class Rows:
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int8]
    w: npt.NDArray[np.float64]
    scenario: npt.NDArray[np.str_]
    feature_names: tuple[str, ...]

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        return Rows(
            np.concatenate([p.x for p in parts]),
            np.concatenate([p.y for p in parts]),
            np.concatenate([p.w for p in parts]),
            np.concatenate([p.scenario for p in parts]),
            parts[0].feature_names,
        )

    def without(self, family: str) -> Rows:
        keep = self.scenario != family
        return Rows(self.x[keep], self.y[keep], self.w[keep], self.scenario[keep], self.feature_names)


def _keep(event_id: str) -> bool:
    return hashlib.sha256(event_id.encode()).digest()[0] < int(256 * NEGATIVE_KEEP)


def spec_rows(spec: TrafficSpec, subsample: bool) -> Rows:
    """Feature rows of one traffic spec, labeled; organic negatives subsampled if asked."""
    events: list[pb.Event] = []
    for record in iter_traffic(spec):
        decoded = decode_event(record.payload)
        if isinstance(decoded, pb.Event):
            events.append(decoded)
    table = replay_features(events)
    index = _label_index(labels(spec))
    scen = np.asarray([label_event(e, index) for e in events], dtype=np.str_)
    y = (scen != "").astype(np.int8)
    w = np.ones(len(events), dtype=np.float64)
    if subsample:
        keep = np.asarray([yy == 1 or _keep(e.event_id) for yy, e in zip(y, events, strict=True)])
        w = np.where(y == 1, 1.0, 1.0 / NEGATIVE_KEEP)[keep]
        return Rows(table.values[keep], y[keep], w, scen[keep], table.feature_names)
    return Rows(table.values, y, w, scen, table.feature_names)


def _fit(estimator: Any, rows: Rows, name: str) -> Any:
    x = rows.x.astype(np.float64)
    if name == "logreg":
        estimator.fit(x, rows.y, clf__sample_weight=rows.w)
    else:
        estimator.fit(x, rows.y, sample_weight=rows.w)
    return estimator


def _eval_as(rows: Rows) -> Any:
    """``models.train.evaluate`` wants a Dataset-like object: y and scenario."""

    @dataclass
    class _D:
        y: npt.NDArray[np.int8]
        scenario: npt.NDArray[np.str_]

    return _D(rows.y, rows.scenario)


def _train_one(
    name: str,
    fit_rows: Rows,
    holdout: Rows,
    unseen: Rows,
    target: Path,
    *,
    seed: int,
    target_precision: float,
    created_ms: int,
    note: str,
    log: Any,
) -> tuple[Path, float, EvalMetrics]:
    from streamwarden.models.export import write_model

    estimator, algorithm, params, description = make_estimators(seed)[name]
    log(f"{name}: fitting on {len(fit_rows.y)} rows ({int(fit_rows.y.sum())} positive) ...")
    _fit(estimator, fit_rows, name)

    def info(metrics: EvalMetrics | None) -> TrainingInfo:
        from streamwarden.operators.scoring.model_card import Metrics

        empty = Metrics(precision=0, recall=0, pr_auc=0, positives=0, negatives=0)
        return TrainingInfo(
            seed=seed,
            eval_seed=UNSEEN_SEEDS[0],
            algorithm=algorithm,
            params=params,
            labeling=f"{LABELING}. {note} {CAVEAT}",
            train_rows=len(fit_rows.y),
            eval_rows=len(unseen.y),
            target_precision=target_precision,
            metrics=metrics if metrics is not None else EvalMetrics(overall=empty),
        )

    with tempfile.TemporaryDirectory() as tmp:
        card = write_model(
            Path(tmp) / name,
            name=name,
            estimator=estimator,
            feature_names=fit_rows.feature_names,
            threshold=0.5,
            training=info(None),
            created_ms=created_ms,
            description=description,
        )
        scorer = Scorer(card, feature_names=fit_rows.feature_names)
        threshold = choose_threshold(holdout.y, scorer.score_batch(holdout.x), target_precision)
        metrics = evaluate(_eval_as(unseen), scorer.score_batch(unseen.x), threshold)
    if target.exists():
        shutil.rmtree(target)
    path = write_model(
        target,
        name=name,
        estimator=estimator,
        feature_names=fit_rows.feature_names,
        threshold=round(threshold, 6),
        training=info(metrics),
        created_ms=created_ms,
        description=description,
    )
    o = metrics.overall
    log(f"{name}: threshold {threshold:.4f} precision {o.precision:.4f} recall {o.recall:.4f} -> {path}")
    return path, threshold, metrics


def train_variants(
    out_dir: Path = MODELS_DIR,
    *,
    train_seeds: Sequence[int] = TRAIN_SEEDS,
    holdout_seeds: Sequence[int] = HOLDOUT_SEEDS,
    default_seed: int = 1,
    names: Sequence[str] = ("gbt", "logreg"),
    lofo_dir: Path | None = None,
    target_precision: float = TARGET_PRECISION,
    created_ms: int = DEFAULT_CREATED_MS,
    log: Any = print,
) -> dict[str, Path]:
    """Train ``names`` on the variants (module docstring); returns name → card path."""
    t0 = time.perf_counter()
    parts = [spec_rows(traffic_spec(default_seed), subsample=False)]
    log(f"default spec seed {default_seed}: {len(parts[0].y)} rows")
    for s in train_seeds:
        parts.append(spec_rows(variant_spec("train", s), subsample=True))
        log(f"train variant {s}: {len(parts[-1].y)} rows, {int(parts[-1].y.sum())} positive")
    fit_rows = Rows.concat(parts)
    holdout = Rows.concat([spec_rows(variant_spec("holdout", s), subsample=False) for s in holdout_seeds])
    unseen = spec_rows(variant_spec("unseen", UNSEEN_SEEDS[0]), subsample=False)
    log(f"holdout {len(holdout.y)} rows; unseen {len(unseen.y)} rows ({time.perf_counter() - t0:.0f} s)")
    note = (
        f"Fit rows: default spec seed {default_seed} + train variants {list(train_seeds)} (training "
        f"ranges; organic negatives subsampled to {NEGATIVE_KEEP} and weighted back); threshold: holdout "
        f"variants {list(holdout_seeds)}; metrics: unseen variant {UNSEEN_SEEDS[0]}."
    )
    paths: dict[str, Path] = {}
    for name in names:
        paths[name], _, _ = _train_one(
            name, fit_rows, holdout, unseen, out_dir / name, seed=default_seed,
            target_precision=target_precision, created_ms=created_ms, note=note, log=log,
        )  # fmt: skip
    if lofo_dir is not None:
        for family in SCENARIO_NAMES:
            _train_one(
                "gbt", fit_rows.without(family), holdout.without(family), unseen, lofo_dir / family / "gbt",
                seed=default_seed, target_precision=target_precision, created_ms=created_ms,
                note=f"Leave-one-family-out: every {family} event removed from fit and threshold rows. {note}",
                log=log,
            )  # fmt: skip
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return paths
