"""``streamwarden train``: labelled traffic → the same offline feature replay the jobs use → two
classifiers → ONNX + model cards, evaluated on traffic of another seed.

Data. ``iter_traffic(spec(seed))`` gives the records in arrival order; valid events go through
``replay_features`` (the velocity feature engine's offline replay, the very code the streaming jobs
run), which yields one feature vector per event.

Labels (precisely). An event is *positive for scenario S* iff some label of S names one of the
event's **actor** entities (``account`` = actor.account_id, ``ip`` = actor.ip, ``device`` =
actor.device_id, ``asn`` = str(actor.asn)) and ``start_ms <= event_time_ms < end_ms``. Target
labels (``target_content``, ``target_account``) do not make an event positive: a farmed track or a
bought account is the object of abuse, and organic fans act on it too. If several scenarios match,
the first in ``SCENARIO_NAMES`` order wins. Every other event is negative.

Splits. Training seed: events whose actor account hashes into bucket 0 of 5 form the calibration
split (threshold choice), the rest the fit split. The threshold is the lowest score whose precision on
the calibration split reaches ``target_precision``. All reported metrics are computed on the eval
seed's traffic, scored by the exported ONNX model through ``Scorer`` (what runs in production).

Per-scenario metrics use that scenario's positives against *all* negatives, so a scenario's
precision counts every false positive; recall is the share of the scenario's events caught.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import typer

from streamwarden.operators.evaluation.feedback import read_dataset
from streamwarden.operators.features import FeatureSpec, default_spec, replay
from streamwarden.operators.scoring import MODELS_DIR, Scorer, load_model_card
from streamwarden.operators.scoring.model_card import EvalMetrics, Metrics, TrainingInfo
from streamwarden.operators.traffic import SCENARIO_NAMES, Label, iter_traffic, labels, load_spec
from streamwarden.operators.traffic.spec import TrafficSpec
from streamwarden.schemas import streamwarden_pb2 as pb
from streamwarden.schemas.codec import decode_event

DEFAULT_SEED = 1
DEFAULT_EVAL_SEED = 2
TARGET_PRECISION = 0.99
CALIBRATION_BUCKETS = 5
ACTOR_KINDS = ("account", "ip", "device", "asn")
# A fixed creation time for the shipped cards keeps `streamwarden train` byte-reproducible;
# pass --created-ms to stamp the real time.
DEFAULT_CREATED_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z

LABELING = (
    "positive for scenario S iff a label of S names the event's actor account, ip, device or asn "
    "and start_ms <= event_time_ms < end_ms (target labels do not count; first scenario in "
    "SCENARIO_NAMES order wins); all other events negative"
)


@dataclass(frozen=True)
class Dataset:
    """Feature rows of one traffic seed with their labels."""

    seed: int
    feature_names: tuple[str, ...]
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int8]
    scenario: npt.NDArray[np.str_]  # "" for negatives
    calibration: npt.NDArray[np.bool_]
    event_ids: list[str]
    generator_agreement: float  # share of events whose label agrees with the generator's own tag


@dataclass(frozen=True)
class FeatureTable:
    """The replay's vectors as one float32 matrix, rows in arrival order."""

    feature_names: tuple[str, ...]
    event_ids: list[str]
    values: npt.NDArray[np.float32]


def replay_features(events: Sequence[pb.Event], spec: FeatureSpec | None = None) -> FeatureTable:
    """Feature vectors of ``events`` (arrival order) from the velocity engine's offline replay."""
    spec = spec if spec is not None else default_spec()
    vectors, _ = replay(events, spec)
    names = tuple(spec.feature_names())
    values = np.asarray([v.values for v in vectors], dtype=np.float32).reshape(len(vectors), len(names))
    return FeatureTable(names, [v.event_id for v in vectors], values)


def _label_index(labs: Iterable[Label]) -> dict[tuple[str, str], list[tuple[int, int, int]]]:
    order = {name: i for i, name in enumerate(SCENARIO_NAMES)}
    index: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for lab in labs:
        if lab.entity_kind in ACTOR_KINDS and not lab.benign:
            index.setdefault((lab.entity_kind, lab.entity_id), []).append(
                (order[lab.scenario], lab.start_ms, lab.end_ms)
            )
    return index


