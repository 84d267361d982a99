"""Passwords (argon2id) and token secrets, without the API."""

from __future__ import annotations

import datetime as dt

import pytest

from deepext.auth.passwords import hash_password, upgraded_hash, verify_password
from deepext.auth.tokens import authenticate, issue_token
from deepext.auth.users import create_user
from deepext.errors import InvalidInput, Unauthenticated
from deepext.platform import Platform


def test_passwords_are_argon2id_and_verify() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "correct horse battery!")
    assert not verify_password(None, "anything at all")
    assert not verify_password("not a hash", "anything at all")
    assert upgraded_hash(stored, "correct horse battery") is None


@pytest.mark.parametrize("weak", ["short", "aaaaaaaaaaaaaaaa"])
def test_weak_passwords_are_refused(weak: str) -> None:
    with pytest.raises(InvalidInput, match="password"):
        hash_password(weak)


def test_tokens_authenticate_until_they_expire(platform: Platform) -> None:
    with platform.db.session() as session:
        user = create_user(session, username="ann", password="correct horse battery", actor="test")
        _row, secret = issue_token(session, user, kind="personal", name="t", lifetime=dt.timedelta(hours=1))
        _old, stale = issue_token(session, user, kind="personal", name="t", lifetime=dt.timedelta(microseconds=1))
    with platform.db.session() as session:
        principal = authenticate(session, secret)
        assert (principal.username, principal.is_admin, principal.project_ids) == ("ann", False, None)
        with pytest.raises(Unauthenticated, match="expired"):
            authenticate(session, stale)
        with pytest.raises(Unauthenticated, match="unknown"):
            authenticate(session, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
        with pytest.raises(Unauthenticated, match="not a deepext token"):
            authenticate(session, "Basic abc")
