"""The audit log: one row per action or refused attempt, each row's hash chained to the previous.

Changing or deleting a past row breaks the chain, which `verify_chain` (and `deepext audit verify`)
detects; database triggers refuse UPDATE and DELETE in the first place. On PostgreSQL an advisory
lock serializes writers so the chain never forks; SQLite serializes writes itself.

Rows are written by the domain functions, in the same transaction as the change they record. Which
token, client address and HTTP request asked comes from the request context the API binds
(`deepext.request`), so domain code never needs to know it is being called over HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from deepext import request as current_request
from deepext.db.models import AuditEntry

_CHAIN_LOCK = 0x0DEE_E7A0
OUTCOMES = ("ok", "denied", "unauthenticated", "invalid", "not_found", "conflict", "error", "rate_limited")


def entry_hash(prev_hash: str | None, entry: AuditEntry) -> str:
    """sha256 over the previous row's hash and every field of this row."""
    at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=dt.UTC)
    values = [
        prev_hash,
        at.isoformat(),
        entry.actor,
        entry.action,
        entry.resource,
        entry.project_id,
        entry.detail,
        entry.token_id,
        entry.outcome,
        entry.client_addr,
        entry.request_id,
    ]
    body = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    resource: str,
    project_id: int | None = None,
    detail: dict[str, Any] | None = None,
    outcome: str = "ok",
) -> AuditEntry:
    """Append an audit row in the caller's transaction (it commits or rolls back with the action)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r}; one of {', '.join(OUTCOMES)}")
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})
    prev = session.scalar(select(AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1))
    request = current_request.current()
    entry = AuditEntry(
        at=dt.datetime.now(dt.UTC).replace(microsecond=0),
        actor=_storable(actor),
        action=action,
        resource=_storable(resource),
        project_id=project_id,
        detail=detail or {},
        token_id=request.token_id if request else None,
        outcome=outcome,
        client_addr=request.client_addr if request else None,
        request_id=request.request_id if request else None,
        prev_hash=prev,
    )
    entry.entry_hash = entry_hash(prev, entry)
    session.add(entry)
    session.flush()
    if request is not None:
        request.audit_rows += 1
    return entry


def _storable(text: str) -> str:
    """What a request named may hold characters PostgreSQL text refuses (NUL): the row must still
    be written, so they are shown escaped."""
    return text.replace("\x00", "\\x00")


def verify_chain(session: Session) -> int | None:
    """The id of the first row whose hash does not match its content or its predecessor, or None.

    A deleted row shows as a break at the row after it; a deleted last row shows once the next row
    is written."""
    prev: str | None = None
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=1000)):
        if entry.prev_hash != prev or entry.entry_hash != entry_hash(prev, entry):
            return entry.id
        prev = entry.entry_hash
    return None


@dataclass(frozen=True)
class AuditFilter:
    """What an admin narrows the log to; every field optional."""

    actor: str | None = None
    action: str | None = None  # a prefix: "dataset." matches every dataset action
    project_id: int | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def query(self) -> Select[AuditEntry]:
        query = select(AuditEntry)
        if self.actor:
            query = query.where(AuditEntry.actor == self.actor)
        if self.action:
            query = query.where(AuditEntry.action.startswith(self.action, autoescape=True))
        if self.project_id is not None:
            query = query.where(AuditEntry.project_id == self.project_id)
        if self.outcome:
            query = query.where(AuditEntry.outcome == self.outcome)
        if self.since:
            query = query.where(AuditEntry.at >= self.since)
        if self.until:
            query = query.where(AuditEntry.at < self.until)
        return query


def list_entries(
    session: Session, where: AuditFilter, *, limit: int = 100, before_id: int | None = None
) -> list[AuditEntry]:
    """The newest matching rows first; page with `before_id` (the smallest id of the last page)."""
    query = where.query()
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))


def iter_entries(session: Session, where: AuditFilter) -> Iterator[AuditEntry]:
    """Every matching row, oldest first, streamed (for exports)."""
    yield from session.scalars(where.query().order_by(AuditEntry.id).execution_options(yield_per=1000))


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=dt.UTC)
    return {
        "id": entry.id,
        "at": at.isoformat(),
        "actor": entry.actor,
        "token_id": entry.token_id,
        "action": entry.action,
        "resource": entry.resource,
        "project_id": entry.project_id,
        "outcome": entry.outcome,
        "client_addr": entry.client_addr,
        "request_id": entry.request_id,
        "detail": entry.detail,
        "entry_hash": entry.entry_hash,
    }
