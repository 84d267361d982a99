"""Prometheus metrics (`deepext.metrics`): the API middleware labels requests by route template and
status class; recording outside Ray is a no-op; and on a local Ray the API on Ray Serve, a gateway
call and a job's reports and state changes reach the node's metrics export port (Ray's agent)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from deepext import metrics
from deepext.config import Settings
from deepext.db.models import JobState
from deepext.platform import Platform
from deepext.serve.app import create_app
from deepext.train.jobs import create_job, transition
from tests.helpers import free_port, uvicorn_in_thread
from tests.serve.conftest import seed_users

DATASETS = "/api/v1/projects/{project}/datasets"


@pytest.fixture
def sqlite_platform(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform.open(Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'm.db'}"))
    try:
        yield platform
    finally:
        platform.close()


@pytest.mark.parametrize("export", [True, False])
def test_the_middleware_records_route_templates_and_status_classes(
    sqlite_platform: Platform, monkeypatch: pytest.MonkeyPatch, export: bool
) -> None:
    recorded: list[tuple[str, str, int, float]] = []
    monkeypatch.setattr(metrics, "record_api_request", lambda *call: recorded.append(call))
    tokens = seed_users(sqlite_platform)
    member = {"Authorization": f"Bearer {tokens['member']}"}
    with TestClient(create_app(sqlite_platform, export_metrics=export), raise_server_exceptions=False) as client:
        assert client.get("/api/v1/projects/p/datasets", headers=member).status_code == 200
        assert client.get("/api/v1/projects/q/datasets").status_code == 401
        assert client.get("/api/v1/no/such/route").status_code == 404
    if not export:  # an app outside a Serve replica (uvicorn, tests) records nothing
        assert recorded == []
        return
    assert [(method, route, status) for method, route, status, _ in recorded] == [
        ("GET", DATASETS, 200),
        ("GET", DATASETS, 401),
        ("GET", metrics.UNMATCHED_ROUTE, 404),
    ]
    assert all(0 < seconds < 30 for *_, seconds in recorded)
    assert [metrics.status_class(status) for status in (200, 401, 404, 503)] == ["2xx", "4xx", "4xx", "5xx"]


def test_recording_outside_ray_is_a_no_op() -> None:
    """In a fresh process: nothing imports Ray or raises, before and after Ray is imported, and
    nothing is created when Ray is imported but not running."""
    script = """
import sys, time
from deepext import metrics
def record_all():
    metrics.record_api_request("GET", "/api/v1/health", 200, 0.01)
    metrics.record_model_call("p/m", "provider", True, 5, 2)
    metrics.record_job_report(1, "grpo", "p", 3, {"reward_mean": 0.5, "tokens_per_s": 10.0})
    metrics.record_job_transition("grpo", "running")
record_all()
assert "ray" not in sys.modules, "recording imported Ray"
import ray
started = time.perf_counter()
for _ in range(1000):
    record_all()
per_call_us = (time.perf_counter() - started) / 4000 * 1e6
assert metrics._instruments is None and not ray.is_initialized()
print(f"ok {per_call_us:.2f}")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    verdict, per_call_us = done.stdout.split()
    assert verdict == "ok" and float(per_call_us) < 20  # negligible: a dict lookup and a flag


