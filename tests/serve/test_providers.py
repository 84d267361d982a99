"""External model providers: registration and its validation and access rules, keys encrypted at
rest and never returned, air-gapped mode, the provider errors the gateway reports, and the usage
report over the gateway's usage events."""

from __future__ import annotations

import datetime as dt
import json
import os

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select, text

from deepext.config import Settings
from deepext.db.models import AuditEntry, UsageEvent
from deepext.errors import BadGateway, GatewayTimeout, InvalidInput, NotFound, RateLimited, Unavailable
from deepext.serve.providers.forward import provider_error
from deepext.serve.providers.registry import ProviderTarget, check_base_url, is_local, resolve_provider_model
from deepext.serve.providers.secrets import KEY_FILE, SecretBox
from deepext.serve.usage import UsageMeter, record_call
from tests.helpers import free_port
from tests.serve.conftest import Api

KEY = "sk-test-5f0c2d9e8b7a6c4d"


def _create(api: Api, caller: str = "maintainer", **body: object) -> httpx.Response:
    return api.call("POST", "/projects/p/providers", caller, json=body)


def test_a_provider_is_registered_shown_changed_and_removed_without_its_key(api: Api) -> None:
    created = _create(api, name="openai", api_key=KEY, models=["gpt-4o-mini", "gpt-4o"])
    assert created.status_code == 201, created.text
    shown = created.json()
    assert shown["kind"] == "openai" and shown["base_url"] == "https://api.openai.com/v1"  # the preset
    assert (shown["has_api_key"], shown["api_key_hint"], shown["local"]) == (True, KEY[-4:], False)
    assert shown["model_prefix"] == "p/openai/" and "api_key" not in shown
    qwen = _create(api, name="dashscope", preset="qwen", api_key="short-key", timeout_s=30)
    assert qwen.json()["base_url"] == "https://dashscope.aliyuncs.com/compatible-mode/v1"
    assert qwen.json()["api_key_hint"] is None  # too short to show any of it
    local = _create(api, name="ollama")
    assert (local.json()["base_url"], local.json()["has_api_key"], local.json()["local"]) == (
        "http://localhost:11434/v1",
        False,
        True,
    )
    own = _create(api, name="gateway", kind="openai", base_url="https://llm.example.com/openai/v1/")
    assert own.json()["base_url"] == "https://llm.example.com/openai/v1"

    listed = api.call("GET", "/projects/p/providers", "viewer")
    assert [p["name"] for p in listed.json()] == ["dashscope", "gateway", "ollama", "openai"]
    models = api.call("GET", "/v1/models", "member").json()["data"]
    assert [m["id"] for m in models] == ["p/openai/gpt-4o-mini", "p/openai/gpt-4o"]  # the allow-lists
    assert api.call("GET", "/v1/models", "outsider").json()["data"] == []

    changed = api.call("PATCH", "/projects/p/providers/openai", "owner", json={"api_key": None, "timeout_s": 5})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["has_api_key"], changed.json()["timeout_s"]) == (False, 5)
    assert api.call("DELETE", "/projects/p/providers/gateway", "maintainer").status_code == 204
    assert api.call("GET", "/projects/p/providers/gateway", "viewer").status_code == 404

    with api.platform.db.session() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action.startswith("provider."))).all()
        assert [r.action for r in rows] == ["provider.create"] * 4 + ["provider.update", "provider.delete"]
        assert rows[4].detail["api_key"] == "removed" and rows[0].detail["has_api_key"] is True
        assert all(KEY not in json.dumps(r.detail) and "short-key" not in json.dumps(r.detail) for r in rows)


def test_who_may_see_and_change_providers(api: Api) -> None:
    assert _create(api, name="openai", api_key=KEY).status_code == 201
    assert _create(api, "member", name="other", preset="openai").status_code == 403
    assert api.call("PATCH", "/projects/p/providers/openai", "viewer", json={"timeout_s": 1}).status_code == 403
    assert api.call("DELETE", "/projects/p/providers/openai", "member").status_code == 403
    assert api.call("GET", "/projects/p/providers/openai", "viewer").status_code == 200
    hidden = api.call("GET", "/projects/p/providers/openai", "outsider")
    assert hidden.status_code == 404 and hidden.json()["error"]["message"] == "project 'p' not found"
    assert KEY not in api.call("GET", "/projects/p/providers", "admin").text


