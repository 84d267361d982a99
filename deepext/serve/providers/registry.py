"""A project's external model providers: what they are, stored with their API key encrypted.

A provider is an OpenAI-compatible base URL (kind `openai`: OpenAI, Qwen through DashScope's
compatible mode, SiliconFlow, Ollama, LM Studio, vLLM, ...) or Anthropic's Messages API (kind
`anthropic`). Clients call its models through the gateway as `PROJECT/PROVIDER/MODEL`; an optional
allow-list limits which models, and is what `/v1/models` lists.

Presets fill in the kind and base URL by name (`{"name": "qwen", "api_key": "..."}`). Keys are never
returned: a provider shows `has_api_key` and the key's last four characters when it is long enough
for them not to give it away. In air-gapped mode (`DEEPEXT_AIR_GAPPED=1`) only providers on the
loopback interface may be created and called (`is_local`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from deepext import audit
from deepext.config import Settings
from deepext.db.models import Project, Provider, utcnow
from deepext.errors import Conflict, Forbidden, InvalidInput, NotFound
from deepext.platform import Platform
from deepext.projects import check_name, get_project
from deepext.serve.providers.secrets import SecretBox

Kind = Literal["openai", "anthropic"]
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
MAX_MODELS = 500
_HINT_MIN_KEY_LENGTH = 16  # shorter keys show no characters at all
_PUBLIC_NAME = re.compile(r"^(?P<project>[a-z0-9][a-z0-9_-]*)/(?P<provider>[a-z0-9][a-z0-9_-]*)/(?P<model>.+)$")
_CONTROL = re.compile(r"[\x00-\x20\x7f\ud800-\udfff]")  # and lone surrogates, which no database stores


@dataclass(frozen=True)
class Preset:
    kind: Kind
    base_url: str


PRESETS = {
    "openai": Preset("openai", "https://api.openai.com/v1"),
    "anthropic": Preset("anthropic", "https://api.anthropic.com/v1"),
    "qwen": Preset("openai", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
    "siliconflow": Preset("openai", "https://api.siliconflow.cn/v1"),
    "ollama": Preset("openai", "http://localhost:11434/v1"),
    "lmstudio": Preset("openai", "http://localhost:1234/v1"),
}


def check_base_url(url: str) -> str:
    """An http(s) URL with a host and nothing after the path (the gateway appends
    `/chat/completions`, `/completions` or `/messages`); the trailing slash is dropped. Credentials
    in the URL are refused: they would be stored in plain text - use `api_key`."""
    if len(url) > 512 or _CONTROL.search(url):
        raise ValueError("an http(s) URL of at most 512 characters, without spaces or control characters")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError as exc:
        raise ValueError(f"bad port: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL with a host, like https://api.openai.com/v1")
    if parts.username is not None or parts.password is not None:
        raise ValueError("put no credentials in the URL; give the key as api_key (stored encrypted)")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError("the base URL takes no query or fragment")
    return url.rstrip("/")


def is_local(base_url: str) -> bool:
    """Whether calls to `base_url` stay on this machine: its host is `localhost` or a loopback
    address, written literally (no DNS lookup, so a name cannot be pointed elsewhere later)."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_air_gap(settings: Settings, provider: str, base_url: str) -> None:
    """In air-gapped mode, refuse a provider that is not on the loopback interface."""
    if settings.air_gapped and not is_local(base_url):
        raise Forbidden(
            f"DEEPEXT_AIR_GAPPED=1: this platform calls no external provider, and provider {provider!r} "
            f"at {base_url} is outside this machine (only localhost providers are allowed)"
        )


def _check_models(models: list[str] | None) -> list[str] | None:
    if models is None:
        return None
    if len(models) > MAX_MODELS:
        raise ValueError(f"at most {MAX_MODELS} models")
    for model in models:
        if not 1 <= len(model) <= 200 or _CONTROL.search(model):
            raise ValueError(f"{model!r}: a model name of 1-200 characters without spaces or control characters")
    return list(dict.fromkeys(models))


