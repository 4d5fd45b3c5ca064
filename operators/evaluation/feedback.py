"""Reviewer decisions joined with the feature log: the training dataset of the human-in-the-loop path.

**The ``labels`` topic** carries one JSON object per reviewer decision (UTF-8, no protobuf), keyed by
``"<subject_kind>:<subject_id>"`` so one subject's decisions stay in order within a partition::

    {"subject_kind": "account", "subject_id": "acc_3f2a", "label": "abuse",
     "scenario": "spam_burst", "decided_ms": 1704117780000}

``subject_kind`` is a label kind (``account``, ``ip``, ``device``, ``asn``, ``target_content``,
``target_account``), ``label`` is ``abuse`` or ``benign``, ``scenario`` (optional, may be null) names
the abuse type, ``decided_ms`` is when the reviewer decided (epoch ms). Unknown keys are rejected.

The topic may also carry protobuf ``streamwarden.v1.ReviewLabel`` messages (what ``streamwarden review``
writes; a JSON object starts with ``{``, a serialized ``ReviewLabel`` never does): ``subject``,
``label``, ``decided_ms`` as above, ``category`` as the scenario. They carry a ``decision_id``; a
repeated id (the review outbox produces at least once) counts once.

**The join** (``join_training_rows``). The feature log (``FeatureRecord``: event id, feature names and
values, event time) names no subject, so the events (``Event``: event id → actor entities) link the
two. For each subject the latest decision (largest ``decided_ms``; later in the input on ties) counts:
a reviewer may reverse an earlier one. An event is labeled through its *actor* entities (account, ip,
device, asn; the target of an event is the object of abuse, not its author, as in
``models/train.py``), and only if the event happened in ``[decided_ms - lookback_ms, decided_ms]`` of
that decision: what the reviewer saw, nothing after. ``abuse`` on any actor entity makes the row
positive (e.g. a stuffing IP on a login to an innocent account); otherwise ``benign`` makes it negative;
events no decision covers are left out. One row per event id (repeated feature records, as written by
at-least-once sinks, count once); records whose feature names differ from the first record's are
skipped and counted.

**The dataset file** (``write_dataset``/``read_dataset``; what ``streamwarden train --dataset``
reads) is CSV with a header row: ``event_id, event_time_ms, account_id, subject, label, scenario``,
then one column per feature in the feature log's order. ``label`` is 1 (abuse) or 0 (benign);
``subject`` is the ``kind:id`` whose decision labeled the row; ``scenario`` may be empty; feature
values are written with ``repr`` (exact round trip).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError

from streamwarden.operators.errors import ConfigError
from streamwarden.operators.evaluation.report import counted, subject_of
from streamwarden.operators.traffic import ENTITY_KINDS, Label
from streamwarden.schemas import streamwarden_pb2 as pb

DECISION_LABELS: tuple[str, ...] = ("abuse", "benign")
ACTOR_KINDS: tuple[str, ...] = ("account", "ip", "device", "asn")
DEFAULT_LOOKBACK_MS = 86_400_000
"""How far before a decision its subject's events are labeled by it (one day)."""
DATASET_COLUMNS: tuple[str, ...] = ("event_id", "event_time_ms", "account_id", "subject", "label", "scenario")
"""The fixed leading columns of a dataset file; feature columns follow."""

