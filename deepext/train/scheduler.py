"""The job scheduler: admits queued jobs to Ray and keeps the store in step with what Ray reports.

Each `tick`:

    reconcile -> every starting/running job whose Ray job has ended (or that Ray no longer knows)
                 is marked failed or cancelled with Ray's reason; retries are requeued
    admit     -> queued jobs by priority, then age; a job starts when its project runs fewer than
                 `jobs_per_project` jobs and the cluster's free CPUs/GPUs (asked of Ray, less what
                 admitted jobs have not claimed yet) cover its resources

Ray runs and isolates the jobs; the metadata store is the queue. Because reconcile starts every
tick and reads only Ray and the store, a platform that was killed and restarted loses nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import select

from deepext.db.models import Job, JobState, Project
from deepext.errors import Conflict
from deepext.platform import Platform
from deepext.train.jobs import ACTIVE, fail, transition
from deepext.train.ray_jobs import RayJobs, submission_id

log = logging.getLogger(__name__)
RESOURCE_KEYS = ("CPU", "GPU")


@dataclass(frozen=True)
class Candidate:
    id: int
    project_id: int
    priority: int
    created_at: dt.datetime
    resources: dict[str, float]


def pick_jobs(
    queued: Iterable[Candidate],
    running_per_project: dict[int, int],
    per_project_limit: int,
    free: dict[str, float],
) -> list[int]:
    """Which queued jobs start now: priority first, then age; a job that does not fit is passed over
    (smaller jobs behind it may still start), a project at its limit starts nothing more."""
    free = dict(free)
    running = dict(running_per_project)
    chosen = []
    for job in sorted(queued, key=lambda j: (-j.priority, j.created_at, j.id)):
        if running.get(job.project_id, 0) >= per_project_limit:
            continue
        if any(job.resources.get(key, 0) > free.get(key, 0) + 1e-9 for key in RESOURCE_KEYS):
            continue
        for key in RESOURCE_KEYS:
            free[key] = free.get(key, 0) - job.resources.get(key, 0)
        running[job.project_id] = running.get(job.project_id, 0) + 1
        chosen.append(job.id)
    return chosen


def ray_free_resources() -> tuple[dict[str, float], dict[str, float]]:
    """(total, available) CPUs/GPUs of the cluster this process is connected to, as Ray reports them."""
    import ray

    total, available = ray.cluster_resources(), ray.available_resources()
    return (
        {key: float(total.get(key, 0)) for key in RESOURCE_KEYS},
        {key: float(available.get(key, 0)) for key in RESOURCE_KEYS},
    )


@dataclass
class TickReport:
    reconciled: int = 0
    admitted: int = 0
    seconds: float = 0.0


class Scheduler:
    def __init__(
        self,
        platform: Platform,
        ray_jobs: RayJobs,
        *,
        per_project_limit: int | None = None,
        resources: Callable[[], tuple[dict[str, float], dict[str, float]]] = ray_free_resources,
    ) -> None:
        self.platform = platform
        self.ray_jobs = ray_jobs
        self.limit = per_project_limit or platform.settings.jobs_per_project
        self.resources = resources

    # ---- one pass
    def tick(self) -> TickReport:
        started = time.perf_counter()
        report = TickReport(reconciled=self.reconcile())
        report.admitted = self.admit()
        report.seconds = time.perf_counter() - started
        return report

    def reconcile(self) -> int:
        """Mark active jobs whose Ray job ended without the entry point saying so."""
        changed = 0
        with self.platform.db.session() as session:
            active = session.execute(select(Job.id, Job.ray_job_id).where(Job.state.in_(list(ACTIVE)))).all()
        for job_id, ray_job_id in active:
            if ray_job_id is None:
                continue
            status = self.ray_jobs.status(ray_job_id)
            if not status.finished:
                continue
            reason = {
                "SUCCEEDED": "the entry point exited without reporting a result",
                "STOPPED": f"Ray job {ray_job_id} was stopped outside deepext",
                "FAILED": f"Ray job {ray_job_id} failed: {status.message or 'no reason given'}",
                "MISSING": status.message,
            }[status.status]
            try:
                fail(self.platform, job_id, reason)
                changed += 1
            except Conflict:  # the entry point finished it between our two reads
                pass
        return changed

    def admit(self) -> int:
        """Start the queued jobs that may run now; returns how many were started."""
        with self.platform.db.session() as session:
            rows = session.execute(
                select(Job.id, Job.project_id, Job.priority, Job.created_at, Job.resources, Job.state)
                .join(Project, Project.id == Job.project_id)
                .where(Job.state.in_([JobState.QUEUED, *ACTIVE]))
            ).all()
        queued = [
            Candidate(r.id, r.project_id, r.priority, r.created_at, dict(r.resources))
            for r in rows
            if r.state == JobState.QUEUED
        ]
        if not queued:
            return 0
        running: dict[int, int] = {}
        committed = {key: 0.0 for key in RESOURCE_KEYS}
        for r in rows:
            if r.state in ACTIVE:
                running[r.project_id] = running.get(r.project_id, 0) + 1
                for key in RESOURCE_KEYS:
                    committed[key] += float(r.resources.get(key, 0))
        total, available = self.resources()
        # Ray's free resources, but never more than what the jobs already admitted leave: a job that
        # has not yet started its workers holds nothing in Ray, yet its share is taken.
        free = {key: min(available[key], total[key] - committed[key]) for key in RESOURCE_KEYS}
        started = 0
        for job_id in pick_jobs(queued, running, self.limit, free):
            if self._start(job_id):
                started += 1
        return started

    def _start(self, job_id: int) -> bool:
        """queued -> starting with the Ray job id recorded first, then submit: a platform killed in
        between leaves a job whose Ray job does not exist, which the next reconcile marks failed."""

        def _next_attempt(job: Job) -> None:
            job.attempts += 1
            job.ray_job_id = submission_id(job.id, job.attempts)

        try:
            view = transition(
                self.platform,
                job_id,
                JobState.STARTING,
                "admitted",
                expect=frozenset({JobState.QUEUED}),
                update=_next_attempt,
            )
        except Conflict:  # cancelled since we read the queue
            return False
        try:
            self.ray_jobs.submit(job_id, view.attempts, view.ray_job_id or "", num_gpus=view.resources.get("GPU", 0))
        except Exception as exc:
            if _transient(exc):  # e.g. a fresh cluster whose job agent is not up yet
                transition(self.platform, job_id, JobState.QUEUED, f"Ray not ready, requeued: {exc}", update=_undo)
            else:
                fail(self.platform, job_id, f"Ray Jobs refused the submission: {exc}")
            return False
        return True

    # ---- forever
    def run(self, stop: threading.Event, interval: float = 1.0) -> None:
        """Tick until `stop` is set; a failing tick is logged and retried, never fatal."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            stop.wait(interval)


def _undo(job: Job) -> None:
    job.attempts -= 1
    job.ray_job_id = None


def _transient(exc: Exception) -> bool:
    text = str(exc).lower()
    return "try again" in text or "connection" in text or "timed out" in text
