"""Logging in, sessions, personal tokens and the failed-login rate limit, over HTTP."""

from __future__ import annotations

from sqlalchemy import select

from deepext.auth import ratelimit
from deepext.db.models import ApiToken
from tests.serve.conftest import PASSWORD, Api


def _login(api: Api, username: str, password: str, address: str = "10.1.2.3"):  # type: ignore[no-untyped-def]
    return api.client.post("/api/v1/auth/login", json={"username": username, "password": password})


def test_login_returns_a_session_token_that_logout_ends(api: Api) -> None:
    response = _login(api, "member", PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"]["projects"] == [{"project": "p", "role": "member"}]
    api.tokens["session"] = body["token"]
    assert api.call("GET", "/auth/me", "session").json()["username"] == "member"
    assert api.call("POST", "/auth/logout", "session").status_code == 204
    again = api.call("GET", "/auth/me", "session")
    assert again.status_code == 401
    assert again.json()["error"]["message"] == "token revoked"
    assert again.headers["www-authenticate"] == "Bearer"


def test_wrong_passwords_and_unknown_users_get_the_same_answer(api: Api) -> None:
    wrong = _login(api, "member", "not the password at all")
    unknown = _login(api, "ghost", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"] == "wrong username or password"


def test_failed_logins_are_rate_limited_per_account_then_per_address(api: Api) -> None:
    for _ in range(ratelimit.MAX_PER_ACCOUNT):
        assert _login(api, "member", "wrong password 123").status_code == 401
    blocked = _login(api, "member", PASSWORD)  # even the right password waits now
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    assert _login(api, "viewer", PASSWORD).status_code == 200  # another account is not affected
    rows = api.call("GET", "/audit", "admin", params={"action": "auth.login", "actor": "member"}).json()
    assert [r["outcome"] for r in rows] == ["rate_limited"] + ["unauthenticated"] * ratelimit.MAX_PER_ACCOUNT
    remaining = ratelimit.MAX_PER_ADDRESS - ratelimit.MAX_PER_ACCOUNT
    for i in range(remaining):
        assert _login(api, f"nobody{i}", "wrong password 123").status_code == 401
    assert _login(api, "owner", PASSWORD).status_code == 429  # this address has failed too often


def test_a_deactivated_account_cannot_log_in_or_use_its_tokens(api: Api) -> None:
    assert api.call("PATCH", "/users/member", "admin", json={"active": False}).status_code == 200
    assert _login(api, "member", PASSWORD).status_code == 401
    response = api.call("GET", "/auth/me", "member")
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "account deactivated"


def test_personal_tokens_are_shown_once_stored_hashed_listed_and_revocable(api: Api) -> None:
    created = api.call("POST", "/auth/tokens", "member", json={"name": "ci", "projects": ["p"], "role": "viewer"})
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["token"]
    assert secret.startswith("dxt_") and body["prefix"] == secret[:12]
    with api.platform.db.session() as session:
        stored = session.scalars(select(ApiToken).where(ApiToken.id == body["id"])).one()
        assert secret not in {stored.secret_hash, stored.prefix, stored.name}
    listed = api.call("GET", "/auth/tokens", "member").json()
    assert [(t["name"], t["projects"], t["role"]) for t in listed] == [("ci", ["p"], "viewer"), ("test", None, None)]
    assert "token" not in listed[0]
    api.tokens["ci"] = secret
    assert api.call("GET", "/projects/p/datasets", "ci").status_code == 200
    assert api.call("GET", "/auth/tokens", "member").json()[0]["last_used_at"] is not None
    assert api.call("DELETE", f"/auth/tokens/{body['id']}", "member").status_code == 204
    assert api.call("GET", "/projects/p/datasets", "ci").status_code == 401
    assert api.call("DELETE", f"/auth/tokens/{body['id']}", "viewer").status_code == 404  # not viewer's token


def test_a_token_cannot_reach_beyond_its_owner(api: Api) -> None:
    response = api.call("POST", "/auth/tokens", "member", json={"name": "x", "projects": ["q"]})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "projects"


def test_password_change_needs_the_current_password_and_a_strong_new_one(api: Api) -> None:
    weak = api.call("PUT", "/auth/password", "viewer", json={"current_password": PASSWORD, "new_password": "short"})
    assert weak.status_code == 422 and weak.json()["error"]["field"] == "password"
    wrong = api.call(
        "PUT", "/auth/password", "viewer", json={"current_password": "nope", "new_password": "x" * 3 + "abcdefghijkl"}
    )
    assert wrong.status_code == 401
    new = "a much better passphrase"
    assert (
        api.call(
            "PUT", "/auth/password", "viewer", json={"current_password": PASSWORD, "new_password": new}
        ).status_code
        == 204
    )
    assert _login(api, "viewer", new).status_code == 200
