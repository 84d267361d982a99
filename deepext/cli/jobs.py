"""`deepext jobs ...`: submit, list, show, follow the logs of, cancel and retry training jobs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, Progress, TimeElapsedColumn
from rich.table import Table

from deepext.cli.common import ProjectOption, actor, err, open_platform, out, print_json, reports_errors
from deepext.cli.remote import remote_client

if TYPE_CHECKING:
    from deepext.train.jobs import JobView

jobs_app = typer.Typer(help="Training jobs (SFT, GRPO, custom scripts) on Ray.", no_args_is_help=True)


def load_job_config(path: Path) -> dict[str, Any]:
    from deepext.grpo.config import load_config_file

    return load_config_file(path, dict)  # each kind's own checks run at submit


@jobs_app.command("submit")
@reports_errors
def jobs_submit(
    kind: str = typer.Argument(..., help="sft, grpo, custom, eval, sweep or export."),
    config: Path = typer.Option(None, "--config", "-c", help="The job's config (YAML)."),
    script: Path = typer.Option(None, "--script", help="custom: the training script (.py) or its folder."),
    project: str = ProjectOption,
    name: str = typer.Option("", "--name", "-n", help="Name of the model version the job registers."),
    priority: int = typer.Option(0, "--priority", help="Higher runs first."),
    retries: int = typer.Option(0, "--retries", help="Automatic retries after a failure."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the end; exit 1 unless it succeeded (for CI)."),
    profile: str = typer.Option(None, "--profile", help="A training profile (NAME or NAME@N) the config is laid over."),
) -> None:
    """Check and queue a job; with --wait, show its progress and fail when it fails."""
    from deepext.train import submit_job

    data = load_job_config(config) if config else {}
    if script is not None:
        data["script"] = str(script)
    client = remote_client()
    if client is not None:  # through the API; a custom script's path is read on the platform's side
        job = client.submit_job(project, kind, data, name=name, priority=priority, max_retries=retries, profile=profile)
        out.print(f"job {job.id} queued ({job.kind}, {job.name}, priority {job.priority}) at {client.base_url}")
        if wait:
            follow_until_done(lambda: client.job(project, job.id).job, job.id)
        return
    platform = open_platform()
    job = submit_job(
        platform,
        project=project,
        kind=kind,
        config=data,
        name=name,
        priority=priority,
        max_retries=retries,
        profile=profile,
        actor=actor(),
    )
    used = f", profile {job.profile}" if job.profile else ""
    out.print(f"job {job.id} queued ({job.kind}, {job.name}, priority {job.priority}{used})")
    if wait:
        from deepext.train import get_job

        follow_until_done(lambda: get_job(platform, job.id), job.id)


def follow_until_done(fetch: Callable[[], JobView], job_id: int) -> None:
    """Poll the job (from the store, or the API in remote mode) with a live status line until it ends."""
    from deepext.train.jobs import FINISHED

    columns = ("[progress.description]{task.description}", BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task(f"job {job_id}", total=None)
        while True:
            job = fetch()
            if job.state in FINISHED and not (job.state == "failed" and job.attempts <= job.max_retries):
                break
            step = job.metrics.get("step")
            progress.update(task, description=f"job {job_id} {job.state}" + (f", step {step}" if step else ""))
            time.sleep(1.0)
    out.print(f"job {job_id} {job.state}" + (f": {job.error}" if job.error else ""))
    if job.state != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("list")
@reports_errors
def jobs_list(
    project: str = typer.Option(None, "--project", "-p", help="Only this project's jobs."),
    state: list[str] = typer.Option([], "--state", "-s", help="Only jobs in these states."),
) -> None:
    """Jobs, newest first."""
    from deepext.train import list_jobs

    table = Table("id", "project", "kind", "name", "state", "priority", "attempts", "step", "created")
    for job in list_jobs(open_platform(), project=project, states=state or None):
        table.add_row(
            str(job.id),
            job.project,
            job.kind,
            job.name,
            job.state,
            str(job.priority),
            str(job.attempts),
            str(job.metrics.get("step", "")),
            f"{job.created_at:%Y-%m-%d %H:%M:%S}",
        )
    out.print(table)


@jobs_app.command("show")
@reports_errors
def jobs_show(job_id: int, project: str = ProjectOption) -> None:
    """A job's fields, events and latest metrics (JSON)."""
    from deepext.train import get_job, job_events
    from deepext.train.jobs import queue_position

    client = remote_client()
    if client is not None:
        detail = client.job(project, job_id)
        data = {**detail.job.__dict__, "queue_position": detail.queue_position}
        print_json({**data, "events": [e.__dict__ for e in detail.events]})
        return
    platform = open_platform()
    job = get_job(platform, job_id)
    data = {**job.__dict__, "queue_position": queue_position(platform, job_id)}
    data["events"] = [e.__dict__ for e in job_events(platform, job_id)]
    print_json(data)


