"""The API in-process (FastAPI's TestClient over the same app Ray Serve hosts), on SQLite and on the
real PostgreSQL, with one user per role in project `p` and an outsider who owns project `q`."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from deepext.auth import rbac, users
from deepext.auth.passwords import hash_password
from deepext.auth.tokens import issue_token
from deepext.auth.users import create_user
from deepext.db.models import AuditEntry, Project, User
from deepext.platform import Platform
from deepext.projects import create_project
from deepext.serve.app import create_app

PASSWORD = "correct horse battery staple"
ROLES = ("owner", "maintainer", "member", "viewer")


@dataclass
class Api:
    platform: Platform
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)  # caller name -> bearer secret

    def call(self, method: str, path: str, caller: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if caller is not None:
            headers["Authorization"] = f"Bearer {self.tokens[caller]}"
        url = path if path.startswith("/v1/") else f"/api/v1{path}"  # the OpenAI routes live at /v1
        return self.client.request(method, url, headers=headers, **kwargs)

    def audit_rows(self, request_id: str) -> list[AuditEntry]:
        with self.platform.db.session() as session:
            return list(session.scalars(select(AuditEntry).where(AuditEntry.request_id == request_id)))

    def project_id(self, name: str) -> int:
        with self.platform.db.session() as session:
            return session.scalars(select(Project.id).where(Project.name == name)).one()


def make_token(
    platform: Platform, username: str, *, lifetime: dt.timedelta = dt.timedelta(hours=1), **scope: Any
) -> str:
    with platform.db.session() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        _token, secret = issue_token(session, user, kind="personal", name="test", lifetime=lifetime, **scope)
        return secret


@functools.cache
def _hash_once(password: str) -> str:
    return hash_password(password)


def seed_users(platform: Platform) -> dict[str, str]:
    """Users `admin`, one per project role in `p`, and `outsider` (owner of `q`); their tokens.

    They all have one password, hashed once per test session (a real argon2id hash that logins verify
    as usual): hashing it per user cost ~0.7 s of every API test's set-up."""
    with pytest.MonkeyPatch.context() as patch, platform.db.session() as session:
        patch.setattr(users, "hash_password", _hash_once)
        create_user(session, username="admin", password=PASSWORD, admin=True, actor="test")
        p = create_project(session, name="p", actor="test")
        q = create_project(session, name="q", actor="test")
        for role in ROLES:
            user = create_user(session, username=role, password=PASSWORD, actor="test")
            rbac.grant_project_role(session, user.id, p.id, role)
        outsider = create_user(session, username="outsider", password=PASSWORD, actor="test")
        rbac.grant_project_role(session, outsider.id, q.id, "owner")
    return {name: make_token(platform, name) for name in ("admin", *ROLES, "outsider")}


@pytest.fixture
def api(platform: Platform) -> Iterator[Api]:
    """The app in-process over `seed_users`' users and projects."""
    tokens = seed_users(platform)
    app = create_app(platform)
    with TestClient(app, raise_server_exceptions=False, client=("10.1.2.3", 50000)) as client:
        yield Api(platform, client, tokens)