_FIELDS = {"subject_kind", "subject_id", "label", "scenario", "decided_ms"}
_REQUIRED = _FIELDS - {"scenario"}


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    """One reviewer decision about one subject (a message of the ``labels`` topic)."""

    subject_kind: str
    subject_id: str
    label: str
    decided_ms: int
    scenario: str | None = None

    @property
    def subject(self) -> tuple[str, str]:
        return self.subject_kind, self.subject_id

    def key(self) -> bytes:
        """The Kafka key: ``kind:id``."""
        return f"{self.subject_kind}:{self.subject_id}".encode()

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "subject_kind": self.subject_kind,
            "subject_id": self.subject_id,
            "label": self.label,
            "decided_ms": self.decided_ms,
        }
        if self.scenario is not None:
            data["scenario"] = self.scenario
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ReviewDecision:
        """Parse one message; ``ValueError`` says what is wrong."""
        try:
            data: Any = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        unknown, missing = set(data) - _FIELDS, _REQUIRED - set(data)
        if unknown or missing:
            raise ValueError(f"unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        kind, sid, label, decided, scenario = (
            data["subject_kind"], data["subject_id"], data["label"], data["decided_ms"], data.get("scenario"),
        )  # fmt: skip
        if kind not in ENTITY_KINDS:
            raise ValueError(f"subject_kind {kind!r} is not one of {list(ENTITY_KINDS)}")
        if not isinstance(sid, str) or not sid:
            raise ValueError("subject_id must be a non-empty string")
        if label not in DECISION_LABELS:
            raise ValueError(f"label {label!r} is not one of {list(DECISION_LABELS)}")
        if isinstance(decided, bool) or not isinstance(decided, int) or decided <= 0:
            raise ValueError("decided_ms must be a positive integer (epoch ms)")
        if scenario is not None and not isinstance(scenario, str):
            raise ValueError("scenario must be a string or null")
        return cls(kind, sid, label, decided, scenario or None)


def decision_from_review_label(raw: bytes) -> tuple[str, ReviewDecision]:
    """A protobuf ``ReviewLabel`` message as (decision id, decision); ``ValueError`` says what is wrong."""
    try:
        msg = pb.ReviewLabel.FromString(raw)
    except DecodeError as exc:
        raise ValueError(f"not JSON or a ReviewLabel: {exc}") from exc
    if not msg.decision_id:
        raise ValueError("ReviewLabel without decision_id")
    kind = pb.EntityKind.Name(msg.subject.kind).lower() if msg.subject.kind in pb.EntityKind.values() else ""
    data = {
        "subject_kind": kind,
        "subject_id": msg.subject.id,
        "label": msg.label,
        "decided_ms": msg.decided_ms,
    }
    if msg.category:
        data["scenario"] = msg.category
    return msg.decision_id, ReviewDecision.from_json(json.dumps(data))


def parse_decisions(values: Iterable[bytes | None]) -> tuple[list[ReviewDecision], Counter[str]]:
    """Decode ``labels`` messages (JSON or ``ReviewLabel``) in topic order; bad ones are counted by
    reason, not raised; a ``ReviewLabel`` whose decision id was already seen is counted as a duplicate."""
    out: list[ReviewDecision] = []
    bad: Counter[str] = Counter()
    seen: set[str] = set()
    for raw in values:
        if not raw:
            bad["empty message"] += 1
            continue
        try:
            if raw.lstrip()[:1] == b"{":
                out.append(ReviewDecision.from_json(raw))
                continue
            decision_id, decision = decision_from_review_label(raw)
        except ValueError as exc:
            bad[str(exc).split(":")[0]] += 1
            continue
        if decision_id in seen:
            bad["duplicate decision_id"] += 1
            continue
        seen.add(decision_id)
        out.append(decision)
    return out, bad


def latest_decisions(decisions: Iterable[ReviewDecision]) -> dict[tuple[str, str], ReviewDecision]:
    """Per subject the decision that counts: the latest ``decided_ms`` (later in the input on ties)."""
    out: dict[tuple[str, str], ReviewDecision] = {}
    for d in decisions:
        old = out.get(d.subject)
        if old is None or d.decided_ms >= old.decided_ms:
            out[d.subject] = d
    return out


# ---------------------------------------------------------------- generated decisions


def simulate_reviews(
    actions: Iterable[pb.Action],
    labs: Sequence[Label],
    *,
    review_delay_ms: int = 120_000,
    kinds: Sequence[str] = ACTOR_KINDS,
) -> list[ReviewDecision]:
    """What perfect reviewers would decide about the actioned subjects: every subject of ``kinds`` a
    counted action (enforce mode, not ``ALLOW``) named, ``review_delay_ms`` after its first action in
    event time; ``abuse`` (with the scenario) if a label names it, else ``benign``."""
    labeled: dict[tuple[str, str], str] = {}
    for x in labs:
        labeled.setdefault((x.entity_kind, x.entity_id), x.scenario)
    first: dict[tuple[str, str], int] = {}
    for a in actions:
        if counted(a, kinds, include_shadow_mode=False):
            s = subject_of(a)
            first[s] = min(first.get(s, a.event_time_ms), a.event_time_ms)
    out = []
    for s, t in sorted(first.items(), key=lambda kv: (kv[1], kv[0])):
        scenario = labeled.get(s)
        label = "abuse" if scenario is not None else "benign"
        out.append(ReviewDecision(s[0], s[1], label, t + review_delay_ms, scenario))
    return out


