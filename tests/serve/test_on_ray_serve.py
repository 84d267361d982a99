"""The same API hosted by Ray Serve on a local Ray, over real HTTP, on the real PostgreSQL: the
Python client's main flow, the access matrix, and the audit rows it leaves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from deepext.client import ApiError, DeepextClient
from deepext.config import Settings
from deepext.platform import Platform
from deepext.serve.app import create_app
from tests.helpers import free_port
from tests.serve.conftest import PASSWORD, Api, seed_users
from tests.serve.test_access_matrix import add_special_callers, run_matrix
from tests.serve.test_audit_api import ROWS


def listener_name(port: int | None) -> str:
    """The name of the process listening on this machine's TCP `port`."""
    listening = [c.pid for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]
    assert listening and listening[0] is not None, f"nothing of ours listens on port {port}"
    return str(psutil.Process(listening[0]).name())


@pytest.fixture
def served(ray_session: str, postgres_url: str, tmp_path: Path) -> Iterator[tuple[Api, str]]:
    from deepext.serve.ingress import start_api, stop_api

    settings = Settings(home=tmp_path / "home", database_url=postgres_url, api_port=free_port())
    platform = Platform.open(settings)
    tokens = seed_users(platform)
    url = start_api(settings)
    # The in-process app is only used for its route table; every call below goes to Serve over HTTP.
    with TestClient(create_app(platform)) as local:
        try:
            yield Api(platform, local, tokens), url
        finally:
            stop_api()
            platform.close()


@pytest.mark.slow
def test_the_serve_app_answers_the_client_and_the_access_matrix(served: tuple[Api, str], tmp_path: Path) -> None:
    api, url = served
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/health").json()["status"] == "ok"
        # On loopback, HAProxy (not Serve's Python proxy) takes the connections and hands them to the
        # replica's own HTTP server; the client's address still reaches the audit rows below.
        assert listener_name(httpx.URL(url).port) == "haproxy"
        assert http.get("/openapi.json").json()["info"]["title"] == "deepext"

        client = DeepextClient(url)
        assert client.login("maintainer", PASSWORD).user.projects[0].role == "maintainer"
        source = tmp_path / "qa.jsonl"
        source.write_text(ROWS, encoding="utf-8")
        uploaded = client.upload_dataset("p", "qa", source, labels=["golden"])
        assert (uploaded.created, uploaded.version.row_count, uploaded.version.labels) == (True, 3, ["golden"])
        assert client.upload_dataset("p", "qa", source).created is False
        assert [d.name for d in client.datasets("p")] == ["qa"]
        assert client.preview("p", "qa", "golden", rows=1) == [{"prompt": "2+2?", "completion": "4"}]
        with pytest.raises(ApiError) as refused:
            client.set_member("p", "viewer", "owner")
        assert refused.value.status == 403 and refused.value.request_id

        admin = DeepextClient(url, token=api.tokens["admin"])
        pushes = admin.audit(action="dataset.push", actor="maintainer")
        assert [(r.resource, r.outcome, r.client_addr) for r in pushes] == [("dataset:p/qa@1", "ok", "127.0.0.1")]
        assert admin.audit(outcome="denied", actor="maintainer")[0].action == "members.manage"

        assert admin.verify_audit().intact

        add_special_callers(api)
        root = url.removesuffix("/api/v1")
        calls = run_matrix(
            api,
            lambda method, path, **kw: http.request(
                method, f"{root}{path}" if path.startswith("/v1/") else path.removeprefix("/"), **kw
            ),
        )
        assert calls > 400
