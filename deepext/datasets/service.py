"""Versioned datasets: push, append, split, label, preview and read, backed by the metadata store
(what a version is) and the artifact store (its rows, as Parquet parts).

A version is immutable and named `dataset@N`; `dataset@label` picks the newest version carrying a
label, `dataset` alone the newest version. The same content pushed again returns the version that
already holds it. These functions are what the CLI and the REST API call.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from deepext import audit
from deepext.datasets.ingest import IngestResult, Part, ingest_file, write_part
from deepext.datasets.readers import Progress, _no_progress, detect_source_format, scan_source
from deepext.db import Database
from deepext.db.models import Dataset, DatasetVersion, DatasetVersionLabel
from deepext.errors import InvalidInput, NotFound
from deepext.projects import check_name, get_project
from deepext.storage import ArtifactStore

_REF = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]*)(?:@(?P<selector>[A-Za-z0-9_.-]+))?$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class VersionView:
    """A dataset version as callers see it (no live database objects leak out)."""

    id: int
    project: str
    dataset: str
    version: int
    parent_version: int | None
    derivation: str
    content_hash: str
    source_hash: str | None
    source_name: str | None
    source_format: str
    format: str
    row_count: int
    size_bytes: int
    schema: dict[str, str]
    stats: dict[str, Any]
    parts: list[dict[str, Any]]
    labels: list[str]
    created_at: str

    @property
    def ref(self) -> str:
        return f"{self.project}/{self.dataset}@{self.version}"


@dataclass(frozen=True)
class PushOutcome:
    version: VersionView
    created: bool  # False when the content was already stored as this version


def _view(row: DatasetVersion, project: str, dataset: str, parent_version: int | None) -> VersionView:
    return VersionView(
        id=row.id,
        project=project,
        dataset=dataset,
        version=row.version,
        parent_version=parent_version,
        derivation=row.derivation,
        content_hash=row.content_hash,
        source_hash=row.source_hash,
        source_name=row.source_name,
        source_format=row.source_format,
        format=row.format,
        row_count=row.row_count,
        size_bytes=row.size_bytes,
        schema=row.schema,
        stats=row.stats,
        parts=list(row.parts),
        labels=[label.label for label in row.labels],
        created_at=row.created_at.isoformat(),
    )


def content_hash_of(parts: Sequence[dict[str, Any]]) -> str:
    """A version's identity: the ordered keys of its Parquet parts."""
    return hashlib.sha256(json.dumps([p["key"] for p in parts]).encode()).hexdigest()


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`name`, `name@3` or `name@label` -> (name, selector)."""
    match = _REF.match(ref)
    if not match:
        raise InvalidInput(f"dataset reference {ref!r}: expected NAME, NAME@VERSION or NAME@LABEL", field="dataset")
    return match["name"], match["selector"]


class DatasetStore:
    """Dataset operations over one metadata store and one artifact store."""

    def __init__(self, db: Database, artifacts: ArtifactStore) -> None:
        self.db = db
        self.artifacts = artifacts

    # ---- reading
    def list_datasets(self, project: str) -> list[dict[str, Any]]:
        with self.db.session() as session:
            project_row = get_project(session, project)
            rows = session.execute(
                select(Dataset.name, func.count(DatasetVersion.id), func.max(DatasetVersion.version))
                .outerjoin(DatasetVersion, DatasetVersion.dataset_id == Dataset.id)
                .where(Dataset.project_id == project_row.id)
                .group_by(Dataset.id, Dataset.name)
                .order_by(Dataset.name)
            ).all()
            return [{"name": name, "versions": count, "latest": latest} for name, count, latest in rows]

    def versions(self, project: str, name: str) -> list[VersionView]:
        with self.db.session() as session:
            dataset = self._dataset(session, project, name)
            return [self._view(session, row) for row in dataset.versions]

    def get(self, project: str, ref: str) -> VersionView:
        """The version `ref` names (`name`, `name@N`, `name@label`)."""
        name, selector = parse_ref(ref)
        with self.db.session() as session:
            return self._view(session, self._resolve(session, project, name, selector))

    def preview(self, version: VersionView, rows: int = 10) -> list[dict[str, Any]]:
        """The first `rows` rows, read from the first parts only."""
        if rows < 1:
            raise InvalidInput("preview needs at least 1 row", field="rows")
        out: list[dict[str, Any]] = []
        for batch in self.iter_batches(version, batch_rows=rows):
            out.extend(batch.to_pylist()[: rows - len(out)])
            if len(out) >= rows:
                break
        return out

    def iter_batches(self, version: VersionView, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        for part in version.parts:
            with self.artifacts.open(part["key"]) as blob:
                yield from pq.ParquetFile(blob).iter_batches(batch_size=batch_rows)

    def read_table(self, version: VersionView) -> pa.Table:
        tables = []
        for part in version.parts:
            with self.artifacts.open(part["key"]) as blob:
                tables.append(pq.read_table(blob))
        return pa.concat_tables(tables)

    # ---- writing
    def push(
        self,
        project: str,
        name: str,
        path: Path | str,
        *,
        labels: Sequence[str] = (),
        actor: str,
        description: str = "",
        progress: Progress = _no_progress,
    ) -> PushOutcome:
        """A new root version from a file or datasets folder, or the existing one with that content."""
        path = Path(path)
        check_name(name, "dataset")
        _check_labels(labels)
        if not path.exists():
            raise NotFound(f"{path}: no such file or folder")
        source_format = detect_source_format(path)
        with self.db.session() as session:
            get_project(session, project)
        scan = scan_source(path, source_format, progress)
        with self.db.session() as session:
            existing = self._by_source(session, project, name, scan.sha256)
            if existing is not None:
                return PushOutcome(self._view(session, existing), created=False)
        result = ingest_file(self.artifacts, path, source_format, progress=progress)
        return self._record(
            project,
            name,
            result,
            parts=[result.part],
            parent_id=None,
            derivation="push",
            source_hash=scan.sha256,
            source_name=path.name,
            source_format=source_format,
            labels=labels,
            actor=actor,
            description=description,
        )

    def append(
        self,
        project: str,
        ref: str,
        path: Path | str,
        *,
        labels: Sequence[str] = (),
        actor: str,
        progress: Progress = _no_progress,
    ) -> PushOutcome:
        """A child version of `ref` holding its rows plus the rows of `path` (old rows not copied)."""
        path = Path(path)
        _check_labels(labels)
        parent = self.get(project, ref)
        if not path.exists():
            raise NotFound(f"{path}: no such file or folder")
        source_format = detect_source_format(path)
        scan = scan_source(path, source_format, progress)
        result = ingest_file(
            self.artifacts,
            path,
            source_format,
            progress=progress,
            expected_format=parent.format,
            expected_schema=parent.schema,
        )
        return self._record(
            project,
            parent.dataset,
            result,
            parts=[*(Part(**p) for p in parent.parts), result.part],
            parent_id=parent.id,
            derivation="append",
            source_hash=scan.sha256,
            source_name=path.name,
            source_format=source_format,
            labels=labels,
            actor=actor,
            base_stats=parent.stats,
        )

    def split(
        self,
        project: str,
        ref: str,
        *,
        eval_ratio: float,
        seed: int = 0,
        actor: str,
    ) -> tuple[PushOutcome, PushOutcome]:
        """Two child versions, labelled `train` and `eval`, from a seeded random split of the rows.

        The same version, ratio and seed always give the same split (and return the same versions).
        """
        if not 0.0 < eval_ratio < 1.0:
            raise InvalidInput(f"eval_ratio must be between 0 and 1, got {eval_ratio}", field="eval_ratio")
        parent = self.get(project, ref)
        eval_rows = round(parent.row_count * eval_ratio)
        if eval_rows == 0 or eval_rows == parent.row_count:
            raise InvalidInput(
                f"eval_ratio {eval_ratio} of {parent.row_count} rows leaves an empty side", field="eval_ratio"
            )
        in_eval = np.zeros(parent.row_count, dtype=bool)
        in_eval[np.random.default_rng(seed).permutation(parent.row_count)[:eval_rows]] = True
        masks = {"train": ~in_eval, "eval": in_eval}
        outcomes: list[PushOutcome] = []
        for side, mask in masks.items():
            result = write_part(self.artifacts, self._masked(parent, mask), source=f"{parent.ref} ({side} split)")
            outcomes.append(
                self._record(
                    project,
                    parent.dataset,
                    result,
                    parts=[result.part],
                    parent_id=parent.id,
                    derivation="split",
                    source_hash=None,
                    source_name=f"{side} split {eval_ratio}/{seed}",
                    source_format="parquet",
                    labels=[side],
                    actor=actor,
                    audited=side == "eval",
                    audit_detail={
                        "from": parent.ref,
                        "train": outcomes[0].version.version if outcomes else None,
                        "eval_ratio": eval_ratio,
                        "seed": seed,
                    },
                )
            )
        return outcomes[0], outcomes[1]

    def label(
        self, project: str, ref: str, *, add: Sequence[str] = (), remove: Sequence[str] = (), actor: str
    ) -> VersionView:
        _check_labels([*add, *remove])
        name, selector = parse_ref(ref)
        with self.db.session() as session:
            row = self._resolve(session, project, name, selector)
            have = {label.label for label in row.labels}
            for label in add:
                if label not in have:
                    row.labels.append(DatasetVersionLabel(label=label))
            row.labels[:] = [label for label in row.labels if label.label not in set(remove)]
            session.flush()
            audit.record(
                session,
                actor=actor,
                action="dataset.label",
                resource=f"dataset:{project}/{name}@{row.version}",
                project_id=row.dataset.project_id,
                detail={"add": list(add), "remove": list(remove)},
            )
            return self._view(session, row)

    # ---- internals
    def _masked(self, version: VersionView, mask: np.ndarray) -> Iterator[pa.RecordBatch]:
        offset = 0
        for batch in self.iter_batches(version):
            yield batch.filter(pa.array(mask[offset : offset + batch.num_rows]))
            offset += batch.num_rows

    def _record(
        self,
        project: str,
        name: str,
        result: IngestResult,
        *,
        parts: list[Part],
        parent_id: int | None,
        derivation: str,
        source_hash: str | None,
        source_name: str | None,
        source_format: str,
        labels: Sequence[str],
        actor: str,
        description: str = "",
        base_stats: dict[str, Any] | None = None,
        audited: bool = True,
        audit_detail: dict[str, Any] | None = None,
    ) -> PushOutcome:
        """Store the version (or return the one with this content); `audited=False` leaves the audit
        row to the caller's last `_record` of the same operation (a split writes one row)."""
        part_dicts = [p.as_dict() for p in parts]
        content_hash = content_hash_of(part_dicts)
        stats = _merge_stats(base_stats, result.stats) if base_stats else result.stats
        for _attempt in range(3):  # a concurrent push may take the same version number first
            try:
                with self.db.session() as session:
                    dataset = self._dataset(session, project, name, create=True, description=description)
                    existing = session.scalar(
                        select(DatasetVersion).where(
                            DatasetVersion.dataset_id == dataset.id,
                            DatasetVersion.content_hash == content_hash,
                        )
                    )
                    if existing is not None:
                        return PushOutcome(self._view(session, existing), created=False)
                    number = (
                        session.scalar(
                            select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset.id)
                        )
                        or 0
                    ) + 1
                    row = DatasetVersion(
                        dataset_id=dataset.id,
                        version=number,
                        parent_id=parent_id,
                        derivation=derivation,
                        content_hash=content_hash,
                        source_hash=source_hash,
                        source_name=source_name,
                        source_format=source_format,
                        format=result.format,
                        row_count=sum(p.rows for p in parts),
                        size_bytes=sum(p.size for p in parts),
                        schema=result.schema,
                        stats=stats,
                        parts=part_dicts,
                        labels=[DatasetVersionLabel(label=label) for label in dict.fromkeys(labels)],
                    )
                    session.add(row)
                    session.flush()
                    if audited:
                        audit.record(
                            session,
                            actor=actor,
                            action=f"dataset.{derivation}",
                            resource=f"dataset:{project}/{name}@{number}",
                            project_id=dataset.project_id,
                            detail=audit_detail
                            or {"rows": row.row_count, "content_hash": content_hash, "source": source_name},
                        )
                    return PushOutcome(self._view(session, row), created=True)
            except IntegrityError:
                continue
        raise RuntimeError(f"could not record a version of {project}/{name} after 3 concurrent attempts")

    def _dataset(
        self, session: Session, project: str, name: str, *, create: bool = False, description: str = ""
    ) -> Dataset:
        project_row = get_project(session, project)
        dataset = session.scalar(select(Dataset).where(Dataset.project_id == project_row.id, Dataset.name == name))
        if dataset is None:
            if not create:
                raise NotFound(f"dataset {project}/{name} not found")
            dataset = Dataset(project_id=project_row.id, name=name, description=description)
            session.add(dataset)
            session.flush()
        return dataset

    def _resolve(self, session: Session, project: str, name: str, selector: str | None) -> DatasetVersion:
        dataset = self._dataset(session, project, name)
        query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id)
        if selector is None:
            row = session.scalar(query.order_by(DatasetVersion.version.desc()).limit(1))
        elif selector.isdigit():
            row = session.scalar(query.where(DatasetVersion.version == int(selector)))
        else:
            row = session.scalar(
                query.join(DatasetVersionLabel)
                .where(DatasetVersionLabel.label == selector)
                .order_by(DatasetVersion.version.desc())
                .limit(1)
            )
        if row is None:
            raise NotFound(f"dataset {project}/{name}" + (f"@{selector}" if selector else "") + " has no such version")
        return row

    def _by_source(self, session: Session, project: str, name: str, source_hash: str) -> DatasetVersion | None:
        project_row = get_project(session, project)
        return session.scalar(
            select(DatasetVersion)
            .join(Dataset)
            .where(
                Dataset.project_id == project_row.id,
                Dataset.name == name,
                DatasetVersion.source_hash == source_hash,
                DatasetVersion.derivation == "push",
            )
        )

    def _view(self, session: Session, row: DatasetVersion) -> VersionView:
        parent_version = session.get(DatasetVersion, row.parent_id).version if row.parent_id else None  # type: ignore[union-attr]
        project_name = row.dataset.project.name
        return _view(row, project_name, row.dataset.name, parent_version)


