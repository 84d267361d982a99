"""`DirectGate`, the checks in front of a deployment's direct endpoint, over a real SQLite platform
with a stand-in for vLLM's app (the real one runs in tests/serve/test_model_serving.py): refusals
never reach the engine and count no usage; what reaches it has the engine's model id and asks for
usage; what comes back has the public name, and every call is accounted once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from deepext.auth import rbac
from deepext.db.models import UsageEvent
from deepext.platform import Platform
from deepext.serve.direct import MAX_BODY_BYTES, DirectGate, Served
from tests.serve.conftest import seed_users

ENGINE = "deployment-9"


class StandInEngine:
    """An ASGI app answering like vLLM's: a stream of chunks with a usage chunk, or one answer."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = json.loads((await receive())["body"])
        self.bodies.append(body)
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if not body.get("stream"):
            answer = json.dumps({"model": ENGINE, "choices": [{"message": {"content": "hi"}}], "usage": usage})
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": answer.encode()})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for chunk in (
            {"model": ENGINE, "choices": [{"delta": {"content": "h"}}]},
            {"model": ENGINE, "choices": [], "usage": usage},
        ):
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n".encode(),
                    "more_body": True,
                }
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


@pytest.fixture
def gated(platform: Platform) -> Iterator[tuple[TestClient, StandInEngine, dict[str, str], Platform]]:
    tokens = seed_users(platform)
    with platform.db.session() as session:
        from deepext.db.models import Project

        rbac.sync_role_permissions(session)  # as the API does when it starts
        project_id = session.scalars(select(Project.id).where(Project.name == "p")).one()
    engine = StandInEngine(platform)
    gate = DirectGate(engine, platform=platform, served=Served(project_id, "p/chat", ENGINE, model_version_id=None))  # type: ignore[arg-type]
    yield TestClient(gate), engine, tokens, platform
    gate.usage.close()  # writes what is queued while the database is there


def _usage_rows(client: TestClient, platform: Platform) -> list[UsageEvent]:
    client.app.usage.flush()  # type: ignore[attr-defined]
    with platform.db.session() as session:
        return list(session.scalars(select(UsageEvent)))


def test_refusals_never_reach_the_engine(gated: tuple[TestClient, StandInEngine, dict[str, str], Platform]) -> None:
    client, engine, tokens, platform = gated
    ask = {"model": "p/chat", "messages": [{"role": "user", "content": "x"}]}

    def post(token: str | None, body: Any = ask, path: str = "/v1/chat/completions") -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return client.post(path, content=json.dumps(body) if not isinstance(body, bytes) else body, headers=headers)

    assert post(None).status_code == 401
    assert post("dxt_wrong").status_code == 401
    assert post(tokens["outsider"]).status_code == 404  # not in the project: no such model
    assert post(tokens["viewer"]).status_code == 403
    wrong = post(tokens["member"], {**ask, "model": "p/other"})
    assert wrong.status_code == 404 and "serves 'p/chat'" in wrong.json()["error"]["message"]
    rag = post(tokens["member"], {**ask, "rag": {"knowledge_base": "kb"}})
    assert rag.status_code == 422 and rag.json()["error"]["field"] == "body.rag"
    assert post(tokens["member"], b"{not json").json()["error"]["field"] == "body"
    options = post(tokens["member"], {**ask, "stream": True, "stream_options": "usage"})
    assert options.status_code == 422 and options.json()["error"]["field"] == "body.stream_options"
    assert post(tokens["member"], b" " * (MAX_BODY_BYTES + 1)).status_code == 413
    assert post(tokens["member"], path="/tokenize").status_code == 404
    assert client.get("/metrics", headers={"Authorization": f"Bearer {tokens['member']}"}).status_code == 404
    assert engine.bodies == [] and _usage_rows(client, platform) == []


def test_calls_are_renamed_and_accounted(
    gated: tuple[TestClient, StandInEngine, dict[str, str], Platform],
) -> None:
    client, engine, tokens, platform = gated
    member = {"Authorization": f"Bearer {tokens['member']}"}
    body = {"model": "p/chat", "messages": [{"role": "user", "content": "x"}], "stream": True}
    text = client.post("/v1/chat/completions", json=body, headers=member).text
    assert engine.bodies[-1]["model"] == ENGINE and engine.bodies[-1]["stream_options"] == {"include_usage": True}
    assert ENGINE not in text and '"model":"p/chat"' in text
    assert '"usage"' not in text and text.endswith("data: [DONE]\n\n")  # the client did not ask for usage
    with_usage = client.post(
        "/v1/chat/completions", json={**body, "stream_options": {"include_usage": True}}, headers=member
    )
    assert '"usage":{"prompt_tokens":3' in with_usage.text
    whole = client.post("/v1/chat/completions", json={**body, "stream": False}, headers=member)
    assert whole.json()["model"] == "p/chat" and int(whole.headers["content-length"]) == len(whole.content)
    rows = _usage_rows(client, platform)
    assert [(r.model, r.actor, r.stream, r.completion_tokens, r.status) for r in rows] == [
        ("p/chat", "member", True, 2, "ok"), ("p/chat", "member", True, 2, "ok"), ("p/chat", "member", False, 2, "ok")
    ]  # fmt: skip
    assert rows[0].ttft_ms is not None


def test_a_revoked_token_is_refused_within_the_recheck_window(
    gated: tuple[TestClient, StandInEngine, dict[str, str], Platform],
) -> None:
    from deepext.auth.tokens import authenticate, revoke_token
    from deepext.serve.direct import ACCESS_RECHECK_S

    client, _engine, tokens, platform = gated
    member = {"Authorization": f"Bearer {tokens['member']}"}
    body = {"model": "p/chat", "messages": [{"role": "user", "content": "x"}]}
    assert client.post("/v1/chat/completions", json=body, headers=member).status_code == 200
    with platform.db.session() as session:
        principal = authenticate(session, tokens["member"])
        revoke_token(session, principal.user_id, principal.token_id, actor="member")
    assert client.post("/v1/chat/completions", json=body, headers=member).status_code == 200  # still in the window
    client.app.checked_at -= ACCESS_RECHECK_S  # type: ignore[attr-defined]  # the window has passed
    refused = client.post("/v1/chat/completions", json=body, headers=member)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