def label_event(event: pb.Event, index: dict[tuple[str, str], list[tuple[int, int, int]]]) -> str:
    """The scenario an event is positive for ("" = negative), by the rule in the module docstring."""
    a = event.actor
    keys = (
        ("account", a.account_id),
        ("ip", a.ip),
        ("device", a.device_id),
        ("asn", str(a.asn) if a.asn else ""),
    )
    best: int | None = None
    t = event.event_time_ms
    for key in keys:
        if not key[1]:
            continue
        for order, start, end in index.get(key, ()):
            if start <= t < end and (best is None or order < best):
                best = order
    return SCENARIO_NAMES[best] if best is not None else ""


def _bucket(account_id: str) -> int:
    return hashlib.sha256(account_id.encode()).digest()[0] % CALIBRATION_BUCKETS


def traffic_spec(seed: int, duration_s: float | None = None) -> TrafficSpec:
    """The default traffic spec with ``seed``; ``duration_s`` rescales the run and its scenario windows."""
    spec = load_spec(None, seed=seed)
    return spec.scaled_to(duration_s) if duration_s is not None else spec


@dataclass(frozen=True)
class Replayed:
    """One seed's valid events in arrival order, their feature table and the traffic ground truth."""

    spec: TrafficSpec
    events: list[pb.Event]
    generator_tags: list[str]
    table: FeatureTable
    labels: list[Label]


def replay_seed(seed: int, duration_s: float | None = None) -> Replayed:
    """Generate seed ``seed``'s traffic, decode it and run the offline feature replay over it."""
    spec = traffic_spec(seed, duration_s)
    events: list[pb.Event] = []
    tags: list[str] = []
    for record in iter_traffic(spec):
        decoded = decode_event(record.payload)
        if isinstance(decoded, pb.Event):
            events.append(decoded)
            tags.append(record.scenario or "")
    table = replay_features(events)
    if table.event_ids != [e.event_id for e in events]:
        raise RuntimeError("the replay did not return one vector per event in arrival order")
    return Replayed(spec, events, tags, table, labels(spec))


def build_dataset(seed: int, duration_s: float | None = None) -> Dataset:
    """Generate seed ``seed``'s traffic, replay its features and label every valid event."""
    r = replay_seed(seed, duration_s)
    index = _label_index(r.labels)
    scen = [label_event(e, index) for e in r.events]
    agree = sum(s == tag for s, tag in zip(scen, r.generator_tags, strict=True))
    scenario = np.asarray(scen, dtype=np.str_)
    return Dataset(
        seed=seed,
        feature_names=r.table.feature_names,
        x=r.table.values,
        y=(scenario != "").astype(np.int8),
        scenario=scenario,
        calibration=np.asarray([_bucket(e.actor.account_id) == 0 for e in r.events], dtype=np.bool_),
        event_ids=r.table.event_ids,
        generator_agreement=agree / max(1, len(scen)),
    )


def load_dataset(path: Path) -> Dataset:
    """A training set from a dataset file (``streamwarden feedback build``; format in
    ``operators/evaluation/feedback.py``): its rows, labels and feature columns; the calibration split
    is the same account hash bucket as for generated traffic."""
    data = read_dataset(path)
    return Dataset(
        seed=-1,
        feature_names=data.feature_names,
        x=data.x,
        y=data.y,
        scenario=data.scenario,
        calibration=np.asarray([_bucket(a) == 0 for a in data.account_ids], dtype=np.bool_),
        event_ids=data.event_ids,
        generator_agreement=float("nan"),
    )


