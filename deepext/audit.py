"""The audit log: one row per action, each row's hash chained to the previous row's.

Changing or deleting a past row breaks the chain, which `verify_chain` detects. On PostgreSQL an
advisory lock serializes writers so the chain never forks; SQLite serializes writes itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from deepext.db.models import AuditEntry

_CHAIN_LOCK = 0x0DEE_E7A0


def _entry_hash(
    prev_hash: str | None,
    at: dt.datetime,
    actor: str,
    action: str,
    resource: str,
    project_id: int | None,
    detail: dict[str, Any],
) -> str:
    body = json.dumps(
        [prev_hash, at.isoformat(), actor, action, resource, project_id, detail],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    resource: str,
    project_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append an audit row in the caller's transaction (it commits or rolls back with the action)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})
    prev = session.scalar(select(AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1))
    at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    detail = detail or {}
    entry = AuditEntry(
        at=at,
        actor=actor,
        action=action,
        resource=resource,
        project_id=project_id,
        detail=detail,
        prev_hash=prev,
        entry_hash=_entry_hash(prev, at, actor, action, resource, project_id, detail),
    )
    session.add(entry)
    session.flush()
    return entry


def verify_chain(session: Session) -> int | None:
    """The id of the first row whose hash does not match its content or its predecessor, or None."""
    prev: str | None = None
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id)):
        at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=dt.UTC)
        expected = _entry_hash(prev, at, entry.actor, entry.action, entry.resource, entry.project_id, entry.detail)
        if entry.prev_hash != prev or entry.entry_hash != expected:
            return entry.id
        prev = entry.entry_hash
    return None
