"""A project at a glance, for the app's landing page: what it holds (datasets, jobs by state, model
versions by stage, deployments, evaluations), the jobs of the last 7 days, what the Ray cluster is
using now and, for admins, the latest audit events in the project.

Counting is done by the database (one grouped query per table); the days are filled in here so a day
without jobs shows as zero rather than missing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from deepext import audit
from deepext.db.models import Dataset, Deployment, EvalRun, Job, ModelVersion
from deepext.platform import Platform
from deepext.projects import get_project

DAYS = 7


@dataclass(frozen=True)
class ClusterUse:
    """The Ray cluster's resources now; `error` says why they could not be read."""

    nodes: int = 0
    total: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Dashboard:
    project: str
    datasets: int
    jobs_by_state: dict[str, int]
    model_versions_by_stage: dict[str, int]
    deployments_by_state: dict[str, int]
    evaluations: int
    jobs_per_day: list[dict[str, Any]]  # one row per day (oldest first): {"day": "YYYY-MM-DD", STATE: n, ...}
    cluster: ClusterUse
    recent_audit: list[dict[str, Any]] | None = None  # None: the caller is not an admin


def per_day(created: list[tuple[dt.datetime, str]], today: dt.date, days: int = DAYS) -> list[dict[str, Any]]:
    """(created_at, state) pairs -> a row per day of the `days` up to `today`, counting jobs by state."""
    first = today - dt.timedelta(days=days - 1)
    rows: dict[dt.date, dict[str, Any]] = {
        first + dt.timedelta(days=i): {"day": (first + dt.timedelta(days=i)).isoformat()} for i in range(days)
    }
    for at, state in created:
        day = (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).date()
        if day in rows:
            rows[day][state] = rows[day].get(state, 0) + 1
    return list(rows.values())


def cluster_use() -> ClusterUse:
    """CPU, GPU and memory the Ray cluster has and uses, from the Ray this process is connected to
    (the API's replicas run inside it)."""
    import ray

    if not ray.is_initialized():
        return ClusterUse(error="this process is not connected to Ray")
    try:
        total, free = ray.cluster_resources(), ray.available_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    except Exception as exc:  # a head that went away answers with many kinds of errors
        return ClusterUse(error=f"Ray did not answer: {exc}")
    shown = [name for name in ("CPU", "GPU", "memory") if name in total]
    return ClusterUse(
        nodes=nodes,
        total={name: float(total[name]) for name in shown},
        used={name: float(total[name] - free.get(name, 0.0)) for name in shown},
    )


def build_dashboard(platform: Platform, project: str, *, admin: bool, now: dt.datetime | None = None) -> Dashboard:
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(days=DAYS)
    with platform.db.session() as session:
        owner = get_project(session, project)

        def grouped(column: Any, model: Any) -> dict[str, int]:
            query = select(column, func.count()).where(model.project_id == owner.id).group_by(column)
            return {str(key): int(count) for key, count in session.execute(query)}

        def counted(model: Any) -> int:
            return int(session.scalar(select(func.count()).select_from(model).where(model.project_id == owner.id)) or 0)

        created = session.execute(
            select(Job.created_at, Job.state).where(Job.project_id == owner.id, Job.created_at >= since)
        ).all()
        recent = None
        if admin:
            entries = audit.list_entries(session, audit.AuditFilter(project_id=owner.id), limit=10)
            recent = [audit.as_dict(entry) for entry in entries]
        return Dashboard(
            project=owner.name,
            datasets=counted(Dataset),
            jobs_by_state=grouped(Job.state, Job),
            model_versions_by_stage=grouped(ModelVersion.stage, ModelVersion),
            deployments_by_state=grouped(Deployment.state, Deployment),
            evaluations=counted(EvalRun),
            jobs_per_day=per_day([(at, state) for at, state in created], now.date()),
            cluster=cluster_use(),
            recent_audit=recent,
        )