# ---------------------------------------------------------------- exported by Ray (slow)
def scrape(port: int) -> list[Any]:
    """The `deepext` samples at a node's metrics export port."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples if "deepext" in s.name]


def total(samples: list[Any], name: str, **labels: str) -> float:
    """The sum over every series of `name` with these labels (one series per Ray worker)."""
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(port: int, read: Callable[[list[Any]], dict[str, float]], expected: dict[str, float]) -> None:
    """Scrape until `read` gives `expected` (Ray's workers push every few seconds), at most 40 s."""
    deadline = time.monotonic() + 40
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        seen = read(scrape(port))
        if seen == expected:
            return
        time.sleep(1)
    assert seen == expected


def metrics_export_port() -> int:
    import ray

    return int(ray._private.worker.global_worker.node.metrics_export_port)


def upstream_app() -> Any:
    """An OpenAI-compatible provider whose every chat answer used 5 prompt and 2 completion tokens."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Any) -> JSONResponse:
        body = await request.json()
        message = {"role": "assistant", "content": "ok"}
        return JSONResponse(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture
def served(ray_session: str, postgres_url: str, tmp_path: Path) -> Iterator[tuple[Platform, dict[str, str], str]]:
    from deepext.serve.ingress import start_api, stop_api

    settings = Settings(home=tmp_path / "home", database_url=postgres_url, api_port=free_port(), log_format="json")
    platform = Platform.open(settings)
    tokens = seed_users(platform)
    url = start_api(settings)
    try:
        yield platform, tokens, url
    finally:
        stop_api()
        platform.close()


def replica_log_line(marker: str) -> dict[str, Any]:
    """The JSON line holding `marker` that an API replica (a Ray worker) wrote to its log file."""
    import ray

    logs_dir = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for path in logs_dir.glob("worker-*.err"):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if marker in line:
                    return dict(json.loads(line))
        time.sleep(0.5)
    raise AssertionError(f"no worker log line mentions {marker}")


@pytest.mark.slow
def test_api_and_gateway_metrics_reach_the_metrics_export_port(served: tuple[Platform, dict[str, str], str]) -> None:
    """Also: the replica logs JSON lines with the request's id, user and project (log_format json)."""
    _platform, tokens, url = served
    port = metrics_export_port()

    def read(samples: list[Any]) -> dict[str, float]:
        requests = "ray_deepext_api_requests_total"
        return {
            "datasets 2xx": total(samples, requests, method="GET", route=DATASETS, status="2xx"),
            "datasets 4xx": total(samples, requests, method="GET", route=DATASETS, status="4xx"),
            "unmatched 4xx": total(samples, requests, route=metrics.UNMATCHED_ROUTE, status="4xx"),
            "datasets timed": total(samples, "ray_deepext_api_request_seconds_count", method="GET", route=DATASETS),
            "calls ok": total(samples, "ray_deepext_model_calls_total", model="p/stub/m", status="ok"),
            "tokens in": total(samples, "ray_deepext_model_tokens_total", model="p/stub/m", direction="in"),
            "tokens out": total(samples, "ray_deepext_model_tokens_total", model="p/stub/m", direction="out"),
        }

    # Earlier API replicas of this test session may have left series; they are gone and stay fixed.
    before = read(scrape(port))
    member = {"Authorization": f"Bearer {tokens['member']}"}
    maintainer = {"Authorization": f"Bearer {tokens['maintainer']}"}
    with httpx.Client(base_url=url, timeout=30) as http, uvicorn_in_thread(upstream_app()) as upstream:
        for _ in range(3):
            assert http.get("projects/p/datasets", headers=member).status_code == 200
        for _ in range(2):
            assert http.get("projects/p/datasets").status_code == 401
        assert http.get("no/such/route").status_code == 404
        provider = {
            "name": "stub",
            "kind": "openai",
            "base_url": f"{upstream}/v1",
            "models": ["m"],
            "api_key": "sk-t-1234",
        }
        request_id = f"metrics-test-{uuid.uuid4().hex[:12]}"
        created = http.post("projects/p/providers", json=provider, headers={**maintainer, "X-Request-ID": request_id})
        assert created.status_code == 201
        chat = {"model": "p/stub/m", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(2):
            answer = httpx.post(f"{url.removesuffix('/api/v1')}/v1/chat/completions", json=chat, headers=member)
            assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 2

    added = {"datasets 2xx": 3, "datasets 4xx": 2, "unmatched 4xx": 1, "datasets timed": 5}
    added |= {"calls ok": 2, "tokens in": 10, "tokens out": 4}
    wait_for(port, read, {key: before[key] + added[key] for key in before})

    # The first provider key makes the replica create its key file, which it logs (deepext.secrets).
    line = replica_log_line(request_id)
    assert (line["logger"], line["level"], line["user"], line["project"]) == (
        "deepext.secrets",
        "INFO",
        "maintainer",
        "p",
    )
    assert line["message"].startswith("created the provider-credential key")


class JobReporter:
    """A job's reporting side in a Ray worker of its own, as a job's entry point does it."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.platform = Platform.open(Settings(**settings), migrate=False)

    def run(self, job_id: int, output: str) -> str:
        import ray

        from deepext.train.context import JobContext

        transition(self.platform, job_id, JobState.RUNNING, "probe started")
        ctx = JobContext(job_id=job_id, config={}, output_dir=Path(output), platform=self.platform, project="p")
        ctx.kind = "custom"
        ctx.report(1, reward_mean=0.25, tokens_per_s=100.0)
        ctx.report(2, reward_mean=0.75, tokens_per_s=150.0, loss=0.1)
        transition(self.platform, job_id, JobState.SUCCEEDED, "probe finished")
        return str(ray.get_runtime_context().get_worker_id())


@pytest.mark.slow
def test_job_reports_and_state_changes_reach_the_metrics_export_port(
    ray_session: str, postgres_url: str, tmp_path: Path
) -> None:
    import ray

    settings = Settings(home=tmp_path / "home", database_url=postgres_url)
    platform = Platform.open(settings)
    try:
        seed_users(platform)
        job = create_job(platform, project="p", kind="custom", config={}, resources={}, actor="admin")
        transition(platform, job.id, JobState.STARTING, "probe admitted")
        reporter = ray.remote(num_cpus=0)(JobReporter).remote(settings.model_dump(mode="json"))
        try:
            worker = ray.get(reporter.run.remote(job.id, str(tmp_path)), timeout=120)

            def read(samples: list[Any]) -> dict[str, float]:
                tags = {"kind": "custom", "project": "p", "job_id": str(job.id)}
                moved = "ray_deepext_job_transitions_total"
                return {
                    "step": total(samples, "ray_deepext_job_step", **tags),
                    "reward_mean": total(samples, "ray_deepext_job_reward_mean", **tags),
                    "tokens_per_s": total(samples, "ray_deepext_job_tokens_per_second", **tags),
                    "running": total(samples, moved, kind="custom", state="running", WorkerId=worker),
                    "succeeded": total(samples, moved, kind="custom", state="succeeded", WorkerId=worker),
                    "queued": total(samples, moved, kind="custom", state="queued", WorkerId=worker),
                }

            expected = {
                "step": 2,
                "reward_mean": 0.75,
                "tokens_per_s": 150.0,
                "running": 1,
                "succeeded": 1,
                "queued": 0,
            }
            wait_for(metrics_export_port(), read, expected)
        finally:
            ray.kill(reporter)
    finally:
        platform.close()
