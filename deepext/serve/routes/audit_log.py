"""The audit log, for admins: filter, export (JSON lines or CSV, streamed), verify the chain."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from deepext import audit
from deepext.serve.deps import MAX_ID, Access, PlatformDep, allow

router = APIRouter(prefix="/audit", tags=["audit"])
_COLUMNS = [
    "id",
    "at",
    "actor",
    "token_id",
    "action",
    "resource",
    "project_id",
    "outcome",
    "client_addr",
    "request_id",
    "detail",
    "entry_hash",
]


class AuditRow(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    token_id: int | None
    action: str
    resource: str
    project_id: int | None
    outcome: str
    client_addr: str | None
    request_id: str | None
    detail: dict[str, Any]
    entry_hash: str


class ChainCheck(BaseModel):
    intact: bool
    first_bad_id: int | None


def _filter(
    actor: str | None,
    action: str | None,
    project_id: int | None,
    outcome: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> audit.AuditFilter:
    return audit.AuditFilter(
        actor=actor, action=action, project_id=project_id, outcome=outcome, since=since, until=until
    )


@router.get("")
def entries(
    access: Annotated[Access, allow("audit", "read")],
    platform: PlatformDep,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64, description="prefix, e.g. `dataset.`")] = None,
    project_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    outcome: Annotated[str | None, Query(max_length=16)] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID, description="page: rows older than this id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditRow]:
    """Newest first."""
    where = _filter(actor, action, project_id, outcome, since, until)
    with platform.db.session() as session:
        return [
            AuditRow(**audit.as_dict(e)) for e in audit.list_entries(session, where, limit=limit, before_id=before_id)
        ]


@router.get("/export", response_class=StreamingResponse)
def export(
    access: Annotated[Access, allow("audit", "read")],
    platform: PlatformDep,
    format: Literal["jsonl", "csv"] = "jsonl",
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    project_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    outcome: Annotated[str | None, Query(max_length=16)] = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> StreamingResponse:
    """Every matching row, oldest first, streamed."""
    where = _filter(actor, action, project_id, outcome, since, until)

    def lines() -> Iterator[str]:
        with platform.db.session() as session:
            if format == "csv":
                buffer = io.StringIO()
                writer = csv.DictWriter(buffer, fieldnames=_COLUMNS)
                writer.writeheader()
                for entry in audit.iter_entries(session, where):
                    writer.writerow({**audit.as_dict(entry), "detail": json.dumps(entry.detail, sort_keys=True)})
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
                yield buffer.getvalue()
            else:
                for entry in audit.iter_entries(session, where):
                    yield json.dumps(audit.as_dict(entry), sort_keys=True) + "\n"

    media = "text/csv" if format == "csv" else "application/x-ndjson"
    headers = {"Content-Disposition": f'attachment; filename="deepext-audit.{format}"'}
    return StreamingResponse(lines(), media_type=media, headers=headers)


@router.get("/verify")
def verify(access: Annotated[Access, allow("audit", "read")], platform: PlatformDep) -> ChainCheck:
    with platform.db.session() as session:
        bad = audit.verify_chain(session)
    return ChainCheck(intact=bad is None, first_bad_id=bad)
