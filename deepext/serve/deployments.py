"""Deployments: a registered model version served by Ray Serve, one application per deployment
built with Ray Serve LLM (`ray.serve.llm`: an `LLMServer` deployment owning a vLLM async engine with
continuous batching, replicas and autoscaling bounds; deepext's subclass `EngineServer` takes and
returns plain JSON-shaped data). The application has no HTTP route of its own: clients reach it
only through the platform's authenticated OpenAI-compatible gateway (`deepext/serve/routes/openai.py`),
which calls its deployment handle.

`create_deployment` / `stop_deployment` only record the wish (with its audit row);
`reconcile` - run by `deepext up` next to the job scheduler - makes Serve match it and records
`running` or `failed` with Serve's message.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepext import audit
from deepext import request as current_request
from deepext.db.models import Deployment, ModelVersion, Project
from deepext.errors import Conflict, InvalidInput, NotFound, Unavailable
from deepext.models.versions import ModelVersionView, get_model_version, model_version_path
from deepext.platform import Platform
from deepext.projects import check_name, get_project
from deepext.serve.adapters import ROOT_KEY, adapter_root, link_adapter

ACTIVE = ("deploying", "running")
MAX_LORA_SLOTS = 64
MAX_LORA_RANK = 64  # the largest adapter rank a LoRA-enabled engine accepts
STATES = ("deploying", "running", "failed", "stopping", "stopped")
SERVER_PREFIX = "LLMServer:"  # the engine's Serve deployment is SERVER_PREFIX + its model id
_PUBLIC_NAME = re.compile(r"^(?P<project>[a-z0-9][a-z0-9_-]*)/(?P<name>[a-z0-9][a-z0-9_-]*)$")


@dataclass(frozen=True)
class DeploymentView:
    id: int
    project: str
    project_id: int
    name: str
    model: str  # the name clients send: PROJECT/NAME
    model_version: str  # NAME@N of the served version
    model_version_id: int
    state: str
    min_replicas: int
    max_replicas: int
    cpus_per_replica: float
    gpus_per_replica: float
    max_model_len: int
    lora_slots: int  # LoRA adapters the engine holds per replica (0: none)
    host_deployment_id: int | None  # a LoRA version runs on this deployment's engine
    app: str  # the Ray Serve application owning the engine
    handle: str  # its LLMServer deployment
    engine_model: str  # the model id the engine answers to (the gateway sends this)
    direct_path: str | None  # its own endpoint's base path, served by the engine's replicas (not LoRA guests)
    error: str | None
    created_by: str
    created_at: str
    updated_at: str


def app_name(deployment_id: int) -> str:
    return f"deepext-model-{deployment_id}"


def direct_path(project: str, name: str) -> str:
    """The base path (an OpenAI client's `base_url` after the host) of a deployment's direct
    endpoint; Serve routes its prefix, without the `/v1`, to the engine's replicas."""
    return f"/deployments/{project}/{name}/v1"


def engine_model_id(deployment_id: int) -> str:
    """The model id inside the engine (clients use PROJECT/NAME; the gateway translates)."""
    return f"deployment-{deployment_id}"


def adapter_id(model_version_id: int) -> str:
    """A LoRA version's adapter name on its host engine (one copy per version, shared)."""
    return f"v{model_version_id}"


def _view(row: Deployment, project: str, version: ModelVersion) -> DeploymentView:
    host = row.host_deployment_id or row.id
    engine_model = engine_model_id(host)
    if row.host_deployment_id is not None:  # Ray Serve LLM's multiplexed LoRA id: BASE:ADAPTER
        engine_model = f"{engine_model}:{adapter_id(version.id)}"
    return DeploymentView(
        id=row.id,
        project=project,
        project_id=row.project_id,
        name=row.name,
        model=f"{project}/{row.name}",
        model_version=f"{version.name}@{version.version}",
        model_version_id=version.id,
        state=row.state,
        min_replicas=row.min_replicas,
        max_replicas=row.max_replicas,
        cpus_per_replica=row.cpus_per_replica,
        gpus_per_replica=row.gpus_per_replica,
        max_model_len=row.max_model_len,
        lora_slots=row.lora_slots,
        host_deployment_id=row.host_deployment_id,
        app=app_name(host),
        handle=SERVER_PREFIX + engine_model_id(host),
        engine_model=engine_model,
        direct_path=None if row.host_deployment_id is not None else direct_path(project, row.name),
        error=row.error,
        created_by=row.created_by,
        created_at=row.created_at.isoformat(),
        updated_at=row.updated_at.isoformat(),
    )


def load_view(platform: Platform, deployment_id: int) -> DeploymentView:
    with platform.db.session() as session:
        return _view(*_load(session, deployment_id))


def _load(session: Session, deployment_id: int) -> tuple[Deployment, str, ModelVersion]:
    found = session.execute(
        select(Deployment, Project.name, ModelVersion)
        .join(Project, Project.id == Deployment.project_id)
        .join(ModelVersion, ModelVersion.id == Deployment.model_version_id)
        .where(Deployment.id == deployment_id)
    ).first()
    if found is None:
        raise NotFound(f"deployment {deployment_id} not found")
    return found[0], found[1], found[2]


def _active_named(session: Session, project_id: int, name: str) -> Deployment | None:
    return session.scalar(
        select(Deployment).where(
            Deployment.project_id == project_id, Deployment.name == name, Deployment.state.notin_(("stopped",))
        )
    )


def _lora_host(session: Session, project_id: int, version: ModelVersion) -> Deployment:
    """The project's active deployment a LoRA `version` can run on: it has `lora_slots` and serves
    the weights the adapter was trained on - the version's parent, or, for an adapter trained on
    the base model, a full version of that base registered without a parent."""
    hosts = session.execute(
        select(Deployment, ModelVersion)
        .join(ModelVersion, ModelVersion.id == Deployment.model_version_id)
        .where(
            Deployment.project_id == project_id,
            Deployment.state.in_(ACTIVE),
            Deployment.host_deployment_id.is_(None),
            Deployment.lora_slots > 0,
        )
        .order_by(Deployment.id)
    ).all()
    for host, served in hosts:
        if version.parent_version_id is not None:
            if served.id == version.parent_version_id:
                return host
        elif (
            served.kind == "full" and served.parent_version_id is None and served.base_model_id == version.base_model_id
        ):
            return host
    trained_on = "its parent version" if version.parent_version_id is not None else "its base model"
    raise Conflict(
        f"LoRA version {version.name}@{version.version} needs a running deployment of {trained_on} "
        "with lora_slots > 0 in this project to run on; deploy that first"
    )


def _dependents(session: Session, host_id: int) -> list[str]:
    return list(
        session.scalars(
            select(Deployment.name).where(
                Deployment.host_deployment_id == host_id, Deployment.state.notin_(("stopped", "failed"))
            )
        )
    )


# ---- what users do
def create_deployment(
    platform: Platform,
    *,
    project: str,
    name: str,
    model_version: str,
    min_replicas: int = 1,
    max_replicas: int = 1,
    cpus_per_replica: float = 1.0,
    gpus_per_replica: float = 0.0,
    max_model_len: int = 2048,
    lora_slots: int = 0,
    actor: str,
) -> DeploymentView:
    """Record a deployment of `model_version` (NAME@N, NAME@STAGE, ...) as `PROJECT/NAME`.

    A `lora` version gets no engine of its own: it runs on the project's deployment that serves
    the weights its adapter was trained on and has `lora_slots` (see `_lora_host`); its replica
    settings are the host's."""
    check_name(name, "deployment")
    if not 0 <= lora_slots <= MAX_LORA_SLOTS:
        raise InvalidInput(f"lora_slots must be between 0 and {MAX_LORA_SLOTS}", field="lora_slots")
    if not 1 <= min_replicas <= max_replicas:
        raise InvalidInput("replicas: need 1 <= min_replicas <= max_replicas", field="min_replicas")
    if cpus_per_replica <= 0 or gpus_per_replica < 0:
        raise InvalidInput("cpus_per_replica must be > 0 and gpus_per_replica >= 0", field="cpus_per_replica")
    if max_model_len < 16:
        raise InvalidInput("max_model_len must be at least 16", field="max_model_len")
    version = get_model_version(platform, project, model_version)
    if version.kind != "lora":  # a LoRA version runs at its host's length
        _check_fits_positions(platform, version, max_model_len)
    with platform.db.session() as session:
        owner = get_project(session, project)
        if _active_named(session, owner.id, name) is not None:
            raise Conflict(f"deployment {project}/{name} exists; stop it first or pick another name")
        host: Deployment | None = None
        if version.kind == "lora":
            if lora_slots:
                raise InvalidInput(
                    "a LoRA version runs on its host's engine; lora_slots is the host's", field="lora_slots"
                )
            host = _lora_host(session, owner.id, session.get_one(ModelVersion, version.id))
            min_replicas, max_replicas = host.min_replicas, host.max_replicas
            cpus_per_replica, gpus_per_replica = host.cpus_per_replica, host.gpus_per_replica
            max_model_len = host.max_model_len
        now = dt.datetime.now(dt.UTC)
        row = Deployment(
            project_id=owner.id,
            name=name,
            model_version_id=version.id,
            state="deploying",
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            cpus_per_replica=cpus_per_replica,
            gpus_per_replica=gpus_per_replica,
            max_model_len=max_model_len,
            lora_slots=lora_slots,
            host_deployment_id=host.id if host is not None else None,
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="deployment.create",
            resource=f"deployment:{project}/{name}",
            project_id=owner.id,
            detail={
                "model_version": version.ref,
                "replicas": [min_replicas, max_replicas],
                **({"lora_slots": lora_slots} if lora_slots else {}),
                **({"host_deployment_id": host.id} if host is not None else {}),
            },
        )
        return _view(row, project, session.get_one(ModelVersion, version.id))


def _check_fits_positions(platform: Platform, version: ModelVersionView, max_model_len: int) -> None:
    """vLLM refuses an engine longer than the model's position embeddings only when the deployment
    starts, and the deployment then fails; refuse it here, before anything is recorded. A config
    with RoPE scaling stretches the limit by rules of its own: vLLM judges those."""
    files = {entry.path: entry.key for entry in platform.artifacts.tree(version.artifact_key)}
    if "model/config.json" not in files:
        return
    config = json.loads(platform.artifacts.read_bytes(files["model/config.json"]))
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and not config.get("rope_scaling") and max_model_len > positions:
        raise InvalidInput(
            f"max_model_len {max_model_len} is longer than {version.ref} can read: its config.json "
            f"has max_position_embeddings {positions}",
            field="max_model_len",
        )


def list_deployments(platform: Platform, project: str, *, include_stopped: bool = False) -> list[DeploymentView]:
    with platform.db.session() as session:
        owner = get_project(session, project)
        query = (
            select(Deployment, ModelVersion)
            .join(ModelVersion, ModelVersion.id == Deployment.model_version_id)
            .where(Deployment.project_id == owner.id)
        )
        if not include_stopped:
            query = query.where(Deployment.state != "stopped")
        rows = session.execute(query.order_by(Deployment.name, Deployment.id)).all()
        return [_view(row, owner.name, version) for row, version in rows]


def running_deployments(platform: Platform, project_ids: frozenset[int] | None) -> list[DeploymentView]:
    """The running deployments of these projects (None: of all), in one query."""
    with platform.db.session() as session:
        query = (
            select(Deployment, Project.name, ModelVersion)
            .join(Project, Project.id == Deployment.project_id)
            .join(ModelVersion, ModelVersion.id == Deployment.model_version_id)
            .where(Deployment.state == "running")
        )
        if project_ids is not None:
            query = query.where(Deployment.project_id.in_(project_ids))
        rows = session.execute(query.order_by(Project.name, Deployment.name)).all()
        return [_view(row, project, version) for row, project, version in rows]


def get_deployment(platform: Platform, project: str, name: str) -> DeploymentView:
    """The project's current (not stopped) deployment called `name`."""
    with platform.db.session() as session:
        owner = get_project(session, project)
        row = _active_named(session, owner.id, name)
        if row is None:
            raise NotFound(f"deployment {project}/{name} not found")
        return _view(*_load(session, row.id))


def stop_deployment(platform: Platform, project: str, name: str, *, actor: str) -> DeploymentView:
    with platform.db.session() as session:
        owner = get_project(session, project)
        row = _active_named(session, owner.id, name)
        if row is None:
            raise NotFound(f"deployment {project}/{name} not found")
        if dependents := _dependents(session, row.id):
            raise Conflict(f"LoRA deployments run on {project}/{name}: stop {', '.join(dependents)} first")
        if row.state != "stopping":
            row.state, row.updated_at = "stopping", dt.datetime.now(dt.UTC)
        _resolved.clear()  # this process stops routing to it at once (others within _RESOLVED_TTL_S)
        audit.record(
            session, actor=actor, action="deployment.stop", resource=f"deployment:{project}/{name}", project_id=owner.id
        )
        return _view(*_load(session, row.id))


def _readable(project_id: int) -> bool:
    """May this request see the project? (`get_project`'s rule, for a remembered lookup.)"""
    context = current_request.current()
    return context is None or context.readable_project_ids is None or project_id in context.readable_project_ids


_RESOLVED_TTL_S = 1.0
_resolved: dict[tuple[int, str], tuple[float, DeploymentView]] = {}


def resolve_model(platform: Platform, public_name: str) -> DeploymentView:
    """The running deployment clients call `PROJECT/NAME` (project visibility applies).

    A running deployment is remembered for a second: the gateway resolves the model of every
    request, and three queries each would cost more than the rest of the hop; a stopped deployment
    may still be reached in that second by API processes other than the one that stopped it."""
    key = (id(platform), public_name)
    cached = _resolved.get(key)
    if cached is not None and time.monotonic() - cached[0] < _RESOLVED_TTL_S and _readable(cached[1].project_id):
        return cached[1]
    match = _PUBLIC_NAME.match(public_name)
    if not match:
        raise NotFound(f"model {public_name!r} not found; deployed models are named PROJECT/NAME")
    view = get_deployment(platform, match["project"], match["name"])
    if view.state != "running":
        raise Unavailable(f"model {public_name} is {view.state}" + (f": {view.error}" if view.error else ""))
    _resolved[key] = (time.monotonic(), view)
    return view


# ---- making Serve match
def llm_config(platform: Platform, view: DeploymentView) -> Any:
    """The Ray Serve LLM config of a deployment: its model folder, engine and replica settings."""
    from ray.serve.llm import LLMConfig

    folder = model_version_path(platform, view.project, view.model_version)
    engine: dict[str, Any] = {"max_model_len": view.max_model_len}
    if view.gpus_per_replica == 0:  # decided by the replica's GPUs, not by this (API) process's machine
        # vLLM-cpu: float32, eager, and a bounded KV cache instead of a share of the machine's memory.
        engine.update(dtype="float32", enforce_eager=True, kv_cache_memory_bytes=1 << 30)
    lora: dict[str, Any] = {}
    if view.lora_slots:
        engine.update(enable_lora=True, max_loras=view.lora_slots, max_lora_rank=MAX_LORA_RANK)
        lora = {
            "lora_config": {"max_num_adapters_per_replica": view.lora_slots},
            "experimental_configs": {ROOT_KEY: str(adapter_root(platform.settings.home))},
        }
    bundle = {"CPU": view.cpus_per_replica, "GPU": view.gpus_per_replica}
    return LLMConfig(
        model_loading_config={"model_id": engine_model_id(view.id), "model_source": str(folder)},
        accelerator_config={"kind": "gpu" if view.gpus_per_replica else "cpu"},
        placement_group_config={"bundles": [bundle]},
        engine_kwargs=engine,
        deployment_config={
            "autoscaling_config": {"min_replicas": view.min_replicas, "max_replicas": view.max_replicas}
        },
        log_engine_metrics=False,
        **lora,
    )


def _set_state(platform: Platform, deployment_id: int, state: str, error: str | None = None) -> None:
    with platform.db.session() as session:
        row = session.get_one(Deployment, deployment_id)
        row.state, row.error, row.updated_at = state, error, dt.datetime.now(dt.UTC)
    _resolved.clear()


def reconcile(platform: Platform) -> None:
    """One pass: start what should be deploying, record what came up or failed, stop what should
    stop. Serve must be running on the connected Ray."""
    from ray import serve
    from ray.serve.llm import build_llm_deployment

    with platform.db.session() as session:
        ids = session.scalars(select(Deployment.id).where(Deployment.state.in_((*ACTIVE, "stopping")))).all()
    applications = serve.status().applications
    for deployment_id in ids:
        view = load_view(platform, deployment_id)
        if view.host_deployment_id is not None:
            _reconcile_adapter(platform, view)
            continue
        name = app_name(deployment_id)
        status = applications.get(name)
        if view.state == "stopping":
            if status is not None:
                serve.delete(name, _blocking=False)
            _set_state(platform, deployment_id, "stopped")
        elif status is None and view.state == "deploying":
            try:
                from deepext.serve.adapter_loader import AdapterLoader
                from deepext.serve.engine_server import EngineServer

                config = llm_config(platform, view)
                bind: dict[str, Any] = {
                    "direct": {"settings": platform.settings.model_dump(mode="json"), "deployment_id": view.id}
                }
                if view.lora_slots:
                    bind["model_downloader"] = AdapterLoader
                application = build_llm_deployment(
                    config, bind_kwargs=bind, deployment_cls=serve.ingress()(EngineServer), name_prefix=SERVER_PREFIX
                )
                prefix = (view.direct_path or "").removesuffix("/v1")
                serve.run(application, name=name, route_prefix=prefix, blocking=False)
            except Exception as exc:  # a bad model folder or config: the deployment fails, not the loop
                _set_state(platform, deployment_id, "failed", f"{type(exc).__name__}: {exc}")
        elif status is None:  # running, but Serve lost it (a restarted cluster): deploy it again
            _set_state(platform, deployment_id, "deploying")
        elif status.status == "RUNNING" and view.state == "deploying":
            _set_state(platform, deployment_id, "running")
        elif status.status == "DEPLOY_FAILED":
            serve.delete(name, _blocking=False)
            _set_state(platform, deployment_id, "failed", status.message[-2000:] or "deployment failed")


def _reconcile_adapter(platform: Platform, view: DeploymentView) -> None:
    """A LoRA deployment follows its host: its adapter is linked where the host's engine looks
    (loaded on its first request), it runs while the host runs and fails when the host does."""
    if view.state == "stopping":
        _set_state(platform, view.id, "stopped")
        return
    with platform.db.session() as session:
        host_state, host_error = session.execute(
            select(Deployment.state, Deployment.error).where(Deployment.id == view.host_deployment_id)
        ).one()
    if host_state in ("failed", "stopped", "stopping"):
        _set_state(
            platform,
            view.id,
            "failed",
            f"its host deployment is {host_state}" + (f": {host_error}" if host_error else ""),
        )
    elif view.state == "deploying" and host_state == "running":
        try:
            folder = model_version_path(platform, view.project, view.model_version, adapter=True)
            link_adapter(adapter_root(platform.settings.home), adapter_id(view.model_version_id), folder)
        except Exception as exc:  # a missing adapter folder: this deployment fails, not the loop
            _set_state(platform, view.id, "failed", f"{type(exc).__name__}: {exc}")
            return
        _set_state(platform, view.id, "running")
    elif view.state == "running" and host_state == "deploying":  # the host is being redeployed
        _set_state(platform, view.id, "deploying")


def run_controller(platform: Platform, stop: threading.Event, interval: float = 2.0) -> None:
    """`reconcile` every `interval` seconds until `stop` is set (a thread of `deepext up`)."""
    import logging

    log = logging.getLogger("deepext.deployments")
    while not stop.wait(interval):
        try:
            reconcile(platform)
        except Exception:  # keep reconciling: one bad pass must not stop serving for everyone
            log.exception("deployment reconcile pass failed")
