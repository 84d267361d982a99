"""The job operations the CLI, the REST API and CI call: submit, cancel, retry, wait, logs.

Submitting only queues (after every check that can fail early); the scheduler started by
`deepext up` (or `deepext jobs scheduler`) admits the job to Ray.
"""

from __future__ import annotations

import time
from typing import Any

from deepext.db.models import JobState
from deepext.errors import Conflict
from deepext.platform import Platform
from deepext.train.jobs import ACTIVE, JobView, create_job, get_job, transition
from deepext.train.profiles import config_from_profile
from deepext.train.ray_jobs import RayJobs
from deepext.train.specs import check_job


def submit_job(
    platform: Platform,
    *,
    project: str,
    kind: str,
    config: dict[str, Any],
    name: str = "",
    priority: int = 0,
    max_retries: int = 0,
    profile: str | None = None,
    actor: str,
) -> JobView:
    """Check the job (config fields, dataset version, model, script) and queue it. With a `profile`
    (`NAME` or `NAME@N`), the config's fields are laid over the profile's settings and the job
    records the exact profile version."""
    used = None
    if profile:
        config, used = config_from_profile(platform, project, profile, kind, config)
    checked = check_job(platform, project, kind, config)
    default_name = str(config.get("name") or kind) if kind != "custom" else "custom"
    return create_job(
        platform,
        project=project,
        kind=kind,
        config=checked.config,
        resources=checked.resources,
        name=name or default_name,
        priority=priority,
        max_retries=max_retries,
        profile=used,
        actor=actor,
    )


def cancel_job(platform: Platform, job_id: int, *, actor: str, ray_jobs: RayJobs | None = None) -> JobView:
    """Cancel a queued job, or stop a running one: the state changes first (so the job cannot finish
    as succeeded meanwhile), then Ray stops the entry point and, with it, the job's workers."""
    job = get_job(platform, job_id)
    if job.state not in {JobState.QUEUED, *ACTIVE}:
        raise Conflict(f"job {job_id} is {job.state}; only queued, starting or running jobs can be cancelled")
    view = transition(platform, job_id, JobState.CANCELLED, f"cancelled by {actor}", audited=(actor, "job.cancel"))
    if job.state in ACTIVE and job.ray_job_id:
        (ray_jobs or RayJobs(platform.settings)).stop(job.ray_job_id)
    return view


def wait_for_job(platform: Platform, job_id: int, *, timeout: float | None = None, poll: float = 0.5) -> JobView:
    """Block until the job has finished (succeeded, failed for good, or cancelled)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = get_job(platform, job_id)
        if job.finished and not (job.state == JobState.FAILED and job.attempts <= job.max_retries):
            return job
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
        time.sleep(poll)


def job_logs(platform: Platform, job_id: int, *, ray_jobs: RayJobs | None = None) -> str:
    job = get_job(platform, job_id)
    if job.ray_job_id is None:
        return ""
    return (ray_jobs or RayJobs(platform.settings)).logs(job.ray_job_id)
