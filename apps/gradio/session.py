"""Who is signed in, in one browser tab: the session token, the user, their project roles and the
project they picked. Frozen and hashable, so a `gr.State` holding it fires `change` exactly when it
changes (Gradio compares state values by hash).

What the user may do is read from the same role table the API enforces (`deepext/auth/policy.csv`);
the UI only uses it to hide what would be refused - the API still decides.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from deepext.auth.rbac import read_policy_file
from deepext.serve.routes.auth import Me

EXPIRED = "Your session expired, log in again."


@functools.lru_cache(maxsize=1)
def role_rights() -> dict[str, frozenset[tuple[str, str]]]:
    """Project role -> the (resource, action) pairs it grants in a project."""
    rights: dict[str, set[tuple[str, str]]] = {}
    for permission in read_policy_file():
        if permission.domain == "*":
            rights.setdefault(permission.role.removeprefix("role:"), set()).add(
                (permission.resource, permission.action)
            )
    return {role: frozenset(pairs) for role, pairs in rights.items()}


@dataclass(frozen=True)
class UiSession:
    token: str = ""
    username: str = ""
    admin: bool = False
    roles: tuple[tuple[str, str], ...] = ()  # (project, role) pairs from /auth/me
    project: str = ""  # the project picked in the header
    notice: str = ""  # shown on the login view (why the user is back there)

    @property
    def signed_in(self) -> bool:
        return bool(self.token)

    @classmethod
    def from_me(cls, token: str, me: Me, *, project: str = "") -> UiSession:
        roles = tuple((grant.project, grant.role) for grant in me.projects)
        return cls(token=token, username=me.username, admin=me.admin, roles=roles, project=project)

    def with_me(self, me: Me) -> UiSession:
        """The same session with the roles and admin flag of a fresh /auth/me answer."""
        return dataclasses.replace(self, admin=me.admin, roles=tuple((g.project, g.role) for g in me.projects))

    def with_project(self, project: str) -> UiSession:
        return dataclasses.replace(self, project=project)

    def expired(self) -> UiSession:
        return UiSession(notice=EXPIRED)

    def role(self, project: str | None = None) -> str | None:
        return dict(self.roles).get(project or self.project)

    def may(self, resource: str, action: str, project: str | None = None) -> bool:
        """Whether the API would let this user do `action` on `resource` in the (picked) project."""
        if self.admin:
            return True
        role = self.role(project)
        return role is not None and (resource, action) in role_rights().get(role, frozenset())