class _CheckedFields(BaseModel):
    """The base URL and model allow-list checks, shared by create and update."""

    @field_validator("base_url", check_fields=False)
    @classmethod
    def _base_url(cls, url: str | None) -> str | None:
        return None if url is None else check_base_url(url)

    @field_validator("models", check_fields=False)
    @classmethod
    def _models(cls, models: list[str] | None) -> list[str] | None:
        return _check_models(models)


class ProviderCreate(_CheckedFields):
    """A provider to register. With a preset's name (`openai`, `anthropic`, `qwen`, `siliconflow`,
    `ollama`, `lmstudio`) as `preset` - or as `name` - `kind` and `base_url` may be left out."""

    name: str = Field(min_length=1, max_length=64, description="Clients call PROJECT/NAME/MODEL.")
    preset: str | None = Field(None, max_length=32, description=f"one of {', '.join(PRESETS)}")
    kind: Kind | None = Field(None, description="openai (any OpenAI-compatible API) or anthropic")
    base_url: str | None = Field(None, max_length=512, description="e.g. https://api.openai.com/v1")
    api_key: SecretStr | None = Field(None, max_length=4096, description="stored encrypted; never returned")
    models: list[str] | None = Field(None, description="allow-list of model names; unset: any model")
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0, le=3600, description="longest wait for the provider's answer")
    connect_timeout_s: float = Field(DEFAULT_CONNECT_TIMEOUT_S, gt=0, le=300)

    @model_validator(mode="after")
    def _fill_from_preset(self) -> ProviderCreate:
        preset_name = self.preset or (self.name if self.name in PRESETS else None)
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"preset {self.preset!r}: one of {', '.join(PRESETS)}")
        preset = PRESETS.get(preset_name or "")
        if preset is not None:
            self.kind = self.kind or preset.kind
            self.base_url = self.base_url or preset.base_url
        if self.base_url is None or self.kind is None:
            raise ValueError(f"give kind and base_url, or a preset ({', '.join(PRESETS)})")
        return self


class ProviderUpdate(_CheckedFields):
    """What PATCH changes; fields left out stay. `api_key: null` removes the key."""

    base_url: str | None = Field(None, max_length=512)
    api_key: SecretStr | None = Field(None, max_length=4096)
    models: list[str] | None = Field(None, description="null: any model")
    timeout_s: float | None = Field(None, gt=0, le=3600)
    connect_timeout_s: float | None = Field(None, gt=0, le=300)


class ProviderPublic(BaseModel):
    """A provider as the API shows it: never its key."""

    name: str
    kind: str
    base_url: str
    model_prefix: str  # what clients put before the model name: PROJECT/NAME/
    models: list[str] | None
    has_api_key: bool
    api_key_hint: str | None  # the key's last 4 characters (keys of 16 characters or more)
    local: bool  # on the loopback interface: callable in air-gapped mode
    timeout_s: float
    connect_timeout_s: float
    created_by: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class ProviderTarget:
    """What the gateway needs to call a provider, the key decrypted (kept out of `repr`)."""

    id: int
    project: str
    project_id: int
    name: str
    kind: str
    base_url: str
    timeout_s: float
    connect_timeout_s: float
    api_key: str | None = field(default=None, repr=False)


def _public(row: Provider, project: str) -> ProviderPublic:
    return ProviderPublic(
        name=row.name,
        kind=row.kind,
        base_url=row.base_url,
        model_prefix=f"{project}/{row.name}/",
        models=row.models,
        has_api_key=row.api_key_encrypted is not None,
        api_key_hint=row.api_key_hint,
        local=is_local(row.base_url),
        timeout_s=row.timeout_s,
        connect_timeout_s=row.connect_timeout_s,
        created_by=row.created_by,
        created_at=row.created_at.isoformat(),
        updated_at=row.updated_at.isoformat(),
    )


def _hint(key: str) -> str | None:
    return key[-4:] if len(key) >= _HINT_MIN_KEY_LENGTH else None


def _row(session: Session, project: Project, name: str) -> Provider:
    row = session.scalar(select(Provider).where(Provider.project_id == project.id, Provider.name == name))
    if row is None:
        raise NotFound(f"provider {name!r} not found in this project")
    return row


