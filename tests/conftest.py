"""Shared fixtures: a throwaway metadata store on SQLite and on the real local PostgreSQL (each test
in its own database, created and dropped here), an artifact store, and an opened platform.

PostgreSQL comes from DEEPEXT_TEST_POSTGRES_URL (default: the project machines' server at
127.0.0.1:5432, trust auth). If it cannot be reached the PostgreSQL tests fail - they are not
skipped - unless a developer sets DEEPEXT_TEST_SKIP_POSTGRES=1 on a machine without one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepext.config import Settings
from deepext.platform import Platform
from deepext.projects import create_project
from deepext.storage import ArtifactStore

POSTGRES_URL = os.environ.get("DEEPEXT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the developer's ~/.deepext or their DEEPEXT_* settings."""
    for name in list(os.environ):
        if name.startswith("DEEPEXT_") and not name.startswith("DEEPEXT_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DEEPEXT_HOME", str(tmp_path / "home"))
    from deepext.config import get_settings

    get_settings.cache_clear()


def _admin_connection():  # type: ignore[no-untyped-def]
    import psycopg

    url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _skip_without_postgres() -> None:
    if os.environ.get("DEEPEXT_TEST_SKIP_POSTGRES") == "1":
        pytest.skip("DEEPEXT_TEST_SKIP_POSTGRES=1: this developer has no PostgreSQL server")


@contextlib.contextmanager
def _postgres_database(template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (a copy of `template`, or empty) for one test, dropped afterwards."""
    name = f"deepext_test_{uuid.uuid4().hex[:12]}"
    with _admin_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with _admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    _skip_without_postgres()
    with _postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def migrated_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Per backend, one store migrated to the newest schema for the whole session (made on first use):
    a test's store is a copy of it, which takes a few milliseconds where running the migrations takes
    a few hundred."""
    made: dict[str, str] = {}
    yield made
    if "postgresql" in made:
        with _admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{made["postgresql"]}" WITH (FORCE)')


def _migrated(backend: str, made: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's migrated store of `backend`: a SQLite file path or a PostgreSQL database name."""
    from deepext.db.engine import Database

    if backend not in made:
        if backend == "sqlite":
            made[backend] = str(tmp_path_factory.mktemp("migrated") / "metadata.db")
            url = f"sqlite:///{made[backend]}"
        else:
            made[backend] = f"deepext_template_{uuid.uuid4().hex[:12]}"
            with _admin_connection() as admin:
                admin.execute(f'CREATE DATABASE "{made[backend]}"')
            url = f"{POSTGRES_URL.rsplit('/', 1)[0]}/{made[backend]}"
        db = Database(url)
        db.upgrade()
        db.dispose()  # a PostgreSQL template must have no open connection when it is copied
    return made[backend]


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    migrated_stores: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The same test once on SQLite (the embedded default) and once on PostgreSQL, each on a store of
    its own already at the newest schema (`empty_database_url` for one without any)."""
    if request.param == "sqlite":
        copy = tmp_path / "metadata.db"
        shutil.copyfile(_migrated("sqlite", migrated_stores, tmp_path_factory), copy)
        yield f"sqlite:///{copy}"
        return
    _skip_without_postgres()
    with _postgres_database(template=_migrated("postgresql", migrated_stores, tmp_path_factory)) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store without any schema, on SQLite and on PostgreSQL (for the migrations' own tests)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metadata.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(home=tmp_path / "home", database_url=database_url)


@pytest.fixture
def platform(settings: Settings) -> Iterator[Platform]:
    opened = Platform.open(settings)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def project(platform: Platform) -> str:
    with platform.db.session() as session:
        create_project(session, name="demo", actor="test")
    return "demo"


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture(scope="session")
def ray_session() -> Iterator[str]:
    """One local Ray for the tests that need it; workers can import the `tests` package. Its
    dashboard serves the Ray Jobs API, whose URL the fixture yields."""
    import ray

    from deepext.cluster import serve_environment

    root = Path(__file__).resolve().parent.parent
    with serve_environment("127.0.0.1"):  # Ray Serve as `deepext up` runs it: HAProxy in front
        context = ray.init(
            num_cpus=2,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=0,
            runtime_env={"env_vars": {"PYTHONPATH": str(root), "RAY_TRAIN_V2_ENABLED": "1"}},
            log_to_driver=False,
        )
    try:
        yield f"http://{context.dashboard_url}"
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny random Qwen2-shaped model for the session (GRPO, SFT and job tests)."""
    from deepext.models.tiny import TinyModelSpec, create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("models") / "tiny", TinyModelSpec(seed=3))
