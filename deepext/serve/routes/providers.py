"""A project's external model providers (OpenAI-compatible APIs, Claude): list, register, inspect,
change, remove. Keys go in and never come out; every change leaves an audit row without the key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from deepext.serve.deps import Access, PlatformDep, allow
from deepext.serve.providers.probe import ProviderProbe, probe_provider
from deepext.serve.providers.registry import (
    ProviderCreate,
    ProviderPublic,
    ProviderUpdate,
    create_provider,
    delete_provider,
    get_provider,
    list_providers,
    provider_target,
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


@router.post("/test")
def test_new(
    project: str, body: ProviderCreate, access: Annotated[Access, allow("providers", "write")], platform: PlatformDep
) -> ProviderProbe:
    """Test a provider before saving it: reachability, whether the key is taken, latency. Stores nothing."""
    assert body.kind is not None and body.base_url is not None  # filled from the preset by validation
    key = body.api_key.get_secret_value() if body.api_key else None
    return probe_provider(platform.settings, kind=body.kind, base_url=body.base_url, api_key=key,
                          timeout_s=min(body.timeout_s, 30))  # fmt: skip


@router.post("/{name}/test")
def test_saved(
    project: str, name: str, access: Annotated[Access, allow("providers", "write")], platform: PlatformDep
) -> ProviderProbe:
    """Test a saved provider with its stored key. Stores nothing."""
    target = provider_target(platform, access.project_name, name)
    return probe_provider(platform.settings, kind=target.kind, base_url=target.base_url, api_key=target.api_key,
                          timeout_s=min(target.timeout_s, 30))  # fmt: skip


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
