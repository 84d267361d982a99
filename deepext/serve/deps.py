"""What every route depends on: the platform, and `allow(resource, action)` - the one enforcement
point. Each route declares what it does with `allow(...)`; a route without it is public only if it
is listed in `PUBLIC_ROUTES` (a test fails on any other).

Enforcement, in order: a valid bearer token (401 otherwise); for routes under
`/projects/{project}`, the project must exist and the caller be in it (an admin is in every
project) and the token's scope must include it - otherwise 404, exactly as for a project that does
not exist; then Casbin must allow the caller's roles, and the token's role cap if it has one, to do
`action` on `resource` there (403 otherwise). Deny by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepext import request as current_request
from deepext.auth import rbac
from deepext.auth.tokens import Principal, RecentPrincipals, authenticate
from deepext.db.models import Project, User
from deepext.errors import Forbidden, NotFound, Unauthenticated
from deepext.platform import Platform

PUBLIC_ROUTES = {("POST", "/api/v1/auth/login"), ("GET", "/api/v1/health")}
_SCOPED_TOKEN_SYSTEM_RIGHTS = {("self", "read"), ("projects", "read"), ("base_models", "read"), ("inference", "use")}
_bearer = HTTPBearer(auto_error=False, description="A session token from /auth/login or a personal API token.")


@dataclass
class RequestInfo:
    """Per-request facts the audit middleware needs after the route ran (set by `Require`)."""

    request_id: str
    client_addr: str
    principal: Principal | None = None
    project_id: int | None = None
    action: str | None = None  # "resource.action" the route declared
    outcome: str | None = None  # set when access was refused
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProjectRef:
    id: int
    name: str


@dataclass(frozen=True)
class Access:
    """What a route may act as: the caller and, under /projects/{project}, the project."""

    principal: Principal
    project: ProjectRef | None

    @property
    def actor(self) -> str:
        return self.principal.username

    @property
    def project_name(self) -> str:
        return self._project().name

    @property
    def project_id(self) -> int:
        return self._project().id

    def _project(self) -> ProjectRef:
        if self.project is None:  # pragma: no cover - only project routes ask
            raise RuntimeError("not a project route")
        return self.project

    def check_in_project(self, owner: str, what: str) -> None:
        """An object reached by id through this project's URL must belong to it: another project's
        answers 'not found', like one that does not exist."""
        if owner != self.project_name:
            raise NotFound(f"{what} not found")

    def project_row(self, session: Session) -> Project:
        """The route's project, loaded in `session`."""
        row = session.get(Project, self.project_id)
        if row is None:  # deleted since the access check
            raise NotFound(f"project {self.project_name!r} not found")
        return row

    def user(self, session: Session) -> User:
        """The calling user, loaded in `session`."""
        row = session.get(User, self.principal.user_id)
        if row is None:
            raise Unauthenticated("account deleted")
        return row


def platform_of(request: Request) -> Platform:
    return request.app.state.platform


def info_of(request: Request) -> RequestInfo:
    return request.scope["deepext"]


PlatformDep = Annotated[Platform, Depends(platform_of)]
MAX_ID = 2**31 - 1  # row ids are 32-bit integers on PostgreSQL
RowId = Annotated[int, Path(ge=1, le=MAX_ID, description="a row id")]


class Require:
    """The dependency `allow()` builds; its `resource` and `action` are what the route declares."""

    def __init__(self, resource: str, action: str) -> None:
        self.resource = resource
        self.action = action

    def __call__(
        self, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Access:
        info = info_of(request)
        info.action = f"{self.resource}.{self.action}"
        platform = platform_of(request)
        authorizer: rbac.Authorizer = request.app.state.authorizer
        if credentials is None:
            info.outcome = "unauthenticated"
            raise Unauthenticated("missing bearer token (Authorization: Bearer <token>)")
        project_name = request.path_params.get("project")
        with platform.db.session() as session:
            try:
                principal = principal_of(session, authorizer, request.app.state.principals, credentials.credentials)
            except Unauthenticated:
                info.outcome = "unauthenticated"
                raise
            info.principal = principal
            readable = readable_projects(principal)
            context = current_request.current()
            if context is not None:
                context.token_id = principal.token_id
                context.readable_project_ids = readable
            project = None
            if project_name is not None:
                row = session.scalar(select(Project).where(Project.name == project_name))
                if row is None or (readable is not None and row.id not in readable):
                    if row is not None:
                        info.project_id, info.outcome = row.id, "denied"
                    raise NotFound(f"project {project_name!r} not found")
                project = ProjectRef(row.id, row.name)
                info.project_id = row.id
        if not self._allowed(authorizer, principal, project):
            info.outcome = "denied"
            where = f"in project {project.name!r}" if project else "on this platform"
            who = f"a token limited to role {principal.role!r}" if principal.role else f"user {principal.username!r}"
            raise Forbidden(f"{who} may not {self.action} {self.resource} {where}")
        return Access(principal, project)

    def _allowed(self, authorizer: rbac.Authorizer, principal: Principal, project: ProjectRef | None) -> bool:
        if project is None:
            return may_on_platform(authorizer, principal, self.resource, self.action)
        return may_in_project(authorizer, principal, project.id, self.resource, self.action)


def principal_of(session: Session, authorizer: rbac.Authorizer, recent: RecentPrincipals, secret: str) -> Principal:
    """Who a bearer secret stands for (Unauthenticated if no one), the rules reloaded first if they
    changed; a token checked recently under the same rules is not looked up again."""
    version = authorizer.refresh(session)
    principal = recent.get(secret, version)
    if principal is None:
        principal = authenticate(session, secret)
        recent.put(secret, principal, version)
    return principal


def may_on_platform(authorizer: rbac.Authorizer, principal: Principal, resource: str, action: str) -> bool:
    """The caller's platform role allows it; a scoped token acts only inside its projects (and
    cannot mint tokens)."""
    scoped = principal.project_ids is not None or principal.role is not None
    if scoped and (resource, action) not in _SCOPED_TOKEN_SYSTEM_RIGHTS:
        return False
    return authorizer.allowed(principal.subject, rbac.SYSTEM, resource, action)


def may_in_project(
    authorizer: rbac.Authorizer, principal: Principal, project_id: int, resource: str, action: str
) -> bool:
    """The caller's roles in the project allow it, and so does the token's role cap if it has one."""
    domain = rbac.project_domain(project_id)
    if not authorizer.allowed(principal.subject, domain, resource, action):
        return False
    return principal.role is None or authorizer.role_allows(principal.role, domain, resource, action)


def readable_projects(principal: Principal) -> frozenset[int] | None:
    """Ids of the projects the caller may see, or None for all (an admin's unscoped token)."""
    if principal.is_admin:
        return principal.project_ids
    mine = frozenset(principal.project_roles)
    return mine if principal.project_ids is None else mine & principal.project_ids


def allow(resource: str, action: str) -> Any:
    """Declare and enforce what a route does: `access: Annotated[Access, allow("jobs", "create")]`."""
    return Depends(Require(resource, action))
