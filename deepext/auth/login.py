"""Logging in: rate limit, password check, session token - each attempt one audit row."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepext import audit
from deepext.auth import ratelimit
from deepext.auth.passwords import upgraded_hash, verify_password
from deepext.auth.tokens import issue_token
from deepext.db import Database
from deepext.db.models import ApiToken, User
from deepext.errors import RateLimited, Unauthenticated


def login(
    db: Database, *, username: str, password: str, client_addr: str, lifetime: dt.timedelta
) -> tuple[ApiToken, str, User]:
    """A session token for the account, or Unauthenticated / RateLimited (audited either way)."""
    try:
        with db.session() as session:
            ratelimit.check_login_allowed(session, username, client_addr)
    except RateLimited:
        with db.session() as session:
            _record_failure(session, username, "rate_limited")
        raise
    with db.session() as session:
        user = session.scalar(select(User).where(User.username == username))
        ok = verify_password(user.password_hash if user else None, password) and user is not None and user.is_active
        if ok and user is not None:
            user.password_hash = upgraded_hash(user.password_hash, password) or user.password_hash
            ratelimit.clear_failures(session, username)
            token, secret = issue_token(session, user, kind="session", name="login", lifetime=lifetime)
            audit.record(
                session,
                actor=user.username,
                action="auth.login",
                resource=f"user:{user.username}",
                detail={"token_id": token.id},
            )
            return token, secret, user
    with db.session() as session:
        ratelimit.record_failure(session, username, client_addr)
        _record_failure(session, username, "unauthenticated")
    raise Unauthenticated("wrong username or password")


def _record_failure(session: Session, username: str, outcome: str) -> None:
    """The audit row of a refused login (the name as typed, cut to the column's size)."""
    audit.record(session, actor=username[:64], action="auth.login", resource=f"user:{username[:48]}", outcome=outcome)
