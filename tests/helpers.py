"""Small helpers several test modules share."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deepext.config import get_settings
from deepext.platform import Platform


def invoke_cli(platform: Platform, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """Run `deepext ARGS` in this process against `platform`'s stores; returns (exit code, output)."""
    from deepext.cli.main import app

    monkeypatch.setenv("DEEPEXT_HOME", str(platform.settings.home))
    monkeypatch.setenv("DEEPEXT_DATABASE_URL", platform.settings.database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def uvicorn_in_thread(app: Any) -> Iterator[str]:
    """Serve an ASGI app over real HTTP from a thread of this process; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def scheduler_running(platform: Platform, *, interval: float = 0.2) -> Iterator[Any]:
    """The job scheduler on `platform`'s Ray Jobs API (its settings' `ray_jobs_url`) in a thread, as
    `deepext up` runs it (two running jobs per project); yields the scheduler."""
    from deepext.train.ray_jobs import RayJobs
    from deepext.train.scheduler import Scheduler

    scheduler = Scheduler(platform, RayJobs(platform.settings), per_project_limit=2)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop, interval), daemon=True)
    thread.start()
    try:
        yield scheduler
    finally:
        stop.set()
        thread.join()


def lab_platform(tmp_path: Path, database_url: str, ray_jobs_url: str, *projects: str) -> Platform:
    """A platform whose jobs run on the tests' Ray (its Jobs API at `ray_jobs_url`), with `projects`."""
    from deepext.config import Settings
    from deepext.projects import create_project

    platform = Platform.open(Settings(home=tmp_path / "home", database_url=database_url, ray_jobs_url=ray_jobs_url))
    with platform.db.session() as session:
        for name in projects:
            create_project(session, name=name, actor="test")
    return platform


def ray_holders() -> str:
    """Who holds the local Ray's resources now (free CPUs, live actors, placement groups): the message
    of an assertion that waited for resources, so a leak shows where it came from."""
    import ray
    from ray.util.state import list_actors, list_placement_groups

    actors = [f"{a.class_name} (job {a.job_id})" for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)]
    groups = [f"{g.placement_group_id[:8]} {g.state} (job {g.creator_job_id})"
              for g in list_placement_groups(limit=1000) if g.state != "REMOVED"]  # fmt: skip
    return (f"free {ray.available_resources()} of {ray.cluster_resources()}; "
            f"actors: {', '.join(actors) or 'none'}; placement groups: {', '.join(groups) or 'none'}")  # fmt: skip
