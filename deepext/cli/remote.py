"""The CLI's remote mode: with `deepext login URL` done (or `DEEPEXT_API_URL` and `DEEPEXT_TOKEN`
set), the commands that CI and day-to-day work need - `datasets push`, `jobs submit/show/cancel/
retry` - go through the REST API as the logged-in user, with the API's access checks and audit
rows, instead of opening the metadata store directly.

The session is kept in `<home>/credentials.json`, readable only by its owner.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from deepext.cli.common import out, reports_errors
from deepext.client import DeepextClient
from deepext.config import get_settings


def _credentials_path() -> Path:
    return get_settings().home / "credentials.json"


def remote_client() -> DeepextClient | None:
    """A client for the API the user logged in to, or None for local mode."""
    url, token = os.environ.get("DEEPEXT_API_URL"), os.environ.get("DEEPEXT_TOKEN")
    if not url:
        path = _credentials_path()
        if not path.is_file():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        url, token = saved["url"], token or saved["token"]
    return DeepextClient(url, token=token)


@reports_errors
def login(
    url: str = typer.Argument(..., help="The platform, e.g. http://deepext.internal:8000"),
    username: str = typer.Option(..., "--username", "-u", prompt=True),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
) -> None:
    """Log in to a platform's API; later commands act through it as you (`deepext logout` ends it)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt("password", hide_input=True)
    client = DeepextClient(url)
    answer = client.login(username, password)
    path = _credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(json.dumps({"url": client.base_url, "token": answer.token}), encoding="utf-8")
    roles = ", ".join(f"{p.project} ({p.role})" for p in answer.user.projects) or "no projects yet"
    out.print(f"logged in to {client.base_url} as {username} until {answer.expires_at:%Y-%m-%d %H:%M} UTC: {roles}")


@reports_errors
def logout() -> None:
    """End the API session and forget it."""
    client = remote_client()
    path = _credentials_path()
    if client is not None and path.is_file():
        client.logout()
        path.unlink()
        out.print("logged out")
    else:
        out.print("not logged in")
