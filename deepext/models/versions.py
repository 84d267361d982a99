"""Model versions: the immutable trained models of a project, with their lineage, stage, tags and usage.

A version is named `NAME@N` inside its project; `NAME` alone is the newest version, `NAME@production`
(or any stage) the newest version in that stage, `NAME@TAG` the newest version carrying a tag. Each
version records what it came from: its base model, the version it was trained on top of (`parent`),
the dataset version, the job, a hash of the training config and the code version. Its files are one
folder in the artifact store holding `model/` (a Hugging Face model folder, what serving loads) and,
for a LoRA version, `adapter/`. Only the stage and the tags change after registration; the serving
layer bumps the usage counters.

These functions are what the CLI, the REST API and training jobs call; they return frozen views,
never live ORM rows.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from deepext import audit
from deepext.db.models import Dataset, DatasetVersion, Job, ModelVersion, PretrainedModel, Project, utcnow
from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.models.registry import BaseModelView, base_model_path, get_base_model
from deepext.projects import check_name, get_project
from deepext.storage import MANIFEST_KIND, ArtifactStore

if TYPE_CHECKING:
    from deepext.platform import Platform

STAGES = ("candidate", "production", "archived")
KINDS = ("full", "lora")
_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]{0,63})(?:@(?P<selector>[A-Za-z0-9][A-Za-z0-9_.-]{0,63}))?$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_REGISTER_ATTEMPTS = 5  # concurrent registrations of one name may take the same number first


@dataclass(frozen=True)
class ModelVersionView:
    """A model version as callers see it (no live database objects leak out)."""

    id: int
    project: str
    name: str
    version: int
    ref: str  # NAME@VERSION
    base_model: str
    parent: str | None  # NAME@VERSION of the version it was trained on top of
    dataset_version: str | None  # DATASET@N it was trained on (PROJECT/DATASET@N from another project)
    job_id: int | None
    kind: str  # full | lora
    artifact_key: str  # folder holding model/ and, for lora, adapter/
    config_hash: str | None
    code_version: str | None
    metrics: dict[str, Any]
    stage: str
    tags: list[str]
    usage_requests: int
    usage_tokens: int
    last_used_at: str | None
    created_at: str


@dataclass(frozen=True)
class ResolvedModel:
    """A training job's model reference made concrete: a local folder and where it comes from."""

    path: Path
    base_model: str
    parent: str | None  # NAME@VERSION when training on top of a model version


# ---- views
_Parent = aliased(ModelVersion)
_DatasetProject = aliased(Project)


