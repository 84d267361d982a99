"""`deepext providers rotate-keys`: after a new secret key is put first, every stored provider API key
is encrypted again with it, so the old key can be dropped; a key no configured key opens is named
and nothing changes. Run through the CLI on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select, text
from typer.testing import CliRunner, Result

from deepext import audit
from deepext.cli.main import app
from deepext.config import get_settings
from deepext.db.models import AuditEntry
from deepext.errors import Unavailable
from deepext.platform import Platform
from deepext.projects import create_project
from deepext.serve.providers.registry import ProviderCreate, create_provider, resolve_provider_model
from deepext.serve.providers.secrets import SecretBox

OPENAI_KEY = "sk-test-5f0c2d9e8b7a6c4d"
QWEN_KEY = "sk-qwen-0123456789abcdef"


def _keys() -> tuple[str, str]:
    return Fernet.generate_key().decode(), Fernet.generate_key().decode()


def _add(platform: Platform, monkeypatch: pytest.MonkeyPatch, *, secret: str, project: str, **spec: Any) -> None:
    """Register a provider with its key encrypted under `secret`."""
    monkeypatch.setattr(platform.settings, "secret_key", SecretStr(secret))
    create_provider(platform, project=project, spec=ProviderCreate(**spec), actor="test")


def _stored(platform: Platform) -> list[tuple[Any, ...]]:
    with platform.db.engine.connect() as connection:
        query = "SELECT id, name, api_key_encrypted, api_key_hint, updated_at FROM providers ORDER BY id"
        return [tuple(row) for row in connection.execute(text(query))]


def _rotate_keys(platform: Platform, monkeypatch: pytest.MonkeyPatch, secret: str) -> Result:
    """`deepext providers rotate-keys` on this platform's database with DEEPEXT_SECRET_KEY=secret."""
    monkeypatch.setenv("DEEPEXT_DATABASE_URL", platform.settings.resolved_database_url)
    monkeypatch.setenv("DEEPEXT_HOME", str(platform.settings.home))
    monkeypatch.setenv("DEEPEXT_SECRET_KEY", secret)
    get_settings.cache_clear()
    return CliRunner().invoke(app, ["providers", "rotate-keys"])


def _rotations(platform: Platform) -> list[AuditEntry]:
    with platform.db.session() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action == "provider.rotate_keys")).all()
        session.expunge_all()
        return list(rows)


def test_rotated_keys_open_with_the_new_key_alone(
    platform: Platform, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = _keys()
    with platform.db.session() as session:
        create_project(session, name="other", actor="test")
    _add(platform, monkeypatch, secret=old, project=project, name="openai", api_key=OPENAI_KEY, models=["gpt-4o"])
    _add(platform, monkeypatch, secret=old, project=project, name="ollama")  # no key: nothing to rotate
    _add(platform, monkeypatch, secret=old, project="other", name="qwen", api_key=QWEN_KEY, models=["qwen-max"])
    before = _stored(platform)
    monkeypatch.setattr(platform.settings, "secret_key", SecretStr(new))
    with pytest.raises(Unavailable, match="cannot be decrypted"):  # the new key alone cannot open them yet
        resolve_provider_model(platform, f"{project}/openai/gpt-4o")

    result = _rotate_keys(platform, monkeypatch, f"{new},{old}")
    assert result.exit_code == 0, result.output
    assert "re-encrypted 2 provider API keys" in " ".join(result.output.split())

    after = _stored(platform)
    assert [row[1] for row in after] == ["openai", "ollama", "qwen"]
    assert after[1][2] is None  # the provider without a key still has none
    for (_, name, token_before, hint, updated_at), (_, _, token_after, hint_after, updated_after), key in zip(
        before, after, [OPENAI_KEY, None, QWEN_KEY], strict=True
    ):
        if key is None:
            continue
        assert token_after != token_before, name
        assert SecretBox([new.encode()]).decrypt(token_after, what=name) == key
        with pytest.raises(Unavailable):  # encrypted under the new key, not the old one
            SecretBox([old.encode()]).decrypt(token_after, what=name)
        assert (hint_after, updated_after) == (hint, updated_at)  # nothing else about the provider changed
    # The gateway's own path, with only the new key configured, gets the original keys.
    assert resolve_provider_model(platform, f"{project}/openai/gpt-4o")[0].api_key == OPENAI_KEY
    assert resolve_provider_model(platform, "other/qwen/qwen-max")[0].api_key == QWEN_KEY

    (entry,) = _rotations(platform)
    assert entry.actor.startswith("cli:") and entry.resource == "providers" and entry.project_id is None
    assert entry.detail == {"reencrypted": 2, "providers": [f"{project}/openai", "other/qwen"]}
    assert OPENAI_KEY not in repr(entry.detail) and QWEN_KEY not in repr(entry.detail)
    with platform.db.session() as session:
        assert audit.verify_chain(session) is None


def test_a_key_no_configured_key_opens_is_named_and_nothing_changes(
    platform: Platform, project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = _keys()
    lost = Fernet.generate_key().decode()  # a key nobody configures any more
    _add(platform, monkeypatch, secret=old, project=project, name="anthropic", api_key=OPENAI_KEY)
    _add(platform, monkeypatch, secret=old, project=project, name="openai", api_key=OPENAI_KEY)
    # Rotated last (by name), so the two before it were already re-encrypted in the transaction.
    _add(platform, monkeypatch, secret=lost, project=project, name="stale", preset="qwen", api_key=QWEN_KEY)
    before = _stored(platform)

    result = _rotate_keys(platform, monkeypatch, f"{new},{old}")
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert f"error: the API key of provider 'stale' in project '{project}' cannot be decrypted" in message
    assert "Traceback" not in result.output and "re-encrypted" not in message

    assert _stored(platform) == before  # all or nothing: the two good keys were not rewritten either
    assert _rotations(platform) == []
    old_box = SecretBox([old.encode()])
    assert [old_box.decrypt(row[2], what=row[1]) for row in before[:2]] == [OPENAI_KEY, OPENAI_KEY]
