"""The audit log's hash chain: every action recorded, any later edit or deletion detected, and the
database itself refuses to edit or delete rows."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from deepext import audit
from deepext import request as current_request
from deepext.db.models import AuditEntry
from deepext.platform import Platform


def bypass_append_only(platform: Platform) -> None:
    """What an attacker with DDL rights on the database would do before editing the log."""
    with platform.db.session() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        else:
            session.execute(text("DROP TRIGGER audit_log_no_update"))
            session.execute(text("DROP TRIGGER audit_log_no_delete"))


def _write_three(platform: Platform) -> list[AuditEntry]:
    with platform.db.session() as session:
        for i in range(3):
            audit.record(session, actor="alice", action="thing.do", resource=f"thing:{i}", detail={"i": i})
    with platform.db.session() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def test_chain_links_each_entry_and_detects_an_edit(platform: Platform) -> None:
    entries = _write_three(platform)
    assert entries[0].prev_hash is None
    assert [e.prev_hash for e in entries[1:]] == [e.entry_hash for e in entries[:-1]]
    with platform.db.session() as session:
        assert audit.verify_chain(session) is None
    bypass_append_only(platform)
    with platform.db.session() as session:
        session.execute(update(AuditEntry).where(AuditEntry.id == entries[1].id).values(outcome="denied"))
    with platform.db.session() as session:
        assert audit.verify_chain(session) == entries[1].id


def test_a_deleted_row_breaks_the_chain_at_the_next_row(platform: Platform) -> None:
    entries = _write_three(platform)
    bypass_append_only(platform)
    with platform.db.session() as session:
        session.execute(delete(AuditEntry).where(AuditEntry.id == entries[1].id))
    with platform.db.session() as session:
        assert audit.verify_chain(session) == entries[2].id


def test_the_database_refuses_updates_and_deletes(platform: Platform) -> None:
    entries = _write_three(platform)
    with pytest.raises(DBAPIError, match="append-only"), platform.db.session() as session:
        session.execute(update(AuditEntry).where(AuditEntry.id == entries[0].id).values(actor="mallory"))
    with pytest.raises(DBAPIError, match="append-only"), platform.db.session() as session:
        session.execute(delete(AuditEntry))


def test_rows_carry_the_request_they_were_written_in(platform: Platform) -> None:
    with current_request.bind(current_request.RequestContext("req-1", client_addr="10.0.0.7", token_id=42)) as bound:
        with platform.db.session() as session:
            audit.record(session, actor="alice", action="thing.do", resource="thing:1")
        assert bound.audit_rows == 1
    with platform.db.session() as session:
        audit.record(session, actor="cli:bob", action="thing.do", resource="thing:2")
    with platform.db.session() as session:
        first, second = session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        assert (first.request_id, first.client_addr, first.token_id) == ("req-1", "10.0.0.7", 42)
        assert (second.request_id, second.token_id) == (None, None)
        assert audit.verify_chain(session) is None


def test_an_action_that_rolls_back_leaves_no_audit_row(platform: Platform) -> None:
    with pytest.raises(RuntimeError, match="the action failed"), platform.db.session() as session:
        audit.record(session, actor="bob", action="x", resource="y")
        raise RuntimeError("the action failed")
    with platform.db.session() as session:
        assert session.scalars(select(AuditEntry)).all() == []
