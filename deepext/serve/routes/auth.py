"""Log in and out, who am I, personal API tokens."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepext import audit
from deepext.auth import rbac, tokens
from deepext.auth.login import login as login_user
from deepext.auth.passwords import verify_password
from deepext.db.models import ApiToken, Project, User
from deepext.errors import InvalidInput, NotFound, Unauthenticated
from deepext.serve.deps import Access, PlatformDep, RowId, allow, info_of

router = APIRouter(prefix="/auth", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class ProjectRole(BaseModel):
    project: str
    role: str


class Me(BaseModel):
    username: str
    email: str | None
    display_name: str | None
    admin: bool
    projects: list[ProjectRole]


class LoginResponse(BaseModel):
    token: str
    token_type: str = "bearer"
    expires_at: dt.datetime
    user: Me


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    expires_in_days: int = Field(90, ge=1, le=3650)
    projects: list[str] | None = Field(None, description="Limit the token to these projects (default: all of yours).")
    role: str | None = Field(None, description="Cap the token's rights at this project role.")


class TokenPublic(BaseModel):
    id: int
    name: str
    prefix: str
    projects: list[str] | None
    role: str | None
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None
    created_at: dt.datetime


class TokenCreated(TokenPublic):
    token: str = Field(description="The secret. Shown only in this response.")


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


def _me(session: Session, user: User) -> Me:
    grants = rbac.grants_of(session, user.id)
    roles = grants.project_roles
    names = dict(session.execute(select(Project.id, Project.name).where(Project.id.in_(roles))).tuples().all())
    return Me(
        username=user.username,
        email=user.email,
        display_name=user.display_name,
        admin=grants.admin,
        projects=[ProjectRole(project=names[pid], role=role) for pid, role in sorted(roles.items()) if pid in names],
    )


def _public(session, row: ApiToken, **extra: object) -> dict[str, object]:
    names = None
    if row.project_ids is not None:
        rows = session.scalars(select(Project.name).where(Project.id.in_(row.project_ids)))
        names = sorted(rows)
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "projects": names,
        "role": row.role,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "last_used_at": row.last_used_at,
        "created_at": row.created_at,
        **extra,
    }


@router.post("/login")
def login(body: LoginRequest, request: Request, platform: PlatformDep) -> LoginResponse:
    """A session token (valid `session_minutes`); failed attempts are rate-limited and audited."""
    info = info_of(request)
    info.action = "auth.login"
    lifetime = dt.timedelta(minutes=platform.settings.session_minutes)
    token, secret, user = login_user(
        platform.db, username=body.username, password=body.password, client_addr=info.client_addr, lifetime=lifetime
    )
    with platform.db.session() as session:
        me = _me(session, session.get_one(User, user.id))
    return LoginResponse(token=secret, expires_at=token.expires_at, user=me)


@router.post("/logout", status_code=204)
def logout(access: Annotated[Access, allow("self", "write")], platform: PlatformDep) -> Response:
    """End the session of the token used (a personal token is revoked)."""
    with platform.db.session() as session:
        tokens.end_session(session, access.principal.token_id)
        audit.record(session, actor=access.actor, action="auth.logout", resource=f"token:{access.principal.token_id}")
    return Response(status_code=204)


@router.get("/me")
def me(access: Annotated[Access, allow("self", "read")], platform: PlatformDep) -> Me:
    with platform.db.session() as session:
        return _me(session, access.user(session))


@router.put("/password", status_code=204)
def change_password(
    body: PasswordChange, access: Annotated[Access, allow("self", "write")], platform: PlatformDep
) -> Response:
    from deepext.auth.users import update_user

    with platform.db.session() as session:
        user = access.user(session)
        if not verify_password(user.password_hash, body.current_password):
            raise Unauthenticated("current password is wrong")
        update_user(session, user.username, actor=access.actor, password=body.new_password)
    return Response(status_code=204)


@router.get("/tokens")
def list_tokens(access: Annotated[Access, allow("self", "read")], platform: PlatformDep) -> list[TokenPublic]:
    with platform.db.session() as session:
        return [TokenPublic(**_public(session, t)) for t in tokens.list_tokens(session, access.principal.user_id)]


@router.post("/tokens", status_code=201)
def create_token(
    body: TokenCreate, access: Annotated[Access, allow("self", "write")], platform: PlatformDep
) -> TokenCreated:
    """A personal API token, optionally limited to some of your projects and capped at a role."""
    with platform.db.session() as session:
        user = access.user(session)
        project_ids = None
        if body.projects is not None:
            mine = rbac.user_projects(session, user.id)
            rows = dict(
                session.execute(select(Project.name, Project.id).where(Project.name.in_(body.projects))).tuples().all()
            )
            for name in body.projects:
                if name not in rows or (rows[name] not in mine and not access.principal.is_admin):
                    raise InvalidInput(f"projects: no project {name!r} of yours", field="projects")
            project_ids = sorted(rows.values())
        token, secret = tokens.issue_token(
            session,
            user,
            kind="personal",
            name=body.name,
            lifetime=dt.timedelta(days=body.expires_in_days),
            project_ids=project_ids,
            role=body.role,
        )
        audit.record(
            session,
            actor=access.actor,
            action="token.create",
            resource=f"token:{token.id}",
            detail={"name": body.name, "projects": body.projects, "role": body.role},
        )
        return TokenCreated(**_public(session, token, token=secret))


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: RowId, access: Annotated[Access, allow("self", "write")], platform: PlatformDep) -> Response:
    with platform.db.session() as session:
        if session.scalar(select(ApiToken.id).where(ApiToken.id == token_id, ApiToken.kind == "personal")) is None:
            raise NotFound(f"token {token_id} not found")
        tokens.revoke_token(session, access.principal.user_id, token_id, actor=access.actor)
    return Response(status_code=204)
