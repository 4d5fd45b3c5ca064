"""Statements → the Transparency Database's submission JSON (the multiple-statements endpoint).

``POST /api/v1/statements`` takes ``{"statements": [...]}`` with at most 100 statements per call; a
period's export is a JSON-lines file, one request body per line, each valid under
``schema.validate_batch``. A statement is part of the period in which its current revision was made
(the job's decision for revision 0, the review for later ones): a reviewed statement is submitted again
with its new PUID, since the Database neither updates nor reuses a PUID. Revoked statements are not
submitted; ``ExportResult.revoked`` lists them so the compliance team can withdraw an earlier submission.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamwarden.operators.transparency import schema
from streamwarden.schemas import streamwarden_pb2 as pb

API_FIELDS = (
    "decision_visibility", "decision_visibility_other", "decision_monetary", "decision_monetary_other",
    "decision_provision", "decision_account", "account_type", "decision_ground",
    "decision_ground_reference_url", "illegal_content_legal_ground", "illegal_content_explanation",
    "incompatible_content_ground", "incompatible_content_explanation", "incompatible_content_illegal",
    "content_type", "content_type_other", "category", "category_addition", "category_specification",
    "category_specification_other", "territorial_scope", "content_language", "content_date",
    "application_date", "end_date_visibility_restriction", "end_date_monetary_restriction",
    "end_date_service_restriction", "end_date_account_restriction", "decision_facts", "source_type",
    "source_identity", "automated_detection", "automated_decision", "puid",
)  # fmt: skip
"""The API's statement fields, in its documentation's order (the proto carries the same names)."""


def to_api(s: pb.StatementOfReasons) -> dict[str, Any]:
    """The API payload of one statement: its API fields that are set (lists sorted, as the API stores them)."""
    out: dict[str, Any] = {}
    for name in API_FIELDS:
        value = getattr(s, name)
        if isinstance(value, str):
            if value:
                out[name] = value
        elif len(value):
            out[name] = sorted(value)
    return out


def revision_time_ms(s: pb.StatementOfReasons) -> int:
    """When the statement's current revision was made: the review for revisions > 0, else the event."""
    return s.updated_ms if s.revision > 0 else s.event_time_ms


@dataclass
class ExportResult:
    bodies: list[dict[str, Any]] = field(default_factory=list)
    statements: int = 0
    revoked: list[pb.StatementOfReasons] = field(default_factory=list)
    invalid: list[tuple[str, list[str]]] = field(default_factory=list)
    """(statement id, problems) of statements left out because they break the field rules."""


def export_period(
    statements: Iterable[pb.StatementOfReasons],
    start_ms: int,
    end_ms: int,
    *,
    batch_size: int = schema.MAX_BATCH,
) -> ExportResult:
    """The request bodies for the statements whose current revision falls in ``[start_ms, end_ms)``."""
    if not 1 <= batch_size <= schema.MAX_BATCH:
        raise ValueError(f"batch size must be 1..{schema.MAX_BATCH}")
    res = ExportResult()
    current: list[dict[str, Any]] = []
    for s in sorted(statements, key=lambda x: (revision_time_ms(x), x.statement_id)):
        if not start_ms <= revision_time_ms(s) < end_ms:
            continue
        if s.status == pb.StatementOfReasons.REVOKED:
            res.revoked.append(s)
            continue
        payload = to_api(s)
        problems = schema.validate_statement(payload)
        if problems:
            res.invalid.append((s.statement_id, problems))
            continue
        current.append(payload)
        res.statements += 1
        if len(current) == batch_size:
            res.bodies.append({"statements": current})
            current = []
    if current:
        res.bodies.append({"statements": current})
    return res


def write_bodies(bodies: Iterable[dict[str, Any]], path: Path) -> int:
    """One request body per line (JSON lines); returns the number of lines written."""
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for body in bodies:
            f.write(json.dumps(body, ensure_ascii=False, sort_keys=False) + "\n")
            n += 1
    return n