def _view_query() -> Select[ModelVersion, str, str, str, int, str, str, int]:
    """Versions with the names their lineage columns point at, in one query."""
    return (
        select(
            ModelVersion,
            Project.name,
            PretrainedModel.name,
            _Parent.name,
            _Parent.version,
            _DatasetProject.name,
            Dataset.name,
            DatasetVersion.version,
        )
        .join(Project, Project.id == ModelVersion.project_id)
        .join(PretrainedModel, PretrainedModel.id == ModelVersion.base_model_id)
        .outerjoin(_Parent, _Parent.id == ModelVersion.parent_version_id)
        .outerjoin(DatasetVersion, DatasetVersion.id == ModelVersion.dataset_version_id)
        .outerjoin(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .outerjoin(_DatasetProject, _DatasetProject.id == Dataset.project_id)
    )


def _to_view(result: Any) -> ModelVersionView:
    row, project, base, parent_name, parent_version, dataset_project, dataset, dataset_version = result
    dataset_owner = "" if dataset_project == project else f"{dataset_project}/"
    return ModelVersionView(
        id=row.id,
        project=project,
        name=row.name,
        version=row.version,
        ref=f"{row.name}@{row.version}",
        base_model=base,
        parent=f"{parent_name}@{parent_version}" if parent_name is not None else None,
        dataset_version=f"{dataset_owner}{dataset}@{dataset_version}" if dataset is not None else None,
        job_id=row.job_id,
        kind=row.kind,
        artifact_key=row.artifact_key,
        config_hash=row.config_hash,
        code_version=row.code_version,
        metrics=dict(row.metrics or {}),
        stage=row.stage,
        tags=list(row.tags or []),
        usage_requests=int(row.usage_requests or 0),
        usage_tokens=int(row.usage_tokens or 0),
        last_used_at=_utc(row.last_used_at).isoformat() if row.last_used_at else None,
        created_at=_utc(row.created_at).isoformat(),
    )


def _view_of(session: Session, version_id: int) -> ModelVersionView:
    session.flush()
    return _to_view(session.execute(_view_query().where(ModelVersion.id == version_id)).one())


def _utc(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)  # SQLite returns naive UTC times


# ---- references
def parse_ref(ref: str) -> tuple[str, str | None]:
    """`name`, `name@3`, `name@production` or `name@tag` -> (name, selector)."""
    match = _REF.match(ref)
    if not match:
        raise InvalidInput(
            f"model reference {ref!r}: expected NAME, NAME@VERSION, NAME@STAGE or NAME@TAG", field="model"
        )
    return match["name"], match["selector"]


def _resolve(session: Session, project: Project, ref: str) -> ModelVersion:
    name, selector = parse_ref(ref)
    query = select(ModelVersion).where(ModelVersion.project_id == project.id, ModelVersion.name == name)
    newest = query.order_by(ModelVersion.version.desc())
    if selector is None:
        row = session.scalar(newest.limit(1))
    elif selector.isdigit():
        row = session.scalar(query.where(ModelVersion.version == int(selector)))
    elif selector in STAGES:
        row = session.scalar(newest.where(ModelVersion.stage == selector).limit(1))
    else:  # a tag: tags are a JSON list, so filter here (a name has few versions)
        row = next((r for r in session.scalars(newest) if selector in (r.tags or [])), None)
    if row is not None:
        return row
    versions = list(session.scalars(query.with_only_columns(ModelVersion.version)))
    if not versions:
        raise NotFound(f"model {project.name}/{name} not found; see `deepext models list -p {project.name}`")
    selector = selector or ""  # a name with versions always has a newest one
    if selector.isdigit():
        raise NotFound(
            f"model {project.name}/{name}@{selector} not found; it has versions {min(versions)}-{max(versions)}"
        )
    if selector in STAGES:
        raise NotFound(f"model {project.name}/{name} has no version in stage {selector!r}")
    raise NotFound(f"model {project.name}/{name} has no version tagged {selector!r} (and {selector!r} is no stage)")


# ---- reading
def get_model_version(platform: Platform, project: str, ref: str) -> ModelVersionView:
    """The version `ref` names: `NAME@N`, `NAME` (newest), `NAME@STAGE` or `NAME@TAG` (newest in it)."""
    with platform.db.session() as session:
        return _view_of(session, _resolve(session, get_project(session, project), ref).id)


def list_model_versions(
    platform: Platform, project: str, name: str | None = None, stage: str | None = None
) -> list[ModelVersionView]:
    """The project's versions by name and number, optionally of one name and/or in one stage."""
    if stage is not None:
        _check_stage(stage)
    with platform.db.session() as session:
        query = _view_query().where(ModelVersion.project_id == get_project(session, project).id)
        if name is not None:
            query = query.where(ModelVersion.name == name)
        if stage is not None:
            query = query.where(ModelVersion.stage == stage)
        rows = session.execute(query.order_by(ModelVersion.name, ModelVersion.version)).all()
        return [_to_view(row) for row in rows]


def lineage(platform: Platform, project: str, ref: str) -> list[ModelVersionView | BaseModelView]:
    """The chain from `ref` through its parents, newest first; the last element is the base model."""
    chain: list[ModelVersionView | BaseModelView] = []
    with platform.db.session() as session:
        row: ModelVersion | None = _resolve(session, get_project(session, project), ref)
        seen: set[int] = set()
        base_name = ""
        while row is not None and row.id not in seen:  # parents are registered first, so no cycles
            seen.add(row.id)
            view = _view_of(session, row.id)
            chain.append(view)
            base_name = view.base_model
            row = session.get(ModelVersion, row.parent_version_id) if row.parent_version_id else None
    chain.append(get_base_model(platform, base_name))
    return chain


def model_version_path(platform: Platform, project: str, ref: str, *, adapter: bool = False) -> Path:
    """A local folder with the version's model (or, with `adapter=True`, its LoRA adapter), made once.

    This is what serving loads and what training on top of the version starts from.
    """
    version = get_model_version(platform, project, ref)
    folder = platform.artifacts.local_dir(version.artifact_key) / ("adapter" if adapter else "model")
    if not folder.is_dir():
        raise NotFound(f"model {project}/{version.ref} has no {'adapter' if adapter else 'model'} folder")
    return folder


# ---- registering
def config_hash_of(config: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a training config (sorted keys, no spaces)."""
    try:
        text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"config is not JSON-serializable: {exc}", field="config") from exc
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def default_code_version() -> str:
    """`deepext.__version__`, plus `+g<commit>` when deepext runs from a git checkout (best effort)."""
    import deepext

    root = Path(deepext.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return deepext.__version__
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return deepext.__version__
    commit = done.stdout.strip()
    return f"{deepext.__version__}+g{commit}" if done.returncode == 0 and commit else deepext.__version__


def register_model_version(
    platform: Platform,
    *,
    project: str,
    name: str,
    folder: Path,
    base_model: str,
    kind: str = "full",
    adapter_folder: Path | None = None,
    parent: str | None = None,
    dataset_version_id: int | None = None,
    job_id: int | None = None,
    config: dict[str, Any] | None = None,
    code_version: str | None = None,
    metrics: dict[str, Any] | None = None,
    actor: str,
) -> ModelVersionView:
    """Register `folder` (a Hugging Face model folder) as the next version of `name` in `project`.

    A `lora` version also stores its `adapter_folder` (with adapter_config.json); `folder` is then
    the merged model. Everything is checked before anything is stored: the folders, the base model,
    the parent (a version ref in the project, trained from the same base model), the dataset
    version and the job. The files go to the artifact store first, then the row and its audit entry
    are written in one transaction, so no row ever exists without its files.
    """
    check_name(name, "model")
    _check_kind(kind, adapter_folder)
    folder = _check_model_folder(Path(folder), field="folder")
    if adapter_folder is not None:
        adapter_folder = _check_adapter_folder(Path(adapter_folder))
    metrics = _check_metrics(metrics or {})
    config_hash = config_hash_of(config) if config is not None else None
    code_version = code_version or default_code_version()
    if len(code_version) > 64:
        raise InvalidInput(f"code_version {code_version!r} is longer than 64 characters", field="code_version")

    with platform.db.session() as session:
        project_row = get_project(session, project)
        base_row = session.scalar(select(PretrainedModel).where(PretrainedModel.name == base_model))
        if base_row is None:
            raise NotFound(f"base model {base_model!r} not found; see `deepext models list-base`")
        parent_id = None
        if parent is not None:
            parent_row = _resolve(session, project_row, parent)
            if parent_row.base_model_id != base_row.id:
                parent_base = session.get(PretrainedModel, parent_row.base_model_id)
                raise InvalidInput(
                    f"parent {parent_row.name}@{parent_row.version} descends from base model "
                    f"{parent_base.name if parent_base else '?'!r}, not {base_model!r}",
                    field="base_model",
                )
            parent_id = parent_row.id
        _check_dataset_version(session, dataset_version_id)
        _check_job(session, project_row, job_id)
        project_id, base_id = project_row.id, base_row.id

    key = _store_files(platform.artifacts, folder, adapter_folder)

    for _attempt in range(_REGISTER_ATTEMPTS):
        try:
            with platform.db.session() as session:
                number = (
                    session.scalar(
                        select(func.max(ModelVersion.version)).where(
                            ModelVersion.project_id == project_id, ModelVersion.name == name
                        )
                    )
                    or 0
                ) + 1
                row = ModelVersion(
                    project_id=project_id,
                    name=name,
                    version=number,
                    base_model_id=base_id,
                    parent_version_id=parent_id,
                    dataset_version_id=dataset_version_id,
                    job_id=job_id,
                    kind=kind,
                    artifact_key=key,
                    config_hash=config_hash,
                    code_version=code_version,
                    metrics=metrics,
                    stage="candidate",
                    tags=[],
                    usage_requests=0,
                    usage_tokens=0,
                )
                session.add(row)
                session.flush()
                audit.record(
                    session,
                    actor=actor,
                    action="model_version.register",
                    resource=f"model:{project}/{name}@{number}",
                    project_id=project_id,
                    detail={
                        "base_model": base_model,
                        "parent": parent,
                        "kind": kind,
                        "artifact_key": key,
                        "config_hash": config_hash,
                        "code_version": code_version,
                    },
                )
                return _view_of(session, row.id)
        except IntegrityError:
            continue
    raise Conflict(f"could not number a new version of {project}/{name}: too many concurrent registrations")


def _store_files(store: ArtifactStore, folder: Path, adapter_folder: Path | None) -> str:
    """One stored folder holding `model/` and, when given, `adapter/`; returns its key.

    The manifest is the one `put_dir` writes for such a folder, built from the two stored trees so
    no file is copied to lay the folder out first.
    """
    trees = {"model": store.put_dir(folder)}
    if adapter_folder is not None:
        trees["adapter"] = store.put_dir(adapter_folder)
    files = [
        {"path": f"{prefix}/{entry.path}", "key": entry.key, "size": entry.size}
        for prefix, tree_key in trees.items()
        for entry in store.tree(tree_key)
    ]
    files.sort(key=lambda file: PurePosixPath(str(file["path"])).parts)
    manifest = {"kind": MANIFEST_KIND, "files": files}
    return store.put_bytes(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())


# ---- stages, tags, usage
def set_stage(platform: Platform, project: str, ref: str, stage: str, *, actor: str) -> ModelVersionView:
    """Move a version to `stage`; promoting it to production archives the name's production version."""
    _check_stage(stage)
    with platform.db.session() as session:
        row = _resolve(session, get_project(session, project), ref)
        # Lock every version of the name, so two concurrent promotions leave one in production.
        siblings = list(
            session.scalars(
                select(ModelVersion)
                .where(ModelVersion.project_id == row.project_id, ModelVersion.name == row.name)
                .order_by(ModelVersion.version)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        )
        previous = row.stage
        if previous == stage:
            return _view_of(session, row.id)
        archived = []
        if stage == "production":
            for other in siblings:
                if other.id != row.id and other.stage == "production":
                    other.stage = "archived"
                    archived.append(f"{other.name}@{other.version}")
        row.stage = stage
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="model_version.stage",
            resource=f"model:{project}/{row.name}@{row.version}",
            project_id=row.project_id,
            detail={"from": previous, "to": stage, "archived": archived},
        )
        return _view_of(session, row.id)


def tag(
    platform: Platform,
    project: str,
    ref: str,
    add: Sequence[str] = (),
    remove: Sequence[str] = (),
    *,
    actor: str,
) -> ModelVersionView:
    """Add and remove tags of a version (`NAME@TAG` then finds it); the only other change a version takes."""
    _check_tags(add)
    with platform.db.session() as session:
        found = _resolve(session, get_project(session, project), ref)
        row = session.get(ModelVersion, found.id, with_for_update=True, populate_existing=True)
        if row is None:  # removed between the two reads: only a project deletion does that
            raise NotFound(f"model {project}/{ref} not found")
        before = list(row.tags or [])
        dropped = set(remove)
        after = [t for t in dict.fromkeys([*before, *add]) if t not in dropped]
        if after == before:
            return _view_of(session, row.id)
        row.tags = after  # a new list: JSON columns do not track in-place changes
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="model_version.tag",
            resource=f"model:{project}/{row.name}@{row.version}",
            project_id=row.project_id,
            detail={"add": list(add), "remove": list(remove)},
        )
        return _view_of(session, row.id)


def record_usage(platform: Platform, version_id: int, *, requests: int = 1, tokens: int = 0) -> None:
    """Add to a version's usage counters and stamp last_used_at, atomically in the database.

    One `UPDATE ... SET n = n + k`, so concurrent servers never lose an increment (no read first).
    """
    with platform.db.session() as session:
        add_usage(session, version_id, requests=requests, tokens=tokens)


def add_usage(session: Session, version_id: int, *, requests: int = 1, tokens: int = 0) -> None:
    """`record_usage` inside the caller's transaction."""
    if requests < 0 or tokens < 0:
        raise InvalidInput(f"usage increments must not be negative (requests={requests}, tokens={tokens})")
    result = cast(
        "CursorResult[Any]",
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == version_id)
            .values(
                usage_requests=ModelVersion.usage_requests + requests,
                usage_tokens=ModelVersion.usage_tokens + tokens,
                last_used_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        ),
    )
    if result.rowcount == 0:
        raise NotFound(f"model version id {version_id} not found")


