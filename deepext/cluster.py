"""Connecting to Ray: a local Ray by default, or the cluster `DEEPEXT_RAY_ADDRESS` names.

Everything that computes runs as Ray work, so the same code runs on a laptop and on a cluster.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from deepext.airgap import ray_init_kwargs
from deepext.config import Settings
from deepext.logs import ray_logging_config, reclaim_root_logger


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
    if not address:
        # Ray Serve's throughput mode for the API's proxy and replicas (they inherit this process's
        # environment when Ray starts here; a cluster sets it in its own start-up environment).
        os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    if address:
        context = ray.init(address=address, **init_kwargs)
    else:
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
