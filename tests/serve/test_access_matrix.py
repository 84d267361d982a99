"""Every route x every kind of caller against the outcome the access rules promise.

The routes come from the app's own route table, so a new route is in the matrix the moment it
exists; a route whose declared (resource, action) is not in the expectations below fails the test
until someone decides who may call it. The expectations are written out here from the issue's
role descriptions, independently of `deepext/auth/policy.csv`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import httpx
import pytest

from deepext.serve.app import route_table
from deepext.serve.deps import PUBLIC_ROUTES
from tests.serve.conftest import ROLES, Api, make_token

VIEWER = {
    ("project", "read"),
    ("members", "read"),
    ("datasets", "read"),
    ("models", "read"),
    ("jobs", "read"),
    ("evaluations", "read"),
    ("deployments", "read"),
    ("providers", "read"),
    ("usage", "read"),
    ("knowledge", "read"),
}
MEMBER = VIEWER | {("evaluations", "run"), ("chat", "use")}
MAINTAINER = MEMBER | {
    ("datasets", "write"),
    ("models", "write"),
    ("jobs", "create"),
    ("jobs", "cancel"),
    ("evaluations", "write"),
    ("deployments", "write"),
    ("providers", "write"),
    ("knowledge", "write"),
}
OWNER = MAINTAINER | {("project", "write"), ("members", "manage")}
PROJECT_RIGHTS = {"viewer": VIEWER, "member": MEMBER, "maintainer": MAINTAINER, "owner": OWNER}
# `inference.use`: the OpenAI-compatible /v1 routes; each model's project is checked inside them.
EVERY_USER = {
    ("self", "read"),
    ("self", "write"),
    ("projects", "read"),
    ("projects", "create"),
    ("base_models", "read"),
    ("inference", "use"),
}
SCOPED_TOKEN_SYSTEM = {("self", "read"), ("projects", "read"), ("base_models", "read"), ("inference", "use")}
ADMIN_ONLY = {("users", "read"), ("users", "manage"), ("audit", "read")}

# Path parameters: the matrix project `p`, and things that do not exist in it, so an allowed call
# stops at "not found" or at body validation instead of changing anything.
FILL = {
    "project": "p",
    "token_id": "999999",
    "username": "nobody",
    "name": "nope",
    "selector": "1",
    "ref": "nope@1",
    "job_id": "999999",
    "run_id": "999999",
    "document": "nope.md",
}
CALLERS = ["admin", *ROLES, "outsider", "anonymous", "expired", "revoked", "other_project", "viewer_capped"]


def _path(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: FILL[m.group(1)], template).removeprefix("/api/v1")  # /v1/... stays


def _expected(caller: str, route: dict[str, str], is_project_route: bool) -> str:
    """allowed | 401 | 403 | hidden (404 exactly as for a project that does not exist)."""
    right = (route["resource"], route["action"])
    if caller in {"anonymous", "expired", "revoked"}:
        return "401"
    if caller == "admin":
        return "allowed"
    if is_project_route:
        if caller in {"outsider", "other_project"}:
            return "hidden"
        role = "viewer" if caller == "viewer_capped" else caller
        return "allowed" if right in PROJECT_RIGHTS[role] else "403"
    if caller in {"other_project", "viewer_capped"}:
        return "allowed" if right in SCOPED_TOKEN_SYSTEM else "403"
    return "allowed" if right in EVERY_USER else "403"


@pytest.fixture
def matrix_api(api: Api) -> Api:
    return add_special_callers(api)


def add_special_callers(api: Api) -> Api:
    """Tokens for the callers beyond the users: expired, revoked, scoped to `q`, capped at viewer."""
    platform = api.platform
    api.tokens["expired"] = make_token(platform, "owner", lifetime=dt.timedelta(seconds=1))
    api.tokens["revoked"] = make_token(platform, "owner")
    api.tokens["other_project"] = make_token(platform, "owner", project_ids=[api.project_id("q")])
    api.tokens["viewer_capped"] = make_token(platform, "owner", role="viewer")
    with platform.db.session() as session:
        from deepext.auth.tokens import authenticate, revoke_token

        principal = authenticate(session, api.tokens["revoked"])
        revoke_token(session, principal.user_id, principal.token_id, actor="test")
    api.tokens["anonymous"] = ""
    import time

    time.sleep(1.1)  # let the expired token expire
    return api


def test_every_route_declares_a_known_right_or_is_public(api: Api) -> None:
    known = set().union(*PROJECT_RIGHTS.values(), EVERY_USER, ADMIN_ONLY)
    for route in route_table(api.client.app):  # type: ignore[arg-type]
        if (route["method"], route["path"]) in PUBLIC_ROUTES:
            continue
        assert route["resource"] is not None, f"{route['method']} {route['path']} declares no allow(...)"
        assert (route["resource"], route["action"]) in known, f"decide who may call {route}"


def run_matrix(api: Api, send: Callable[..., httpx.Response]) -> int:
    """Call every route as every caller through `send(method, path, headers=..., **kwargs)`; returns
    the number of calls, or fails listing every call whose outcome was not the expected one."""
    routes = [r for r in route_table(api.client.app) if (r["method"], r["path"]) not in PUBLIC_ROUTES]  # type: ignore[arg-type]
    routes.sort(key=lambda r: r["path"].endswith("/logout"))  # logging out ends the caller's session: last
    failures = []
    checked = 0
    for route in routes:
        is_project_route = "{project}" in route["path"]
        for caller in CALLERS:
            expected = _expected(caller, route, is_project_route)
            kwargs = {"json": {}} if route["method"] in {"POST", "PUT", "PATCH"} else {}
            headers = {"Authorization": f"Bearer {api.tokens[caller]}"} if api.tokens[caller] else {}
            response = send(route["method"], _path(route["path"]), headers=headers, **kwargs)
            status, text = response.status_code, response.text
            hidden = status == 404 and "project 'p' not found" in text
            got = {401: "401", 403: "403"}.get(status, "hidden" if hidden else "allowed")
            if status >= 500 or got != expected:
                failures.append(
                    f"{route['method']} {route['path']} as {caller}: expected {expected}, got {status} {text[:160]}"
                )
            checked += 1
    assert not failures, f"{len(failures)} of {checked} calls wrong:\n" + "\n".join(failures)
    assert checked == len(routes) * len(CALLERS)
    return checked


def test_access_matrix(matrix_api: Api) -> None:
    run_matrix(matrix_api, matrix_api.call)
