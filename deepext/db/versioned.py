"""Queries of the tables that keep immutable, numbered versions of a named thing in a project
(`eval_suites`, `training_profiles`: columns project_id, name, version): the newest version of a
name, and the listing of every name's newest version or of one name's every version."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session


def newest_version(session: Session, model: Any, project_id: int, name: str) -> Any | None:
    return session.scalar(
        select(model).where(model.project_id == project_id, model.name == name).order_by(model.version.desc()).limit(1)
    )


def version_listing(model: Any, project_id: int, name: str | None = None) -> Select[Any]:
    """Every version of `name`, or (no name) the newest version of each name; by name, then version."""
    query = select(model).where(model.project_id == project_id)
    if name is not None:
        query = query.where(model.name == name)
    else:
        newest = (
            select(model.name, func.max(model.version).label("version"))
            .where(model.project_id == project_id)
            .group_by(model.name)
            .subquery()
        )
        query = query.join(newest, (newest.c.name == model.name) & (newest.c.version == model.version))
    return query.order_by(model.name, model.version)
