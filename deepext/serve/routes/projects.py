"""Projects and who is in them. Any user may create a project and becomes its owner."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from deepext import audit
from deepext.auth import rbac
from deepext.auth.users import get_user
from deepext.db.models import Project, User
from deepext.errors import Conflict, NotFound
from deepext.projects import create_project
from deepext.serve.deps import Access, PlatformDep, allow

router = APIRouter(prefix="/projects", tags=["projects"])


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field("", max_length=10_000)


class ProjectUpdate(BaseModel):
    description: str = Field(max_length=10_000)


class ProjectPublic(BaseModel):
    name: str
    description: str
    role: str | None = Field(description="Your role in it (None for an admin who is not a member).")
    created_at: dt.datetime


class MemberSet(BaseModel):
    role: str = Field(description="owner, maintainer, member or viewer")


class Member(BaseModel):
    username: str
    role: str


def _public(project: Project, role: str | None) -> ProjectPublic:
    return ProjectPublic(name=project.name, description=project.description, role=role, created_at=project.created_at)


@router.get("")
def projects(access: Annotated[Access, allow("projects", "read")], platform: PlatformDep) -> list[ProjectPublic]:
    """The projects you are in (all of them for an admin), narrowed to a scoped token's projects."""
    principal = access.principal
    with platform.db.session() as session:
        roles = rbac.user_projects(session, principal.user_id)
        query = select(Project).order_by(Project.name)
        if not principal.is_admin:
            query = query.where(Project.id.in_(roles))
        if principal.project_ids is not None:
            query = query.where(Project.id.in_(principal.project_ids))
        return [_public(p, roles.get(p.id)) for p in session.scalars(query)]


@router.post("", status_code=201)
def add_project(
    body: ProjectCreate, access: Annotated[Access, allow("projects", "create")], platform: PlatformDep
) -> ProjectPublic:
    with platform.db.session() as session:
        project = create_project(session, name=body.name, description=body.description, actor=access.actor)
        project.created_by_id = access.principal.user_id
        rbac.grant_project_role(session, access.principal.user_id, project.id, "owner")
        return _public(project, "owner")


@router.get("/{project}")
def project(project: str, access: Annotated[Access, allow("project", "read")], platform: PlatformDep) -> ProjectPublic:
    with platform.db.session() as session:
        row = access.project_row(session)
        return _public(row, rbac.project_role(session, access.principal.user_id, row.id))


@router.patch("/{project}")
def change_project(
    project: str, body: ProjectUpdate, access: Annotated[Access, allow("project", "write")], platform: PlatformDep
) -> ProjectPublic:
    with platform.db.session() as session:
        row = access.project_row(session)
        row.description = body.description
        audit.record(
            session, actor=access.actor, action="project.update", resource=f"project:{row.name}", project_id=row.id
        )
        return _public(row, rbac.project_role(session, access.principal.user_id, row.id))


@router.get("/{project}/members")
def members(project: str, access: Annotated[Access, allow("members", "read")], platform: PlatformDep) -> list[Member]:
    with platform.db.session() as session:
        roles = rbac.project_members(session, access.project_id)
        names = dict(session.execute(select(User.id, User.username).where(User.id.in_(roles))).tuples().all())
        return sorted(
            (Member(username=names[uid], role=role) for uid, role in roles.items() if uid in names),
            key=lambda m: m.username,
        )


@router.put("/{project}/members/{username}")
def set_member(
    project: str,
    username: str,
    body: MemberSet,
    access: Annotated[Access, allow("members", "manage")],
    platform: PlatformDep,
) -> Member:
    """Add a user to the project with a role, or change their role."""
    pid = access.project_id
    with platform.db.session() as session:
        rbac.check_role(body.role)
        user = get_user(session, username)
        old = rbac.project_role(session, user.id, pid)
        if old == "owner" and body.role != "owner":
            _keep_an_owner(session, pid, user.id)
        rbac.grant_project_role(session, user.id, pid, body.role)
        audit.record(
            session,
            actor=access.actor,
            action="member.set",
            resource=f"project:{project}/user:{username}",
            project_id=pid,
            detail={"role": body.role, "previous": old},
        )
        return Member(username=username, role=body.role)


@router.delete("/{project}/members/{username}", status_code=204)
def remove_member(
    project: str, username: str, access: Annotated[Access, allow("members", "manage")], platform: PlatformDep
) -> Response:
    pid = access.project_id
    with platform.db.session() as session:
        user = get_user(session, username)
        old = rbac.project_role(session, user.id, pid)
        if old is None:
            raise NotFound(f"{username!r} is not in project {project!r}")
        if old == "owner":
            _keep_an_owner(session, pid, user.id)
        rbac.revoke_project_role(session, user.id, pid)
        audit.record(
            session,
            actor=access.actor,
            action="member.remove",
            resource=f"project:{project}/user:{username}",
            project_id=pid,
            detail={"previous": old},
        )
    return Response(status_code=204)


def _keep_an_owner(session, project_id: int, leaving_user_id: int) -> None:
    owners = [uid for uid, role in rbac.project_members(session, project_id).items() if role == "owner"]
    if owners == [leaving_user_id]:
        raise Conflict("a project keeps at least one owner; make someone else owner first")
