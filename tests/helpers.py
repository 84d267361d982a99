"""Small helpers several test modules share."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deepext.config import get_settings
from deepext.platform import Platform
from deepext.ports import free_port


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


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


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


def held_on_call(
    prompts: list[str], completions: list[str], rows: list[dict[str, Any]], gate: str, call: int = 3
) -> list[float]:
    """A GRPO reward of 0 that holds its `call`-th call (step `call`'s scoring) until the test says so.

    It touches `gate/held` and waits for `gate/released` (5 minutes at most), so a test can act at a
    known point of a run - after the step before's checkpoint - however slowly it polls. Name it in a
    config as `tests.helpers:held_on_call` with `params: {gate: DIR}`."""
    folder = Path(gate)
    calls = len(list(folder.glob("call-*"))) + 1
    (folder / f"call-{calls}").touch()
    if calls == call:
        (folder / "held").touch()
        deadline = time.monotonic() + 300
        while not (folder / "released").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    return [0.0] * len(completions)


def wait_until_held(gate: Path, running: Any, timeout: float = 300) -> bool:
    """Wait until a run reaches `held_on_call`'s hold; False if `running()` says it ended first."""
    wait_until(lambda: (gate / "held").exists() or not running(), timeout, f"the run to reach its hold in {gate}")
    return (gate / "held").exists()


def registered_checkpoints(output: Path) -> int:
    """Checkpoints Ray Train's controller has registered for the GRPO run writing to `output`: it
    snapshots its state on each. A learner killed before that restarts from the one before."""
    for snapshot in output.glob("ray/*/checkpoint_manager_snapshot.json"):
        try:
            return len(json.loads(snapshot.read_text())["checkpoint_results"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0
