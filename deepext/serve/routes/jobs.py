"""Training and evaluation jobs: submit, list, inspect, logs, metrics, cancel, retry."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from deepext.platform import Platform
from deepext.serve.deps import MAX_ID, Access, PlatformDep, RowId, allow
from deepext.train import jobs as job_store
from deepext.train.compare import Comparison, compare_jobs
from deepext.train.jobs import JobEventView, JobView
from deepext.train.service import cancel_job, job_logs, submit_job
from deepext.train.trials import TrialView, list_trials

router = APIRouter(prefix="/projects/{project}/jobs", tags=["jobs"])


class JobSubmit(BaseModel):
    kind: str = Field(description="grpo, sft, eval, custom or sweep")
    config: dict[str, Any] = Field(description="The job's config, as in the YAML files of `deepext jobs submit`.")
    name: str = Field("", max_length=128)
    priority: int = Field(0, ge=-1000, le=1000)
    max_retries: int = Field(0, ge=0, le=10)
    profile: str | None = Field(
        None, max_length=80, description="A training profile (NAME or NAME@N) whose settings the config is laid over."
    )


class JobDetail(BaseModel):
    job: JobView
    events: list[JobEventView]
    queue_position: int | None


class MetricRow(BaseModel):
    step: int
    at: dt.datetime
    values: dict[str, Any]


def _job_in(platform: Platform, access: Access, job_id: int) -> JobView:
    job = job_store.get_job(platform, job_id)
    access.check_in_project(job.project, f"job {job_id}")
    return job


@router.get("")
def jobs(
    project: str,
    access: Annotated[Access, allow("jobs", "read")],
    platform: PlatformDep,
    state: Annotated[list[str] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[JobView]:
    return job_store.list_jobs(platform, project=access.project_name, states=state, limit=limit)


@router.post("", status_code=201)
def submit(body: JobSubmit, access: Annotated[Access, allow("jobs", "create")], platform: PlatformDep) -> JobView:
    """Check the job (every config field, the dataset version, the model) and queue it."""
    return submit_job(
        platform,
        project=access.project_name,
        kind=body.kind,
        config=body.config,
        name=body.name,
        priority=body.priority,
        max_retries=body.max_retries,
        profile=body.profile,
        actor=access.actor,
    )


@router.get("/compare")
def compare(
    project: str,
    access: Annotated[Access, allow("jobs", "read")],
    platform: PlatformDep,
    ids: Annotated[list[Annotated[int, Field(ge=1, le=MAX_ID)]], Query(description="2 to 5 job ids: ?ids=3&ids=4")],
) -> Comparison:
    """The jobs' configs side by side (fields that differ marked) and each metric's curve per job."""
    return compare_jobs(platform, access.project_name, ids)


@router.get("/{job_id}")
def job(
    project: str, job_id: RowId, access: Annotated[Access, allow("jobs", "read")], platform: PlatformDep
) -> JobDetail:
    view = _job_in(platform, access, job_id)
    return JobDetail(
        job=view,
        events=job_store.job_events(platform, job_id),
        queue_position=job_store.queue_position(platform, job_id),
    )


@router.get("/{job_id}/logs", response_class=PlainTextResponse)
def logs(project: str, job_id: RowId, access: Annotated[Access, allow("jobs", "read")], platform: PlatformDep) -> str:
    _job_in(platform, access, job_id)
    return job_logs(platform, job_id)


@router.get("/{job_id}/metrics")
def metrics(
    project: str,
    job_id: RowId,
    access: Annotated[Access, allow("jobs", "read")],
    platform: PlatformDep,
    after_step: Annotated[int, Query(ge=-1, le=MAX_ID)] = -1,
) -> list[MetricRow]:
    """Metric rows in step order; poll with `after_step` for the new ones."""
    _job_in(platform, access, job_id)
    rows = job_store.job_metrics(platform, job_id, after_step=after_step)
    return [MetricRow(step=r.pop("step"), at=r.pop("at"), values=r) for r in rows]


@router.get("/{job_id}/trials")
def trials(
    project: str, job_id: RowId, access: Annotated[Access, allow("jobs", "read")], platform: PlatformDep
) -> list[TrialView]:
    """A sweep job's trials (values tried, state, latest metrics) in start order; none for other jobs."""
    _job_in(platform, access, job_id)
    return list_trials(platform, job_id)


@router.post("/{job_id}/cancel")
def cancel(
    project: str, job_id: RowId, access: Annotated[Access, allow("jobs", "cancel")], platform: PlatformDep
) -> JobView:
    _job_in(platform, access, job_id)
    return cancel_job(platform, job_id, actor=access.actor)


@router.post("/{job_id}/retry")
def retry(
    project: str, job_id: RowId, access: Annotated[Access, allow("jobs", "create")], platform: PlatformDep
) -> JobView:
    _job_in(platform, access, job_id)
    return job_store.retry(platform, job_id, actor=access.actor)
