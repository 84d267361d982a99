"""The schema comes from the migrations, on SQLite and PostgreSQL alike, and matches the ORM models."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from deepext.db import Database
from deepext.db.engine import alembic_config
from deepext.db.models import Base

CORE_TABLES = {
    "users",
    "projects",
    "casbin_rule",
    "api_tokens",
    "datasets",
    "dataset_versions",
    "dataset_version_labels",
    "base_models",
    "model_versions",
    "jobs",
    "job_events",
    "audit_log",
}


def test_upgrade_creates_the_core_tables(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    assert db.current_revision() is None
    db.upgrade()
    assert db.is_migrated()
    assert set(inspect(db.engine).get_table_names()) >= CORE_TABLES
    db.upgrade()  # a second run is a no-op
    db.dispose()


def test_models_match_the_migrations(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    db.upgrade()
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"ORM models and migrations differ; write a migration: {diff}"
    db.dispose()


def test_downgrade_to_base_and_back(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    db.upgrade()
    with db.engine.begin() as connection:
        config = alembic_config(empty_database_url)
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert not (CORE_TABLES & set(inspect(db.engine).get_table_names()))
    db.upgrade()
    assert set(inspect(db.engine).get_table_names()) >= CORE_TABLES
    db.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'x' / 'm.db'}")
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()
