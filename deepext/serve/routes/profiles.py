"""Training parameter profiles: named, versioned presets of GRPO and SFT settings in a project."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from deepext.serve.deps import Access, PlatformDep, allow
from deepext.train.profiles import ProfileView, get_profile, list_profiles, save_profile

router = APIRouter(prefix="/projects/{project}/profiles", tags=["profiles"])


class ProfileSave(BaseModel):
    name: str = Field(description="The profile's name; saving other settings under it makes the next version.")
    kind: str = Field(description="grpo or sft: the job kind the settings are for.")
    settings: dict[str, Any] = Field(description="Any part of that kind's job config, e.g. {sampling: {...}}.")
    description: str = Field("", max_length=2000)


@router.get("")
def profiles(
    project: str,
    access: Annotated[Access, allow("jobs", "read")],
    platform: PlatformDep,
    name: Annotated[str | None, Query(max_length=64)] = None,
) -> list[ProfileView]:
    """The newest version of each profile, or with `name` every version of that one."""
    return list_profiles(platform, access.project_name, name)


@router.post("", status_code=201)
def save(body: ProfileSave, access: Annotated[Access, allow("jobs", "create")], platform: PlatformDep) -> ProfileView:
    """Store the settings as the profile's next version (the same settings return the newest version)."""
    return save_profile(
        platform,
        access.project_name,
        name=body.name,
        kind=body.kind,
        settings=body.settings,
        description=body.description,
        actor=access.actor,
    )


@router.get("/{ref}")
def profile(
    project: str,
    ref: Annotated[str, Path(max_length=80)],
    access: Annotated[Access, allow("jobs", "read")],
    platform: PlatformDep,
) -> ProfileView:
    """`NAME@N`, or `NAME` for the newest version."""
    return get_profile(platform, access.project_name, ref)
