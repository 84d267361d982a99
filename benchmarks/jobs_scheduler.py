"""What the orchestrator adds on top of Ray Jobs: latency to start a job, and scheduler time per job.

In one process run, on a fresh local Ray (with its Jobs API) and an SQLite store in a temp folder:

1. Start latency, alternating `--repeats` times: a trivial job submitted with plain Ray Jobs
   (`JobSubmissionClient.submit_job` -> status RUNNING) vs. a deepext custom job (`submit_job` ->
   the `running` event its entry point records, with a scheduler ticking every 0.1 s), and the
   deepext job's submit -> first metric.
2. Scheduler overhead: 20 queued jobs with the project at its limit of 2 running, the time of one
   full scheduler pass (reconcile + admit), and per queued job.

    .venv/bin/python benchmarks/jobs_scheduler.py [--repeats 3]

Last line: `jobs_scheduler start_s deepext=X ray=Y ratio=Z tick_ms_per_queued_job=W`
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SCRIPT = """
from deepext.train import context
context.current().report(0, ready=1.0)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray
    from ray.job_submission import JobStatus, JobSubmissionClient

    from deepext.config import Settings
    from deepext.platform import Platform
    from deepext.projects import create_project
    from deepext.train import get_job, job_events, job_metrics, submit_job, wait_for_job
    from deepext.train.jobs import transition
    from deepext.train.ray_jobs import RayJobs
    from deepext.train.scheduler import Scheduler

    context = ray.init(num_cpus=2, include_dashboard=True, dashboard_port=0, log_to_driver=False)
    url = f"http://{context.dashboard_url}"
    tmp = Path(tempfile.mkdtemp(prefix="deepext-jobs-bench-"))
    settings = Settings(home=tmp / "home", ray_jobs_url=url)
    platform = Platform.open(settings)
    with platform.db.session() as session:
        create_project(session, name="bench", actor="bench")
    script = tmp / "ready.py"
    script.write_text(SCRIPT, encoding="utf-8")
    client = JobSubmissionClient(url)
    scheduler = Scheduler(platform, RayJobs(settings), per_project_limit=2)
    stop = threading.Event()
    threading.Thread(target=scheduler.run, args=(stop, 0.1), daemon=True).start()

    {"script": str(script), "cpus": 0.1}
    ray_starts, deepext_starts, first_metrics = [], [], []
    for index in range(args.repeats + 1):  # the first round warms both paths up and is left out
        started = time.perf_counter()
        ray_id = _submit_when_ready(client)
        while client.get_job_status(ray_id) == JobStatus.PENDING:
            time.sleep(0.02)
        ray_start = time.perf_counter() - started
        while not client.get_job_status(ray_id).is_terminal():
            time.sleep(0.05)

        started = time.perf_counter()
        job = submit_job(
            platform, project="bench", kind="custom", config={"script": str(script), "cpus": 0.1}, actor="b"
        )
        while not any(e.to_state == "running" for e in job_events(platform, job.id)):
            if get_job(platform, job.id).finished:
                raise SystemExit(f"job {job.id} ended early: {get_job(platform, job.id).error}")
            time.sleep(0.02)
        deepext_start = time.perf_counter() - started
        while not job_metrics(platform, job.id):
            time.sleep(0.02)
        first_metric = time.perf_counter() - started
        assert wait_for_job(platform, job.id, timeout=120).state == "succeeded"
        if index:
            ray_starts.append(ray_start)
            deepext_starts.append(deepext_start)
            first_metrics.append(first_metric)
            print(
                f"round {index}: start ray {ray_start:.2f} s, deepext {deepext_start:.2f} s; "
                f"deepext submit -> first metric {first_metric:.2f} s",
                flush=True,
            )
    stop.set()

    # 20 queued behind 2 running jobs of the same project: every pass reads them all, admits none.
    queued = [
        submit_job(platform, project="bench", kind="custom", config={"script": str(script), "cpus": 0.1}, actor="b")
        for _ in range(22)
    ]
    for job in queued[:2]:
        transition(platform, job.id, "starting", "held for the benchmark")
    ticks = []
    for _ in range(20):
        started = time.perf_counter()
        report = scheduler.admit()
        scheduler.reconcile()
        ticks.append(time.perf_counter() - started)
        assert report == 0
    tick = statistics.median(ticks)
    print(
        f"scheduler pass with 20 queued and 2 running: median {tick * 1e3:.1f} ms "
        f"({tick * 1e3 / 20:.2f} ms per queued job)",
        flush=True,
    )
    ray.shutdown()
    d, r = statistics.median(deepext_starts), statistics.median(ray_starts)
    print(f"median submit -> first metric (deepext custom job): {statistics.median(first_metrics):.2f} s")
    print(
        f"jobs_scheduler start_s deepext={d:.2f} ray={r:.2f} ratio={d / r:.2f} "
        f"tick_ms_per_queued_job={tick * 1e3 / 20:.2f}"
    )


def _submit_when_ready(client: Any) -> str:
    """Submit a trivial job; a fresh cluster's job agent takes a few seconds to come up."""
    for _ in range(100):
        try:
            return str(client.submit_job(entrypoint="python -c \"print('ready')\"", entrypoint_num_cpus=0))
        except RuntimeError as exc:
            if "try again" not in str(exc):
                raise
            time.sleep(0.2)
    raise SystemExit("the Ray Jobs agent did not come up")


if __name__ == "__main__":
    main()