def _set_key(platform: Platform, row: Provider, key: SecretStr | None) -> None:
    plaintext = key.get_secret_value() if key is not None else ""
    row.api_key_encrypted = SecretBox.from_settings(platform.settings).encrypt(plaintext) if plaintext else None
    row.api_key_hint = _hint(plaintext) if plaintext else None


def _audit_detail(row: Provider) -> dict[str, Any]:
    """What an audit row says about a provider: everything but the key."""
    return {
        "kind": row.kind,
        "base_url": row.base_url,
        "models": row.models,
        "has_api_key": bool(row.api_key_encrypted),
    }


# ---- what users do
def create_provider(platform: Platform, *, project: str, spec: ProviderCreate, actor: str) -> ProviderPublic:
    check_name(spec.name, "provider")
    if spec.kind is None or spec.base_url is None:  # pragma: no cover - the model's validator fills them
        raise InvalidInput("give kind and base_url, or a preset", field="base_url")
    check_air_gap(platform.settings, spec.name, spec.base_url)
    with platform.db.session() as session:
        owner = get_project(session, project)
        if session.scalar(select(Provider.id).where(Provider.project_id == owner.id, Provider.name == spec.name)):
            raise Conflict(f"provider {spec.name!r} already exists in project {project!r}")
        row = Provider(
            project_id=owner.id,
            name=spec.name,
            kind=spec.kind,
            base_url=spec.base_url,
            models=spec.models,
            timeout_s=spec.timeout_s,
            connect_timeout_s=spec.connect_timeout_s,
            created_by=actor,
        )
        _set_key(platform, row, spec.api_key)
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="provider.create",
            resource=f"provider:{project}/{spec.name}",
            project_id=owner.id,
            detail=_audit_detail(row),
        )
        return _public(row, project)


def list_providers(platform: Platform, project: str) -> list[ProviderPublic]:
    with platform.db.session() as session:
        owner = get_project(session, project)
        rows = session.scalars(select(Provider).where(Provider.project_id == owner.id).order_by(Provider.name))
        return [_public(row, project) for row in rows]


def get_provider(platform: Platform, project: str, name: str) -> ProviderPublic:
    with platform.db.session() as session:
        return _public(_row(session, get_project(session, project), name), project)


def update_provider(
    platform: Platform, *, project: str, name: str, changes: ProviderUpdate, actor: str
) -> ProviderPublic:
    given = changes.model_fields_set
    with platform.db.session() as session:
        owner = get_project(session, project)
        row = _row(session, owner, name)
        detail: dict[str, Any] = {"changed": sorted(given)}
        if "base_url" in given:
            if changes.base_url is None:
                raise InvalidInput("base_url: a provider needs one", field="base_url")
            check_air_gap(platform.settings, name, changes.base_url)
            row.base_url = changes.base_url
        if "api_key" in given:
            _set_key(platform, row, changes.api_key)
            detail["api_key"] = "replaced" if row.api_key_encrypted else "removed"
        if "models" in given:
            row.models = changes.models
        for timeout in ("timeout_s", "connect_timeout_s"):
            if timeout in given:
                value = getattr(changes, timeout)
                if value is None:
                    raise InvalidInput(f"{timeout}: a number of seconds", field=timeout)
                setattr(row, timeout, value)
        row.updated_at = utcnow()
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="provider.update",
            resource=f"provider:{project}/{name}",
            project_id=owner.id,
            detail={**detail, **_audit_detail(row)},
        )
        return _public(row, project)


def delete_provider(platform: Platform, *, project: str, name: str, actor: str) -> None:
    with platform.db.session() as session:
        owner = get_project(session, project)
        row = _row(session, owner, name)
        detail = _audit_detail(row)
        session.delete(row)
        audit.record(
            session,
            actor=actor,
            action="provider.delete",
            resource=f"provider:{project}/{name}",
            project_id=owner.id,
            detail=detail,
        )


