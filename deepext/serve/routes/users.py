"""Accounts (admins only): list, create, deactivate, make admin, reset a password."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, Field

from deepext.auth import rbac
from deepext.auth.users import create_user, list_users, update_user
from deepext.db.models import User
from deepext.serve.deps import Access, PlatformDep, allow

router = APIRouter(prefix="/users", tags=["users"])


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    email: str | None = Field(None, max_length=255)
    display_name: str | None = Field(None, max_length=255)
    admin: bool = False


class UserUpdate(BaseModel):
    active: bool | None = None
    admin: bool | None = None
    password: str | None = Field(None, min_length=1, max_length=1024)


class UserPublic(BaseModel):
    username: str
    email: str | None
    display_name: str | None
    admin: bool
    active: bool
    created_at: dt.datetime


def _public(session, user: User) -> UserPublic:
    return UserPublic(
        username=user.username,
        email=user.email,
        display_name=user.display_name,
        admin=rbac.is_admin(session, user.id),
        active=user.is_active,
        created_at=user.created_at,
    )


@router.get("")
def users(access: Annotated[Access, allow("users", "read")], platform: PlatformDep) -> list[UserPublic]:
    with platform.db.session() as session:
        return [_public(session, user) for user in list_users(session)]


@router.post("", status_code=201)
def add_user(
    body: UserCreate, access: Annotated[Access, allow("users", "manage")], platform: PlatformDep
) -> UserPublic:
    with platform.db.session() as session:
        user = create_user(session, actor=access.actor, **body.model_dump())
        return _public(session, user)


@router.patch("/{username}")
def change_user(
    username: str, body: UserUpdate, access: Annotated[Access, allow("users", "manage")], platform: PlatformDep
) -> UserPublic:
    with platform.db.session() as session:
        user = update_user(session, username, actor=access.actor, **body.model_dump())
        return _public(session, user)