def _check_labels(labels: Sequence[str]) -> None:
    for label in labels:
        if not _LABEL.match(label) or label.isdigit():
            raise InvalidInput(f"label {label!r}: 1-64 letters, digits, '.', '-', '_', not only digits", field="labels")


def _merge_stats(base: dict[str, Any], added: dict[str, Any]) -> dict[str, Any]:
    """Column stats of parent rows + appended rows, without reading the parent's rows again."""
    merged: dict[str, Any] = {}
    for column, new in added.items():
        old = base.get(column)
        if not old or old.get("measure") != new.get("measure") or new.get("measure") is None:
            merged[column] = new
            continue
        rows = old["rows"] + new["rows"]
        nulls = old["nulls"] + new["nulls"]
        present_old, present_new = old["rows"] - old["nulls"], new["rows"] - new["nulls"]
        total = (old["mean"] or 0) * present_old + (new["mean"] or 0) * present_new
        lows = [v for v in (old["min"], new["min"]) if v is not None]
        highs = [v for v in (old["max"], new["max"]) if v is not None]
        merged[column] = {
            "measure": new["measure"],
            "rows": rows,
            "nulls": nulls,
            "min": min(lows) if lows else None,
            "max": max(highs) if highs else None,
            "mean": round(total / (rows - nulls), 4) if rows - nulls else None,
        }
    return merged