# ---- what a training job trains from
def resolve_model_source(
    platform: Platform, project: str, ref_or_path: str | Path, *, actor: str = "system"
) -> ResolvedModel:
    """Turn a training config's model reference into a local folder and its lineage.

    - `NAME@N`, `NAME@production`, ...: a model version of the project; parent = its `NAME@N`.
    - a registered base model name: its stored folder; no parent. A bare `NAME` that is no base
      model is the newest version of that name.
    - a local folder (`/...`, `./...`, `~/...`, or an existing relative path): it must hold
      config.json; it is registered as a base model (named after the folder; the same bytes reuse
      their registration) so that every lineage ends at a base model.
    Anything else is NotFound naming the reference.
    """
    text = str(ref_or_path).strip()
    if isinstance(ref_or_path, Path) or text.startswith(("/", ".", "~")):
        return _resolve_folder(platform, Path(text).expanduser(), actor=actor)
    if _REF.match(text):
        if "@" not in text and _is_base_model(platform, text):
            return ResolvedModel(path=base_model_path(platform, text), base_model=text, parent=None)
        try:
            version = get_model_version(platform, project, text)
        except NotFound:
            if "@" in text:  # a version reference: its own message says what is missing
                raise
        else:
            return ResolvedModel(
                path=model_version_path(platform, project, version.ref),
                base_model=version.base_model,
                parent=version.ref,
            )
    if Path(text).exists():
        return _resolve_folder(platform, Path(text), actor=actor)
    raise NotFound(
        f"model {text!r}: not a model version of project {project!r}, a registered base model, or a local folder"
    )