# ---- what administrators do
def rotate_provider_keys(platform: Platform, *, actor: str) -> int:
    """Encrypt every stored provider API key again with the first configured secret key, so the keys
    after it can be dropped from `DEEPEXT_SECRET_KEY`; returns how many were re-encrypted.

    One transaction with one audit row: a key that no configured key can decrypt raises
    `Unavailable` naming its provider and project, and nothing is changed. The rows are locked
    (PostgreSQL) so a concurrent PATCH of a key is not overwritten with the old one."""
    box = SecretBox.from_settings(platform.settings)
    with platform.db.session() as session:
        rows = session.execute(
            select(Provider, Project.name)
            .join(Project, Project.id == Provider.project_id)
            .order_by(Project.name, Provider.name)
            .with_for_update(of=Provider)
        ).all()
        rotated: list[str] = []
        for row, project in rows:
            if row.api_key_encrypted is None:
                continue
            what = f"the API key of provider {row.name!r} in project {project!r}"
            row.api_key_encrypted = box.rotate(row.api_key_encrypted, what=what)
            rotated.append(f"{project}/{row.name}")
        audit.record(
            session,
            actor=actor,
            action="provider.rotate_keys",
            resource="providers",
            detail={"reencrypted": len(rotated), "providers": rotated},
        )
    return len(rotated)


# ---- what the gateway asks
def is_provider_model(public_name: str) -> bool:
    """`PROJECT/PROVIDER/MODEL` (a provider's model) rather than `PROJECT/NAME` (a deployment)."""
    return public_name.count("/") >= 2


def resolve_provider_model(platform: Platform, public_name: str) -> tuple[ProviderTarget, str]:
    """The provider and the provider's own model name clients reach as `PROJECT/PROVIDER/MODEL`
    (project visibility applies; a model outside the allow-list is not found)."""
    match = _PUBLIC_NAME.match(public_name)
    if not match:
        raise NotFound(f"model {public_name!r} not found; provider models are named PROJECT/PROVIDER/MODEL")
    with platform.db.session() as session:
        owner = get_project(session, match["project"])
        row = session.scalar(
            select(Provider).where(Provider.project_id == owner.id, Provider.name == match["provider"])
        )
        if row is None:
            raise NotFound(f"model {public_name!r} not found: no provider {match['provider']!r} in this project")
        model = match["model"]
        if row.models is not None and model not in row.models:
            raise NotFound(
                f"model {public_name!r} not found: provider {row.name!r} allows {', '.join(row.models) or 'no models'}"
            )
        target = _target(platform, owner, row)
    return target, model


def provider_target(platform: Platform, project: str, name: str) -> ProviderTarget:
    """A registered provider with its key decrypted, for a call the platform makes itself."""
    with platform.db.session() as session:
        owner = get_project(session, project)
        return _target(platform, owner, _row(session, owner, name))


def _target(platform: Platform, owner: Project, row: Provider) -> ProviderTarget:
    key = None
    if row.api_key_encrypted is not None:
        box = SecretBox.from_settings(platform.settings)
        key = box.decrypt(row.api_key_encrypted, what=f"provider {row.name!r}'s API key")
    return ProviderTarget(
        id=row.id,
        project=owner.name,
        project_id=owner.id,
        name=row.name,
        kind=row.kind,
        base_url=row.base_url,
        timeout_s=row.timeout_s,
        connect_timeout_s=row.connect_timeout_s,
        api_key=key,
    )


@dataclass(frozen=True)
class ProviderModel:
    id: str  # PROJECT/PROVIDER/MODEL
    project: str
    created_at: dt.datetime


def provider_models(platform: Platform, project_ids: frozenset[int] | None) -> list[ProviderModel]:
    """The allow-listed models of these projects' providers (None: of all), without calling any
    provider; in air-gapped mode only those of local providers."""
    with platform.db.session() as session:
        query = select(Provider, Project.name).join(Project, Project.id == Provider.project_id)
        if project_ids is not None:
            query = query.where(Provider.project_id.in_(project_ids))
        rows = session.execute(query.order_by(Project.name, Provider.name)).all()
    return [
        ProviderModel(f"{project}/{row.name}/{model}", project, row.created_at)
        for row, project in rows
        if not (platform.settings.air_gapped and not is_local(row.base_url))
        for model in row.models or []
    ]
