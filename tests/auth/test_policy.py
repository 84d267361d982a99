"""The access model and role table, checked with Casbin in memory (no database): what each role may
do, that roles do not leak across projects, and that deny is the default."""

from __future__ import annotations

import casbin
import pytest

from deepext.auth.rbac import MODEL_PATH, read_policy_file


@pytest.fixture(scope="module")
def enforcer() -> casbin.Enforcer:
    e = casbin.Enforcer(str(MODEL_PATH))
    for p in read_policy_file():
        e.add_policy(p.role, p.domain, p.resource, p.action)
    e.add_grouping_policy("user:1", "role:admin", "*")
    for uid in (1, 2, 3, 4, 5, 6):
        e.add_grouping_policy(f"user:{uid}", "role:user", "*")
    e.add_grouping_policy("user:2", "role:owner", "project:7")
    e.add_grouping_policy("user:3", "role:maintainer", "project:7")
    e.add_grouping_policy("user:4", "role:member", "project:7")
    e.add_grouping_policy("user:5", "role:viewer", "project:7")
    e.add_grouping_policy("user:6", "role:owner", "project:8")
    return e


@pytest.mark.parametrize(
    ("user", "resource", "action", "allowed"),
    [
        (5, "datasets", "read", True),
        (5, "datasets", "write", False),
        (5, "evaluations", "run", False),
        (4, "evaluations", "run", True),
        (4, "chat", "use", True),
        (4, "datasets", "write", False),
        (4, "jobs", "create", False),
        (3, "jobs", "create", True),
        (3, "deployments", "write", True),
        (3, "members", "manage", False),
        (2, "members", "manage", True),
        (2, "project", "write", True),
        (1, "members", "manage", True),
        (6, "datasets", "read", False),  # owner of another project
        (2, "anything", "read", False),  # unknown resources are denied
    ],
)
def test_roles_in_a_project(enforcer: casbin.Enforcer, user: int, resource: str, action: str, allowed: bool) -> None:
    assert enforcer.enforce(f"user:{user}", "project:7", resource, action) is allowed


def test_system_rights(enforcer: casbin.Enforcer) -> None:
    assert enforcer.enforce("user:5", "system", "projects", "create")
    assert enforcer.enforce("user:5", "system", "self", "write")
    assert not enforcer.enforce("user:2", "system", "users", "manage")  # a project owner is no admin
    assert not enforcer.enforce("user:2", "system", "audit", "read")
    assert enforcer.enforce("user:1", "system", "audit", "read")
    assert not enforcer.enforce("user:5", "project:7", "projects", "create")  # system rights stay in `system`


def test_a_role_checked_as_itself_caps_tokens(enforcer: casbin.Enforcer) -> None:
    assert enforcer.enforce("role:viewer", "project:7", "datasets", "read")
    assert not enforcer.enforce("role:viewer", "project:7", "datasets", "write")


def test_the_policy_file_only_names_known_roles_and_domains() -> None:
    for p in read_policy_file():
        assert p.role in {"role:admin", "role:user", "role:owner", "role:maintainer", "role:member", "role:viewer"}
        assert p.domain in {"*", "system"}
