"""Project isolation: nothing of a project reaches a user outside it - not by URL, not by id, not by
a reference inside a config or suite - and the answer is the same 404 as for a project that does
not exist."""

from __future__ import annotations

import pytest

from tests.serve.conftest import Api, make_token
from tests.serve.test_audit_api import ROWS


@pytest.fixture
def two_projects(api: Api) -> Api:
    for project, owner in [("p", "owner"), ("q", "outsider")]:
        response = api.call(
            "POST",
            f"/projects/{project}/datasets/secret/versions",
            owner,
            params={"filename": "s.jsonl", "labels": ["eval"]},
            content=ROWS,
        )
        assert response.status_code == 201, response.text
    return api


def test_an_outsider_sees_the_same_404_as_for_a_missing_project(two_projects: Api) -> None:
    api = two_projects
    for path in [
        "/projects/p",
        "/projects/p/datasets",
        "/projects/p/datasets/secret/versions/1/preview",
        "/projects/p/jobs",
        "/projects/p/models",
        "/projects/p/evaluations/runs",
    ]:
        hidden = api.call("GET", path, "outsider")
        missing = api.call("GET", path.replace("/projects/p", "/projects/zz"), "outsider")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json()["error"]["message"] == "project 'p' not found"
        assert missing.json()["error"]["message"] == "project 'zz' not found"
    assert [p["name"] for p in api.call("GET", "/projects", "outsider").json()] == ["q"]
    assert [p["name"] for p in api.call("GET", "/projects", "viewer").json()] == ["p"]
    assert {p["name"] for p in api.call("GET", "/projects", "admin").json()} == {"p", "q"}


def test_references_into_another_project_are_not_found(two_projects: Api) -> None:
    api = two_projects
    suite = {
        "name": "steal",
        "dataset": "p/secret@eval",
        "checks": [{"name": "exact", "type": "exact_match", "params": {"reference_field": "completion"}}],
    }
    response = api.call("POST", "/projects/q/evaluations/suites", "outsider", json=suite)
    missing = api.call(
        "POST", "/projects/q/evaluations/suites", "outsider", json={**suite, "dataset": "zz/secret@eval"}
    )
    assert response.status_code == missing.status_code == 422, response.text
    assert response.json()["error"]["message"] == missing.json()["error"]["message"].replace("'zz'", "'p'").replace(
        " zz`", " p`"
    )
    job = {"kind": "sft", "config": {"model": "x", "data": {"dataset": "p/secret@1"}}}
    response = api.call("POST", "/projects/q/jobs", "outsider", json=job)
    assert response.status_code in {404, 422}, response.text
    assert "4+" not in response.text and "2+2" not in response.text
    # the same suite in the project that owns the data works
    suite["dataset"] = "secret@eval"
    assert api.call("POST", "/projects/p/evaluations/suites", "maintainer", json=suite).status_code == 201


def test_ids_of_another_projects_objects_are_not_found_through_your_project(two_projects: Api) -> None:
    api = two_projects
    api.call("PUT", "/projects/q/members/viewer", "outsider", json={"role": "owner"})
    suite = {
        "name": "s",
        "dataset": "secret@eval",
        "checks": [{"name": "exact", "type": "exact_match", "params": {"reference_field": "completion"}}],
    }
    assert api.call("POST", "/projects/p/evaluations/suites", "owner", json=suite).status_code == 201
    from deepext.train.jobs import create_job

    job = create_job(
        api.platform,
        project="p",
        kind="custom",
        config={},
        resources={},
        name="x",
        priority=0,
        max_retries=0,
        actor="owner",
    )
    assert api.call("GET", f"/projects/p/jobs/{job.id}", "viewer").status_code == 200
    response = api.call("GET", f"/projects/q/jobs/{job.id}", "viewer")  # viewer owns q, job is p's
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"job {job.id} not found"
    assert api.call("POST", f"/projects/q/jobs/{job.id}/cancel", "viewer").status_code == 404


def test_a_token_scoped_to_one_project_sees_only_that_project(two_projects: Api) -> None:
    api = two_projects
    api.call("PUT", "/projects/q/members/owner", "outsider", json={"role": "viewer"})
    api.tokens["owner_q"] = make_token(api.platform, "owner", project_ids=[api.project_id("q")])
    assert [p["name"] for p in api.call("GET", "/projects", "owner").json()] == ["p", "q"]
    assert [p["name"] for p in api.call("GET", "/projects", "owner_q").json()] == ["q"]
    assert api.call("GET", "/projects/p/datasets", "owner_q").status_code == 404
    assert api.call("GET", "/projects/q/datasets", "owner_q").status_code == 200
    assert api.call("POST", "/auth/tokens", "owner_q", json={"name": "escalate"}).status_code == 403