def sample_organic_reviews(
    events: Iterable[pb.Event], labs: Sequence[Label], *, every: int = 20, limit: int | None = None
) -> list[ReviewDecision]:
    """Quality-control reviews of organic accounts: each ``every``-th distinct unlabeled actor account
    (in order of first appearance) is decided ``benign`` just after its last event."""
    labeled = {(x.entity_kind, x.entity_id) for x in labs}
    last: dict[str, int] = {}
    for e in events:
        acc = e.actor.account_id
        if acc and ("account", acc) not in labeled:
            last[acc] = max(last.get(acc, 0), e.event_time_ms)
    out = []
    for i, (acc, t) in enumerate(last.items()):
        if i % every == 0:
            out.append(ReviewDecision("account", acc, "benign", t + 1))
            if limit is not None and len(out) >= limit:
                break
    return out


# ---------------------------------------------------------------- the join


@dataclass(frozen=True, slots=True)
class TrainingRow:
    event_id: str
    event_time_ms: int
    account_id: str
    subject: str
    """``kind:id`` of the decision that labeled the row."""
    label: int
    scenario: str
    values: tuple[float, ...]


@dataclass
class JoinStats:
    """What the join saw and did."""

    decisions: int = 0
    subjects: int = 0
    events: int = 0
    feature_records: int = 0
    duplicate_feature_records: int = 0
    mismatched_feature_records: int = 0
    """Skipped: feature names differ from the first record's."""
    features_without_event: int = 0
    rows: int = 0
    positives: int = 0
    negatives: int = 0
    subjects_without_rows: int = 0
    """Decided subjects none of whose events fell in the decision's window (or had a feature record)."""
    bad_decisions: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "bad_decisions"}
        out["bad_decisions"] = dict(self.bad_decisions)
        return out


@dataclass(frozen=True, slots=True)
class TrainingSet:
    feature_names: tuple[str, ...]
    rows: list[TrainingRow]
    stats: JoinStats


def _actor_subjects(e: pb.Event) -> tuple[tuple[str, str], ...]:
    a = e.actor
    return (
        ("account", a.account_id),
        ("ip", a.ip),
        ("device", a.device_id),
        ("asn", str(a.asn) if a.asn else ""),
    )


def join_training_rows(
    decisions: Iterable[ReviewDecision],
    events: Iterable[pb.Event],
    feature_records: Iterable[pb.FeatureRecord],
    *,
    lookback_ms: int = DEFAULT_LOOKBACK_MS,
) -> TrainingSet:
    """Training rows from reviewer decisions, events and feature records (the join of the module
    docstring); rows sorted by event time, then event id."""
    stats = JoinStats()
    decision_list = list(decisions)
    stats.decisions = len(decision_list)
    latest = latest_decisions(decision_list)
    stats.subjects = len(latest)
    index: dict[str, tuple[int, str, tuple[tuple[str, str], ...]]] = {}
    for e in events:
        stats.events += 1
        index.setdefault(e.event_id, (e.event_time_ms, e.actor.account_id, _actor_subjects(e)))
    names: tuple[str, ...] | None = None
    seen: set[str] = set()
    used: set[tuple[str, str]] = set()
    rows: list[TrainingRow] = []
    for rec in feature_records:
        stats.feature_records += 1
        if rec.event_id in seen:
            stats.duplicate_feature_records += 1
            continue
        rec_names = tuple(rec.names)
        if names is None:
            names = rec_names
        elif rec_names != names:
            stats.mismatched_feature_records += 1
            continue
        seen.add(rec.event_id)
        found = index.get(rec.event_id)
        if found is None:
            stats.features_without_event += 1
            continue
        t, account, subjects = found
        abuse: ReviewDecision | None = None
        benign: ReviewDecision | None = None
        matching: list[tuple[str, str]] = []
        for s in subjects:
            d = latest.get(s)
            if d is None or not d.decided_ms - lookback_ms <= t <= d.decided_ms:
                continue
            matching.append(s)
            if d.label == "abuse":
                abuse = abuse or d
            else:
                benign = benign or d
        chosen = abuse or benign
        if chosen is None:
            continue
        used.update(matching)
        rows.append(
            TrainingRow(
                rec.event_id,
                t,
                account,
                f"{chosen.subject_kind}:{chosen.subject_id}",
                1 if chosen is abuse else 0,
                chosen.scenario or "",
                tuple(rec.values),
            )
        )
    rows.sort(key=lambda r: (r.event_time_ms, r.event_id))
    stats.rows = len(rows)
    stats.positives = sum(r.label for r in rows)
    stats.negatives = stats.rows - stats.positives
    stats.subjects_without_rows = len(latest.keys() - used)
    return TrainingSet(names or (), rows, stats)