def test_bad_provider_input_is_refused_naming_the_field(api: Api) -> None:
    for base_url, why in [
        ("ftp://files.example.com", "not an http(s) URL"),
        ("https://user:secret@api.example.com/v1", "no credentials"),
        ("https://api.example.com/v1?key=1", "no query"),
        ("not a url", "control characters"),
        ("http://:80/v1", "with a host"),
    ]:
        response = _create(api, name="x", kind="openai", base_url=base_url)
        assert response.status_code == 422, (base_url, response.text)
        error = response.json()["error"]
        assert error["field"] == "body.base_url" and why in error["message"], (base_url, error)
    missing = _create(api, name="custom", kind="openai")
    assert missing.status_code == 422 and "base_url" in missing.json()["error"]["message"]
    assert _create(api, name="x", preset="nope").status_code == 422
    assert _create(api, name="x", preset="openai", kind="bedrock").json()["error"]["field"] == "body.kind"
    bad_name = _create(api, name="Not A Slug", preset="openai")
    assert bad_name.status_code == 422 and bad_name.json()["error"]["field"] == "name"
    assert _create(api, name="x", preset="openai", timeout_s=0).json()["error"]["field"] == "body.timeout_s"
    assert _create(api, name="x", preset="openai", models=["has space"]).json()["error"]["field"] == "body.models"
    surrogate = api.call(
        "POST",
        "/projects/p/providers",
        "maintainer",
        content='{"name": "x", "preset": "openai", "models": ["\\ud800"]}',
        headers={"content-type": "application/json"},
    )
    assert surrogate.status_code == 422 and surrogate.json()["error"]["field"] == "body.models"
    assert _create(api, name="openai").status_code == 201
    assert _create(api, name="openai").status_code == 409
    for unset in ({"base_url": None}, {"timeout_s": None}):
        refused = api.call("PATCH", "/projects/p/providers/openai", "owner", json=unset)
        assert refused.status_code == 422 and refused.json()["error"]["field"] == next(iter(unset)), refused.text
    patch = api.call("PATCH", "/projects/p/providers/openai", "owner", json={"base_url": "gopher://x"})
    assert patch.status_code == 422 and patch.json()["error"]["field"] == "body.base_url"
    for method in ("GET", "PATCH", "DELETE"):
        unknown = api.call(method, "/projects/p/providers/nope", "owner", json={} if method == "PATCH" else None)
        assert unknown.status_code == 404 and "provider 'nope' not found" in unknown.json()["error"]["message"]


def test_the_key_is_stored_encrypted_with_a_key_file_made_once_0600(api: Api) -> None:
    assert _create(api, name="openai", api_key=KEY).status_code == 201
    with api.platform.db.engine.connect() as connection:
        raw = [tuple(row) for row in connection.execute(text("SELECT * FROM providers"))]
        audit_rows = [tuple(row) for row in connection.execute(text("SELECT * FROM audit_log"))]
    assert len(raw) == 1 and KEY not in repr(raw) and KEY[-8:] not in repr(raw)
    assert KEY not in repr(audit_rows)
    key_file = api.platform.settings.home / KEY_FILE
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    with api.platform.db.session() as session:
        stored = session.execute(text("SELECT api_key_encrypted FROM providers")).scalar_one()
    assert SecretBox([key_file.read_bytes().strip()]).decrypt(stored, what="the key") == KEY
    target, model = resolve_provider_model(api.platform, "p/openai/gpt-4o-mini")
    assert (target.api_key, model) == (KEY, "gpt-4o-mini") and KEY not in repr(target)


