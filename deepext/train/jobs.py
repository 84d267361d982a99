"""Training jobs in the metadata store: what was asked for, and every state it went through.

A job is a row in `jobs` plus one `job_events` row per state transition (time, from, to, reason)
and `job_metrics` rows reported while it runs. The states form a small machine:

    queued -> starting -> running -> succeeded | failed | cancelled
    queued -> cancelled | failed          failed | cancelled -> queued (retry)
    starting -> queued (Ray was not ready to take it; the attempt does not count)

Transitions happen in one place (`transition`), under a row lock on PostgreSQL, so the scheduler,
a job's own entry point and a user's cancel never both move a job. Ray runs the job (see
`deepext.train.scheduler`); this module only records it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from deepext import audit
from deepext.db.models import Job, JobEvent, JobMetric, JobState, Project, SweepTrial
from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.metrics import record_job_transition
from deepext.platform import Platform
from deepext.projects import get_project

KINDS = ("sft", "grpo", "eval", "custom", "sweep", "export")
ACTIVE = frozenset({JobState.STARTING, JobState.RUNNING})
FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ALLOWED: dict[str, frozenset[str]] = {
    JobState.QUEUED: frozenset({JobState.STARTING, JobState.CANCELLED, JobState.FAILED}),
    JobState.STARTING: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}
    ),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
}


@dataclass(frozen=True)
class JobView:
    id: int
    project: str
    kind: str
    name: str
    state: str
    config: dict[str, Any]
    resources: dict[str, float]
    priority: int
    owner: str | None
    ray_job_id: str | None
    attempts: int
    max_retries: int
    error: str | None
    metrics: dict[str, Any]
    output_key: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    profile: str | None = None  # NAME@N of the training profile the job started from

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


@dataclass(frozen=True)
class JobEventView:
    at: dt.datetime
    from_state: str | None
    to_state: str
    reason: str


def _utc(at: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; every time the platform shows is UTC."""
    if at is None:
        return None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def _view(job: Job, project: str) -> JobView:
    return JobView(
        id=job.id,
        project=project,
        kind=job.kind,
        name=job.name,
        state=job.state,
        config=dict(job.config),
        resources=dict(job.resources),
        priority=job.priority,
        owner=job.submitted_by or None,
        ray_job_id=job.ray_job_id,
        attempts=job.attempts,
        max_retries=job.max_retries,
        error=job.error,
        metrics=dict(job.metrics),
        output_key=job.output_key,
        created_at=_utc(job.created_at) or job.created_at,
        started_at=_utc(job.started_at),
        finished_at=_utc(job.finished_at),
        profile=job.profile,
    )


def _load(session: Session, job_id: int, *, lock: bool = False) -> tuple[Job, str]:
    query = select(Job).where(Job.id == job_id)
    if lock:
        query = query.with_for_update()
    job = session.scalar(query)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    project = session.get(Project, job.project_id)
    return job, project.name if project else "?"


# ---------------------------------------------------------------- submit and read
def create_job(
    platform: Platform,
    *,
    project: str,
    kind: str,
    config: dict[str, Any],
    resources: dict[str, float],
    name: str = "",
    priority: int = 0,
    max_retries: int = 0,
    profile: str | None = None,
    actor: str,
) -> JobView:
    """Queue an already validated job (see `deepext.train.submit` for the checks) with its audit entry."""
    if kind not in KINDS:
        raise InvalidInput(f"unknown job kind {kind!r}; one of {', '.join(KINDS)}", field="kind")
    if max_retries < 0:
        raise InvalidInput("max_retries must be >= 0", field="max_retries")
    with platform.db.session() as session:
        owner = get_project(session, project)
        job = Job(
            project_id=owner.id,
            kind=kind,
            name=name or kind,
            state=JobState.QUEUED,
            submitted_by=actor,
            config=config,
            resources=resources,
            priority=priority,
            max_retries=max_retries,
            metrics={},
            profile=profile,
        )
        session.add(job)
        session.flush()
        session.add(JobEvent(job_id=job.id, from_state=None, to_state=JobState.QUEUED, reason=f"submitted by {actor}"))
        audit.record(
            session,
            actor=actor,
            action="job.submit",
            resource=f"job:{job.id}",
            project_id=owner.id,
            detail={"kind": kind, "priority": priority, "resources": resources, "profile": profile},
        )
        session.flush()
        view = _view(job, project)
    record_job_transition(kind, JobState.QUEUED)  # committed: count it (a no-op outside Ray)
    return view


def get_job(platform: Platform, job_id: int) -> JobView:
    with platform.db.session() as session:
        job, project = _load(session, job_id)
        return _view(job, project)


def list_jobs(
    platform: Platform, *, project: str | None = None, states: list[str] | None = None, limit: int = 200
) -> list[JobView]:
    with platform.db.session() as session:
        query = select(Job, Project.name).join(Project, Project.id == Job.project_id)
        if project is not None:
            query = query.where(Project.name == project)
        if states:
            query = query.where(Job.state.in_(states))
        rows = session.execute(query.order_by(Job.id.desc()).limit(limit)).all()
        return [_view(job, name) for job, name in rows]


