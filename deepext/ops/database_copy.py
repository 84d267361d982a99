"""Copies of the metadata database for `deepext backup` / `deepext restore`, one per back end.

SQLite: a consistent copy with sqlite3's online backup API (the platform may keep writing), restored
by replacing the file in one step. PostgreSQL: `pg_dump -Fc` in a snapshot this module exports, so the
row counts recorded beside the dump describe exactly the dump; restored by `pg_restore` in one
transaction. Passwords reach pg_dump and pg_restore through the environment, never a command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, func, inspect, select, table, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from deepext.errors import DeepextError, InvalidInput, NotFound, Unavailable


@dataclass(frozen=True)
class Snapshot:
    file: Path
    backend: str
    revision: str | None
    counts: dict[str, int]
    encrypted_provider_keys: int


def snapshot_database(url: URL, scratch: Path) -> Snapshot:
    """A copy of the database in `scratch`, with its schema revision and row counts."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _snapshot_sqlite(sqlite_path(url), scratch)
    if backend == "postgresql":
        return _snapshot_postgres(url, scratch)
    raise InvalidInput(f"cannot back up a {backend} database: deepext backs up SQLite and PostgreSQL")


def sqlite_path(url: URL) -> Path:
    """The file of a SQLite URL; an in-memory database is refused."""
    if not url.database or url.database == ":memory:":
        raise InvalidInput("an in-memory SQLite database has nothing to back up or restore into")
    return Path(url.database)


def _snapshot_sqlite(source_path: Path, scratch: Path) -> Snapshot:
    """A consistent copy even while the platform writes (sqlite3's online backup API)."""
    if not source_path.is_file():
        raise NotFound(f"no SQLite database at {source_path}: nothing to back up")
    copy = scratch / "deepext.sqlite"
    with (
        contextlib.closing(sqlite3.connect(source_path, timeout=30)) as source,
        contextlib.closing(sqlite3.connect(copy)) as target,
    ):
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        revision, counts, keys = _sqlite_inventory(target)
    return Snapshot(copy, "sqlite", revision, counts, keys)


def _sqlite_inventory(connection: sqlite3.Connection) -> tuple[str | None, dict[str, int], int]:
    """(schema revision, rows per table, provider API keys stored) of a SQLite database."""
    names = [
        row[0]
        for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    quoted = {name: '"' + name.replace('"', '""') + '"' for name in names}
    counts = {name: int(connection.execute(f"SELECT count(*) FROM {quoted[name]}").fetchone()[0]) for name in names}
    revision = None
    if "alembic_version" in counts:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
    keys = 0
    if "providers" in counts:
        keys = int(
            connection.execute("SELECT count(*) FROM providers WHERE api_key_encrypted IS NOT NULL").fetchone()[0]
        )
    counts.pop("alembic_version", None)
    return revision, counts, keys


def inventory(connection: Connection) -> tuple[str | None, dict[str, int], int]:
    """(schema revision, rows per table, provider API keys stored), through SQLAlchemy in the caller's
    transaction (any back end)."""
    from alembic.runtime.migration import MigrationContext

    names = sorted(name for name in inspect(connection).get_table_names() if name != "alembic_version")
    counts = {name: int(connection.scalar(select(func.count()).select_from(table(name))) or 0) for name in names}
    keys = 0
    if "providers" in counts:
        keys = int(connection.scalar(text("SELECT count(*) FROM providers WHERE api_key_encrypted IS NOT NULL")) or 0)
    return MigrationContext.configure(connection).get_current_revision(), counts, keys


def _snapshot_postgres(url: URL, scratch: Path) -> Snapshot:
    """`pg_dump -Fc` in a snapshot this function exports, so the counts describe exactly the dump."""
    from deepext.db.engine import create_database_engine

    pg_dump = _pg_tool("pg_dump")
    dump = scratch / "deepext.pgdump"
    conninfo, env = _libpq(url)
    engine = create_database_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
            snapshot_id = connection.scalar(text("SELECT pg_export_snapshot()"))
            revision, counts, keys = inventory(connection)
            command = [
                pg_dump,
                "--format=custom",
                f"--snapshot={snapshot_id}",
                f"--file={dump}",
                f"--dbname={conninfo}",
            ]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    except SQLAlchemyError as exc:
        raise Unavailable(f"cannot read {shown(url)}: {_cause(exc)}") from exc
    finally:
        engine.dispose()
    if done.returncode != 0:
        raise DeepextError(f"pg_dump of {shown(url)} failed: {_last_lines(done.stderr)}")
    return Snapshot(dump, "postgresql", revision, counts, keys)


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise Unavailable(f"{name} is not installed: install the PostgreSQL client tools (the server's version)")
    return found


def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A libpq URI for pg_dump/pg_restore, with the password in the environment, not on a command line."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return url.set(drivername="postgresql", password=None).render_as_string(hide_password=False), env


def shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _cause(exc: SQLAlchemyError) -> str:
    cause = getattr(exc, "orig", None) or exc
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def _last_lines(stderr: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in stderr.strip().splitlines()[-lines:]) or "no message"


def database_tables(url: URL) -> list[str]:
    """The tables the database at `url` holds (a missing SQLite file holds none)."""
    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if not path.is_file():
            return []
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
            rows = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
            return [row[0] for row in rows]
    from deepext.db.engine import create_database_engine

    engine = create_database_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as connection:
            return list(inspect(connection).get_table_names())
    except SQLAlchemyError as exc:
        raise Unavailable(
            f"cannot connect to {shown(url)} to restore into it: {_cause(exc)}. Create the (empty) database first"
        ) from exc
    finally:
        engine.dispose()


def restore_sqlite(target: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Written beside the target, then moved over it in one step; the old database's WAL files go
    first so they cannot be replayed into the restored one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.restoring-{uuid.uuid4().hex[:8]}")
    try:
        with open(staged, "wb") as sink:
            write(sink)
        for suffix in ("-wal", "-shm", "-journal"):
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)


def restore_postgres(url: URL, scratch_parent: Path, write: Callable[[IO[bytes]], None], *, clean: bool) -> None:
    """`pg_restore` in one transaction: the database ends up fully restored or as it was."""
    pg_restore = _pg_tool("pg_restore")
    conninfo, env = _libpq(url)
    with tempfile.TemporaryDirectory(prefix=".deepext-restore-", dir=scratch_parent) as scratch:
        dump = Path(scratch) / "deepext.pgdump"
        with open(dump, "wb") as sink:
            write(sink)
        command = [pg_restore, "--single-transaction", "--exit-on-error", "--no-owner", "--no-privileges"]
        if clean:
            command += ["--clean", "--if-exists"]
        done = subprocess.run(
            [*command, f"--dbname={conninfo}", str(dump)], env=env, capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        raise DeepextError(f"pg_restore into {shown(url)} failed, nothing was loaded: {_last_lines(done.stderr)}")
