"""Training parameter profiles: named, versioned presets of a job kind's settings in a project.

    name: grpo-small-gpu
    kind: grpo
    description: Two learners, LoRA r16, short completions.
    settings: {model: {lora: {rank: 16, alpha: 32}}, sampling: {group_size: 8, max_new_tokens: 256}}

A profile holds any part of a GRPO or SFT config. A job started from one (`profile: NAME` or
`NAME@N`) gets the profile's settings with the job's own fields laid over them, field by field
(`apply_profile`), and records the exact version it used. Saving the same settings again returns
that version; other settings become the next version, so a job's record always names what it ran
with. A field the kind's config does not have is refused at save, with its dotted path.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deepext import audit
from deepext.db.models import Project, TrainingProfile
from deepext.db.versioned import newest_version, version_listing
from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.platform import Platform
from deepext.projects import check_name, get_project

KINDS = ("grpo", "sft")
_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]{0,63})(?:@(?P<version>[0-9]+))?$")
_SAVE_ATTEMPTS = 5  # concurrent saves of one name may take the same number first


@dataclass(frozen=True)
class ProfileView:
    id: int
    project: str
    name: str
    version: int
    kind: str
    description: str
    settings: dict[str, Any]
    created_by: str
    created_at: dt.datetime
    created: bool = False  # True only in the answer to the save that stored this version

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


# ---------------------------------------------------------------- pure logic
def apply_profile(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The profile's settings with `overrides` laid over them: sections merge key by key, any other
    value (a number, a string, a list such as `rewards`) is replaced whole."""
    merged = copy.deepcopy(settings)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = apply_profile(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def check_settings(kind: str, settings: Any) -> dict[str, Any]:
    """`settings` if every field in it exists in the `kind` config and holds a value of its type;
    InvalidInput names the first wrong one (`settings.sampling.group_size`)."""
    if kind not in KINDS:
        raise InvalidInput(f"profile kind {kind!r}: one of {', '.join(KINDS)}", field="kind")
    if not isinstance(settings, dict) or not settings:
        raise InvalidInput("a profile's settings are a non-empty mapping of config fields", field="settings")
    _check_fields(_config_model(kind), settings, "settings.")
    return settings


def _config_model(kind: str) -> type[BaseModel]:
    if kind == "grpo":
        from deepext.grpo.config import GRPOConfig

        return GRPOConfig
    from deepext.train.sft import SFTConfig

    return SFTConfig


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The settings class of a field that is a section (`LoraSettings | None` -> LoraSettings)."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _check_fields(model: type[BaseModel], settings: dict[str, Any], path: str) -> None:
    for key, value in settings.items():
        where = f"{path}{key}"
        field = model.model_fields.get(key)
        if field is None:
            known = ", ".join(model.model_fields)
            raise InvalidInput(f"{where}: no such config field; one of {known}", field=where)
        section = _section_model(field.annotation)
        if section is not None and isinstance(value, dict):
            _check_fields(section, value, f"{where}.")
            continue
        try:
            TypeAdapter(Annotated[(field.annotation, *field.metadata)]).validate_python(value)  # type: ignore[arg-type]
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise InvalidInput(f"{where}: {reason} (got {value!r})", field=where) from exc


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`NAME` (newest version) or `NAME@N` -> (name, version)."""
    match = _REF.match(ref or "")
    if not match:
        raise InvalidInput(f"profile reference {ref!r}: expected NAME or NAME@VERSION", field="profile")
    return match["name"], int(match["version"]) if match["version"] else None


def _content_hash(kind: str, settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps([kind, settings], sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------- store
def _view(row: TrainingProfile, project: str, *, created: bool = False) -> ProfileView:
    at = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.UTC)
    return ProfileView(
        id=row.id,
        project=project,
        name=row.name,
        version=row.version,
        kind=row.kind,
        description=row.description,
        settings=dict(row.settings),
        created_by=row.created_by,
        created_at=at,
        created=created,
    )


def save_profile(
    platform: Platform,
    project: str,
    *,
    name: str,
    kind: str,
    settings: dict[str, Any],
    description: str = "",
    actor: str,
) -> ProfileView:
    """Store the settings as the next version of profile `name`, or return the newest version when
    it holds the same kind and settings."""
    check_name(name, "profile")
    check_settings(kind, settings)
    content_hash = _content_hash(kind, settings)
    for _attempt in range(_SAVE_ATTEMPTS):
        try:
            with platform.db.session() as session:
                owner = get_project(session, project)
                newest = newest_version(session, TrainingProfile, owner.id, name)
                if newest is not None and newest.content_hash == content_hash:
                    return _view(newest, owner.name)
                row = TrainingProfile(
                    project_id=owner.id,
                    name=name,
                    version=(newest.version if newest else 0) + 1,
                    kind=kind,
                    description=description[:2000],
                    settings=settings,
                    content_hash=content_hash,
                    created_by=actor[:64],
                )
                session.add(row)
                session.flush()
                audit.record(
                    session,
                    actor=actor,
                    action="profile.save",
                    resource=f"profile:{project}/{name}@{row.version}",
                    project_id=owner.id,
                    detail={"kind": kind, "hash": content_hash},
                )
                return _view(row, owner.name, created=True)
        except IntegrityError:
            continue  # another save took this number; read the newest version again
    raise Conflict(f"profile {project}/{name}: too many concurrent saves, try again")


def _resolve(session: Session, project: Project, ref: str) -> TrainingProfile:
    name, version = parse_ref(ref)
    query = select(TrainingProfile).where(TrainingProfile.project_id == project.id, TrainingProfile.name == name)
    row = (
        newest_version(session, TrainingProfile, project.id, name)
        if version is None
        else session.scalar(query.where(TrainingProfile.version == version))
    )
    if row is None:
        raise NotFound(f"profile {project.name}/{ref} does not exist")
    return row


def get_profile(platform: Platform, project: str, ref: str) -> ProfileView:
    """The version `ref` names: `NAME@N`, or `NAME` for the newest."""
    with platform.db.session() as session:
        owner = get_project(session, project)
        return _view(_resolve(session, owner, ref), owner.name)


def list_profiles(platform: Platform, project: str, name: str | None = None) -> list[ProfileView]:
    """The newest version of each profile in the project, or every version of `name`."""
    with platform.db.session() as session:
        owner = get_project(session, project)
        rows = session.scalars(version_listing(TrainingProfile, owner.id, name))
        return [_view(row, owner.name) for row in rows]


def config_from_profile(
    platform: Platform, project: str, ref: str, kind: str, overrides: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """The job config a profile and the job's own fields make, and the exact `NAME@N` used."""
    try:
        profile = get_profile(platform, project, ref)
    except NotFound as exc:
        raise InvalidInput(f"profile: {exc}", field="profile") from exc
    if profile.kind != kind:
        raise InvalidInput(f"profile {profile.ref} is for {profile.kind} jobs, not {kind}", field="profile")
    return apply_profile(profile.settings, overrides), profile.ref
