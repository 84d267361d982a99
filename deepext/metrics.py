"""Prometheus metrics of the API, the model gateway and jobs, exported through Ray's metrics agent.

The instruments are `ray.util.metrics` objects: a process connected to Ray (an API replica, the
`deepext up` driver, a job's entry point) records them in its Ray core worker, which pushes them to
its node's metrics agent every few seconds; Prometheus scrapes each node's metrics export port and
Ray's dashboard Grafana reads them. Ray prefixes every name with `ray_` and counters end in
`_total`: `deepext_api_requests` is scraped as `ray_deepext_api_requests_total`.

Outside Ray (plain uvicorn, unit tests, a script on a laptop) every `record_*` function returns at
once: no instrument is created, Ray is not imported, nothing raises.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import Any

LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]
UNMATCHED_ROUTE = "unmatched"  # requests no route matched (404s for made-up paths): one label value
JOB_TAGS = ("kind", "project", "job_id")


class _Instruments:
    """The process's instruments, made on the first record inside Ray (Ray registers each once)."""

    def __init__(self) -> None:
        from ray.util.metrics import Counter, Gauge, Histogram

        self.api_requests = Counter(
            "deepext_api_requests",
            "REST and gateway requests by method, route template and status class.",
            tag_keys=("method", "route", "status"),
        )
        self.api_latency = Histogram(
            "deepext_api_request_seconds",
            "Time from a request's arrival to the end of its response (a stream: its last chunk).",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("method", "route"),
        )
        self.model_calls = Counter(
            "deepext_model_calls",
            "Calls through the /v1 gateway by public model name, target kind and outcome.",
            tag_keys=("model", "target", "status"),
        )
        self.model_tokens = Counter(
            "deepext_model_tokens",
            "Tokens of gateway calls: direction in (prompt) or out (completion).",
            tag_keys=("model", "target", "direction"),
        )
        self.job_step = Gauge("deepext_job_step", "The latest step a running job reported.", tag_keys=JOB_TAGS)
        self.job_reward_mean = Gauge(
            "deepext_job_reward_mean", "The latest training reward mean a job reported.", tag_keys=JOB_TAGS
        )
        self.job_tokens_per_second = Gauge(
            "deepext_job_tokens_per_second", "The latest training throughput a job reported.", tag_keys=JOB_TAGS
        )
        self.job_transitions = Counter(
            "deepext_job_transitions",
            "Job state changes by job kind and the state entered (queued ... succeeded, failed, cancelled).",
            tag_keys=("kind", "state"),
        )


_instruments: _Instruments | None = None
_lock = threading.Lock()


def _active() -> _Instruments | None:
    """The instruments when this process is connected to Ray, else None (and nothing is made)."""
    global _instruments
    ray = sys.modules.get("ray")  # a process that never imported Ray is not connected to it
    if ray is None or not ray.is_initialized():
        return None
    if _instruments is None:
        with _lock:
            if _instruments is None:
                _instruments = _Instruments()
    return _instruments


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def record_api_request(method: str, route: str, status: int, seconds: float) -> None:
    """One finished HTTP request; `route` is the route's template (`/api/v1/projects/{project}`)."""
    if (m := _active()) is None:
        return
    m.api_requests.inc(1, {"method": method, "route": route, "status": status_class(status)})
    m.api_latency.observe(seconds, {"method": method, "route": route})


def record_model_call(model: str, target: str, ok: bool, prompt_tokens: int, completion_tokens: int) -> None:
    """One gateway call (to a deployment or a provider) with its token counts."""
    if (m := _active()) is None:
        return
    m.model_calls.inc(1, {"model": model, "target": target, "status": "ok" if ok else "error"})
    if prompt_tokens > 0:
        m.model_tokens.inc(prompt_tokens, {"model": model, "target": target, "direction": "in"})
    if completion_tokens > 0:
        m.model_tokens.inc(completion_tokens, {"model": model, "target": target, "direction": "out"})


def record_job_report(job_id: int, kind: str, project: str, step: int, values: Mapping[str, Any]) -> None:
    """One step a job reported: its step, and its reward mean and tokens/s when the row has them."""
    if (m := _active()) is None:
        return
    tags = {"kind": kind, "project": project, "job_id": str(job_id)}
    m.job_step.set(step, tags)
    for key, gauge in (("reward_mean", m.job_reward_mean), ("tokens_per_s", m.job_tokens_per_second)):
        value = values.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            gauge.set(float(value), tags)


def record_job_transition(kind: str, state: str) -> None:
    """A job entered `state` (its first state, queued, included)."""
    if (m := _active()) is None:
        return
    m.job_transitions.inc(1, {"kind": kind, "state": str(state)})
