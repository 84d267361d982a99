"""Base models (platform-wide) and a project's model versions: list, inspect, lineage, stage, tags."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from deepext.models.registry import BaseModelView, get_base_model, list_base_models
from deepext.models.versions import ModelVersionView, get_model_version, lineage, list_model_versions, set_stage, tag
from deepext.serve.deps import Access, PlatformDep, allow
from deepext.train.jobs import JobView

router = APIRouter(tags=["models"])


class ModelVersionChange(BaseModel):
    stage: str | None = Field(None, description="candidate, staging, production or archived")
    add_tags: list[str] = []
    remove_tags: list[str] = []


class Lineage(BaseModel):
    versions: list[ModelVersionView] = Field(description="The version, then its parents, newest first.")
    base_model: BaseModelView


@router.get("/base-models")
def base_models(access: Annotated[Access, allow("base_models", "read")], platform: PlatformDep) -> list[BaseModelView]:
    return list_base_models(platform)


@router.get("/base-models/{name}")
def base_model(
    name: str, access: Annotated[Access, allow("base_models", "read")], platform: PlatformDep
) -> BaseModelView:
    return get_base_model(platform, name)


@router.get("/projects/{project}/models")
def model_versions(
    project: str,
    access: Annotated[Access, allow("models", "read")],
    platform: PlatformDep,
    name: Annotated[str | None, Query(max_length=128)] = None,
    stage: Annotated[str | None, Query(max_length=16)] = None,
) -> list[ModelVersionView]:
    return list_model_versions(platform, access.project_name, name=name, stage=stage)


@router.get("/projects/{project}/models/{ref}")
def model_version(
    project: str, ref: str, access: Annotated[Access, allow("models", "read")], platform: PlatformDep
) -> ModelVersionView:
    """`ref` is `NAME@N`, `NAME` (newest), `NAME@STAGE` or `NAME@TAG`."""
    return get_model_version(platform, access.project_name, ref)


@router.get("/projects/{project}/models/{ref}/lineage")
def model_lineage(
    project: str, ref: str, access: Annotated[Access, allow("models", "read")], platform: PlatformDep
) -> Lineage:
    chain = lineage(platform, access.project_name, ref)
    versions = [v for v in chain if isinstance(v, ModelVersionView)]
    base = chain[-1]
    if not isinstance(base, BaseModelView):  # pragma: no cover - lineage always ends at the base model
        raise RuntimeError("lineage without a base model")
    return Lineage(versions=versions, base_model=base)


@router.patch("/projects/{project}/models/{ref}")
def change_model_version(
    project: str,
    ref: str,
    body: ModelVersionChange,
    access: Annotated[Access, allow("models", "write")],
    platform: PlatformDep,
) -> ModelVersionView:
    """Move a version to another stage, or add and remove tags (one change per request)."""
    from deepext.errors import InvalidInput

    if body.stage is not None and (body.add_tags or body.remove_tags):
        raise InvalidInput("change the stage or the tags, not both in one request", field="stage")
    if body.stage is not None:
        return set_stage(platform, access.project_name, ref, body.stage, actor=access.actor)
    if not body.add_tags and not body.remove_tags:
        raise InvalidInput("nothing to change: give stage, add_tags or remove_tags", field="stage")
    return tag(platform, access.project_name, ref, body.add_tags, body.remove_tags, actor=access.actor)


class ExportRequest(BaseModel):
    quantizations: list[str] = Field(
        ["f16", "q8_0"], description="GGUF types: f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0, f32."
    )
    ollama: bool = Field(False, description="Push to the platform's Ollama server and register it as a provider model.")
    lmstudio: bool = Field(False, description="Copy into the platform's LM Studio models folder.")


@router.post("/projects/{project}/models/{ref}/export", status_code=201)
def export_model_version(
    project: str,
    ref: str,
    body: ExportRequest,
    access: Annotated[Access, allow("jobs", "create")],
    platform: PlatformDep,
) -> JobView:
    """Queue an `export` job: GGUF files and an Ollama Modelfile of the version, on the cluster."""
    from deepext.train.service import submit_job

    config = {"model": ref, **body.model_dump()}
    return submit_job(platform, project=access.project_name, kind="export", config=config, actor=access.actor)
