"""Every state-changing request and every refused one leaves exactly one audit row, stamped with the
request; reads leave none; admins filter, export and verify the log; tampering is detected."""

from __future__ import annotations

import csv
import io
import json

from sqlalchemy import select, update

from deepext.db.models import AuditEntry
from deepext.serve.app import route_table
from deepext.serve.deps import PUBLIC_ROUTES
from tests.db.test_audit import bypass_append_only
from tests.helpers import invoke_cli
from tests.serve.conftest import PASSWORD, Api
from tests.serve.test_access_matrix import _path

ROWS = "".join(f'{{"prompt": "{q}", "completion": "{a}"}}\n' for q, a in [("2+2?", "4"), ("3+3?", "6"), ("1+1?", "2")])


def _one_row(api: Api, response, *, outcome: str, actor: str) -> AuditEntry:  # type: ignore[no-untyped-def]
    request_id = response.headers["x-request-id"]
    rows = api.audit_rows(request_id)
    assert len(rows) == 1, f"{response.request.method} {response.request.url}: {len(rows)} audit rows"
    row = rows[0]
    assert (row.outcome, row.actor, row.client_addr) == (outcome, actor, "10.1.2.3"), response.text
    return row


def test_each_successful_change_writes_one_row_in_its_transaction(api: Api) -> None:
    calls = [
        ("POST", "/projects", {"json": {"name": "r1", "description": "x"}}),
        ("PATCH", "/projects/r1", {"json": {"description": "y"}}),
        ("PUT", "/projects/r1/members/viewer", {"json": {"role": "member"}}),
        ("DELETE", "/projects/r1/members/viewer", {}),
        ("POST", "/projects/r1/datasets/qa/versions", {"params": {"filename": "qa.jsonl"}, "content": ROWS}),
        ("POST", "/projects/r1/datasets/qa/versions", {"params": {"filename": "qa.jsonl"}, "content": ROWS}),
        ("POST", "/projects/r1/datasets/qa/versions/1/split", {"json": {"eval_ratio": 0.34, "seed": 0}}),
        ("PATCH", "/projects/r1/datasets/qa/versions/1/labels", {"json": {"add": ["golden"]}}),
        ("POST", "/auth/tokens", {"json": {"name": "ci", "projects": ["r1"], "role": "viewer"}}),
        ("POST", "/users", {"json": {"username": "newbie", "password": PASSWORD}}),
        ("PATCH", "/users/newbie", {"json": {"active": False}}),
    ]
    token_id = None
    for method, path, kwargs in calls:
        response = api.call(method, path, "admin", **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.text}"
        row = _one_row(api, response, outcome="ok", actor="admin")
        assert row.token_id is not None
        token_id = token_id or row.token_id
        assert row.token_id == token_id
        if method == "POST" and path == "/auth/tokens":
            created = response.json()
    from deepext.train.jobs import create_job

    job = create_job(api.platform, project="r1", kind="custom", config={}, resources={}, actor="admin")
    for step in ("cancel", "retry"):
        response = api.call("POST", f"/projects/r1/jobs/{job.id}/{step}", "admin")
        assert response.status_code == 200, response.text
        assert _one_row(api, response, outcome="ok", actor="admin").action == f"job.{step}"
    revoke = api.call("DELETE", f"/auth/tokens/{created['id']}", "admin")
    assert revoke.status_code == 204
    _one_row(api, revoke, outcome="ok", actor="admin")
    with api.platform.db.session() as session:
        stored = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert {
        "project.create",
        "project.update",
        "member.set",
        "member.remove",
        "dataset.push",
        "dataset.split",
        "dataset.label",
        "token.create",
        "user.create",
        "user.update",
        "token.revoke",
    } <= set(stored)


