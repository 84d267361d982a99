"""`deepext sweeps ...`: run a hyperparameter sweep (a `sweep` job, trials on Ray Tune), show its
trials, stop it. The config format is in `deepext/train/sweep.py`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from deepext.cli.common import ProjectOption, actor, open_platform, out, reports_errors
from deepext.cli.jobs import follow_until_done, load_job_config

sweeps_app = typer.Typer(help="Hyperparameter sweeps of SFT and GRPO configs (Ray Tune).", no_args_is_help=True)


@sweeps_app.command("run")
@reports_errors
def sweeps_run(
    config: Path = typer.Argument(..., help="The sweep's config (YAML): kind, base, search_space, metric, ..."),
    project: str = ProjectOption,
    name: str = typer.Option("", "--name", "-n", help="Name of the model version the best trial registers."),
    wait: bool = typer.Option(False, "--wait", help="Wait for the end; exit 1 unless it succeeded."),
) -> None:
    """Check the search space against the base config and queue the sweep."""
    from deepext.train import get_job, submit_job

    platform = open_platform()
    job = submit_job(platform, project=project, kind="sweep", config=load_job_config(config), name=name, actor=actor())
    out.print(f"sweep {job.id} queued ({job.name}): `deepext sweeps show {job.id}` lists its trials")
    if wait:
        follow_until_done(lambda: get_job(platform, job.id), job.id)
        _print_trials(job.id)


@sweeps_app.command("show")
@reports_errors
def sweeps_show(job_id: int) -> None:
    """The sweep's state, its trials (values tried, state, steps, latest metric) and the best one."""
    from deepext.train import get_job

    job = get_job(open_platform(), job_id)
    if job.kind != "sweep":
        raise typer.BadParameter(f"job {job_id} is a {job.kind} job, not a sweep")
    best = job.metrics.get("best_trial")
    out.print(f"sweep {job.id} ({job.name}) {job.state}" + (f", best trial {best}" if best else ""))
    _print_trials(job_id, metric=str(job.config.get("metric", "reward_mean")))


def _print_trials(job_id: int, metric: str = "reward_mean") -> None:
    from deepext.train.trials import list_trials

    trials = list_trials(open_platform(), job_id)
    if not trials:
        out.print("no trial has started yet")
        return
    paths = sorted({path for trial in trials for path in trial.config})
    table = Table("#", "trial", "state", "steps", metric, *paths)
    for trial in trials:
        value = trial.metrics.get(metric)
        table.add_row(
            str(trial.number),
            trial.trial_id,
            trial.state + (f": {trial.error.splitlines()[-1]}" if trial.error else ""),
            str(trial.steps),
            f"{value:.4g}" if isinstance(value, int | float) else "",
            *(f"{trial.config.get(path)!s:.10}" for path in paths),
        )
    out.print(table)


@sweeps_app.command("stop")
@reports_errors
def sweeps_stop(job_id: int) -> None:
    """Stop the sweep: its Ray job ends, and every trial with it."""
    from deepext.train.service import cancel_job

    job = cancel_job(open_platform(), job_id, actor=actor())
    out.print(f"sweep {job.id} is {job.state}")
