"""User accounts: create (the first admin from the CLI), list, deactivate, change passwords."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepext import audit
from deepext.auth import rbac
from deepext.auth.passwords import hash_password
from deepext.db.models import User
from deepext.errors import Conflict, InvalidInput, NotFound

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


def check_username(username: str) -> str:
    if not _USERNAME.match(username):
        raise InvalidInput(
            f"username {username!r}: use 2-64 lowercase letters, digits, '.', '-' or '_'", field="username"
        )
    return username


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    actor: str,
    email: str | None = None,
    display_name: str | None = None,
    admin: bool = False,
) -> User:
    check_username(username)
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username!r} already exists")
    user = User(username=username, email=email, display_name=display_name, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    rbac.grant_system_role(session, user.id, "user")
    if admin:
        rbac.grant_system_role(session, user.id, "admin")
    audit.record(session, actor=actor, action="user.create", resource=f"user:{username}", detail={"admin": admin})
    return user


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"user {username!r} not found")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def update_user(
    session: Session,
    username: str,
    *,
    actor: str,
    active: bool | None = None,
    admin: bool | None = None,
    password: str | None = None,
) -> User:
    """Deactivate or reactivate an account, make or unmake an admin, or set a new password."""
    user = get_user(session, username)
    changed: dict[str, object] = {}
    if active is not None and active != user.is_active:
        user.is_active = active
        changed["active"] = active
    if admin is not None and admin != rbac.is_admin(session, user.id):
        if admin:
            rbac.grant_system_role(session, user.id, "admin")
        else:
            rbac.revoke_system_role(session, user.id, "admin")
        changed["admin"] = admin
    if password is not None:
        user.password_hash = hash_password(password)
        changed["password"] = "changed"
    if changed:
        rbac.bump_access_version(session)
    audit.record(session, actor=actor, action="user.update", resource=f"user:{username}", detail=changed)
    return user
