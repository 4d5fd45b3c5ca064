"""The review store's tables (SQLAlchemy 2 declarative). The schema itself is created and changed only by
the Alembic migrations in ``migrations/versions`` (a test checks they agree with these models)."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Settings the service keeps for itself (the session signing key)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """argon2id; None for a service account that only has an API key."""
    role: Mapped[str] = mapped_column(String(16))
    """``reviewer`` or ``admin``."""
    api_key_hash: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    """sha256 hex of the API key (a random 256-bit token: a fast hash is enough, unlike a password)."""
    created_ms: Mapped[int] = mapped_column(BigInteger)


class ReviewJob(Base):
    __tablename__ = "review_jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    queue: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    """``review`` (from actions) or ``appeal``."""
    subject_kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16))
    """``pending``, ``claimed`` or ``decided``."""
    open_key: Mapped[str | None] = mapped_column(String(1100), unique=True, nullable=True)
    """``kind|subject_kind:subject_id`` while the job is open, NULL once decided: at most one open job per
    subject and kind, enforced by the database (NULLs never collide)."""
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    lease_until_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    """Bumped by every claim, release and decision: the compare-and-set that keeps claims exclusive."""
    appeal_id: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    appeal_of: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """The decision appealed against (appeal jobs)."""
    appeal_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    escalated_from: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        Index("ix_review_jobs_queue_status_created", "queue", "status", "created_ms"),
        Index("ix_review_jobs_subject", "subject_kind", "subject_id"),
    )


class StoredAction(Base):
    """An action read from the actions topic: attached to a job if it went to review, else kept (for a
    retention period) as the subject's history shown next to its jobs."""

    __tablename__ = "actions"
    action_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("review_jobs.id"), nullable=True, index=True)
    event_id: Mapped[str] = mapped_column(String(1024), index=True)
    subject_kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(1024))
    verdict: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(32))
    rule_ids: Mapped[str] = mapped_column(Text)
    """Comma-separated rule ids (rule ids hold no commas: they are policy identifiers)."""
    scores_json: Mapped[str] = mapped_column(Text)
    model_version: Mapped[str] = mapped_column(String(256))
    policy_version: Mapped[str] = mapped_column(String(256))
    event_time_ms: Mapped[int] = mapped_column(BigInteger)
    decision_time_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger)
    features_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    """``{"names": [...], "values": [...]}`` from the feature log, once it was seen."""

    __table_args__ = (Index("ix_actions_subject", "subject_kind", "subject_id", "event_time_ms"),)


class Decision(Base):
    __tablename__ = "decisions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("review_jobs.id"), index=True)
    queue: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    """``uphold``, ``overturn`` or ``escalate``."""
    label: Mapped[str | None] = mapped_column(String(16), nullable=True)
    category: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(64))
    decided_ms: Mapped[int] = mapped_column(BigInteger)
    escalated_to: Mapped[str | None] = mapped_column(String(64), nullable=True)
    subject_kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[str] = mapped_column(String(1024))

    __table_args__ = (Index("ix_decisions_subject", "subject_kind", "subject_id", "decided_ms"),)


class Outbox(Base):
    """Labels to produce: written in the decision's transaction, produced afterwards (at least once;
    every message carries its decision id, so readers drop repeats)."""

    __tablename__ = "outbox"
    decision_id: Mapped[str] = mapped_column(ForeignKey("decisions.id"), primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    produced_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class EntityLabel(Base):
    """The latest human label per subject (an overturned subject is ``benign``: not treated as flagged)."""

    __tablename__ = "entity_labels"
    subject_kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(1024), primary_key=True)
    label: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(64))
    decision_id: Mapped[str] = mapped_column(String(32))
    decided_ms: Mapped[int] = mapped_column(BigInteger)


class AuditEntry(Base):
    """Append-only (database triggers refuse UPDATE and DELETE): who did what, when, why."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    detail: Mapped[str] = mapped_column(Text)
