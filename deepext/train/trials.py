"""The trials of a sweep job as the platform keeps them (`sweep_trials`): written by the sweep's Tune
callback in the job's entry point, read by the API, the CLI and the web app."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from deepext.db.models import SweepTrial


def record_trial(
    platform: Any,
    job_id: int,
    trial_id: str,
    number: int,
    *,
    state: str,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    steps: int | None = None,
    error: str | None = None,
) -> None:
    """Create or update one trial's row."""
    with platform.db.session() as session:
        row = session.scalars(
            select(SweepTrial).where(SweepTrial.job_id == job_id, SweepTrial.trial_id == trial_id)
        ).one_or_none()
        if row is None:
            row = SweepTrial(job_id=job_id, trial_id=trial_id, number=number, state=state, config={}, metrics={})
            session.add(row)
        row.state, row.config = state, config
        if metrics is not None:
            row.metrics = metrics
        if steps is not None:
            row.steps = steps
        if error is not None:
            row.error = error


class TrialView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    trial_id: str
    number: int
    state: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    steps: int
    error: str | None = None


def list_trials(platform: Any, job_id: int) -> list[TrialView]:
    """A sweep job's trials in start order."""
    with platform.db.session() as session:
        rows = session.scalars(select(SweepTrial).where(SweepTrial.job_id == job_id).order_by(SweepTrial.number))
        return [TrialView.model_validate(r, from_attributes=True) for r in rows]
