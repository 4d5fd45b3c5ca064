"""Review store: users, jobs, actions, decisions, outbox, entity labels, append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIG = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("api_key_hash", sa.String(64), nullable=True, unique=True),
        sa.Column("created_ms", _BIG, nullable=False),
    )
    op.create_table(
        "review_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject_kind", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("open_key", sa.String(1100), nullable=True, unique=True),
        sa.Column("created_ms", _BIG, nullable=False),
        sa.Column("updated_ms", _BIG, nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_ms", _BIG, nullable=True),
        sa.Column("lease_until_ms", _BIG, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("appeal_id", sa.String(128), nullable=True, unique=True),
        sa.Column("appeal_of", sa.String(32), nullable=True),
        sa.Column("appeal_reason", sa.Text(), nullable=True),
        sa.Column("escalated_from", sa.String(64), nullable=True),
    )
    op.create_index("ix_review_jobs_queue_status_created", "review_jobs", ["queue", "status", "created_ms"])
    op.create_index("ix_review_jobs_subject", "review_jobs", ["subject_kind", "subject_id"])
    op.create_table(
        "actions",
        sa.Column("action_id", sa.String(128), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("review_jobs.id"), nullable=True),
        sa.Column("event_id", sa.String(1024), nullable=False),
        sa.Column("subject_kind", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(1024), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("rule_ids", sa.Text(), nullable=False),
        sa.Column("scores_json", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(256), nullable=False),
        sa.Column("policy_version", sa.String(256), nullable=False),
        sa.Column("event_time_ms", _BIG, nullable=False),
        sa.Column("decision_time_ms", _BIG, nullable=False),
        sa.Column("received_ms", _BIG, nullable=False),
        sa.Column("features_json", sa.Text(), nullable=True),
    )
    op.create_index("ix_actions_job_id", "actions", ["job_id"])
    op.create_index("ix_actions_event_id", "actions", ["event_id"])
    op.create_index("ix_actions_subject", "actions", ["subject_kind", "subject_id", "event_time_ms"])
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("review_jobs.id"), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("label", sa.String(16), nullable=True),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("decided_ms", _BIG, nullable=False),
        sa.Column("escalated_to", sa.String(64), nullable=True),
        sa.Column("subject_kind", sa.String(32), nullable=False),
        sa.Column("subject_id", sa.String(1024), nullable=False),
    )
    op.create_index("ix_decisions_job_id", "decisions", ["job_id"])
    op.create_index("ix_decisions_subject", "decisions", ["subject_kind", "subject_id", "decided_ms"])
    op.create_table(
        "outbox",
        sa.Column("decision_id", sa.String(32), sa.ForeignKey("decisions.id"), primary_key=True),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", _BIG, nullable=False),
        sa.Column("produced_ms", _BIG, nullable=True),
    )
    op.create_index("ix_outbox_produced_ms", "outbox", ["produced_ms"])
    op.create_table(
        "entity_labels",
        sa.Column("subject_kind", sa.String(32), primary_key=True),
        sa.Column("subject_id", sa.String(1024), primary_key=True),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("decision_id", sa.String(32), nullable=False),
        sa.Column("decided_ms", _BIG, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at_ms", _BIG, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_audit_log_at_ms", "audit_log", ["at_ms"])
    op.create_index("ix_audit_log_job_id", "audit_log", ["job_id"])
    _audit_append_only()


def _audit_append_only() -> None:
    """Refuse UPDATE and DELETE on the audit log in the database itself, not only in the service."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{verb.lower()} BEFORE {verb} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_append_only()")
    for table in (
        "audit_log",
        "entity_labels",
        "outbox",
        "decisions",
        "actions",
        "review_jobs",
        "users",
        "meta",
    ):
        op.drop_table(table)
