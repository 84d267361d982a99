"""The orchestrator end to end on a real local Ray (Ray Jobs through its dashboard) and the real
local PostgreSQL: jobs of every kind to a registered model version, the queue under load, cancel,
a killed platform process, and CI's ways of submitting.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from deepext.config import Settings
from deepext.platform import Platform
from deepext.train import get_job, job_events, job_metrics, submit_job, wait_for_job
from deepext.train.ray_jobs import RayJobs
from deepext.train.scheduler import Scheduler
from deepext.train.service import cancel_job
from tests.helpers import invoke_cli, scheduler_running, wait_until

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).with_name("scripts")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def job_settings(tmp_path: Path, postgres_url: str, ray_session: str) -> Settings:
    """Settings a job's entry point can follow: the same PostgreSQL and home, this Ray's Jobs API."""
    return Settings(home=tmp_path / "home", database_url=postgres_url, ray_jobs_url=ray_session)


@pytest.fixture
def job_platform(job_settings: Settings) -> Iterator[Platform]:
    platform = Platform.open(job_settings)
    with platform.db.session() as session:
        from deepext.projects import create_project

        create_project(session, name="lab", actor="test")
        create_project(session, name="other", actor="test")
    try:
        yield platform
    finally:
        platform.close()


@pytest.fixture
def scheduler(job_platform: Platform) -> Iterator[Scheduler]:
    with scheduler_running(job_platform) as running:
        yield running


def test_a_ray_job_ray_does_not_know_has_no_logs_and_is_missing(ray_session: str, tmp_path: Path) -> None:
    """Between the scheduler recording a job's Ray id and Ray accepting it (and after a cluster
    restart) the job page asks for logs Ray cannot give: empty, not an error."""
    jobs = RayJobs(Settings(home=tmp_path / "home", ray_jobs_url=ray_session))
    assert jobs.logs("deepext-job-0-1-unknown") == ""
    assert jobs.status("deepext-job-0-1-unknown").status == "MISSING"


def custom(script: str, **params: Any) -> dict[str, Any]:
    return {"script": str(SCRIPTS / script), "params": params, "cpus": 0.1}


def running_pid(platform: Platform, job_id: int) -> int:
    event = next(e for e in job_events(platform, job_id) if e.to_state == "running")
    match = re.search(r"pid (\d+)", event.reason)
    assert match, event.reason
    return int(match.group(1))


# ---------------------------------------------------------------- to a model version
# (a `grpo` job and an `eval` job run end to end in tests/eval/test_end_to_end.py)
def test_sft_and_custom_jobs_register_model_versions_with_lineage_beside_an_export_job(
    job_platform: Platform, scheduler: Scheduler, tiny_model: Path, tmp_path: Path
) -> None:
    from deepext.models.registry import register_base_model
    from deepext.models.versions import get_model_version, lineage, register_model_version

    register_base_model(job_platform, "tiny", tiny_model, actor="test")
    register_model_version(job_platform, project="lab", name="helper", folder=tiny_model, base_model="tiny", actor="t")
    export = submit_job(
        job_platform, project="lab", kind="export", config={"model": "helper", "quantizations": ["q8_0"]}, actor="alice"
    )
    assert export.config["model"] == "helper@1" and export.resources == {"CPU": 1.0, "GPU": 0.0}

    rows = tmp_path / "pairs.jsonl"
    rows.write_text(
        "".join(json.dumps({"prompt": f"Say {w}.", "completion": w}) + "\n" for w in ["red", "blue", "green"] * 8),
        encoding="utf-8",
    )
    job_platform.datasets.push("lab", "pairs", rows, labels=["train"], actor="test")
    sft = {
        "name": "tiny-sft",
        "model": {"path": str(tiny_model)},
        "data": {"dataset": "lab/pairs@train"},
        "training": {"max_steps": 3, "batch_size": 4, "logging_steps": 1, "learning_rate": 1e-3},
        "resources": {"num_workers": 1, "cpus_per_worker": 0.5},
    }
    mine = {**custom("../../../examples/custom_training/train.py", steps=3, batch_size=2), "model": str(tiny_model)}
    mine["dataset"] = "lab/pairs@1"
    submitted = time.monotonic()
    jobs = {
        "sft": submit_job(job_platform, project="lab", kind="sft", config=sft, actor="alice"),
        "custom": submit_job(job_platform, project="other", kind="custom", config=mine, name="mine", actor="bob"),
    }
    first_metric: dict[str, float] = {}
    wait_until(lambda: _first_metrics(job_platform, jobs, first_metric, submitted), 300, "a metric from every job")
    for kind, job in jobs.items():
        done = wait_for_job(job_platform, job.id, timeout=300)
        assert done.state == "succeeded", (kind, done.error)
        project = job.project
        version = get_model_version(job_platform, project, job.name)
        assert version.job_id == job.id and version.version == 1
        assert version.dataset_version is not None and version.config_hash
        chain = lineage(job_platform, project, version.ref)
        assert chain[0].ref == version.ref and chain[-1].name == version.base_model  # type: ignore[union-attr]
        assert job_metrics(job_platform, job.id), kind
        assert done.output_key is None or job_platform.artifacts.exists(done.output_key)
    print("\nsubmit -> first metric (s): " + ", ".join(f"{k} {v:.1f}" for k, v in first_metric.items()))
    exported = wait_for_job(job_platform, export.id, timeout=300)
    assert exported.state == "succeeded", exported.error
    folder = Path(exported.metrics["folder"])
    assert (folder / "helper-v1-q8_0.gguf").stat().st_size / 2**20 == pytest.approx(
        exported.metrics["q8_0_mib"], abs=0.01
    )
    assert (folder / "Modelfile").read_text().startswith("FROM ./helper-v1-q8_0.gguf")
    progress = [m for m in job_metrics(job_platform, export.id) if "tensors_done" in m]
    assert 1 <= len(progress) <= 5 and progress[-1]["tensors_done"] == progress[-1]["tensors"]


def _first_metrics(platform: Platform, jobs: dict[str, Any], seen: dict[str, float], since: float) -> bool:
    for kind, job in jobs.items():
        if kind not in seen and job_metrics(platform, job.id):
            seen[kind] = time.monotonic() - since
        state = get_job(platform, job.id)
        if state.state == "failed":
            raise AssertionError(f"{kind} job failed: {state.error}")
    return len(seen) == len(jobs)


# ---------------------------------------------------------------- load
def test_twenty_jobs_with_a_limit_of_two_run_once_each_in_priority_order(
    job_platform: Platform, tmp_path: Path
) -> None:
    log = tmp_path / "ran.log"
    jobs = [
        submit_job(
            job_platform,
            project="lab",
            kind="custom",
            config=custom("record_and_sleep.py", log=str(log), seconds=0.5),
            priority=i % 4,
            actor="load",
        )
        for i in range(20)
    ]
    scheduler = Scheduler(job_platform, RayJobs(job_platform.settings), per_project_limit=2)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop, 0.2), daemon=True)
    thread.start()
    try:
        for job in jobs:
            done = wait_for_job(job_platform, job.id, timeout=240)
            assert done.state == "succeeded", done.error
    finally:
        stop.set()
        thread.join()
    ran = [int(line.split()[0]) for line in log.read_text(encoding="utf-8").splitlines()]
    assert sorted(ran) == sorted(j.id for j in jobs)  # every job exactly once
    spans, starts = [], []
    for job in jobs:
        events = job_events(job_platform, job.id)
        assert [e.to_state for e in events] == ["queued", "starting", "running", "succeeded"]
        starts.append((events[1].at, job))
        spans.append((events[1].at, events[-1].at))
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 2, f"{most} jobs of one project ran at once"
    order = [job.id for _, job in sorted(starts, key=lambda pair: pair[0])]
    assert order == [j.id for j in sorted(jobs, key=lambda j: (-j.priority, j.id))]


# ---------------------------------------------------------------- cancel and failures
def test_cancel_ends_the_entry_point_and_its_ray_workers_within_ten_seconds(
    job_platform: Platform, scheduler: Scheduler, tmp_path: Path
) -> None:
    pids_file = tmp_path / "pids"
    job = submit_job(
        job_platform, project="lab", kind="custom", config=custom("holds_an_actor.py", pids=str(pids_file)), actor="t"
    )
    wait_until(pids_file.exists, 120, "the job's actor")
    pids = [int(p) for p in pids_file.read_text(encoding="utf-8").split()]
    assert all(psutil.pid_exists(p) for p in pids)
    cancelled_at = time.monotonic()
    assert cancel_job(job_platform, job.id, actor="t").state == "cancelled"
    wait_until(lambda: not any(_alive(p) for p in pids), 10, "the entry point and actor processes to end")
    print(f"\ncancel -> processes gone in {time.monotonic() - cancelled_at:.1f} s")
    time.sleep(1.0)  # the scheduler's next passes must not resurrect or re-mark it
    assert get_job(job_platform, job.id).state == "cancelled"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_script_that_raises_fails_the_job_naming_the_line_and_registers_nothing(
    job_platform: Platform, scheduler: Scheduler, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deepext.models.versions import list_model_versions

    config = {**custom("raises.py"), "model": str(tiny_model)}
    job = submit_job(job_platform, project="lab", kind="custom", config=config, name="broken", actor="t")
    done = wait_for_job(job_platform, job.id, timeout=120)
    assert done.state == "failed"
    assert (
        done.error
        == "custom script raises.py raised ValueError at raises.py line 7: the learning rate must be positive"
    )
    assert list_model_versions(job_platform, "lab") == []
    assert "ValueError" in RayJobs(job_platform.settings).logs(done.ray_job_id or "")
    monkeypatch.setenv("DEEPEXT_RAY_JOBS_URL", job_platform.settings.ray_jobs_url or "")
    for follow in ([], ["--follow"]):  # --follow ends when the job has ended
        code, output = invoke_cli(job_platform, monkeypatch, "jobs", "logs", str(job.id), *follow)
        assert code == 0 and "the learning rate must be positive" in output, output


# ---------------------------------------------------------------- a killed platform
def test_a_killed_platform_process_restarts_and_every_job_ends_in_its_true_state(
    job_platform: Platform, job_settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "ran.log"
    pids = tmp_path / "pids"
    finishes = submit_job(
        job_platform,
        project="lab",
        kind="custom",
        config=custom("record_and_sleep.py", log=str(log), seconds=6),
        actor="t",
    )
    dies = submit_job(
        job_platform, project="lab", kind="custom", config=custom("holds_an_actor.py", pids=str(pids)), actor="t"
    )
    waits = submit_job(
        job_platform, project="lab", kind="custom", config=custom("record_and_sleep.py", log=str(log)), actor="t"
    )
    platform_process = _start_scheduler_process(job_settings, tmp_path / "scheduler-1.log")
    wait_until(lambda: pids.exists() and log.exists(), 120, "both first jobs to run")
    os.kill(platform_process.pid, signal.SIGKILL)  # the platform dies: no clean-up of any kind
    platform_process.wait()
    os.kill(running_pid(job_platform, dies.id), signal.SIGKILL)  # and one job's Ray job dies meanwhile
    assert get_job(job_platform, waits.id).state == "queued"
    wait_until(lambda: get_job(job_platform, finishes.id).finished, 60, "the surviving job to finish by itself")

    restarted = _start_scheduler_process(job_settings, tmp_path / "scheduler-2.log")
    try:
        for job in (finishes, dies, waits):
            wait_for_job(job_platform, job.id, timeout=120)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=30)
    assert get_job(job_platform, finishes.id).state == "succeeded"
    died = get_job(job_platform, dies.id)
    assert died.state == "failed" and died.error and f"Ray job {died.ray_job_id} failed" in died.error
    assert get_job(job_platform, waits.id).state == "succeeded"


def _start_scheduler_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    import ray

    env = {
        **os.environ,
        "DEEPEXT_HOME": str(settings.home),
        "DEEPEXT_DATABASE_URL": settings.database_url,
        "DEEPEXT_RAY_JOBS_URL": settings.ray_jobs_url or "",
        "DEEPEXT_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "DEEPEXT_JOBS_PER_PROJECT": "2",
    }
    command = [sys.executable, "-m", "deepext.cli.main", "jobs", "scheduler", "--interval", "0.2"]
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


# ---------------------------------------------------------------- CI
def test_ci_submits_with_ray_job_submit_and_with_deepext_and_fails_when_the_job_fails(
    job_platform: Platform, job_settings: Settings, scheduler: Scheduler, tmp_path: Path
) -> None:
    url = job_settings.ray_jobs_url or ""
    ray_cli = Path(sys.executable).with_name("ray")
    plain = [str(ray_cli), "job", "submit", "--address", url, "--"]
    ok = subprocess.run([*plain, sys.executable, "-c", "print('trained')"], capture_output=True, text=True)
    assert ok.returncode == 0 and "trained" in ok.stdout
    bad = subprocess.run([*plain, sys.executable, "-c", "raise SystemExit(3)"], capture_output=True, text=True)
    assert bad.returncode != 0

    env = {**os.environ, "DEEPEXT_HOME": str(job_settings.home), "DEEPEXT_DATABASE_URL": job_settings.database_url}
    deepext = [sys.executable, "-m", "deepext.cli.main", "jobs", "submit", "custom", "--project", "lab", "--wait"]
    passing = subprocess.run(
        [*deepext, "--script", str(SCRIPTS / "record_and_sleep.py"), "--config", str(_params(tmp_path))],
        env=env,
        capture_output=True,
        text=True,
    )
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "succeeded" in passing.stdout
    failing = subprocess.run(
        [*deepext, "--script", str(SCRIPTS / "raises.py")], env=env, capture_output=True, text=True
    )
    assert failing.returncode == 1 and "raised ValueError" in failing.stdout


def _params(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps({"cpus": 0.1, "params": {"log": str(tmp_path / "ci.log")}}), encoding="utf-8")
    return path