def dataset_labeling(path: Path) -> str:
    """The card's ``labeling`` text for a model trained on a dataset file (names the file's digest)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"reviewer decisions joined with the feature log: {path.name} (sha256 {digest}...)"


# ---- models ------------------------------------------------------------------------------------


def make_estimators(seed: int) -> dict[str, tuple[Any, str, dict[str, Any], str]]:
    """name → (unfitted estimator, algorithm, params, description)."""
    # scikit-learn takes ~1.5 s to import: only the commands that train pay for it.
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    gbt_params: dict[str, Any] = {
        "max_iter": 100,
        "max_depth": 3,
        "learning_rate": 0.1,
        "early_stopping": False,
        "random_state": seed,
    }
    lr_params: dict[str, Any] = {"C": 1.0, "max_iter": 2000, "class_weight": None}
    return {
        "gbt": (
            HistGradientBoostingClassifier(**gbt_params),
            "sklearn.ensemble.HistGradientBoostingClassifier",
            gbt_params,
            "Gradient-boosted trees (100 x depth 3) over the velocity features; the default model.",
        ),
        "logreg": (
            Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(**lr_params))]),
            "sklearn Pipeline(StandardScaler, LogisticRegression)",
            lr_params,
            "Logistic regression on standardised velocity features; a cheap, explainable second opinion.",
        ),
    }


def choose_threshold(y: npt.NDArray[Any], scores: npt.NDArray[Any], target_precision: float) -> float:
    """Lowest score threshold whose precision (score >= t) reaches the target; 1.0 if none does."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order].astype(np.float64)
    tp = np.cumsum(y[order] == 1)
    k = np.arange(1, len(s) + 1)
    precision = tp / k
    # Only cut between distinct scores: the last index of each run of equal scores.
    last_of_run = np.r_[s[1:] != s[:-1], True]
    ok = np.flatnonzero(last_of_run & (precision >= target_precision) & (tp > 0))
    if ok.size == 0:
        return 1.0
    return float(s[ok[-1]])


def metrics_at(y: npt.NDArray[Any], scores: npt.NDArray[Any], threshold: float) -> Metrics:
    from sklearn.metrics import average_precision_score

    pred = scores >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    positives = int(np.sum(y == 1))
    return Metrics(
        precision=round(tp / (tp + fp), 6) if tp + fp else 0.0,
        recall=round(tp / (tp + fn), 6) if tp + fn else 0.0,
        pr_auc=round(float(average_precision_score(y, scores)), 6) if positives else 0.0,
        positives=positives,
        negatives=int(np.sum(y == 0)),
    )


def evaluate(data: Dataset, scores: npt.NDArray[Any], threshold: float) -> EvalMetrics:
    """Overall and per-scenario metrics (each scenario's positives against all negatives)."""
    per: dict[str, Metrics] = {}
    for name in SCENARIO_NAMES:
        mask = (data.scenario == name) | (data.y == 0)
        if np.any(data.scenario == name):
            per[name] = metrics_at(data.y[mask], scores[mask], threshold)
    return EvalMetrics(overall=metrics_at(data.y, scores, threshold), per_scenario=per)


@dataclass(frozen=True)
class TrainResult:
    card_paths: dict[str, Path]
    seconds: float


def train(
    out_dir: Path = MODELS_DIR,
    *,
    seed: int = DEFAULT_SEED,
    eval_seed: int = DEFAULT_EVAL_SEED,
    target_precision: float = TARGET_PRECISION,
    duration_s: float | None = None,
    created_ms: int = DEFAULT_CREATED_MS,
    names: Sequence[str] = ("gbt", "logreg"),
    log: Any = print,
    dataset: Path | None = None,
) -> TrainResult:
    """Train, export and evaluate every model in ``names``; write ``out_dir/<name>/model.{onnx,yaml}``.

    ``dataset``: train on this dataset file (``streamwarden feedback build``) instead of seed ``seed``'s
    generated traffic; evaluation stays on ``eval_seed``'s traffic, so feature names must match."""
    from streamwarden.models.export import write_model

    t0 = time.perf_counter()
    labeling = LABELING
    if dataset is not None:
        log(f"dataset {dataset}: reading ...")
        train_data = load_dataset(dataset)
        labeling = dataset_labeling(dataset)
    else:
        log(f"traffic seed {seed}: generating and replaying features ...")
        train_data = build_dataset(seed, duration_s)
    log(
        f"  {len(train_data.y)} events, {int(train_data.y.sum())} positive, "
        f"{len(train_data.feature_names)} features, label/generator agreement {train_data.generator_agreement:.4f}"
    )
    log(f"traffic seed {eval_seed}: generating and replaying features ...")
    eval_data = build_dataset(eval_seed, duration_s)
    log(f"  {len(eval_data.y)} events, {int(eval_data.y.sum())} positive")
    if eval_data.feature_names != train_data.feature_names:
        raise RuntimeError("feature names differ between the training data and the evaluation seed")
    fit = ~train_data.calibration
    cal = train_data.calibration
    x_fit = train_data.x[fit].astype(np.float64)
    paths: dict[str, Path] = {}
    estimators = make_estimators(seed)
    for name in names:
        estimator, algorithm, params, description = estimators[name]
        log(f"{name}: fitting on {int(fit.sum())} rows ...")
        estimator.fit(x_fit, train_data.y[fit])
        with tempfile.TemporaryDirectory() as tmp:
            # Threshold and metrics come from the exported ONNX model, exactly as it will run.
            placeholder = _training_info(
                seed, eval_seed, algorithm, params, train_data, eval_data, target_precision, labeling=labeling
            )
            card = write_model(
                Path(tmp) / name,
                name=name,
                estimator=estimator,
                feature_names=train_data.feature_names,
                threshold=0.5,
                training=placeholder,
                created_ms=created_ms,
                description=description,
            )
            scorer = Scorer(card, feature_names=train_data.feature_names)
            threshold = choose_threshold(
                train_data.y[cal], scorer.score_batch(train_data.x[cal]), target_precision
            )
            metrics = evaluate(eval_data, scorer.score_batch(eval_data.x), threshold)
        training = _training_info(
            seed,
            eval_seed,
            algorithm,
            params,
            train_data,
            eval_data,
            target_precision,
            metrics,
            labeling=labeling,
        )
        target = out_dir / name
        if target.exists():
            shutil.rmtree(target)
        paths[name] = write_model(
            target,
            name=name,
            estimator=estimator,
            feature_names=train_data.feature_names,
            threshold=round(threshold, 6),
            training=training,
            created_ms=created_ms,
            description=description,
        )
        o = metrics.overall
        log(
            f"{name}: threshold {threshold:.4f}  precision {o.precision:.4f}  recall {o.recall:.4f}  "
            f"pr_auc {o.pr_auc:.4f}  -> {paths[name]}"
        )
    return TrainResult(paths, time.perf_counter() - t0)


