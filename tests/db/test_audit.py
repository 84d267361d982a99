"""The audit log's hash chain: every action recorded, any later edit detected."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from deepext import audit
from deepext.db.models import AuditEntry
from deepext.platform import Platform


def test_chain_links_each_entry_and_detects_tampering(platform: Platform) -> None:
    with platform.db.session() as session:
        for i in range(3):
            audit.record(session, actor="alice", action="thing.do", resource=f"thing:{i}", detail={"i": i})
    with platform.db.session() as session:
        entries = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)))
        assert entries[0].prev_hash is None
        assert [e.prev_hash for e in entries[1:]] == [e.entry_hash for e in entries[:-1]]
        assert audit.verify_chain(session) is None
    with platform.db.session() as session:
        session.execute(update(AuditEntry).where(AuditEntry.id == entries[1].id).values(actor="mallory"))
    with platform.db.session() as session:
        assert audit.verify_chain(session) == entries[1].id


def test_an_action_that_rolls_back_leaves_no_audit_row(platform: Platform) -> None:
    with pytest.raises(RuntimeError, match="the action failed"), platform.db.session() as session:
        audit.record(session, actor="bob", action="x", resource="y")
        raise RuntimeError("the action failed")
    with platform.db.session() as session:
        assert session.scalars(select(AuditEntry)).all() == []