def _is_base_model(platform: Platform, name: str) -> bool:
    with platform.db.session() as session:
        return session.scalar(select(PretrainedModel.id).where(PretrainedModel.name == name)) is not None


def _resolve_folder(platform: Platform, folder: Path, *, actor: str) -> ResolvedModel:
    from deepext.models.registry import _folder_row, _insert

    if not folder.exists():
        raise NotFound(f"{folder}: no such folder")
    _check_model_folder(folder, field="model.path")
    row = _folder_row(platform, _name_from_folder(folder), folder, None, _no_progress)
    with platform.db.session() as session:
        same = session.scalars(
            select(PretrainedModel.name)
            .where(PretrainedModel.artifact_key == row.artifact_key)
            .order_by((PretrainedModel.source == row.source).desc(), PretrainedModel.id)
        ).first()
    if same is not None:
        return ResolvedModel(path=base_model_path(platform, same), base_model=same, parent=None)
    stem = row.name

    def _same(existing: PretrainedModel) -> bool:
        return existing.artifact_key == row.artifact_key

    for attempt in range(1, 100):
        candidate = stem if attempt == 1 else f"{stem[: 64 - len(str(attempt)) - 1]}-{attempt}"
        fresh = PretrainedModel(
            name=candidate,
            source=row.source,
            artifact_key=row.artifact_key,
            architecture=row.architecture,
            parameters=row.parameters,
            license=row.license,
            provenance={**row.provenance, "registered_by": "resolve_model_source"},
        )
        try:
            model, _created = _insert(platform, fresh, action="base_model.register", actor=actor, same=_same)
        except Conflict:
            continue
        return ResolvedModel(path=base_model_path(platform, model.name), base_model=model.name, parent=None)
    raise Conflict(f"no free base model name for {folder} ({stem}, {stem}-2, ... are taken)")