def test_every_mutating_route_writes_exactly_one_row_when_it_fails_or_is_refused(api: Api) -> None:
    mutating = [r for r in route_table(api.client.app) if r["method"] in {"POST", "PUT", "PATCH", "DELETE"}]  # type: ignore[arg-type]
    assert len(mutating) >= 20
    for route in mutating:
        if route["path"].endswith("/logout"):
            continue
        for caller, outcome in [(None, "unauthenticated"), ("viewer", None), ("admin", None)]:
            kwargs = {"json": {}} if route["method"] in {"POST", "PUT", "PATCH"} else {}
            response = api.call(route["method"], _path(route["path"]), caller, **kwargs)
            assert response.status_code >= 400, f"{route} as {caller} changed something: {response.text}"
            rows = api.audit_rows(response.headers["x-request-id"])
            assert len(rows) == 1, f"{route['method']} {route['path']} as {caller}: {len(rows)} rows"
            public = (route["method"], route["path"]) in PUBLIC_ROUTES
            if outcome and not public:
                assert rows[0].outcome == outcome
            elif response.status_code == 403:
                assert rows[0].outcome == "denied"
            if not public:
                assert rows[0].action == f"{route['resource']}.{route['action']}"


def test_reads_write_nothing_and_refused_reads_write_one_row(api: Api) -> None:
    ok = api.call("GET", "/projects/p/datasets", "viewer")
    assert ok.status_code == 200
    assert api.audit_rows(ok.headers["x-request-id"]) == []
    hidden = api.call("GET", "/projects/p/datasets", "outsider")
    assert hidden.status_code == 404
    row = _one_row(api, hidden, outcome="denied", actor="outsider")
    assert row.project_id == api.project_id("p")
    forbidden = api.call("GET", "/audit", "owner")
    assert forbidden.status_code == 403
    _one_row(api, forbidden, outcome="denied", actor="owner")
    anonymous = api.call("GET", "/projects")
    assert anonymous.status_code == 401
    _one_row(api, anonymous, outcome="unauthenticated", actor="anonymous")


def test_a_request_id_from_the_client_is_kept(api: Api) -> None:
    response = api.call("POST", "/projects", "owner", json={"name": "traced"}, headers={"X-Request-ID": "ci-run-7"})
    assert response.headers["x-request-id"] == "ci-run-7"
    assert _one_row(api, response, outcome="ok", actor="owner").action == "project.create"


def test_admins_filter_export_and_verify(api: Api) -> None:
    api.call("POST", "/projects", "owner", json={"name": "r2"})
    api.call("GET", "/audit", "viewer")
    denied = api.call("GET", "/audit", "admin", params={"outcome": "denied", "actor": "viewer"}).json()
    assert [(r["action"], r["actor"]) for r in denied] == [("audit.read", "viewer")]
    creations = api.call("GET", "/audit", "admin", params={"action": "project."}).json()
    assert {r["resource"] for r in creations} >= {"project:r2", "project:p", "project:q"}
    page = api.call("GET", "/audit", "admin", params={"limit": 2}).json()
    older = api.call("GET", "/audit", "admin", params={"limit": 2, "before_id": page[-1]["id"]}).json()
    assert [r["id"] for r in page + older] == sorted((r["id"] for r in page + older), reverse=True)

    lines = api.call("GET", "/audit/export", "admin").text.splitlines()
    exported = [json.loads(line) for line in lines]
    assert [r["id"] for r in exported] == sorted(r["id"] for r in exported)
    table = list(csv.DictReader(io.StringIO(api.call("GET", "/audit/export", "admin", params={"format": "csv"}).text)))
    assert [int(r["id"]) for r in table] == [r["id"] for r in exported]
    assert api.call("GET", "/audit/export", "member").status_code == 403
    assert api.call("GET", "/audit/verify", "admin").json() == {"intact": True, "first_bad_id": None}


def test_tampering_is_detected_by_the_api_and_the_cli(api: Api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    response = api.call("POST", "/projects", "owner", json={"name": "r3"})
    row = _one_row(api, response, outcome="ok", actor="owner")
    bypass_append_only(api.platform)
    with api.platform.db.session() as session:
        session.execute(update(AuditEntry).where(AuditEntry.id == row.id).values(actor="mallory"))
    assert api.call("GET", "/audit/verify", "admin").json() == {"intact": False, "first_bad_id": row.id}
    code, output = invoke_cli(api.platform, monkeypatch, "audit", "verify")
    assert code == 1
    assert f"row {row.id}" in output