def job_events(platform: Platform, job_id: int) -> list[JobEventView]:
    with platform.db.session() as session:
        _load(session, job_id)
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        return [JobEventView(_utc(e.at) or e.at, e.from_state, e.to_state, e.reason) for e in events]


def job_metrics(platform: Platform, job_id: int, *, after_step: int = -1) -> list[dict[str, Any]]:
    """Metric rows in step order, each `{"step", "at", **values}`."""
    with platform.db.session() as session:
        rows = session.scalars(
            select(JobMetric).where(JobMetric.job_id == job_id, JobMetric.step > after_step).order_by(JobMetric.id)
        )
        return [{"step": m.step, "at": _utc(m.at), **m.values} for m in rows]


# ---------------------------------------------------------------- change
def transition(
    platform: Platform,
    job_id: int,
    to_state: str,
    reason: str,
    *,
    expect: frozenset[str] | None = None,
    update: Callable[[Job], None] | None = None,
    audited: tuple[str, str] | None = None,
) -> JobView:
    """Move a job to `to_state` and record the event, or raise Conflict if that move is not allowed
    (or the job is not in one of `expect`): whoever loses a race sees the winner's state.
    `audited=(actor, action)` writes the audit row of a user's action in the same transaction."""
    with platform.db.session() as session:
        job, project = _load(session, job_id, lock=True)
        if expect is not None and job.state not in expect:
            raise Conflict(f"job {job_id} is {job.state}, not {' or '.join(sorted(expect))}")
        if to_state not in ALLOWED[job.state]:
            raise Conflict(f"job {job_id} is {job.state}; it cannot become {to_state}")
        now = dt.datetime.now(dt.UTC)
        session.add(JobEvent(job_id=job.id, at=now, from_state=job.state, to_state=to_state, reason=reason))
        job.state = to_state
        if to_state == JobState.RUNNING:
            job.started_at = now
        if to_state in FINISHED:
            job.finished_at = now
            if job.kind == "sweep":  # trials still running end with their sweep (their Ray job ends too)
                session.execute(
                    sql_update(SweepTrial)
                    .where(SweepTrial.job_id == job.id, SweepTrial.state == "running")
                    .values(state="stopped", error=f"the sweep was {to_state}: {reason}"[:2000])
                )
        if to_state == JobState.QUEUED:
            job.error, job.finished_at, job.started_at = None, None, None
        if update is not None:
            update(job)
        if audited is not None:
            actor, action = audited
            audit.record(session, actor=actor, action=action, resource=f"job:{job.id}", project_id=job.project_id)
        session.flush()
        view = _view(job, project)
    record_job_transition(view.kind, to_state)  # committed: count it (a no-op outside Ray)
    return view


def fail(platform: Platform, job_id: int, error: str) -> JobView:
    """Mark a job failed with `error`; requeue it if it has retries left."""

    def _set_error(job: Job) -> None:
        job.error = error

    view = transition(platform, job_id, JobState.FAILED, error[:2000], update=_set_error)
    if view.attempts <= view.max_retries:
        view = transition(
            platform, job_id, JobState.QUEUED, f"retry {view.attempts} of {view.max_retries} after: {error[:200]}"
        )
    return view


def retry(platform: Platform, job_id: int, *, actor: str) -> JobView:
    """Queue a failed or cancelled job again (a user's explicit retry; it gets one more attempt)."""

    def _one_more(job: Job) -> None:
        job.max_retries = max(job.max_retries, job.attempts)

    view = transition(
        platform,
        job_id,
        JobState.QUEUED,
        f"retried by {actor}",
        expect=frozenset({JobState.FAILED, JobState.CANCELLED}),
        update=_one_more,
        audited=(actor, "job.retry"),
    )
    return view


def report_metrics(platform: Platform, job_id: int, step: int, values: dict[str, Any]) -> None:
    """Store one step's metrics and fold them into the job's latest values."""
    plain = {k: v for k, v in values.items() if isinstance(v, int | float | str | bool) or v is None}
    with platform.db.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        session.add(JobMetric(job_id=job_id, step=step, values=plain))
        job.metrics = {**job.metrics, **plain, "step": step}


def queue_position(platform: Platform, job_id: int) -> int | None:
    """1-based place in the queue (priority, then age), or None when the job is not queued."""
    with platform.db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.state != JobState.QUEUED:
            return None
        ahead = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.state == JobState.QUEUED,
                (Job.priority > job.priority) | ((Job.priority == job.priority) & (Job.id < job.id)),
            )
        )
        return int(ahead or 0) + 1


def output_folder(platform: Platform, job_id: int) -> Path:
    """Where a job writes while it runs (on the cluster's shared file system: the platform home)."""
    return platform.settings.home / "jobs" / str(job_id)
