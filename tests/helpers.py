"""Small helpers several test modules share."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deepext.config import get_settings
from deepext.platform import Platform


def invoke_cli(platform: Platform, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """Run `deepext ARGS` in this process against `platform`'s stores; returns (exit code, output)."""
    from deepext.cli.main import app

    monkeypatch.setenv("DEEPEXT_HOME", str(platform.settings.home))
    monkeypatch.setenv("DEEPEXT_DATABASE_URL", platform.settings.database_url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output
