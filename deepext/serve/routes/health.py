"""Liveness: answers without a token (load balancers, `deepext up`'s readiness wait)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from deepext.serve.deps import PlatformDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    schema_revision: str | None


@router.get("/health")
def health(platform: PlatformDep) -> Health:
    return Health(status="ok", schema_revision=platform.db.current_revision())
