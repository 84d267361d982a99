"""Projects: the unit that owns datasets, models and jobs (and, with the API, access rights)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from deepext import audit
from deepext import request as current_request
from deepext.db.models import Project
from deepext.errors import Conflict, InvalidInput, NotFound

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_name(name: str, what: str) -> str:
    """Names become parts of references (`project/dataset@3`), so they are short slugs."""
    if not _NAME.match(name):
        raise InvalidInput(
            f"{what} name {name!r}: use 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit",
            field="name",
        )
    return name


def create_project(session: Session, *, name: str, description: str = "", actor: str) -> Project:
    check_name(name, "project")
    if session.scalar(select(Project).where(Project.name == name)) is not None:
        raise Conflict(f"project {name!r} already exists")
    project = Project(name=name, description=description)
    session.add(project)
    session.flush()
    audit.record(session, actor=actor, action="project.create", resource=f"project:{name}", project_id=project.id)
    return project


def get_project(session: Session, name: str) -> Project:
    """The project `name`. Inside an API request, a project the caller may not read is "not found"
    too - every domain lookup goes through here, so a reference to another project in a config or
    suite cannot reach it."""
    project = session.scalar(select(Project).where(Project.name == name))
    context = current_request.current()
    if project is not None and context is not None and context.readable_project_ids is not None:
        project = project if project.id in context.readable_project_ids else None
    if project is None:
        raise NotFound(f"project {name!r} not found; create it with `deepext projects create {name}`")
    return project


def ensure_project(session: Session, *, name: str, description: str = "", actor: str) -> Project:
    """The project `name`, created if missing (used to seed the demo project)."""
    existing = session.scalar(select(Project).where(Project.name == name))
    return existing or create_project(session, name=name, description=description, actor=actor)


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))