def _training_info(
    seed: int,
    eval_seed: int,
    algorithm: str,
    params: dict[str, Any],
    train_data: Dataset,
    eval_data: Dataset,
    target_precision: float,
    metrics: EvalMetrics | None = None,
    *,
    labeling: str = LABELING,
) -> TrainingInfo:
    empty = Metrics(precision=0, recall=0, pr_auc=0, positives=0, negatives=0)
    return TrainingInfo(
        seed=seed,
        eval_seed=eval_seed,
        algorithm=algorithm,
        params=params,
        labeling=labeling,
        train_rows=int((~train_data.calibration).sum()),
        eval_rows=len(eval_data.y),
        target_precision=target_precision,
        metrics=metrics if metrics is not None else EvalMetrics(overall=empty),
    )


# ---- commands ----------------------------------------------------------------------------------


def compare_cards(new: dict[str, Path], shipped_dir: Path) -> list[str]:
    """Differences between freshly trained cards and the shipped ones (sha256, threshold, metrics)."""
    problems = []
    for name, path in new.items():
        shipped = shipped_dir / name / "model.yaml"
        if not shipped.is_file():
            problems.append(f"{shipped} does not exist")
            continue
        a, b = load_model_card(path).card, load_model_card(shipped).card
        for field in ("sha256", "threshold", "feature_names"):
            if getattr(a, field) != getattr(b, field):
                problems.append(f"{name}: {field} {getattr(a, field)!r} != shipped {getattr(b, field)!r}")
        if a.training.metrics != b.training.metrics:
            problems.append(f"{name}: metrics differ from the shipped card")
    return problems


def report(card_paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Print each card's held-out metrics (overall and per scenario); returns them as dicts."""
    rows: list[dict[str, Any]] = []
    for path in card_paths:
        card = load_model_card(path).card
        tr = card.training
        typer.echo(
            f"{card.name} {card.version}  threshold {card.threshold:.4f} (target precision {tr.target_precision})  "
            f"train seed {tr.seed}, eval seed {tr.eval_seed}, {tr.eval_rows} eval rows"
        )
        typer.echo(f"  {'scenario':22s} {'precision':>9s} {'recall':>9s} {'pr_auc':>9s} {'positives':>9s}")
        entries = [("overall", tr.metrics.overall), *tr.metrics.per_scenario.items()]
        for scen, m in entries:
            typer.echo(f"  {scen:22s} {m.precision:9.4f} {m.recall:9.4f} {m.pr_auc:9.4f} {m.positives:9d}")
            rows.append({"model": card.name, "version": card.version, "scenario": scen, **m.model_dump()})
    return rows
