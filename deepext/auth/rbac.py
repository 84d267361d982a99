"""Authorization with Casbin: the one place where "may this subject do this here?" is decided.

The model (`model.conf`) is RBAC with domains; role permissions come from `policy.csv`; who holds
which role where are grouping rules in the metadata store. Rules are written through the caller's
SQLAlchemy session, so a membership change commits or rolls back together with its audit row, and
every write bumps `policy_version`; each process's `Authorizer` reloads its Casbin enforcer (through
the Casbin SQLAlchemy adapter) when that version moves, so several API replicas agree.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import casbin
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from sqlalchemy_adapter import Adapter

from deepext.db import Database
from deepext.db.models import CasbinRule, PolicyVersion, Role
from deepext.errors import InvalidInput

MODEL_PATH = Path(__file__).with_name("model.conf")
POLICY_PATH = Path(__file__).with_name("policy.csv")
SYSTEM = "system"
ADMIN = "role:admin"
USER = "role:user"
PROJECT_ROLES = tuple(role.value for role in Role)


def user_subject(user_id: int) -> str:
    return f"user:{user_id}"


def project_domain(project_id: int) -> str:
    return f"project:{project_id}"


def role_subject(role: str) -> str:
    return f"role:{role}"


def check_role(role: str) -> str:
    if role not in PROJECT_ROLES:
        raise InvalidInput(f"role {role!r}: one of {', '.join(PROJECT_ROLES)}", field="role")
    return role


@dataclass(frozen=True)
class Permission:
    role: str
    domain: str
    resource: str
    action: str


def read_policy_file(path: Path = POLICY_PATH) -> list[Permission]:
    """The `p` lines of the policy file."""
    permissions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 5 or fields[0] != "p":
            raise ValueError(f"{path}, line {number}: expected `p, role, domain, resource, action`")
        permissions.append(Permission(*fields[1:]))
    return permissions


# ---- writing rules (in the caller's transaction)
def bump_access_version(session: Session) -> None:
    """Tell every API process that access changed (rules, a revoked token, a deactivated user), so
    it reloads its enforcer and forgets the tokens it had checked."""
    session.execute(update(PolicyVersion).where(PolicyVersion.id == 1).values(version=PolicyVersion.version + 1))


def sync_role_permissions(session: Session, path: Path = POLICY_PATH) -> bool:
    """Make the stored `p` rules equal to the policy file; True if anything changed."""
    wanted = {(p.role, p.domain, p.resource, p.action) for p in read_policy_file(path)}
    stored = session.scalars(select(CasbinRule).where(CasbinRule.ptype == "p")).all()
    have = {(r.v0, r.v1, r.v2, r.v3) for r in stored}
    if have == wanted and len(stored) == len(wanted):
        return False
    session.execute(delete(CasbinRule).where(CasbinRule.ptype == "p"))
    for role, domain, resource, action in sorted(wanted):
        session.add(CasbinRule(ptype="p", v0=role, v1=domain, v2=resource, v3=action))
    bump_access_version(session)
    return True


def _grants(session: Session, subject: str, domain: str | None = None) -> list[CasbinRule]:
    query = select(CasbinRule).where(CasbinRule.ptype == "g", CasbinRule.v0 == subject)
    if domain is not None:
        query = query.where(CasbinRule.v2 == domain)
    return list(session.scalars(query))


def grant_project_role(session: Session, user_id: int, project_id: int, role: str) -> str | None:
    """Give the user `role` in the project, replacing any role held there; returns the old role."""
    check_role(role)
    domain = project_domain(project_id)
    old = _grants(session, user_subject(user_id), domain)
    for rule in old:
        session.delete(rule)
    session.add(CasbinRule(ptype="g", v0=user_subject(user_id), v1=role_subject(role), v2=domain))
    bump_access_version(session)
    return old[0].v1.removeprefix("role:") if old and old[0].v1 else None


def revoke_project_role(session: Session, user_id: int, project_id: int) -> str | None:
    """Take the user out of the project; returns the role they had, or None."""
    old = _grants(session, user_subject(user_id), project_domain(project_id))
    for rule in old:
        session.delete(rule)
    if old:
        bump_access_version(session)
    return old[0].v1.removeprefix("role:") if old and old[0].v1 else None


def project_role(session: Session, user_id: int, project_id: int) -> str | None:
    rules = _grants(session, user_subject(user_id), project_domain(project_id))
    return rules[0].v1.removeprefix("role:") if rules and rules[0].v1 else None


def project_members(session: Session, project_id: int) -> dict[int, str]:
    """user id -> role in the project."""
    rules = session.scalars(
        select(CasbinRule).where(CasbinRule.ptype == "g", CasbinRule.v2 == project_domain(project_id))
    )
    return {int((r.v0 or "").removeprefix("user:")): (r.v1 or "").removeprefix("role:") for r in rules}


def user_projects(session: Session, user_id: int) -> dict[int, str]:
    """project id -> the user's role there."""
    rules = _grants(session, user_subject(user_id))
    return {
        int((r.v2 or "").removeprefix("project:")): (r.v1 or "").removeprefix("role:")
        for r in rules
        if (r.v2 or "").startswith("project:")
    }


