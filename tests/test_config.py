"""Settings: environment variables, config files, and the embedded defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepext.config import Settings
from deepext.errors import InvalidInput


def test_defaults_live_under_the_home_folder(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'h' / 'deepext.db'}"
    assert settings.resolved_artifact_uri == str(tmp_path / "h" / "artifacts")
    assert settings.ray_address is None


def test_default_home_is_in_the_user_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPEXT_HOME")
    assert Settings().home == (Path.home() / ".deepext").resolve()


def test_environment_variables_set_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPEXT_DATABASE_URL", "postgresql+psycopg://u@db/x")
    monkeypatch.setenv("DEEPEXT_RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("DEEPEXT_RAY_NUM_CPUS", "4")
    settings = Settings()
    assert settings.resolved_database_url == "postgresql+psycopg://u@db/x"
    assert settings.ray_address == "ray://head:10001"
    assert settings.ray_num_cpus == 4


def test_config_file_in_home_is_read_and_environment_wins(tmp_path: Path, monkeypatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('artifact_uri = "/srv/artifacts"\nray_num_cpus = 3\n')
    monkeypatch.setenv("DEEPEXT_RAY_NUM_CPUS", "5")
    settings = Settings()
    assert settings.artifact_uri == "/srv/artifacts"
    assert settings.ray_num_cpus == 5


def test_yaml_config_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "deepext.yaml"
    config.write_text("database_url: sqlite:////tmp/x.db\nair_gapped: true\n")
    monkeypatch.setenv("DEEPEXT_CONFIG", str(config))
    settings = Settings()
    assert settings.air_gapped is True
    assert settings.database_url == "sqlite:////tmp/x.db"


def test_bad_config_file_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("ray_num_cpus = = 3\n")
    monkeypatch.setenv("DEEPEXT_CONFIG", str(config))
    with pytest.raises(InvalidInput, match=r"broken\.toml"):
        Settings()


def test_missing_config_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPEXT_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(InvalidInput, match=r"nope\.toml"):
        Settings()


def test_unknown_and_invalid_fields_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    config = tmp_path / "c.toml"
    config.write_text("no_such_setting = 1\n")
    monkeypatch.setenv("DEEPEXT_CONFIG", str(config))
    with pytest.raises(ValidationError, match="no_such_setting"):
        Settings()
    monkeypatch.delenv("DEEPEXT_CONFIG")
    monkeypatch.setenv("DEEPEXT_RAY_NUM_CPUS", "0")
    with pytest.raises(ValidationError, match="ray_num_cpus"):
        Settings()
