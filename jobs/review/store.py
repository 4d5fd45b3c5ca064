"""The review store: every state change of review jobs in one place, each in one transaction.

- Ingestion is idempotent: an action id already stored is skipped; an action for a subject with an open
  job joins that job (the database keeps at most one open job per subject and kind).
- A claim is a compare-and-set on the job's ``version``: of two reviewers racing for the same job, one
  update matches and the other sees zero rows and takes the next job. A claim lasts ``lease_s``; after
  that the job can be claimed again.
- A decision, its outbox row (the label to produce), the entity label and the audit entry are written in
  one transaction, by the reviewer who holds the claim only.

SQLite (the embedded default) runs every transaction as ``BEGIN IMMEDIATE`` in WAL mode, so concurrent
writers queue on the database lock instead of failing on an upgraded read lock; PostgreSQL runs at READ
COMMITTED, where the conditional UPDATE re-checks its WHERE clause on the row it waited for.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from streamwarden.jobs.review.models import (
    AuditEntry,
    Decision,
    EntityLabel,
    Meta,
    Outbox,
    ReviewJob,
    StoredAction,
    User,
)
from streamwarden.operators.errors import StreamwardenError
from streamwarden.operators.evaluation.report import kind_name
from streamwarden.operators.review.decisions import DecisionInput, label_key, review_label
from streamwarden.operators.review.leases import lease_until
from streamwarden.operators.review.stats import DecidedJob
from streamwarden.schemas import streamwarden_pb2 as pb

MIGRATIONS = Path(__file__).with_name("migrations")
ROLES = ("reviewer", "admin")
OPEN = ("pending", "claimed")


def now_ms() -> int:
    return int(time.time() * 1000)


class StoreError(StreamwardenError):
    """A request the store refuses (the message is for the user)."""


class ClaimLost(StoreError):
    """The job is not (or no longer) claimed by this reviewer."""


# ---------------------------------------------------------------- engine and migrations


def make_engine(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``), set up as described
    in the module docstring."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the Alembic migrations (idempotent)."""
    with engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


# ---------------------------------------------------------------- what the console shows


@dataclass(frozen=True)
class QueueStat:
    name: str
    pending: int
    claimed: int
    oldest_created_ms: int | None


@dataclass(frozen=True)
class ActionView:
    action_id: str
    event_id: str
    subject_kind: str
    subject_id: str
    verdict: str
    mode: str
    rule_ids: tuple[str, ...]
    scores: dict[str, float]
    model_version: str
    policy_version: str
    event_time_ms: int
    decision_time_ms: int
    features: list[tuple[str, float]] | None
    job_id: str | None


@dataclass(frozen=True)
class DecisionView:
    id: str
    job_id: str
    queue: str
    decision: str
    label: str | None
    category: str
    reason: str
    reviewer: str
    decided_ms: int
    escalated_to: str | None


@dataclass
class JobView:
    id: str
    queue: str
    kind: str
    subject_kind: str
    subject_id: str
    status: str
    created_ms: int
    claimed_by: str | None
    lease_until_ms: int | None
    escalated_from: str | None
    appeal_reason: str | None
    actions: list[ActionView] = field(default_factory=list)
    decisions: list[DecisionView] = field(default_factory=list)
    appealed: DecisionView | None = None
    history: list[ActionView] = field(default_factory=list)
    """The subject's other recent actions (not attached to this job)."""
    past_decisions: list[DecisionView] = field(default_factory=list)
    entity_label: EntityLabelView | None = None

    @property
    def rule_ids(self) -> list[str]:
        return sorted({r for a in self.actions for r in a.rule_ids})


@dataclass(frozen=True)
class EntityLabelView:
    label: str
    category: str
    decision_id: str
    decided_ms: int


@dataclass(frozen=True)
class IngestResult:
    new_jobs: int = 0
    attached: int = 0
    duplicates: int = 0
    history_only: int = 0


@dataclass(frozen=True)
class UserView:
    username: str
    role: str
    has_password: bool
    has_api_key: bool
    created_ms: int


