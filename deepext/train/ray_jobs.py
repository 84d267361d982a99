"""Ray Jobs as the platform uses it: submit a job's entry point, ask its status, stop it, read its logs.

A thin layer over `ray.job_submission.JobSubmissionClient` (the Ray Jobs REST API on the head
node's dashboard), so the same code drives a laptop's local Ray and a remote cluster.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from deepext.config import Settings

# Settings a job's entry point needs to reach the platform's stores. Not `ray_address`: inside a Ray
# job `RAY_ADDRESS` names the job's own cluster, and a forwarded `ray://` address would send the job's
# driver traffic through Ray Client instead.
_FORWARDED = ("home", "database_url", "artifact_uri", "vector_store_uri", "air_gapped")


@dataclass(frozen=True)
class RayJobStatus:
    status: str  # PENDING | RUNNING | STOPPED | SUCCEEDED | FAILED | MISSING (Ray has no record)
    message: str

    @property
    def finished(self) -> bool:
        return self.status in {"STOPPED", "SUCCEEDED", "FAILED", "MISSING"}


def submission_id(job_id: int, attempt: int) -> str:
    """The Ray job id of one attempt of a deepext job, chosen before it is submitted. The random part
    keeps it unique on a cluster that several platforms (or a reset metadata store) submit to."""
    return f"deepext-job-{job_id}-{attempt}-{uuid.uuid4().hex[:8]}"


def jobs_api_url(settings: Settings) -> str:
    """The Ray Jobs API address: set explicitly, else the dashboard of `ray_address`'s head, else the
    dashboard of the Ray this process is connected to."""
    if settings.ray_jobs_url:
        return settings.ray_jobs_url
    address = settings.ray_address
    if address and address != "auto":
        host = address.removeprefix("ray://").rsplit(":", 1)[0]
        return f"http://{host}:{settings.ray_dashboard_port}"
    import ray

    if ray.is_initialized():
        url = ray.get_runtime_context().gcs_address  # same host as the dashboard on a local Ray
        from ray._private.worker import global_worker

        webui = global_worker.node.address_info.get("webui_url") if global_worker.node else None
        if webui:
            return webui if webui.startswith("http") else f"http://{webui}"
        return f"http://{url.rsplit(':', 1)[0]}:{settings.ray_dashboard_port}"
    return f"http://127.0.0.1:{settings.ray_dashboard_port}"


class RayJobs:
    def __init__(self, settings: Settings) -> None:
        from ray.job_submission import JobSubmissionClient

        self.settings = settings
        self.url = jobs_api_url(settings)
        self.client = JobSubmissionClient(self.url)

    def submit(self, job_id: int, attempt: int, ray_job_id: str, *, num_gpus: float = 0) -> str:
        """Start `python -m deepext.train.entrypoint JOB_ID` on the cluster; returns the Ray job id.

        The entry point itself takes no CPU (its Ray Train workers and vLLM actors ask for their own);
        it does hold the job's GPUs when it trains on the driver (custom scripts)."""
        env = {f"DEEPEXT_{name.upper()}": str(value) for name in _FORWARDED if (value := getattr(self.settings, name))}
        env["DEEPEXT_JOB_ID"] = str(job_id)
        env["PYTHONUNBUFFERED"] = "1"
        return self.client.submit_job(
            entrypoint=f"{sys.executable} -m deepext.train.entrypoint {job_id}",
            submission_id=ray_job_id,
            runtime_env={"env_vars": env},
            metadata={"deepext_job": str(job_id), "attempt": str(attempt)},
            entrypoint_num_cpus=0,
            entrypoint_num_gpus=num_gpus or None,
        )

    def status(self, ray_job_id: str) -> RayJobStatus:
        try:
            info: Any = self.client.get_job_info(ray_job_id)
        except RuntimeError as exc:
            if _unknown(exc):
                return RayJobStatus("MISSING", f"Ray has no record of {ray_job_id} (was the cluster restarted?)")
            raise
        return RayJobStatus(str(info.status.value), info.message or "")

    def stop(self, ray_job_id: str) -> bool:
        return bool(self.client.stop_job(ray_job_id))

    def logs(self, ray_job_id: str) -> str:
        """The job's output so far; empty while Ray does not know the job yet (the scheduler records the
        id just before it submits) or no longer (a restarted cluster)."""
        try:
            return str(self.client.get_job_logs(ray_job_id))
        except RuntimeError as exc:
            if _unknown(exc):
                return ""
            raise

    def tail(self, ray_job_id: str) -> AsyncIterator[str]:
        return self.client.tail_job_logs(ray_job_id)


def _unknown(exc: RuntimeError) -> bool:
    """Whether the Jobs client's error says Ray has no such job (it raises RuntimeError for HTTP 404)."""
    return "404" in str(exc) or "does not exist" in str(exc)
