"""A project's landing page in numbers: counts, the last 7 days of jobs, the cluster's use now and,
for admins, the latest audit events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter

from deepext.dashboard import Dashboard, build_dashboard
from deepext.serve.deps import Access, PlatformDep, allow

router = APIRouter(prefix="/projects/{project}/dashboard", tags=["projects"])


@router.get("")
def dashboard(project: str, access: Annotated[Access, allow("project", "read")], platform: PlatformDep) -> Dashboard:
    return build_dashboard(platform, access.project_name, admin=access.principal.is_admin)