def _name_from_folder(folder: Path) -> str:
    slug = re.sub(r"[^a-z0-9_-]+", "-", folder.resolve().name.lower()).strip("-_")[:64]
    return slug or "local-model"


def _no_progress(_message: str) -> None:
    pass


# ---- checks
def _check_model_folder(folder: Path, *, field: str) -> Path:
    if not (folder / "config.json").is_file():
        raise InvalidInput(f"{folder} is not a model folder (no config.json)", field=field)
    return folder


def _check_adapter_folder(folder: Path) -> Path:
    if not (folder / "adapter_config.json").is_file():
        raise InvalidInput(f"{folder} is not a LoRA adapter folder (no adapter_config.json)", field="adapter_folder")
    return folder


def _check_kind(kind: str, adapter_folder: Path | None) -> None:
    if kind not in KINDS:
        raise InvalidInput(f"model kind {kind!r}: expected one of {', '.join(KINDS)}", field="kind")
    if kind == "lora" and adapter_folder is None:
        raise InvalidInput("a lora version needs its adapter_folder (and folder, the merged model)", field="kind")
    if kind == "full" and adapter_folder is not None:
        raise InvalidInput("a full version has no adapter; register it with kind='lora'", field="kind")


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise InvalidInput(f"stage {stage!r}: expected one of {', '.join(STAGES)}", field="stage")


def _check_tags(tags: Sequence[str]) -> None:
    for name in tags:
        if not _TAG.match(name) or name.isdigit() or name in STAGES:
            raise InvalidInput(
                f"tag {name!r}: 1-64 letters, digits, '.', '-', '_'; not only digits and not a stage name",
                field="tags",
            )


def _check_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(metrics, dict) or not all(isinstance(k, str) for k in metrics):
        raise InvalidInput("metrics must be a dict with string keys", field="metrics")
    try:
        json.dumps(metrics, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"metrics are not JSON-serializable: {exc}", field="metrics") from exc
    return dict(metrics)


def _check_dataset_version(session: Session, version_id: int | None) -> None:
    """A job may train on another project's dataset, so any existing version will do."""
    if version_id is not None and session.get(DatasetVersion, version_id) is None:
        raise NotFound(f"dataset version id {version_id} not found")


def _check_job(session: Session, project: Project, job_id: int | None) -> None:
    if job_id is None:
        return
    job = session.get(Job, job_id)
    if job is None or job.project_id != project.id:
        raise NotFound(f"job {job_id} not found in project {project.name!r}")
