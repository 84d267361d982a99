"""Error shapes: 422 with field paths, 413 for oversize uploads, 404/405 for unknown routes, 409 for
conflicts, and a 500 that carries a request id and no trace."""

from __future__ import annotations

from deepext.platform import Platform
from tests.serve.conftest import Api
from tests.serve.test_audit_api import ROWS


def test_validation_errors_name_every_field(api: Api) -> None:
    response = api.call("POST", "/projects/p/jobs", "owner", json={"kind": 3, "priority": "high"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert {f["path"] for f in error["fields"]} == {"body.kind", "body.config", "body.priority"}
    assert error["request_id"] == response.headers["x-request-id"]


def test_a_bad_dataset_names_the_upload_and_the_row(api: Api) -> None:
    response = api.call(
        "POST",
        "/projects/p/datasets/qa/versions",
        "owner",
        params={"filename": "qa.jsonl"},
        content=ROWS + "{not json\n",
    )
    assert response.status_code == 422
    message = response.json()["error"]["message"]
    assert message.startswith("qa.jsonl, row 4:"), message
    assert api.call("GET", "/projects/p/datasets", "owner").json() == []


def test_an_oversize_upload_is_refused_with_413(api: Api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(api.platform.settings, "api_max_upload_mb", 1)
    body = ROWS * (2 * 1024 * 1024 // len(ROWS))
    response = api.call(
        "POST", "/projects/p/datasets/big/versions", "owner", params={"filename": "big.jsonl"}, content=body
    )
    assert response.status_code == 413
    chunks = (ROWS.encode() for _ in range(2 * 1024 * 1024 // len(ROWS)))  # streamed, no Content-Length
    response = api.call(
        "POST", "/projects/p/datasets/big/versions", "owner", params={"filename": "big.jsonl"}, content=chunks
    )
    assert response.status_code == 413
    assert api.call("GET", "/projects/p/datasets", "owner").json() == []


def test_unknown_routes_and_methods(api: Api) -> None:
    missing = api.call("GET", "/nothing/here", "owner")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = api.call("PUT", "/projects", "owner")
    assert wrong_method.status_code == 405


def test_a_conflict_is_409(api: Api) -> None:
    assert api.call("POST", "/projects", "owner", json={"name": "p"}).status_code == 409
    response = api.call("DELETE", "/projects/q/members/outsider", "outsider")  # the last owner
    assert response.status_code == 409
    assert "at least one owner" in response.json()["error"]["message"]


def test_an_internal_error_hides_its_details_and_is_audited(api: Api, platform: Platform, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import deepext.serve.routes.projects as routes

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("SELECT secret FROM internals")

    monkeypatch.setattr(routes, "create_project", broken)
    response = api.call("POST", "/projects", "owner", json={"name": "boom"})
    assert response.status_code == 500
    assert "SELECT" not in response.text and "Traceback" not in response.text
    request_id = response.json()["error"]["request_id"]
    assert [row.outcome for row in api.audit_rows(request_id)] == ["error"]
