"""The CLI's remote mode against a real HTTP server: log in, push a dataset, submit and cancel a
job as the logged-in user, be refused what the role does not allow, log out."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from deepext.cli.main import app as cli
from deepext.config import get_settings
from deepext.db.models import AuditEntry
from deepext.platform import Platform
from deepext.serve.app import create_app
from tests.helpers import uvicorn_in_thread
from tests.serve.conftest import PASSWORD, seed_users
from tests.serve.test_audit_api import ROWS

SCRIPT = Path(__file__).resolve().parent.parent / "train" / "scripts" / "raises.py"


@pytest.fixture
def server(platform: Platform) -> Iterator[str]:
    """The API under uvicorn in a thread, on a free port."""
    seed_users(platform)
    with uvicorn_in_thread(create_app(platform)) as url:
        yield url


def _cli(*args: str, stdin: str | None = None) -> tuple[int, str]:
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.output


def test_remote_mode_acts_through_the_api_as_the_logged_in_user(
    server: str, platform: Platform, tmp_path: Path
) -> None:
    code, output = _cli("login", server, "-u", "maintainer", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0, output
    assert "as maintainer" in output and "p (maintainer)" in " ".join(output.split())
    credentials = get_settings().home / "credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600

    source = tmp_path / "qa.jsonl"
    source.write_text(ROWS, encoding="utf-8")
    code, output = _cli("datasets", "push", str(source), "--name", "qa", "-p", "p")
    assert code == 0, output
    code, output = _cli("jobs", "submit", "custom", "--script", str(SCRIPT), "-p", "p")
    assert code == 0, output
    job_id = int(output.split()[1])
    code, output = _cli("jobs", "cancel", str(job_id), "-p", "p")
    assert (code, output.strip()) == (0, f"job {job_id} cancelled")
    with platform.db.session() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.actor == "maintainer")).all()
    assert [r.action for r in rows] == ["auth.login", "dataset.push", "job.submit", "job.cancel"]
    assert all(r.client_addr == "127.0.0.1" and r.request_id for r in rows)

    code, output = _cli("logout")
    assert (code, output.strip()) == (0, "logged out")
    assert not credentials.exists()
    code, _ = _cli("login", server, "-u", "viewer", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0
    code, output = _cli("jobs", "submit", "custom", "--script", str(SCRIPT), "-p", "p")
    assert code == 1
    assert "may not create jobs" in output and "HTTP 403" in output
    code, output = _cli("datasets", "push", str(source), "--name", "qa", "-p", "q")
    assert code == 1 and "project 'q' not found" in output
