"""Tests of `deepext doctor`, `deepext backup` and `deepext restore`."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from deepext.config import Settings, get_settings


def run_cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """`deepext ARGS` in this process against the stores `settings` name, without opening a platform
    first (doctor and restore must work on stores that are broken or empty). Returns (exit code,
    output with its line wrapping undone)."""
    from deepext.cli.main import app

    monkeypatch.setenv("DEEPEXT_HOME", str(settings.home))
    monkeypatch.setenv("DEEPEXT_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("DEEPEXT_ARTIFACT_URI", settings.resolved_artifact_uri)
    monkeypatch.setenv("DEEPEXT_AIR_GAPPED", "1" if settings.air_gapped else "0")
    get_settings.cache_clear()
    environment = dict(os.environ)  # the command may set the air gap's variables, for its process only
    try:
        result = CliRunner().invoke(app, list(args))
    finally:
        os.environ.clear()
        os.environ.update(environment)
        get_settings.cache_clear()
    return result.exit_code, " ".join(result.output.split())
