"""A project's usage of models through the /v1 gateway: requests, errors, tokens and latency,
grouped by model, provider, user and/or day over a time range."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from deepext.serve.deps import Access, PlatformDep, allow
from deepext.serve.usage import Grouping, UsageReport, usage_report

router = APIRouter(prefix="/projects/{project}/usage", tags=["usage"])


@router.get("")
def usage(
    project: str,
    access: Annotated[Access, allow("usage", "read")],
    platform: PlatformDep,
    group_by: Annotated[list[Grouping], Query(max_length=4, description="model, provider, user, day")] = [],  # noqa: B006
    since: Annotated[dt.datetime | None, Query(description="from (default: 30 days before `until`)")] = None,
    until: Annotated[dt.datetime | None, Query(description="until, excluded (default: now)")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> UsageReport:
    """One row per group (ordered by the groups); without `group_by`, one row of totals. Times
    without a zone are UTC; days are UTC days."""
    return usage_report(platform, access.project_name, group_by=group_by, since=since, until=until, limit=limit)
