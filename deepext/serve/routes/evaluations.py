"""Evaluation suites (versioned), runs (started as eval jobs on Ray) and run comparisons."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from deepext.eval.compare import Comparison, compare_runs
from deepext.eval.results import ExampleResult, RunView, get_run, list_runs, run_examples
from deepext.eval.suite import SuiteView, get_suite, list_suites, push_suite
from deepext.platform import Platform
from deepext.serve.deps import MAX_ID, Access, PlatformDep, RowId, allow
from deepext.train.jobs import JobView
from deepext.train.service import submit_job

router = APIRouter(prefix="/projects/{project}/evaluations", tags=["evaluations"])


class RunRequest(BaseModel):
    suite: str = Field(description="NAME (newest version) or NAME@N")
    target: str = Field(
        description="NAME@N (model_version), a base model name (base_model), PROJECT/NAME (deployment), "
        "PROJECT/PROVIDER/MODEL (provider) or BASE_URL#MODEL (endpoint)"
    )
    target_kind: Literal["model_version", "base_model", "deployment", "provider", "endpoint"] = "model_version"
    endpoint_key_env: str | None = Field(None, max_length=128, description="env variable holding an endpoint's key")
    workers: int = Field(1, ge=1, le=64)
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)


def _run_in(platform: Platform, access: Access, run_id: int) -> RunView:
    run = get_run(platform, run_id)
    access.check_in_project(run.project, f"evaluation run {run_id}")
    return run


@router.get("/suites")
def suites(
    project: str,
    access: Annotated[Access, allow("evaluations", "read")],
    platform: PlatformDep,
    name: Annotated[str | None, Query(max_length=128)] = None,
) -> list[SuiteView]:
    """The newest version of each suite, or every version of `name`."""
    return list_suites(platform, access.project_name, name)


@router.post("/suites", status_code=201)
def push(
    project: str, body: dict[str, Any], access: Annotated[Access, allow("evaluations", "write")], platform: PlatformDep
) -> SuiteView:
    """Store a suite (the YAML of `deepext eval suites push`, as JSON) as its next version; the same
    content again returns the stored version."""
    return push_suite(platform, access.project_name, body, actor=access.actor)


@router.get("/suites/{ref}")
def suite(
    project: str, ref: str, access: Annotated[Access, allow("evaluations", "read")], platform: PlatformDep
) -> SuiteView:
    return get_suite(platform, access.project_name, ref)


@router.get("/runs")
def runs(
    project: str,
    access: Annotated[Access, allow("evaluations", "read")],
    platform: PlatformDep,
    suite: Annotated[str | None, Query(max_length=140)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RunView]:
    return list_runs(platform, access.project_name, suite=suite, limit=limit)


@router.post("/runs", status_code=201)
def start_run(
    project: str, body: RunRequest, access: Annotated[Access, allow("evaluations", "run")], platform: PlatformDep
) -> JobView:
    """Queue an evaluation job; its run appears under /runs when the job starts."""
    config = body.model_dump(exclude_none=True)
    return submit_job(platform, project=access.project_name, kind="eval", config=config, actor=access.actor)


@router.get("/runs/{run_id}")
def run(
    project: str, run_id: RowId, access: Annotated[Access, allow("evaluations", "read")], platform: PlatformDep
) -> RunView:
    return _run_in(platform, access, run_id)


@router.get("/runs/{run_id}/examples")
def examples(
    project: str,
    run_id: RowId,
    access: Annotated[Access, allow("evaluations", "read")],
    platform: PlatformDep,
    failed_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[ExampleResult]:
    """A run's examples in dataset order - the row, the prompt, the output, each check's verdict
    and reason; `failed_only` keeps those an error or critical check failed."""
    _run_in(platform, access, run_id)
    return run_examples(platform, run_id, failed_only=failed_only, limit=limit, offset=offset)


@router.get("/compare")
def compare(
    project: str,
    access: Annotated[Access, allow("evaluations", "read")],
    platform: PlatformDep,
    baseline: Annotated[int, Query(ge=1, le=MAX_ID, description="run id A")],
    candidate: Annotated[int, Query(ge=1, le=MAX_ID, description="run id B")],
) -> Comparison:
    _run_in(platform, access, baseline)
    _run_in(platform, access, candidate)
    return compare_runs(platform, baseline, candidate)