# ---------------------------------------------------------------- the dataset file


def write_dataset(path: Path, data: TrainingSet) -> int:
    """Write ``data`` as the CSV dataset file; returns the number of rows."""
    with path.open("w", encoding="utf-8", newline="") as out:
        w = csv.writer(out)
        w.writerow([*DATASET_COLUMNS, *data.feature_names])
        for r in data.rows:
            w.writerow(
                [r.event_id, r.event_time_ms, r.account_id, r.subject, r.label, r.scenario]
                + [repr(float(v)) for v in r.values]
            )
    return len(data.rows)


@dataclass(frozen=True)
class Dataset:
    """A dataset file in memory: one row per event."""

    feature_names: tuple[str, ...]
    event_ids: list[str]
    event_time_ms: npt.NDArray[np.int64]
    account_ids: list[str]
    subjects: list[str]
    y: npt.NDArray[np.int8]
    scenario: npt.NDArray[np.str_]
    x: npt.NDArray[np.float32]


def read_dataset(path: Path) -> Dataset:
    """Read a dataset file; ``ConfigError`` names the file, line and problem."""
    try:
        src = path.open(encoding="utf-8", newline="")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    with src:
        reader = csv.reader(src)
        header = next(reader, None)
        if header is None or tuple(header[: len(DATASET_COLUMNS)]) != DATASET_COLUMNS:
            raise ConfigError(f"{path}:1: header must start with {','.join(DATASET_COLUMNS)}")
        names = tuple(header[len(DATASET_COLUMNS) :])
        if not names:
            raise ConfigError(f"{path}:1: no feature columns")
        ids: list[str] = []
        times: list[int] = []
        accounts: list[str] = []
        subjects: list[str] = []
        ys: list[int] = []
        scen: list[str] = []
        values: list[list[float]] = []
        width = len(header)
        for lineno, row in enumerate(reader, 2):
            if len(row) != width:
                raise ConfigError(f"{path}:{lineno}: {len(row)} columns, the header has {width}")
            try:
                label = int(row[4])
                vals = [float(v) for v in row[len(DATASET_COLUMNS) :]]
                t = int(row[1])
            except ValueError as exc:
                raise ConfigError(f"{path}:{lineno}: {exc}") from exc
            if label not in (0, 1):
                raise ConfigError(f"{path}:{lineno}: label must be 0 or 1, got {label}")
            if not all(math.isfinite(v) for v in vals):
                raise ConfigError(f"{path}:{lineno}: feature values must be finite")
            ids.append(row[0])
            times.append(t)
            accounts.append(row[2])
            subjects.append(row[3])
            ys.append(label)
            scen.append(row[5])
            values.append(vals)
    return Dataset(
        feature_names=names,
        event_ids=ids,
        event_time_ms=np.asarray(times, dtype=np.int64),
        account_ids=accounts,
        subjects=subjects,
        y=np.asarray(ys, dtype=np.int8),
        scenario=np.asarray(scen, dtype=np.str_),
        x=np.asarray(values, dtype=np.float32).reshape(len(values), len(names)),
    )