def test_a_configured_secret_key_encrypts_rotates_and_is_required_to_decrypt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = SecretBox.from_settings(Settings(home=tmp_path, secret_key=SecretStr(old))).encrypt(KEY)
    assert not (tmp_path / KEY_FILE).exists()  # a configured key needs no key file
    rotated = SecretBox.from_settings(Settings(home=tmp_path, secret_key=SecretStr(f"{new},{old}")))
    assert rotated.decrypt(token, what="k") == KEY
    with pytest.raises(Unavailable, match="cannot be decrypted"):
        SecretBox.from_settings(Settings(home=tmp_path, secret_key=SecretStr(new))).decrypt(token, what="k")
    with pytest.raises(Unavailable, match="DEEPEXT_SECRET_KEY is not a Fernet key"):
        SecretBox.from_settings(Settings(home=tmp_path, secret_key=SecretStr("too-short")))
    box = SecretBox.from_settings(Settings(home=tmp_path / "h"))
    assert box.decrypt(box.encrypt(KEY), what="k") == KEY
    assert SecretBox.from_settings(Settings(home=tmp_path / "h")).decrypt(box.encrypt(KEY), what="k") == KEY


def test_air_gapped_mode_refuses_external_providers_and_calls_to_them(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _create(api, name="openai", api_key=KEY, models=["gpt-4o-mini"]).status_code == 201
    assert _create(api, name="ollama", models=["llama3"]).status_code == 201
    monkeypatch.setattr(api.platform.settings, "air_gapped", True)
    refused = _create(api, name="claude", preset="anthropic", api_key=KEY)
    assert refused.status_code == 403 and "DEEPEXT_AIR_GAPPED=1" in refused.json()["error"]["message"]
    moved = api.call("PATCH", "/projects/p/providers/ollama", "owner", json={"base_url": "http://10.0.0.5:11434/v1"})
    assert moved.status_code == 403
    assert _create(api, name="lmstudio").status_code == 201  # localhost stays on this machine
    assert [m["id"] for m in api.call("GET", "/v1/models", "member").json()["data"]] == ["p/ollama/llama3"]
    call = api.call(
        "POST",
        "/v1/chat/completions",
        "member",
        json={"model": "p/openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert call.status_code == 403, call.text
    assert "DEEPEXT_AIR_GAPPED=1" in call.json()["error"]["message"] and "'openai'" in call.json()["error"]["message"]
    with api.platform.db.session() as session:
        event = session.scalars(select(UsageEvent)).one()
    assert (event.model, event.status, event.actor) == ("p/openai/gpt-4o-mini", "error", "member")
    assert "DEEPEXT_AIR_GAPPED" in (event.error or "")


def test_calls_to_provider_models_check_the_model_the_right_and_the_provider(api: Api) -> None:
    port = free_port()  # nothing listens there
    body = {"name": "down", "kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "models": ["m"]}
    assert _create(api, **body).status_code == 201

    def chat(model: str, caller: str = "member") -> httpx.Response:
        return api.call(
            "POST",
            "/v1/chat/completions",
            caller,
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
        )

    unreachable = chat("p/down/m")
    assert unreachable.status_code == 502 and "provider 'down'" in unreachable.json()["error"]["message"]
    assert chat("p/down/not-allowed").status_code == 404
    assert chat("p/nope/m").status_code == 404
    assert chat("p/down/m", "outsider").status_code == 404
    assert chat("p/down/m", "viewer").status_code == 403  # viewers may not chat
    with api.platform.db.session() as session:
        events = session.scalars(select(UsageEvent)).all()
    assert [(e.target_kind, e.status, e.stream) for e in events] == [("provider", "error", False)]
    assert events[0].provider_id is not None and events[0].latency_ms >= 0


def _target() -> ProviderTarget:
    return ProviderTarget(1, "p", 1, "openai", "openai", "https://api.openai.com/v1", 10, 1, api_key=KEY)


@pytest.mark.parametrize(
    ("status", "body", "error", "said"),
    [
        (401, '{"error": {"message": "Incorrect API key provided"}}', BadGateway, "Incorrect API key provided"),
        (404, '{"error": {"message": "The model `x` does not exist"}}', NotFound, "does not exist"),
        (400, '{"object": "error", "message": "max_tokens too large"}', InvalidInput, "max_tokens too large"),
        (429, '{"error": {"message": "Rate limit reached"}}', RateLimited, "Rate limit reached"),
        (529, '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}', Unavailable, "Over"),
        (504, "upstream timed out", GatewayTimeout, "upstream timed out"),
        (500, "", BadGateway, "(no message)"),
        (307, "", BadGateway, "redirect to https://elsewhere"),
    ],
)
def test_provider_errors_become_the_platforms_naming_the_provider(
    status: int, body: str, error: type[Exception], said: str
) -> None:
    headers = httpx.Headers({"retry-after": "7", "location": "https://elsewhere"})
    mapped = provider_error(_target(), status, body, headers)
    assert isinstance(mapped, error) and f"provider 'openai' answered {status}" in str(mapped) and said in str(mapped)
    if isinstance(mapped, RateLimited):
        assert mapped.retry_after == 7


def test_base_urls_and_what_counts_as_local() -> None:
    assert check_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    with pytest.raises(ValueError, match="bad port"):
        check_base_url("http://localhost:99999/v1")
    assert is_local("http://localhost:11434/v1") and is_local("http://127.0.0.2/v1") and is_local("http://[::1]:1/v1")
    assert not is_local("https://api.openai.com/v1") and not is_local("http://10.0.0.5/v1")
    assert not is_local("http://localhost.example.com/v1")


def test_the_usage_report_groups_by_model_provider_user_and_day(api: Api) -> None:
    assert _create(api, name="openai", models=["gpt-4o-mini"]).status_code == 201
    provider_id = resolve_provider_model(api.platform, "p/openai/gpt-4o-mini")[0].id
    project_id = api.project_id("p")

    def event(actor: str, model: str, prompt: int, completion: int, *, error: str | None = None) -> None:
        meter = UsageMeter(project_id, actor, None, "provider", model, "chat", stream=True, provider_id=provider_id)
        meter.add_usage({"prompt_tokens": prompt, "completion_tokens": completion})
        meter.first_token()
        if error:
            meter.fail(error)
        record_call(api.platform, meter)

    event("member", "p/openai/gpt-4o-mini", 10, 5)
    event("member", "p/openai/gpt-4o-mini", 1, 0, error="provider 'openai' answered 500")
    event("owner", "p/openai/gpt-4o", 7, 3)
    with api.platform.db.session() as session:  # a deployment's call, two days ago
        session.add(
            UsageEvent(
                at=dt.datetime.now(dt.UTC) - dt.timedelta(days=2),
                project_id=project_id,
                actor="member",
                target_kind="deployment",
                model="p/chat",
                endpoint="completions",
                stream=False,
                prompt_tokens=4,
                completion_tokens=4,
                latency_ms=12,
                status="ok",
            )
        )

    def report(caller: str = "viewer", **params: object) -> list[dict]:
        response = api.call("GET", "/projects/p/usage", caller, params=params)
        assert response.status_code == 200, response.text
        return response.json()["rows"]  # type: ignore[no-any-return]

    (total,) = report()
    assert (total["requests"], total["errors"], total["prompt_tokens"], total["total_tokens"]) == (4, 1, 22, 34)
    by_model = {r["model"]: (r["requests"], r["errors"], r["total_tokens"]) for r in report(group_by="model")}
    assert by_model == {"p/chat": (1, 0, 8), "p/openai/gpt-4o": (1, 0, 10), "p/openai/gpt-4o-mini": (2, 1, 16)}
    by_provider = {r["provider"]: r["requests"] for r in report(group_by="provider")}
    assert by_provider == {None: 1, "openai": 3}
    by_user = {r["user"]: r["total_tokens"] for r in report(group_by="user")}
    assert by_user == {"member": 24, "owner": 10}
    today = dt.datetime.now(dt.UTC).date()
    by_day = {r["day"]: r["requests"] for r in report(group_by="day")}
    assert by_day == {str(today - dt.timedelta(days=2)): 1, str(today): 3}
    by_day_and_user = [(r["day"], r["user"], r["requests"]) for r in report(group_by=["day", "user"])]
    assert by_day_and_user == [
        (str(today - dt.timedelta(days=2)), "member", 1),
        (str(today), "member", 2),
        (str(today), "owner", 1),
    ]
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    (recent,) = report(since=since)
    assert recent["requests"] == 3 and recent["avg_ttft_ms"] is not None

    assert api.call("GET", "/projects/p/usage", "outsider").status_code == 404
    bad = api.call("GET", "/projects/p/usage", "viewer", params={"group_by": "color"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "query.group_by.0"
    backwards = api.call("GET", "/projects/p/usage", "viewer", params={"since": "2030-01-01", "until": "2029-01-01"})
    assert backwards.status_code == 422 and backwards.json()["error"]["field"] == "since"
