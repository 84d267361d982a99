"""`deepext users`: accounts on the metadata store directly (the first admin comes from here, never
from a default password)."""

from __future__ import annotations

import sys

import typer

from deepext.cli.common import actor, open_platform, out, print_table, reports_errors
from deepext.errors import InvalidInput

users_app = typer.Typer(
    help="User accounts (on the metadata store; the API has the same under /users).", no_args_is_help=True
)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise InvalidInput("empty password", field="password")
    return password


@users_app.command("create-admin")
@reports_errors
def create_admin(
    username: str,
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    email: str = typer.Option(None, "--email"),
) -> None:
    """Create an administrator account (asks for the password twice)."""
    _create(username, password_stdin, email, admin=True)


@users_app.command("create")
@reports_errors
def create(
    username: str,
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
    email: str = typer.Option(None, "--email"),
) -> None:
    """Create a user account."""
    _create(username, password_stdin, email, admin=False)


def _create(username: str, password_stdin: bool, email: str | None, *, admin: bool) -> None:
    from deepext.auth.users import create_user

    password = _read_password(password_stdin)
    with open_platform().db.session() as session:
        user = create_user(session, username=username, password=password, email=email, admin=admin, actor=actor())
        out.print(f"created {'admin' if admin else 'user'} {user.username}")


@users_app.command("list")
@reports_errors
def list_() -> None:
    from deepext.auth import rbac
    from deepext.auth.users import list_users

    platform = open_platform()
    with platform.db.session() as session:
        rows = [
            [u.username, "yes" if rbac.is_admin(session, u.id) else "", "yes" if u.is_active else "no", u.email or ""]
            for u in list_users(session)
        ]
    print_table(["user", "admin", "active", "email"], rows)
