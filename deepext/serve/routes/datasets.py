"""Datasets and their versions: list, inspect, preview, upload (streamed), split, label."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from deepext.datasets.readers import detect_source_format
from deepext.datasets.service import PushOutcome, VersionView
from deepext.errors import DatasetFormatError, InvalidInput, PayloadTooLarge
from deepext.projects import check_name
from deepext.serve.deps import Access, PlatformDep, allow

router = APIRouter(prefix="/projects/{project}/datasets", tags=["datasets"])
_UPLOAD_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class DatasetSummary(BaseModel):
    name: str
    versions: int
    latest: int | None


class Uploaded(BaseModel):
    created: bool = Field(description="False when this content was already stored: that version is returned.")
    version: VersionView


class SplitRequest(BaseModel):
    eval_ratio: float = Field(gt=0, lt=1)
    seed: int = 0


class SplitResult(BaseModel):
    train: VersionView
    eval: VersionView


class LabelChange(BaseModel):
    add: list[str] = []
    remove: list[str] = []


def _ref(name: str, selector: str) -> str:
    return f"{name}@{selector}"


@router.get("")
def datasets(
    project: str, access: Annotated[Access, allow("datasets", "read")], platform: PlatformDep
) -> list[DatasetSummary]:
    return [DatasetSummary(**row) for row in platform.datasets.list_datasets(access.project_name)]


@router.get("/{name}/versions")
def versions(
    project: str, name: str, access: Annotated[Access, allow("datasets", "read")], platform: PlatformDep
) -> list[VersionView]:
    return platform.datasets.versions(access.project_name, name)


@router.get("/{name}/versions/{selector}")
def version(
    project: str, name: str, selector: str, access: Annotated[Access, allow("datasets", "read")], platform: PlatformDep
) -> VersionView:
    """`selector` is a version number or a label (`3`, `train`)."""
    return platform.datasets.get(access.project_name, _ref(name, selector))


@router.get("/{name}/versions/{selector}/preview")
def preview(
    project: str,
    name: str,
    selector: str,
    access: Annotated[Access, allow("datasets", "read")],
    platform: PlatformDep,
    rows: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> list[dict[str, Any]]:
    found = platform.datasets.get(access.project_name, _ref(name, selector))
    return platform.datasets.preview(found, rows)


@router.post(
    "/{name}/versions",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload(
    project: str,
    name: str,
    request: Request,
    response: Response,
    access: Annotated[Access, allow("datasets", "write")],
    platform: PlatformDep,
    filename: Annotated[str, Query(min_length=1, max_length=255, description="data.jsonl, .csv or .parquet")],
    labels: Annotated[list[str] | None, Query()] = None,
    description: Annotated[str, Query(max_length=10_000)] = "",
) -> Uploaded:
    """A new version from the request body (the file's bytes, streamed to disk, never held in
    memory); 200 with the existing version when this content was pushed before."""
    check_name(name, "dataset")
    suffix = Path(filename).suffix.lower()
    if suffix not in _UPLOAD_SUFFIXES or Path(filename).name != filename:
        raise InvalidInput(
            f"filename {filename!r}: a file name ending in {', '.join(_UPLOAD_SUFFIXES)}", field="filename"
        )
    limit = platform.settings.api_max_upload_mb * 1024 * 1024
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"upload of {int(declared)} bytes exceeds the limit of {limit} bytes")
    with tempfile.TemporaryDirectory(prefix="deepext-upload-") as folder:
        path = Path(folder) / filename
        size = 0
        with path.open("wb") as sink:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"upload exceeds the limit of {limit} bytes")
                sink.write(chunk)
        if size == 0:
            raise InvalidInput("the request body is empty: send the file's bytes", field="body")
        try:
            detect_source_format(path)
            outcome: PushOutcome = await run_in_threadpool(
                platform.datasets.push,
                access.project_name,
                name,
                path,
                labels=labels or [],
                actor=access.actor,
                description=description,
            )
        except DatasetFormatError as exc:  # name the upload, not the server's temporary path
            raise DatasetFormatError(filename, exc.row, exc.reason) from None
    if not outcome.created:
        response.status_code = 200
    return Uploaded(created=outcome.created, version=outcome.version)


@router.post("/{name}/versions/{selector}/split", status_code=201)
def split(
    project: str,
    name: str,
    selector: str,
    body: SplitRequest,
    access: Annotated[Access, allow("datasets", "write")],
    platform: PlatformDep,
) -> SplitResult:
    """Two child versions labelled `train` and `eval` (the same ratio and seed give the same split)."""
    train, held_out = platform.datasets.split(
        access.project_name, _ref(name, selector), eval_ratio=body.eval_ratio, seed=body.seed, actor=access.actor
    )
    return SplitResult(train=train.version, eval=held_out.version)


@router.patch("/{name}/versions/{selector}/labels")
def label(
    project: str,
    name: str,
    selector: str,
    body: LabelChange,
    access: Annotated[Access, allow("datasets", "write")],
    platform: PlatformDep,
) -> VersionView:
    return platform.datasets.label(
        access.project_name, _ref(name, selector), add=body.add, remove=body.remove, actor=access.actor
    )
