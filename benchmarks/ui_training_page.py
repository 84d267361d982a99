"""Web app page load: the training page of a job with 500 logged steps against one with 10, measured
in headless Chromium (Debian's, driven by Playwright) against the API and the web app served from this
process on the embedded defaults (SQLite).

Each job logs what a GRPO run logs per step: the reward mean and three per-function means, loss, KL,
completion length and a dozen other values. Two figures per job, medians of `--rounds`:

- open: from clicking *Open* on the training page until the job page shows every step (the latest
  line reads `step N-1 (N logged)`) and all four plots are drawn;
- reload: from `page.reload()` until the app is interactive again (the kept session restored, every
  page loaded) and the job is open and drawn as above - a user's time to interactive.

    .venv/bin/python benchmarks/ui_training_page.py [--steps 500] [--rounds 5]

Last line: `ui_training_page ms open_500=.. open_10=.. reload_500=.. reload_10=.. ratio_reload=..`
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepext.ports import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PASSWORD = "benchmark passphrase"
CHROMIUM = "/usr/bin/chromium"


def seed(settings: Any, steps: list[int]) -> dict[int, int]:
    """User `bench` (owner of project `bench`) and one finished GRPO-shaped job per step count."""
    from deepext.auth import rbac
    from deepext.auth.users import create_user
    from deepext.platform import Platform
    from deepext.projects import create_project
    from deepext.train.jobs import JobState, create_job, report_metrics, transition

    platform = Platform.open(settings)
    with platform.db.session() as session:
        user = create_user(session, username="bench", password=PASSWORD, actor="bench")
        project = create_project(session, name="bench", actor="bench")
        rbac.grant_project_role(session, user.id, project.id, "owner")
    jobs = {}
    for count in steps:
        config = {"name": f"run-{count}", "schedule": {"steps": count}}
        job = create_job(platform, project="bench", kind="grpo", config=config, resources={}, name=f"run-{count}",
                         actor="bench")  # fmt: skip
        transition(platform, job.id, JobState.STARTING, "benchmark")
        transition(platform, job.id, JobState.RUNNING, "benchmark")
        for step in range(count):
            values = {
                "reward_mean": 0.5 + 0.4 * math.tanh(step / 100),
                "reward_std": 0.2,
                **{f"reward/{name}_mean": 0.3 + 0.001 * step for name in ("json", "schema", "length")},
                "loss": 0.1 * math.cos(step / 20),
                "kl": 0.001 * step,
                "completion_len_mean": 40 + step % 17,
                "entropy": 1.2,
                "clip_fraction": 0.02,
                "zero_variance_groups": 0.1,
                **{f"time/{phase}_s": 0.5 for phase in ("generate", "score", "learn", "sync")},
                "tokens_per_s": 800.0,
            }
            report_metrics(platform, job.id, step, values)
        transition(platform, job.id, JobState.SUCCEEDED, "benchmark")
        jobs[count] = job.id
    platform.close()
    return jobs


@contextlib.contextmanager
def served(settings: Any) -> Iterator[str]:
    """The API under uvicorn in a thread and the web app; yields the app's URL."""
    import uvicorn

    from apps.gradio.app import build_app, launch
    from deepext.platform import Platform
    from deepext.serve.app import create_app

    platform = Platform.open(settings)
    ports = [free_port(), free_port()]
    server = uvicorn.Server(uvicorn.Config(create_app(platform), port=ports[0], log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    app = build_app(f"http://127.0.0.1:{ports[0]}")
    try:
        yield launch(app, host="127.0.0.1", port=ports[1])
    finally:
        app.close()
        server.should_exit = True
        platform.close()


def pick(page: Any, job_id: int) -> None:
    page.get_by_role("tab", name="Training", exact=True).click()
    page.locator("#job-picker input").click()
    page.get_by_role("option", name=f"#{job_id} ").click()


def wait_drawn(page: Any, steps: int) -> None:
    """Until the job page shows every step and the four plots are drawn."""
    from playwright.sync_api import expect

    expect(page.locator("#job-latest")).to_contain_text(f"step {steps - 1} ({steps} logged)", timeout=120_000)
    for i in range(4):
        page.locator(f"#plot-{i} canvas, #plot-{i} svg").first.wait_for(state="visible", timeout=120_000)


def wait_ready(page: Any) -> None:
    page.locator('#app-ready .ready[data-user="bench"]').wait_for(state="attached", timeout=120_000)


def measure(page: Any, job_id: int, steps: int) -> dict[str, float]:
    started = time.perf_counter()
    page.reload()
    wait_ready(page)
    pick(page, job_id)
    page.locator("#open-job").click()
    wait_drawn(page, steps)
    reload_ms = (time.perf_counter() - started) * 1000
    page.reload()
    wait_ready(page)
    pick(page, job_id)
    started = time.perf_counter()
    page.locator("#open-job").click()
    wait_drawn(page, steps)
    return {"open": (time.perf_counter() - started) * 1000, "reload": reload_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from deepext.config import Settings

    with tempfile.TemporaryDirectory() as root:
        settings = Settings(home=Path(root) / "home", database_url=f"sqlite:///{root}/metadata.db")
        jobs = seed(settings, [args.steps, args.small])
        with served(settings) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.goto(url)
            page.locator("#login-username").get_by_role("textbox").fill("bench")
            page.locator("#login-password input").fill(PASSWORD)
            page.locator("#login-button").click()
            wait_ready(page)
            results: dict[int, list[dict[str, float]]] = {n: [] for n in jobs}
            for round_ in range(args.rounds + 1):  # round 0 warms caches and is not counted
                for steps, job_id in jobs.items():
                    figures = measure(page, job_id, steps)
                    if round_:
                        results[steps].append(figures)
                        opened, reloaded = figures["open"], figures["reload"]
                        print(f"round {round_} steps={steps} open {opened:.0f} ms reload {reloaded:.0f} ms")
            page.screenshot(path=str(Path(root) / "page.png"))
            browser.close()
    med = {(n, k): statistics.median(r[k] for r in runs) for n, runs in results.items() for k in ("open", "reload")}
    big, small = args.steps, args.small
    print(
        f"ui_training_page ms open_{big}={med[big, 'open']:.0f} open_{small}={med[small, 'open']:.0f} "
        f"reload_{big}={med[big, 'reload']:.0f} reload_{small}={med[small, 'reload']:.0f} "
        f"ratio_reload={med[big, 'reload'] / med[small, 'reload']:.2f}"
    )


if __name__ == "__main__":
    main()
