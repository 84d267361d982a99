"""Failed-login throttling per account and per client address, counted in the metadata store so
every API replica sees the same counts."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from deepext.db.models import LoginFailure
from deepext.errors import RateLimited

WINDOW = dt.timedelta(minutes=15)
MAX_PER_ACCOUNT = 5
MAX_PER_ADDRESS = 20


def check_login_allowed(session: Session, username: str, client_addr: str) -> None:
    """RateLimited if the account or the address failed too often within the window."""
    since = dt.datetime.now(dt.UTC) - WINDOW
    recent = select(func.count()).select_from(LoginFailure).where(LoginFailure.at >= since)
    if (session.scalar(recent.where(LoginFailure.username == username)) or 0) >= MAX_PER_ACCOUNT:
        raise RateLimited(
            f"too many failed logins for {username!r}; try again later", retry_after=int(WINDOW.total_seconds())
        )
    if (session.scalar(recent.where(LoginFailure.client_addr == client_addr)) or 0) >= MAX_PER_ADDRESS:
        raise RateLimited(
            "too many failed logins from this address; try again later", retry_after=int(WINDOW.total_seconds())
        )


def record_failure(session: Session, username: str, client_addr: str) -> None:
    session.add(LoginFailure(username=username[:64], client_addr=client_addr[:64]))


def clear_failures(session: Session, username: str) -> None:
    """A successful login forgives the account's earlier failures (not the address's)."""
    session.execute(delete(LoginFailure).where(LoginFailure.username == username))