def grant_system_role(session: Session, user_id: int, role: str) -> None:
    """`role:user` (every account) or `role:admin`, in every domain; idempotent."""
    subject, wanted = user_subject(user_id), role_subject(role)
    if any(r.v1 == wanted for r in _grants(session, subject, "*")):
        return
    session.add(CasbinRule(ptype="g", v0=subject, v1=wanted, v2="*"))
    bump_access_version(session)


def revoke_system_role(session: Session, user_id: int, role: str) -> None:
    rules = [r for r in _grants(session, user_subject(user_id), "*") if r.v1 == role_subject(role)]
    for rule in rules:
        session.delete(rule)
    if rules:
        bump_access_version(session)


@dataclass(frozen=True)
class Grants:
    """Everything one user holds, read in one query: admin or not, and their role per project."""

    admin: bool
    project_roles: dict[int, str]


def grants_of(session: Session, user_id: int) -> Grants:
    rows = session.execute(
        select(CasbinRule.v1, CasbinRule.v2).where(CasbinRule.ptype == "g", CasbinRule.v0 == user_subject(user_id))
    ).all()
    roles = {
        int(domain.removeprefix("project:")): (role or "").removeprefix("role:")
        for role, domain in rows
        if domain and domain.startswith("project:")
    }
    return Grants(admin=any(role == ADMIN and domain == "*" for role, domain in rows), project_roles=roles)


def is_admin(session: Session, user_id: int) -> bool:
    return any(r.v1 == ADMIN for r in _grants(session, user_subject(user_id), "*"))


def forget_project(session: Session, project_id: int) -> None:
    """Drop every grant in a deleted project."""
    session.execute(delete(CasbinRule).where(CasbinRule.ptype == "g", CasbinRule.v2 == project_domain(project_id)))
    bump_access_version(session)


# ---- deciding
class Authorizer:
    """A Casbin enforcer over the stored rules, reloaded when another process changed them.

    Decisions are memoized until the next reload: a decision depends only on the loaded rules and
    the request, and Casbin's matcher evaluation costs milliseconds per call."""

    _MAX_CACHED = 100_000

    def __init__(self, db: Database) -> None:
        adapter = Adapter(db.engine, db_class=CasbinRule, create_table=False)
        self._enforcer = casbin.Enforcer(str(MODEL_PATH), adapter)
        self._loaded_version: int | None = None
        self._lock = threading.RLock()
        self._decisions: dict[tuple[str, str, str, str], bool] = {}

    def refresh(self, session: Session) -> int:
        """Reload the rules if the access version moved since the last load (one indexed read);
        returns the version."""
        version = int(session.scalar(select(PolicyVersion.version).where(PolicyVersion.id == 1)) or 0)
        if version != self._loaded_version:
            with self._lock:
                self._enforcer.load_policy()
                self._decisions.clear()
                self._loaded_version = version
        return version

    @property
    def version(self) -> int | None:
        """The access version of the loaded rules (None before the first `refresh`)."""
        return self._loaded_version

    def allowed(self, subject: str, domain: str, resource: str, action: str) -> bool:
        key = (subject, domain, resource, action)
        with self._lock:
            decision = self._decisions.get(key)
            if decision is None:
                decision = bool(self._enforcer.enforce(*key))
                if len(self._decisions) >= self._MAX_CACHED:
                    self._decisions.clear()
                self._decisions[key] = decision
            return decision

    def role_allows(self, role: str, domain: str, resource: str, action: str) -> bool:
        """Whether the role itself grants this (used to cap what a scoped token may do)."""
        return self.allowed(role_subject(role), domain, resource, action)
