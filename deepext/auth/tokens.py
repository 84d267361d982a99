"""Bearer tokens: login sessions (short-lived) and personal API tokens (scoped, revocable).

A token is `dxt_` + 43 random URL-safe characters, shown once; the store keeps its sha256 (the
secret has 256 bits of entropy, so a fast hash is the right one - argon2 is for passwords) and its
first characters, to recognise it in a list.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepext import audit
from deepext.auth import rbac
from deepext.db.models import ApiToken, User
from deepext.errors import InvalidInput, NotFound, Unauthenticated

PREFIX = "dxt_"
_LAST_USED_EVERY = dt.timedelta(minutes=1)  # write last_used_at at most this often per token


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the user, the token used, and the token's narrowing, if any."""

    user_id: int
    username: str
    token_id: int
    is_admin: bool
    project_ids: frozenset[int] | None  # None: every project the user is in
    role: str | None  # None: the user's own role in each project
    project_roles: dict[int, str]  # the user's role in each of their projects
    expires_at: dt.datetime

    @property
    def subject(self) -> str:
        return rbac.user_subject(self.user_id)


def issue_token(
    session: Session,
    user: User,
    *,
    kind: str,
    name: str,
    lifetime: dt.timedelta,
    project_ids: list[int] | None = None,
    role: str | None = None,
) -> tuple[ApiToken, str]:
    """A new token and its secret (the only time the secret exists outside the caller)."""
    if lifetime <= dt.timedelta(0):
        raise InvalidInput("a token must live for a positive time", field="expires_in_days")
    if role is not None:
        rbac.check_role(role)
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        user_id=user.id,
        kind=kind,
        name=name,
        prefix=secret[:12],
        secret_hash=_digest(secret),
        project_ids=sorted(project_ids) if project_ids is not None else None,
        role=role,
        expires_at=_now() + lifetime,
    )
    session.add(token)
    session.flush()
    return token, secret


def authenticate(session: Session, secret: str) -> Principal:
    """The principal a bearer secret stands for; Unauthenticated if it is unknown, expired, revoked
    or its user is deactivated (the message says which, except for an unknown secret)."""
    if not secret.startswith(PREFIX):
        raise Unauthenticated("not a deepext token")
    found = session.execute(
        select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(ApiToken.secret_hash == _digest(secret))
    ).first()
    if found is None:
        raise Unauthenticated("unknown token")
    token, user = found
    now = _now()
    if token.revoked_at is not None:
        raise Unauthenticated("token revoked")
    if _utc(token.expires_at) <= now:
        raise Unauthenticated("token expired")
    if not user.is_active:
        raise Unauthenticated("account deactivated")
    if token.last_used_at is None or now - _utc(token.last_used_at) > _LAST_USED_EVERY:
        token.last_used_at = now
    grants = rbac.grants_of(session, user.id)
    return Principal(
        user_id=user.id,
        username=user.username,
        token_id=token.id,
        is_admin=grants.admin,
        project_ids=frozenset(token.project_ids) if token.project_ids is not None else None,
        role=token.role,
        project_roles=grants.project_roles,
        expires_at=_utc(token.expires_at),
    )


class RecentPrincipals:
    """Principals of recently checked tokens, valid while the access version stays the same (any
    revocation, deactivation or role change moves it) and for at most `ttl`, after which the token
    is checked - and its `last_used_at` written - again. Saves two queries per request."""

    def __init__(self, ttl: dt.timedelta = _LAST_USED_EVERY, max_size: int = 10_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._entries: dict[str, tuple[Principal, dt.datetime, int, dt.datetime]] = {}

    def get(self, secret: str, version: int) -> Principal | None:
        entry = self._entries.get(secret)
        if entry is None:
            return None
        principal, expires_at, seen_version, checked_at = entry
        now = _now()
        if seen_version != version or now >= expires_at or now - checked_at > self.ttl:
            self._entries.pop(secret, None)
            return None
        return principal

    def put(self, secret: str, principal: Principal, version: int) -> None:
        if len(self._entries) >= self.max_size:
            self._entries.clear()
        self._entries[secret] = (principal, principal.expires_at, version, _now())


def list_tokens(session: Session, user_id: int) -> list[ApiToken]:
    """The user's personal tokens (sessions are not listed), newest first."""
    query = select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.kind == "personal")
    return list(session.scalars(query.order_by(ApiToken.id.desc())))


def revoke_token(session: Session, user_id: int, token_id: int, *, actor: str) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user_id:
        raise NotFound(f"token {token_id} not found")
    if token.revoked_at is None:
        token.revoked_at = _now()
        rbac.bump_access_version(session)
    audit.record(session, actor=actor, action="token.revoke", resource=f"token:{token_id}")
    return token


def end_session(session: Session, token_id: int) -> None:
    token = session.get(ApiToken, token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = _now()
        rbac.bump_access_version(session)