@jobs_app.command("compare")
@reports_errors
def jobs_compare(
    job_ids: list[int] = typer.Argument(..., help="2 to 5 job ids."),
    project: str = ProjectOption,
    show_all: bool = typer.Option(False, "--all", help="Every config field, not only those that differ."),
    plot: Path = typer.Option(None, "--plot", help="Write the reward, loss and KL curves overlaid to this SVG file."),
) -> None:
    """Jobs side by side: the config fields that differ (highlighted), each metric's last value, and
    with --plot their curves on one chart per metric."""
    from deepext.plots import svg_panels
    from deepext.train.compare import compare_jobs, plotted_series

    client = remote_client()
    comparison = client.compare_jobs(project, job_ids) if client else compare_jobs(open_platform(), project, job_ids)
    heads = [f"#{job.id} {job.name}" for job in comparison.jobs]
    table = Table("field", *heads, title="config" + ("" if show_all else " (fields that differ; --all for every one)"))
    for row in comparison.rows if show_all else comparison.differing:
        style = "bold yellow" if row.differs else None
        table.add_row(row.field, *("-" if v is None else str(v) for v in row.values), style=style)
    out.print(table)
    metrics = Table("metric", *heads, title="last value (step)")
    for metric, per_job in comparison.series.items():
        cells = []
        for job in comparison.jobs:
            points = per_job.get(str(job.id))
            cells.append(f"{points[-1][1]:.4g} ({int(points[-1][0])})" if points else "-")
        metrics.add_row(metric, *cells)
    out.print(metrics)
    if plot is not None:
        plot.write_text(svg_panels(plotted_series(comparison)), encoding="utf-8")
        out.print(f"curves written to {plot}")


@jobs_app.command("logs")
@reports_errors
def jobs_logs(
    job_id: int,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job ends."),
) -> None:
    """The job's output (its Ray job's logs)."""
    from deepext.train import get_job
    from deepext.train.ray_jobs import RayJobs

    platform = open_platform()
    job = get_job(platform, job_id)
    while follow and job.ray_job_id is None and job.state == "queued":  # wait for the scheduler
        time.sleep(1.0)
        job = get_job(platform, job_id)
    if job.ray_job_id is None:
        err.print(f"job {job_id} is {job.state} and has no logs")
        return
    ray_jobs = RayJobs(platform.settings)
    if not follow:
        out.print(ray_jobs.logs(job.ray_job_id), end="", markup=False, highlight=False)
        return

    async def _tail() -> None:
        async for lines in ray_jobs.tail(job.ray_job_id or ""):
            out.print(lines, end="", markup=False, highlight=False)

    asyncio.run(_tail())


@jobs_app.command("cancel")
@reports_errors
def jobs_cancel(job_id: int, project: str = ProjectOption) -> None:
    """Cancel a queued job or stop a running one (its processes end within seconds)."""
    from deepext.train import cancel_job

    client = remote_client()
    job = client.cancel_job(project, job_id) if client else cancel_job(open_platform(), job_id, actor=actor())
    out.print(f"job {job.id} {job.state}")


@jobs_app.command("retry")
@reports_errors
def jobs_retry(job_id: int, project: str = ProjectOption) -> None:
    """Queue a failed or cancelled job again (a GRPO job resumes from its last checkpoint)."""
    from deepext.train import retry

    client = remote_client()
    job = client.retry_job(project, job_id) if client else retry(open_platform(), job_id, actor=actor())
    out.print(f"job {job.id} {job.state}")


@jobs_app.command("scheduler")
@reports_errors
def jobs_scheduler(interval: float = typer.Option(1.0, "--interval", help="Seconds between passes.")) -> None:
    """Run only the job scheduler against the configured Ray (what `deepext up` runs in the background)."""
    import signal

    from deepext.cluster import connect_ray
    from deepext.train.ray_jobs import RayJobs
    from deepext.train.scheduler import Scheduler

    platform = open_platform()
    connect_ray(platform.settings, log_to_driver=False)
    scheduler = Scheduler(platform, RayJobs(platform.settings))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    out.print(f"scheduler running against {scheduler.ray_jobs.url} ({scheduler.limit} jobs per project)")
    scheduler.run(stop, interval)
