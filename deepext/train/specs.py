"""What each job kind needs checked before it is queued, and what it asks of the cluster.

A job that would fail in its first second (a wrong config field, an unknown dataset version, a model
folder that is not a model, a missing script) is refused at submit with the field and reason, so
nothing is queued, run or registered. Dataset references are pinned to the exact version, so a
retry or a rerun trains on the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepext.errors import InvalidInput, NotFound
from deepext.platform import Platform

CUSTOM_ENTRY = "entry"


@dataclass(frozen=True)
class CheckedJob:
    config: dict[str, Any]  # what the entry point will run, dataset references pinned
    resources: dict[str, float]  # CPU / GPU the job occupies while it runs
    dataset_version_id: int | None


def check_job(platform: Platform, project: str, kind: str, config: dict[str, Any]) -> CheckedJob:
    checks = {
        "grpo": _check_grpo,
        "sft": _check_sft,
        "custom": _check_custom,
        "eval": _check_eval,
        "sweep": _check_sweep,
        "export": _check_export,
    }
    if kind not in checks:
        raise InvalidInput(f"job kind {kind!r} cannot be submitted here; one of {', '.join(checks)}", field="kind")
    if not isinstance(config, dict):
        raise InvalidInput("a job config is a mapping of fields", field="config")
    return checks[kind](platform, project, config)


def pin_dataset(platform: Platform, project: str, reference: str, field: str) -> tuple[str, int]:
    """`PROJECT/NAME@LABEL` (or a name in the job's project) -> the exact `PROJECT/NAME@N` and its id."""
    owner, _, ref = reference.rpartition("/")
    try:
        version = platform.datasets.get(owner or project, ref)
    except (NotFound, InvalidInput) as exc:
        raise InvalidInput(f"{field}: {exc}", field=field) from exc
    return version.ref, version.id


def _check_model(platform: Platform, project: str, reference: str, field: str) -> None:
    from deepext.models.versions import resolve_model_source

    try:
        resolve_model_source(platform, project, reference)
    except (NotFound, InvalidInput) as exc:
        raise InvalidInput(f"{field}: {exc}", field=field) from exc


def _check_grpo(platform: Platform, project: str, config: dict[str, Any]) -> CheckedJob:
    from deepext.grpo.config import parse_config

    cfg = parse_config(config)
    data = cfg.data.model_dump()
    dataset_id = None
    if cfg.data.dataset:
        data["dataset"], dataset_id = pin_dataset(platform, project, cfg.data.dataset, "data.dataset")
    if cfg.data.eval_dataset:
        data["eval_dataset"], _ = pin_dataset(platform, project, cfg.data.eval_dataset, "data.eval_dataset")
    _check_model(platform, project, cfg.model.path, "model.path")
    res = cfg.resources
    cpus = res.num_learners * res.learner_cpus + res.num_rollout_workers * res.rollout_cpus
    gpus = res.num_learners * res.learner_gpus + res.num_rollout_workers * res.rollout_gpus
    pinned = parse_config({**cfg.model_dump(mode="json"), "data": data})
    return CheckedJob(pinned.model_dump(mode="json"), {"CPU": cpus, "GPU": gpus}, dataset_id)


def _check_sft(platform: Platform, project: str, config: dict[str, Any]) -> CheckedJob:
    from deepext.train.sft import parse_sft_config

    cfg = parse_sft_config(config)
    data = cfg.data.model_dump()
    dataset_id = None
    if cfg.data.dataset:
        data["dataset"], dataset_id = pin_dataset(platform, project, cfg.data.dataset, "data.dataset")
    _check_model(platform, project, cfg.model.path, "model.path")
    res = cfg.resources
    gpus = res.num_workers if res.use_gpu else 0
    pinned = parse_sft_config({**cfg.model_dump(mode="json"), "data": data})
    return CheckedJob(
        pinned.model_dump(mode="json"), {"CPU": res.num_workers * res.cpus_per_worker, "GPU": gpus}, dataset_id
    )


def _check_custom(platform: Platform, project: str, config: dict[str, Any]) -> CheckedJob:
    """`script` (a .py file or a folder with `entry`), `args`, `params`, optional `dataset`, `model`,
    `cpus`, `gpus`. The script is copied into the artifact store, so the job runs the code as
    submitted even if the file changes or lives on another machine."""
    allowed = {"script", "entry", "args", "params", "dataset", "model", "cpus", "gpus", "script_key", "script_is_dir"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise InvalidInput(f"custom job config: unknown field {unknown[0]!r}", field=unknown[0])
    checked = dict(config)
    if "script_key" not in checked:
        script = Path(str(config.get("script") or "")).expanduser()
        if not config.get("script") or not script.exists():
            raise InvalidInput(f"script {str(script)!r} does not exist", field="script")
        if script.is_dir():
            entry = str(config.get(CUSTOM_ENTRY) or "train.py")
            if not (script / entry).is_file():
                raise InvalidInput(f"{script / entry} does not exist", field=CUSTOM_ENTRY)
            checked["script_key"], checked[CUSTOM_ENTRY] = platform.artifacts.put_dir(script), entry
            checked["script_is_dir"] = True
        else:
            if script.suffix != ".py":
                raise InvalidInput(f"{script} is not a Python file", field="script")
            checked["script_key"], checked[CUSTOM_ENTRY] = platform.artifacts.put_file(script), script.name
            checked["script_is_dir"] = False
        checked["script"] = str(script.resolve())
    if not isinstance(checked.get("args", []), list):
        raise InvalidInput("args must be a list of strings", field="args")
    if not isinstance(checked.get("params", {}), dict):
        raise InvalidInput("params must be a mapping", field="params")
    dataset_id = None
    if checked.get("dataset"):
        checked["dataset"], dataset_id = pin_dataset(platform, project, str(checked["dataset"]), "dataset")
    if checked.get("model"):
        _check_model(platform, project, str(checked["model"]), "model")
    try:
        cpus, gpus = float(checked.get("cpus", 1)), float(checked.get("gpus", 0))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"cpus/gpus must be numbers ({exc})", field="cpus") from exc
    return CheckedJob(checked, {"CPU": cpus, "GPU": gpus}, dataset_id)


def _check_export(platform: Platform, project: str, config: dict[str, Any]) -> CheckedJob:
    """A model version to GGUF (see `deepext.models.export.ExportJob`): one CPU, no GPU."""
    from deepext.models.export import check_export_job

    return CheckedJob(check_export_job(platform, project, config), {"CPU": 1.0, "GPU": 0.0}, None)


def _check_eval(platform: Platform, project: str, config: dict[str, Any]) -> CheckedJob:
    """`suite` (NAME or NAME@N, pinned), `target` and `target_kind` (a model version or base model,
    generated on vLLM actors with `workers`, `cpus_per_worker`, `gpus_per_worker`; or a deployment,
    provider model or endpoint, called over HTTP, with `endpoint_key_env` naming an endpoint's key)."""
    from deepext.eval.endpoint import GATEWAY_KINDS, check_gateway_target, parse_endpoint_target
    from deepext.eval.runner import target_path
    from deepext.eval.suite import get_suite
    from deepext.serve.providers.registry import check_air_gap

    allowed = {"suite", "target", "target_kind", "workers", "cpus_per_worker", "gpus_per_worker", "endpoint_key_env"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise InvalidInput(f"eval job config: unknown field {unknown[0]!r}", field=unknown[0])
    for name in ("suite", "target"):
        if not isinstance(config.get(name), str) or not config[name]:
            raise InvalidInput(f"eval job config: {name} is required", field=name)
    kind = config.get("target_kind", "model_version")
    try:
        suite = get_suite(platform, project, config["suite"])
        if kind == "endpoint":
            check_air_gap(platform.settings, "endpoint", parse_endpoint_target(config["target"])[0])
        elif kind in GATEWAY_KINDS:
            check_gateway_target(config["target"], kind)
        else:
            target_path(platform, project, config["target"], kind)
    except (NotFound, InvalidInput) as exc:
        raise InvalidInput(f"eval job: {exc}", field=getattr(exc, "field", None) or "target") from exc
    if kind == "endpoint" or kind in GATEWAY_KINDS:  # the model runs elsewhere: the job only sends requests
        pinned = {**config, "suite": suite.ref}
        return CheckedJob(pinned, {"CPU": 0.5, "GPU": 0.0}, None)
    workers = int(config.get("workers", 1))
    cpus, gpus = float(config.get("cpus_per_worker", 1)), float(config.get("gpus_per_worker", 0))
    pinned = {**config, "suite": suite.ref, "workers": workers, "cpus_per_worker": cpus, "gpus_per_worker": gpus}
    return CheckedJob(pinned, {"CPU": workers * cpus, "GPU": workers * gpus}, None)


def _check_sweep(platform: Platform, project: str, config: dict[str, Any]) -> CheckedJob:
    """The space against the base config (see `deepext.train.sweep`), the base as its own kind's job
    would be checked (dataset pinned, model found); the sweep occupies `concurrency` trials' resources."""
    from deepext.train.sweep import parse_sweep

    sweep = parse_sweep(config)
    base = _check_grpo if sweep.kind == "grpo" else _check_sft
    try:
        checked = base(platform, project, sweep.base)
    except InvalidInput as exc:
        field = f"base.{exc.field}" if exc.field else "base"
        raise InvalidInput(f"base: {exc}", field=field) from exc
    pinned = {**sweep.model_dump(mode="json", exclude_none=True), "base": checked.config}
    resources = {name: value * sweep.concurrency for name, value in checked.resources.items()}
    return CheckedJob(pinned, resources, checked.dataset_version_id)
