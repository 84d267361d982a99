"""A project's model deployments: list, deploy a model version, inspect, stop."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from deepext.serve.deployments import (
    DeploymentView,
    create_deployment,
    get_deployment,
    list_deployments,
    stop_deployment,
)
from deepext.serve.deps import Access, PlatformDep, allow

router = APIRouter(prefix="/projects/{project}/deployments", tags=["deployments"])


class DeploymentCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="Clients call the model PROJECT/NAME.")
    model_version: str = Field(min_length=1, max_length=140, description="NAME@N, NAME@STAGE or NAME@TAG")
    min_replicas: int = Field(1, ge=1, le=64)
    max_replicas: int = Field(1, ge=1, le=64)
    cpus_per_replica: float = Field(1.0, gt=0, le=256)
    gpus_per_replica: float = Field(0.0, ge=0, le=16)
    max_model_len: int = Field(2048, ge=16, le=1_048_576)
    lora_slots: int = Field(
        0, ge=0, le=64, description="LoRA adapters its engine holds per replica, for LoRA versions to run on (0: none)"
    )


@router.get("")
def deployments(
    project: str, access: Annotated[Access, allow("deployments", "read")], platform: PlatformDep
) -> list[DeploymentView]:
    return list_deployments(platform, access.project_name)


@router.post("", status_code=202)
def deploy(
    project: str,
    body: DeploymentCreate,
    access: Annotated[Access, allow("deployments", "write")],
    platform: PlatformDep,
) -> DeploymentView:
    """Record the deployment (`deploying`); the platform's controller starts it on Ray Serve and
    moves it to `running`, or to `failed` with the reason."""
    return create_deployment(platform, project=access.project_name, actor=access.actor, **body.model_dump())


@router.get("/{name}")
def deployment(
    project: str, name: str, access: Annotated[Access, allow("deployments", "read")], platform: PlatformDep
) -> DeploymentView:
    return get_deployment(platform, access.project_name, name)


@router.delete("/{name}", status_code=202)
def undeploy(
    project: str, name: str, access: Annotated[Access, allow("deployments", "write")], platform: PlatformDep
) -> DeploymentView:
    """Mark the deployment `stopping`; the controller removes it from Serve (`stopped`)."""
    return stop_deployment(platform, access.project_name, name, actor=access.actor)
