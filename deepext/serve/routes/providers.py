"""A project's external model providers (OpenAI-compatible APIs, Claude): list, register, inspect,
change, remove. Keys go in and never come out; every change leaves an audit row without the key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from deepext.serve.deps import Access, PlatformDep, allow
from deepext.serve.providers.registry import (
    ProviderCreate,
    ProviderPublic,
    ProviderUpdate,
    create_provider,
    delete_provider,
    get_provider,
    list_providers,
    update_provider,
)

router = APIRouter(prefix="/projects/{project}/providers", tags=["providers"])


@router.get("")
def providers(
    project: str, access: Annotated[Access, allow("providers", "read")], platform: PlatformDep
) -> list[ProviderPublic]:
    return list_providers(platform, access.project_name)


@router.post("", status_code=201)
def register(
    project: str, body: ProviderCreate, access: Annotated[Access, allow("providers", "write")], platform: PlatformDep
) -> ProviderPublic:
    """Register a provider; clients then call its models as PROJECT/NAME/MODEL through /v1."""
    return create_provider(platform, project=access.project_name, spec=body, actor=access.actor)


@router.get("/{name}")
def provider(
    project: str, name: str, access: Annotated[Access, allow("providers", "read")], platform: PlatformDep
) -> ProviderPublic:
    return get_provider(platform, access.project_name, name)


@router.patch("/{name}")
def change(
    project: str,
    name: str,
    body: ProviderUpdate,
    access: Annotated[Access, allow("providers", "write")],
    platform: PlatformDep,
) -> ProviderPublic:
    """Change what is given; `api_key: null` removes the key."""
    return update_provider(platform, project=access.project_name, name=name, changes=body, actor=access.actor)


@router.delete("/{name}", status_code=204)
def remove(
    project: str, name: str, access: Annotated[Access, allow("providers", "write")], platform: PlatformDep
) -> Response:
    delete_provider(platform, project=access.project_name, name=name, actor=access.actor)
    return Response(status_code=204)
