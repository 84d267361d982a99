"""A provider's "test connection" before and after saving it: against a local server that wants a
key (a stand-in for OpenAI's and Anthropic's model listings), a closed port and, air-gapped, an
outside address; nothing is stored either way."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import func, select

from deepext.db.models import AuditEntry, Provider
from tests.helpers import free_port
from tests.serve.conftest import Api

KEY = "sk-probe-0123456789abcdef"


class Listing(BaseHTTPRequestHandler):
    """GET /v1/models: 200 with two models for the right key (Bearer or x-api-key), else 401."""

    seen: list[dict[str, str]]

    def log_message(self, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self.seen.append({k.lower(): v for k, v in self.headers.items()})
        given = self.headers.get("authorization", "").removeprefix("Bearer ") or self.headers.get("x-api-key", "")
        ok = self.path == "/v1/models" and given == KEY
        body = json.dumps({"data": [{"id": "m-small"}, {"id": "m-large"}]} if ok else {"error": "bad key"}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def listing() -> Iterator[tuple[str, list[dict[str, str]]]]:
    handler = type("Handler", (Listing,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", handler.seen
    finally:
        server.shutdown()


def _stored(api: Api) -> tuple[int, int]:
    """(provider rows, audit rows)."""
    with api.platform.db.session() as session:
        return (
            int(session.scalar(select(func.count()).select_from(Provider)) or 0),
            int(session.scalar(select(func.count()).select_from(AuditEntry)) or 0),
        )


def test_a_new_provider_is_tested_before_saving_and_nothing_is_stored(
    api: Api, listing: tuple[str, list[dict[str, str]]]
) -> None:
    url, seen = listing
    before = _stored(api)
    ok = api.call("POST", "/projects/p/providers/test", "maintainer",
                  json={"name": "local", "kind": "openai", "base_url": url, "api_key": KEY})  # fmt: skip
    assert ok.status_code == 200, ok.text
    result = ok.json()
    assert (result["reachable"], result["auth"], result["status_code"]) == (True, "ok", 200)
    assert result["models"] == ["m-small", "m-large"] and result["latency_ms"] > 0
    assert seen[-1]["authorization"] == f"Bearer {KEY}"

    body = {"name": "local", "kind": "openai", "base_url": url, "api_key": "sk-wrong"}
    wrong = api.call("POST", "/projects/p/providers/test", "maintainer", json=body).json()
    assert (wrong["reachable"], wrong["auth"], wrong["models"]) == (True, "refused", [])
    assert "refused the key" in wrong["detail"]

    claude = api.call("POST", "/projects/p/providers/test", "maintainer",
                      json={"name": "c", "kind": "anthropic", "base_url": url, "api_key": KEY}).json()  # fmt: skip
    assert claude["auth"] == "ok" and seen[-1]["x-api-key"] == KEY and seen[-1]["anthropic-version"]

    gone = f"http://127.0.0.1:{free_port()}/v1"
    down = api.call("POST", "/projects/p/providers/test", "maintainer",
                    json={"name": "gone", "kind": "openai", "base_url": gone}).json()  # fmt: skip
    assert (down["reachable"], down["auth"], down["status_code"]) == (False, "unknown", None)
    assert down["detail"].startswith(f"GET {gone}/models: ")
    providers, _ = _stored(api)
    assert providers == before[0]  # nothing saved
    with api.platform.db.session() as session:
        recorded = [json.dumps([row.action, row.detail]) for row in session.scalars(select(AuditEntry))]
    assert len(recorded) > before[1] and not any(KEY in row for row in recorded)  # the tests are audited, keyless


def test_a_saved_provider_is_tested_with_its_stored_key(api: Api, listing: tuple[str, list[dict[str, str]]]) -> None:
    url, seen = listing
    created = api.call("POST", "/projects/p/providers", "maintainer",
                       json={"name": "local", "kind": "openai", "base_url": url, "api_key": KEY})  # fmt: skip
    assert created.status_code == 201, created.text
    result = api.call("POST", "/projects/p/providers/local/test", "maintainer").json()
    assert (result["auth"], result["models"]) == ("ok", ["m-small", "m-large"])
    assert seen[-1]["authorization"] == f"Bearer {KEY}"
    assert api.call("POST", "/projects/p/providers/local/test", "member").status_code == 403
    assert api.call("POST", "/projects/p/providers/nope/test", "maintainer").status_code == 404


def test_air_gapped_an_outside_address_is_refused_before_any_call(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.platform.settings, "air_gapped", True)
    refused = api.call("POST", "/projects/p/providers/test", "maintainer", json={"name": "openai", "api_key": KEY})
    assert refused.status_code == 403 and "DEEPEXT_AIR_GAPPED=1" in refused.json()["error"]["message"]


def test_the_cli_tests_a_saved_provider(
    api: Api, listing: tuple[str, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import invoke_cli

    url, _ = listing
    body = {"name": "local", "kind": "openai", "base_url": url, "api_key": KEY}
    assert api.call("POST", "/projects/p/providers", "maintainer", json=body).status_code == 201
    code, output = invoke_cli(api.platform, monkeypatch, "providers", "test", "local", "--project", "p")
    assert code == 0 and "p/local: reachable, key accepted" in output and "m-small, m-large" in output, output
    api.call("PATCH", "/projects/p/providers/local", "maintainer", json={"api_key": "sk-other-key-0000000"})
    code, output = invoke_cli(api.platform, monkeypatch, "providers", "test", "local", "--project", "p")
    assert code == 1 and "key REFUSED" in output, output
