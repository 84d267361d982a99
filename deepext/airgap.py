"""Air-gapped mode (`DEEPEXT_AIR_GAPPED=1`): the environment that keeps the libraries the platform
runs on from reaching the internet, set in one place.

The platform's own outbound calls are few: external model providers (refused unless on the loopback
interface, `serve/providers/registry.py`) and the Weaviate server at `weaviate_url`, when configured.
The rest would come from libraries: Hugging Face hub look-ups (transformers, vLLM and datasets asking
huggingface.co for a model, a tokenizer or a file), usage reports (Ray, vLLM, Gradio, the hub's
telemetry) and pip's version check. `OFFLINE_ENV` turns all of them off. What it cannot turn off:
Ray's dashboard asks the cloud metadata address (169.254.169.254, metadata.google.internal) once
as it starts, whatever its usage-stats setting (docs/operations.md, "Air-gapped sites").

- `apply_air_gap(settings)` sets it in this process's environment; every process the platform starts
  calls it first (`deepext up` before it starts Ray, so a local Ray's workers inherit it; the CLI when
  it opens the platform; a job's entry point).
- `ray_init_kwargs(...)` adds it to the runtime env of a driver that connects to a running Ray
  cluster, whose workers do not inherit this process's environment.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from deepext.config import Settings

OFFLINE_ENV: dict[str, str] = {
    "DEEPEXT_AIR_GAPPED": "1",  # child processes and Ray workers read the same setting
    "HF_HUB_OFFLINE": "1",  # huggingface_hub, hence transformers and vLLM: local files only
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    # With usage stats off, a cluster started by `ray start` still posts one "disabled" report to
    # usage-stats.ray.io from its dashboard; this points it at a closed port on loopback instead.
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",  # vLLM and other libraries that honour the convention
    "GRADIO_ANALYTICS_ENABLED": "False",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}

# Module flags the Hugging Face libraries compute from the environment once, when imported.
_READ_AT_IMPORT = {
    "huggingface_hub.constants": ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"),
    "datasets.config": ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"),
}
_JOB_CONFIG_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray Jobs for a submitted job's driver


def apply_air_gap(settings: Settings) -> bool:
    """In air-gapped mode, set `OFFLINE_ENV` in this process's environment (its children inherit it)
    and in the Hugging Face libraries already imported, which read theirs at import; whether it did.
    Call it before `ray.init` and before loading any model."""
    if not settings.air_gapped:
        return False
    os.environ.update(OFFLINE_ENV)
    for module_name, flags in _READ_AT_IMPORT.items():
        module = sys.modules.get(module_name)
        for flag in flags if module is not None else ():
            setattr(module, flag, True)
    return True


def ray_init_kwargs(settings: Settings, init_kwargs: dict[str, Any], *, cluster: bool) -> dict[str, Any]:
    """`init_kwargs` for `ray.init`, in air-gapped mode with `OFFLINE_ENV` applied here and, when
    connecting to a running `cluster`, added to the runtime env of everything this driver starts
    there (tasks, actors, Serve replicas). Variables a submitted Ray job already sets are left to it:
    Ray refuses a driver whose runtime env names them again."""
    if not apply_air_gap(settings) or not cluster:
        return init_kwargs
    runtime_env = dict(init_kwargs.get("runtime_env") or {})
    submitted = _submitted_env_vars()
    offline = {name: value for name, value in OFFLINE_ENV.items() if name not in submitted}
    env_vars = {**offline, **dict(runtime_env.get("env_vars") or {})}
    return {**init_kwargs, "runtime_env": {**runtime_env, "env_vars": env_vars}}


def _submitted_env_vars() -> set[str]:
    """The environment variables the Ray job this process runs as was submitted with."""
    raw = os.environ.get(_JOB_CONFIG_VARIABLE)
    if not raw:
        return set()
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return set()
    return set(runtime_env.get("env_vars") or {})