def _action_view(row: StoredAction) -> ActionView:
    feats = None
    if row.features_json:
        data = json.loads(row.features_json)
        feats = list(zip(data["names"], data["values"], strict=True))
    return ActionView(
        action_id=row.action_id,
        event_id=row.event_id,
        subject_kind=row.subject_kind,
        subject_id=row.subject_id,
        verdict=row.verdict,
        mode=row.mode,
        rule_ids=tuple(r for r in row.rule_ids.split(",") if r),
        scores=json.loads(row.scores_json),
        model_version=row.model_version,
        policy_version=row.policy_version,
        event_time_ms=row.event_time_ms,
        decision_time_ms=row.decision_time_ms,
        features=feats,
        job_id=row.job_id,
    )


def _decision_view(row: Decision) -> DecisionView:
    return DecisionView(
        row.id, row.job_id, row.queue, row.decision, row.label, row.category, row.reason, row.reviewer,
        row.decided_ms, row.escalated_to,
    )  # fmt: skip


def _open_key(kind: str, subject_kind: str, subject_id: str) -> str:
    return f"{kind}|{subject_kind}:{subject_id}"


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# ---------------------------------------------------------------- the store


class ReviewStore:
    """All reads and writes of the review service (thread-safe: one session per call)."""

    def __init__(self, engine: Engine, *, labels_topic: str = "labels") -> None:
        self.engine = engine
        self.labels_topic = labels_topic
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._hasher = PasswordHasher()

    @classmethod
    def open(cls, url: str, *, labels_topic: str = "labels", run_migrations: bool = True) -> ReviewStore:
        engine = make_engine(url)
        if run_migrations:
            migrate(engine)
        return cls(engine, labels_topic=labels_topic)

    @contextmanager
    def tx(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # ---- settings

    def secret_key(self) -> str:
        """The session signing key, made on first use and kept in the database (sessions survive restarts)."""
        with self.tx() as s:
            row = s.get(Meta, "session_secret")
            if row is None:
                row = Meta(key="session_secret", value=secrets.token_urlsafe(32))
                s.add(row)
            return row.value

    # ---- users

    def add_user(self, username: str, password: str | None, role: str, *, actor: str = "system") -> None:
        if role not in ROLES:
            raise StoreError(f"role must be one of {ROLES}, got {role!r}")
        if not username or len(username) > 64:
            raise StoreError("user names are 1 to 64 characters")
        if password is not None and len(password) < 8:
            raise StoreError("passwords are at least 8 characters")
        pw_hash = self._hasher.hash(password) if password is not None else None
        try:
            with self.tx() as s:
                s.add(User(username=username, password_hash=pw_hash, role=role, created_ms=now_ms()))
                self._audit(s, actor, "user.add", None, {"username": username, "role": role})
        except IntegrityError as exc:
            raise StoreError(f"user {username!r} exists already") from exc

    def set_password(self, username: str, password: str, *, actor: str = "system") -> None:
        if len(password) < 8:
            raise StoreError("passwords are at least 8 characters")
        with self.tx() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise StoreError(f"no user {username!r}")
            user.password_hash = self._hasher.hash(password)
            self._audit(s, actor, "user.password", None, {"username": username})

    def new_api_key(self, username: str, *, actor: str = "system") -> str:
        """A new API key for ``username`` (replaces any previous one); only its hash is stored."""
        key = "swk_" + secrets.token_urlsafe(32)
        with self.tx() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise StoreError(f"no user {username!r}")
            user.api_key_hash = hash_api_key(key)
            self._audit(s, actor, "user.api_key", None, {"username": username})
        return key

    def authenticate(self, username: str, password: str) -> UserView | None:
        with self.tx() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None or user.password_hash is None:
                self._hasher.hash(password)  # same cost whether or not the user exists
                return None
            try:
                self._hasher.verify(user.password_hash, password)
            except (VerificationError, InvalidHashError):
                return None
            if self._hasher.check_needs_rehash(user.password_hash):
                user.password_hash = self._hasher.hash(password)
            return self._user_view(user)

    def user_by_api_key(self, key: str) -> UserView | None:
        with self.tx() as s:
            user = s.scalar(select(User).where(User.api_key_hash == hash_api_key(key)))
            return self._user_view(user) if user is not None else None

    def user(self, username: str) -> UserView | None:
        with self.tx() as s:
            user = s.scalar(select(User).where(User.username == username))
            return self._user_view(user) if user is not None else None

    def users(self) -> list[UserView]:
        with self.tx() as s:
            return [self._user_view(u) for u in s.scalars(select(User).order_by(User.username))]

    @staticmethod
    def _user_view(u: User) -> UserView:
        return UserView(
            u.username, u.role, u.password_hash is not None, u.api_key_hash is not None, u.created_ms
        )

    # ---- audit

    @staticmethod
    def _audit(s: Session, actor: str, action: str, job_id: str | None, detail: dict[str, Any]) -> None:
        s.add(
            AuditEntry(
                at_ms=now_ms(), actor=actor, action=action, job_id=job_id,
                detail=json.dumps(detail, sort_keys=True),
            )
        )  # fmt: skip

    def audit(self, actor: str, action: str, job_id: str | None = None, **detail: Any) -> None:
        with self.tx() as s:
            self._audit(s, actor, action, job_id, detail)

    def audit_entries(self, limit: int = 200, job_id: str | None = None) -> list[AuditEntry]:
        with self.tx() as s:
            q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            if job_id is not None:
                q = q.where(AuditEntry.job_id == job_id)
            return list(s.scalars(q))

    # ---- ingestion

    def ingest_actions(
        self, routed: Sequence[tuple[pb.Action, str | None]], *, received_ms: int | None = None
    ) -> IngestResult:
        """Store a batch of actions with their queue (``None``: history only), in one transaction."""
        for attempt in range(3):
            try:
                return self._ingest(routed, received_ms or now_ms())
            except IntegrityError:  # another ingester won a race on an action id or an open job
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _ingest(self, routed: Sequence[tuple[pb.Action, str | None]], received: int) -> IngestResult:
        new_jobs = attached = dups = history = 0
        with self.tx() as s:
            ids = [a.action_id for a, _ in routed]
            known = set(s.scalars(select(StoredAction.action_id).where(StoredAction.action_id.in_(ids))))
            for action, queue in routed:
                if action.action_id in known:
                    dups += 1
                    continue
                known.add(action.action_id)
                kind, sid = kind_name(action.subject.kind), action.subject.id
                job_id: str | None = None
                if queue is not None:
                    key = _open_key("review", kind, sid)
                    job = s.scalar(select(ReviewJob).where(ReviewJob.open_key == key))
                    if job is None:
                        job = ReviewJob(
                            id=uuid.uuid4().hex, queue=queue, kind="review", subject_kind=kind,
                            subject_id=sid, status="pending", open_key=key, created_ms=received,
                            updated_ms=received, version=0,
                        )  # fmt: skip
                        s.add(job)
                        s.flush()
                        new_jobs += 1
                    else:
                        attached += 1
                    job_id = job.id
                else:
                    history += 1
                s.add(
                    StoredAction(
                        action_id=action.action_id, job_id=job_id, event_id=action.event_id,
                        subject_kind=kind, subject_id=sid, verdict=pb.Action.Verdict.Name(action.verdict),
                        mode=pb.Action.Mode.Name(action.mode), rule_ids=",".join(action.reasons),
                        scores_json=json.dumps(dict(action.scores), sort_keys=True),
                        model_version=action.model_version, policy_version=action.policy_version,
                        event_time_ms=action.event_time_ms, decision_time_ms=action.decision_time_ms,
                        received_ms=received,
                    )
                )  # fmt: skip
        return IngestResult(new_jobs, attached, dups, history)

    def attach_features(self, records: Sequence[pb.FeatureRecord]) -> set[str]:
        """Attach feature-log records to the stored review actions of their events; returns the event ids
        that matched (the caller keeps the others a while: the action may come later)."""
        by_event = {r.event_id: r for r in records if r.event_id}
        if not by_event:
            return set()
        matched: set[str] = set()
        with self.tx() as s:
            rows = s.scalars(
                select(StoredAction).where(
                    StoredAction.event_id.in_(list(by_event)),
                    StoredAction.job_id.is_not(None),
                    StoredAction.features_json.is_(None),
                )
            )
            for row in rows:
                rec = by_event[row.event_id]
                row.features_json = json.dumps({"names": list(rec.names), "values": list(rec.values)})
                matched.add(row.event_id)
        return matched

    def review_event_ids_without_features(self, event_ids: Sequence[str]) -> set[str]:
        with self.tx() as s:
            return set(
                s.scalars(
                    select(StoredAction.event_id).where(
                        StoredAction.event_id.in_(list(event_ids)),
                        StoredAction.job_id.is_not(None),
                        StoredAction.features_json.is_(None),
                    )
                )
            )

    def prune_history(self, older_than_ms: int) -> int:
        """Forget history-only actions received before ``older_than_ms``."""
        with self.tx() as s:
            result = s.execute(
                delete(StoredAction).where(
                    StoredAction.job_id.is_(None), StoredAction.received_ms < older_than_ms
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    # ---- appeals

    def open_appeal(
        self,
        subject_kind: str,
        subject_id: str,
        *,
        reason: str,
        queue: str,
        actor: str,
        appeal_id: str | None = None,
        at_ms: int | None = None,
    ) -> tuple[str, bool]:
        """Open an appeal job against the subject's latest labelled decision; (job id, created). The same
        ``appeal_id`` twice, or a second appeal while one is open, gives the existing job."""
        at = at_ms or now_ms()
        with self.tx() as s:
            if appeal_id:
                existing = s.scalar(select(ReviewJob).where(ReviewJob.appeal_id == appeal_id))
                if existing is not None:
                    return existing.id, False
            key = _open_key("appeal", subject_kind, subject_id)
            existing = s.scalar(select(ReviewJob).where(ReviewJob.open_key == key))
            if existing is not None:
                return existing.id, False
            original = s.scalar(
                select(Decision)
                .where(
                    Decision.subject_kind == subject_kind,
                    Decision.subject_id == subject_id,
                    Decision.label.is_not(None),
                )
                .order_by(Decision.decided_ms.desc(), Decision.id)
                .limit(1)
            )
            if original is None:
                raise StoreError(f"no decision about {subject_kind}:{subject_id} to appeal against")
            job = ReviewJob(
                id=uuid.uuid4().hex, queue=queue, kind="appeal", subject_kind=subject_kind,
                subject_id=subject_id, status="pending", open_key=key, created_ms=at, updated_ms=at,
                version=0, appeal_id=appeal_id or None, appeal_of=original.id, appeal_reason=reason.strip(),
            )  # fmt: skip
            s.add(job)
            s.flush()
            self._audit(s, actor, "appeal.open", job.id, {"appeal_of": original.id, "reason": reason})
            return job.id, True

    # ---- queues and claims

    def queue_stats(self, queues: Sequence[str]) -> list[QueueStat]:
        with self.tx() as s:
            rows = s.execute(
                select(ReviewJob.queue, ReviewJob.status, func.count(), func.min(ReviewJob.created_ms))
                .where(ReviewJob.status.in_(OPEN))
                .group_by(ReviewJob.queue, ReviewJob.status)
            ).all()
        counts: dict[str, dict[str, tuple[int, int]]] = {}
        for queue, status, n, oldest in rows:
            counts.setdefault(queue, {})[status] = (int(n), int(oldest))
        names = list(queues) + sorted(set(counts) - set(queues))
        out = []
        for name in names:
            c = counts.get(name, {})
            olds = [v[1] for v in c.values()]
            out.append(
                QueueStat(
                    name,
                    c.get("pending", (0, 0))[0],
                    c.get("claimed", (0, 0))[0],
                    min(olds) if olds else None,
                )
            )
        return out

    def claim_next(
        self, queue: str, reviewer: str, lease_s: float, *, at_ms: int | None = None
    ) -> str | None:
        """Claim the oldest claimable job of ``queue`` for ``reviewer`` (or give back the one they already
        hold there); the job id, or None if the queue has nothing to claim."""
        at = at_ms or now_ms()
        for _ in range(50):
            with self.tx() as s:
                mine = s.scalar(
                    select(ReviewJob.id).where(
                        ReviewJob.queue == queue,
                        ReviewJob.status == "claimed",
                        ReviewJob.claimed_by == reviewer,
                        ReviewJob.lease_until_ms > at,
                    )
                )
                if mine is not None:
                    return mine
                candidate = s.execute(
                    select(ReviewJob.id, ReviewJob.version)
                    .where(
                        ReviewJob.queue == queue,
                        (ReviewJob.status == "pending")
                        | ((ReviewJob.status == "claimed") & (ReviewJob.lease_until_ms <= at)),
                    )
                    .order_by(ReviewJob.created_ms, ReviewJob.id)
                    .limit(1)
                ).first()
                if candidate is None:
                    return None
                job_id, version = candidate
                won = s.execute(
                    update(ReviewJob)
                    .where(ReviewJob.id == job_id, ReviewJob.version == version)
                    .values(
                        status="claimed", claimed_by=reviewer, claimed_ms=at,
                        lease_until_ms=lease_until(at, lease_s), version=version + 1, updated_ms=at,
                    )
                    .execution_options(synchronize_session=False)
                )  # fmt: skip
                if won.rowcount == 1:  # type: ignore[attr-defined]
                    self._audit(s, reviewer, "job.claim", job_id, {"queue": queue})
                    return str(job_id)
        raise StoreError(f"queue {queue!r}: could not claim a job after 50 tries (heavy contention)")

    def renew(self, job_id: str, reviewer: str, lease_s: float) -> bool:
        """Extend ``reviewer``'s live claim on the job; False if they do not hold it."""
        at = now_ms()
        with self.tx() as s:
            done = s.execute(
                update(ReviewJob)
                .where(
                    ReviewJob.id == job_id, ReviewJob.status == "claimed", ReviewJob.claimed_by == reviewer,
                    ReviewJob.lease_until_ms > at,
                )
                .values(lease_until_ms=lease_until(at, lease_s), updated_ms=at)
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            return bool(done.rowcount == 1)  # type: ignore[attr-defined]

    def release(self, job_id: str, reviewer: str) -> bool:
        """Give a claimed job back to its queue."""
        at = now_ms()
        with self.tx() as s:
            done = s.execute(
                update(ReviewJob)
                .where(ReviewJob.id == job_id, ReviewJob.status == "claimed", ReviewJob.claimed_by == reviewer)
                .values(
                    status="pending", claimed_by=None, claimed_ms=None, lease_until_ms=None,
                    version=ReviewJob.version + 1, updated_ms=at,
                )
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            ok = bool(done.rowcount == 1)  # type: ignore[attr-defined]
            if ok:
                self._audit(s, reviewer, "job.release", job_id, {})
            return ok

    # ---- decisions

    def decide(self, job_id: str, reviewer: str, d: DecisionInput, *, at_ms: int | None = None) -> str:
        """Record ``reviewer``'s (already validated) decision on the job they hold; the decision id.

        Uphold/overturn close the job and queue a label in the outbox; escalate moves it to another queue.
        ``ClaimLost`` if the reviewer does not hold the job (never claimed, released, or re-claimed by
        someone else after the lease ended)."""
        at = at_ms or now_ms()
        decision_id = uuid.uuid4().hex
        with self.tx() as s:
            job = s.get(ReviewJob, job_id)
            if job is None:
                raise StoreError(f"no job {job_id}")
            if job.status != "claimed" or job.claimed_by != reviewer:
                raise ClaimLost("this job is not claimed by you (the claim ended or another reviewer has it)")
            if d.decision == "escalate":
                values: dict[str, Any] = dict(
                    queue=d.escalate_to, status="pending", claimed_by=None, claimed_ms=None,
                    lease_until_ms=None, escalated_from=job.queue,
                )  # fmt: skip
            else:
                values = dict(status="decided", open_key=None, lease_until_ms=None)
            won = s.execute(
                update(ReviewJob)
                .where(ReviewJob.id == job_id, ReviewJob.version == job.version)
                .values(version=job.version + 1, updated_ms=at, **values)
                .execution_options(synchronize_session=False)
            )
            if won.rowcount != 1:  # type: ignore[attr-defined]
                raise ClaimLost("the job changed while you decided; open it again")
            actions = list(s.scalars(select(StoredAction).where(StoredAction.job_id == job_id)))
            appealed = s.get(Decision, job.appeal_of) if job.appeal_of else None
            label = review_label(
                decision_id=decision_id, decision=d, subject_kind=job.subject_kind, subject_id=job.subject_id,
                reviewer=reviewer, decided_ms=at,
                action_ids=[a.action_id for a in actions] or self._appealed_action_ids(s, appealed),
                rule_ids=[r for a in actions for r in a.rule_ids.split(",") if r]
                or self._appealed_rule_ids(s, appealed),
                queue=job.queue, appealed_decision_id=appealed.id if appealed else "",
            )  # fmt: skip
            s.add(
                Decision(
                    id=decision_id, job_id=job_id, queue=job.queue, decision=d.decision,
                    label=label.label if label else None, category=d.category, reason=d.reason,
                    reviewer=reviewer, decided_ms=at, escalated_to=d.escalate_to or None,
                    subject_kind=job.subject_kind, subject_id=job.subject_id,
                )
            )  # fmt: skip
            s.flush()
            if label is not None:
                s.add(
                    Outbox(
                        decision_id=decision_id, key=label_key(job.subject_kind, job.subject_id),
                        payload=label.SerializeToString(deterministic=True), created_ms=at,
                    )
                )  # fmt: skip
                s.merge(
                    EntityLabel(
                        subject_kind=job.subject_kind, subject_id=job.subject_id, label=label.label,
                        category=d.category, decision_id=decision_id, decided_ms=at,
                    )
                )  # fmt: skip
            self._audit(
                s, reviewer, f"job.{d.decision}", job_id,
                {"decision_id": decision_id, "queue": job.queue, "category": d.category, "reason": d.reason,
                 "escalated_to": d.escalate_to, "label": label.label if label else None},
            )  # fmt: skip
        return decision_id

    @staticmethod
    def _appealed_action_ids(s: Session, appealed: Decision | None) -> list[str]:
        if appealed is None:
            return []
        return list(s.scalars(select(StoredAction.action_id).where(StoredAction.job_id == appealed.job_id)))

    @staticmethod
    def _appealed_rule_ids(s: Session, appealed: Decision | None) -> list[str]:
        if appealed is None:
            return []
        rows = s.scalars(select(StoredAction.rule_ids).where(StoredAction.job_id == appealed.job_id))
        return [r for row in rows for r in row.split(",") if r]

    # ---- the outbox

    def pending_labels(self, limit: int = 500) -> list[tuple[str, bytes, bytes]]:
        """(decision id, key, payload) of labels not yet produced, oldest first."""
        with self.tx() as s:
            rows = s.execute(
                select(Outbox.decision_id, Outbox.key, Outbox.payload)
                .where(Outbox.produced_ms.is_(None))
                .order_by(Outbox.created_ms, Outbox.decision_id)
                .limit(limit)
            ).all()
        return [(str(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]

    def mark_produced(self, decision_ids: Sequence[str], *, at_ms: int | None = None) -> None:
        with self.tx() as s:
            s.execute(
                update(Outbox)
                .where(Outbox.decision_id.in_(list(decision_ids)), Outbox.produced_ms.is_(None))
                .values(produced_ms=at_ms or now_ms())
                .execution_options(synchronize_session=False)
            )

    def outbox_backlog(self) -> int:
        with self.tx() as s:
            return int(
                s.scalar(select(func.count()).select_from(Outbox).where(Outbox.produced_ms.is_(None))) or 0
            )

    # ---- reads for the console

    def job(self, job_id: str, *, history_limit: int = 20) -> JobView | None:
        with self.tx() as s:
            job = s.get(ReviewJob, job_id)
            if job is None:
                return None
            view = JobView(
                job.id, job.queue, job.kind, job.subject_kind, job.subject_id, job.status, job.created_ms,
                job.claimed_by, job.lease_until_ms, job.escalated_from, job.appeal_reason,
            )  # fmt: skip
            view.actions = [
                _action_view(a)
                for a in s.scalars(
                    select(StoredAction)
                    .where(StoredAction.job_id == job_id)
                    .order_by(StoredAction.event_time_ms)
                )
            ]
            view.decisions = [
                _decision_view(d)
                for d in s.scalars(
                    select(Decision).where(Decision.job_id == job_id).order_by(Decision.decided_ms)
                )
            ]
            if job.appeal_of:
                appealed = s.get(Decision, job.appeal_of)
                view.appealed = _decision_view(appealed) if appealed else None
                if appealed is not None and not view.actions:
                    view.actions = [
                        _action_view(a)
                        for a in s.scalars(select(StoredAction).where(StoredAction.job_id == appealed.job_id))
                    ]
            own = {a.action_id for a in view.actions}
            view.history = [
                _action_view(a)
                for a in s.scalars(
                    select(StoredAction)
                    .where(
                        StoredAction.subject_kind == job.subject_kind,
                        StoredAction.subject_id == job.subject_id,
                    )
                    .order_by(StoredAction.event_time_ms.desc())
                    .limit(history_limit + len(own))
                )
                if a.action_id not in own
            ][:history_limit]
            view.past_decisions = [
                _decision_view(d)
                for d in s.scalars(
                    select(Decision)
                    .where(
                        Decision.subject_kind == job.subject_kind,
                        Decision.subject_id == job.subject_id,
                        Decision.job_id != job_id,
                    )
                    .order_by(Decision.decided_ms.desc())
                    .limit(10)
                )
            ]
            lab = s.get(EntityLabel, (job.subject_kind, job.subject_id))
            if lab is not None:
                view.entity_label = EntityLabelView(lab.label, lab.category, lab.decision_id, lab.decided_ms)
            return view

    def actions_for_review(self, label: pb.ReviewLabel) -> list[pb.Action]:
        """The stored actions a decision covers (its actions, and its subject's up to the decision), as
        ``Action`` messages again: what their statements of reasons are rebuilt from."""
        kind = kind_name(label.subject.kind)
        with self.tx() as s:
            rows = s.scalars(
                select(StoredAction).where(
                    StoredAction.action_id.in_(list(label.action_ids))
                    | (
                        (StoredAction.subject_kind == kind)
                        & (StoredAction.subject_id == label.subject.id)
                        & (StoredAction.event_time_ms <= label.decided_ms)
                    )
                )
            ).all()
            return [
                pb.Action(
                    action_id=r.action_id,
                    event_id=r.event_id,
                    verdict=pb.Action.Verdict.Value(r.verdict),
                    subject=pb.Subject(kind=pb.EntityKind.Value(r.subject_kind.upper()), id=r.subject_id),
                    reasons=[x for x in r.rule_ids.split(",") if x],
                    scores=json.loads(r.scores_json),
                    model_version=r.model_version,
                    policy_version=r.policy_version,
                    mode=pb.Action.Mode.Value(r.mode),
                    event_time_ms=r.event_time_ms,
                    decision_time_ms=r.decision_time_ms,
                )
                for r in rows
            ]

    def entity_label(self, subject_kind: str, subject_id: str) -> EntityLabelView | None:
        with self.tx() as s:
            lab = s.get(EntityLabel, (subject_kind, subject_id))
            return EntityLabelView(lab.label, lab.category, lab.decision_id, lab.decided_ms) if lab else None

    def jobs_in(self, queue: str, *, status: Sequence[str] = OPEN, limit: int = 100) -> list[JobView]:
        with self.tx() as s:
            rows = s.scalars(
                select(ReviewJob)
                .where(ReviewJob.queue == queue, ReviewJob.status.in_(list(status)))
                .order_by(ReviewJob.created_ms, ReviewJob.id)
                .limit(limit)
            )
            return [
                JobView(
                    j.id,
                    j.queue,
                    j.kind,
                    j.subject_kind,
                    j.subject_id,
                    j.status,
                    j.created_ms,
                    j.claimed_by,
                    j.lease_until_ms,
                    j.escalated_from,
                    j.appeal_reason,
                )
                for j in rows
            ]

    def decided_jobs(self) -> list[DecidedJob]:
        """Final decisions (uphold/overturn) with their job's creation time and rule ids."""
        with self.tx() as s:
            rows = s.execute(
                select(Decision, ReviewJob.created_ms)
                .join(ReviewJob, ReviewJob.id == Decision.job_id)
                .where(Decision.label.is_not(None))
                .order_by(Decision.decided_ms)
            ).all()
            rules: dict[str, set[str]] = {}
            for job_id, rule_ids in s.execute(
                select(StoredAction.job_id, StoredAction.rule_ids).where(StoredAction.job_id.is_not(None))
            ):
                rules.setdefault(str(job_id), set()).update(r for r in rule_ids.split(",") if r)
        return [
            DecidedJob(
                d.queue, d.reviewer, d.decision, created, d.decided_ms, tuple(sorted(rules.get(d.job_id, ())))
            )
            for d, created in rows
        ]

    def decision_counts(self) -> dict[tuple[str, str], int]:
        """(queue, decision) → how many decisions the store holds (every reviewer and instance)."""
        with self.tx() as s:
            rows = s.execute(
                select(Decision.queue, Decision.decision, func.count()).group_by(
                    Decision.queue, Decision.decision
                )
            ).all()
        return {(str(q), str(d)): int(n) for q, d, n in rows}

    def decisions(self, limit: int = 200) -> list[DecisionView]:
        with self.tx() as s:
            return [
                _decision_view(d)
                for d in s.scalars(select(Decision).order_by(Decision.decided_ms.desc()).limit(limit))
            ]
