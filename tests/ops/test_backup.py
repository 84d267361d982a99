"""`deepext backup` / `deepext restore`: back up, wipe every store, restore, and the platform serves the
same projects, dataset rows, model versions, audit log, vectors and provider key - on SQLite and on
PostgreSQL. A damaged archive is refused naming the damaged part, and nothing is changed."""

from __future__ import annotations

import json
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from deepext import audit
from deepext.config import Settings
from deepext.db.models import AuditEntry
from deepext.errors import InvalidInput
from deepext.knowledge.lancedb_store import LanceDBStore
from deepext.knowledge.store import Chunk
from deepext.models.registry import register_base_model
from deepext.models.versions import list_model_versions, register_model_version
from deepext.ops.backup import MANIFEST, backup, restore
from deepext.platform import Platform
from deepext.projects import create_project, list_projects
from deepext.serve.providers.registry import ProviderCreate, create_provider, resolve_provider_model
from deepext.serve.providers.secrets import KEY_FILE
from tests.ops import run_cli


def fill(platform: Platform, project: str, tmp_path: Path) -> None:
    """A bit of everything a backup must carry: a second project, a dataset, a base model and a model
    version (files in the artifact store), a provider with an encrypted key, and vectors."""
    with platform.db.session() as session:
        create_project(session, name="team-b", description="second", actor="test")
    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(30)))
    platform.datasets.push(project, "qa", rows, actor="test", labels=["golden"])
    register_base_model(platform, "hub-base", "org/base-model", actor="test")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    register_model_version(
        platform, project=project, name="m", folder=model, base_model="hub-base", code_version="test", actor="test"
    )
    spec = ProviderCreate(
        name="local", kind="openai", base_url="http://127.0.0.1:9/v1", api_key=SecretStr("sk-test-0123456789abcdef")
    )
    create_provider(platform, project=project, spec=spec, actor="test")
    vectors = LanceDBStore(platform.settings.resolved_vector_store_uri)
    vectors.create_collection("kb_1", 4)
    chunk = Chunk("c1", [0.1, 0.2, 0.3, 0.4], "Paris is the capital.", 1, "notes.md", 0, project)
    vectors.upsert("kb_1", [chunk])


def state(platform: Platform, project: str) -> dict[str, Any]:
    """What users would see, read through the platform's own functions."""
    version = platform.datasets.get(project, "qa@golden")
    (model,) = list_model_versions(platform, project)
    model_folder = platform.artifacts.local_dir(model.artifact_key)
    with platform.db.session() as session:
        projects = [(p.name, p.description) for p in list_projects(session)]
        audit_rows = session.scalar(select(func.count()).select_from(AuditEntry))
        last_hash = session.scalar(select(AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1))
        broken_at = audit.verify_chain(session)
    target, _ = resolve_provider_model(platform, f"{project}/local/any-model")
    return {
        "projects": projects,
        "dataset": (version.ref, version.row_count, platform.datasets.read_table(version).to_pylist()),
        "model": (model.name, model.version, model.artifact_key),
        "model_weights": (model_folder / "model" / "model.safetensors").read_bytes(),
        "audit": (audit_rows, last_hash, broken_at),
        "vectors": LanceDBStore(platform.settings.resolved_vector_store_uri).count("kb_1"),
        "provider_key": target.api_key,
    }


def wipe(settings: Settings) -> None:
    """Lose everything: the database (SQLite file, or the PostgreSQL database dropped and made again
    empty) and the home folder with the artifact store, the vectors and the key file."""
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{url.database}{suffix}").unlink(missing_ok=True)
    else:
        import psycopg

        admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE "{url.database}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{url.database}"')
    shutil.rmtree(settings.home)


def flip_byte(archive: Path, member_prefix: str) -> str:
    """Damage one byte in the middle of the first member whose name starts with `member_prefix`."""
    with tarfile.open(archive) as tar:
        info = next(m for m in tar.getmembers() if m.name.startswith(member_prefix))
    with open(archive, "r+b") as handle:
        handle.seek(info.offset_data + info.size // 2)
        byte = handle.read(1)[0]
        handle.seek(-1, 1)
        handle.write(bytes([byte ^ 0x5A]))
    return info.name


def files_below(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_backup_wipe_restore_serves_the_same_platform(
    platform: Platform, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(platform, project, tmp_path)
    before = state(platform, project)
    assert before["audit"][2] is None and before["vectors"] == 1
    settings = platform.settings
    key_file = (settings.home / KEY_FILE).read_bytes()
    (tmp_path / "backups").mkdir()

    without_key = backup(settings, tmp_path / "backups" / "no-key.tar")
    assert any("provider API key(s) are encrypted with" in note for note in without_key.notes)
    assert "secret_key" not in without_key.manifest["parts"]

    code, output = run_cli(
        settings, monkeypatch, "backup", str(tmp_path / "backups" / "full.tar"), "--include-secret-key"
    )
    assert code == 0, output
    assert f"wrote {tmp_path / 'backups' / 'full.tar'}" in output
    with tarfile.open(tmp_path / "backups" / "full.tar") as tar:
        manifest = json.load(tar.extractfile(MANIFEST))  # type: ignore[arg-type]
    assert manifest["database"]["revision"] == platform.db.head_revision()
    assert manifest["database"]["counts"]["projects"] == 2
    assert manifest["database"]["counts"]["model_versions"] == 1
    assert set(manifest["parts"]) == {"database", "artifacts", "vectors", "secret_key"}
    assert all(len(part["sha256"]) == 64 and part["files"] for part in manifest["parts"].values())

    platform.close()
    wipe(settings)
    code, output = run_cli(settings, monkeypatch, "restore", str(tmp_path / "backups" / "full.tar"))
    assert code == 0, output
    assert "2 projects, 1 datasets, 1 model versions" in output
    assert oct(stat.S_IMODE((settings.home / KEY_FILE).stat().st_mode)) == oct(0o600)
    assert (settings.home / KEY_FILE).read_bytes() == key_file

    reopened = Platform.open(settings)
    try:
        assert state(reopened, project) == before
    finally:
        reopened.close()


@pytest.mark.parametrize("part", ["database", "artifacts", "manifest"])
def test_a_damaged_archive_is_refused_naming_the_part_and_nothing_changes(
    platform: Platform, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part: str
) -> None:
    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(10)))
    platform.datasets.push(project, "qa", rows, actor="test")
    archive = tmp_path / "backup.tar"
    backup(platform.settings, archive)
    with platform.db.session() as session:  # a change after the backup, which a restore would undo
        create_project(session, name="after-backup", actor="test")
    damaged = flip_byte(archive, MANIFEST if part == "manifest" else f"{part}/")
    artifacts = Path(platform.settings.resolved_artifact_uri)
    artifacts_before = files_below(artifacts)

    with pytest.raises(InvalidInput, match=f"part {part}: ") as refused:
        restore(platform.settings, archive, force=True)
    assert str(archive) in str(refused.value) and damaged in str(refused.value)
    code, output = run_cli(platform.settings, monkeypatch, "restore", str(archive), "--force")
    assert code == 2 and f"part {part}: " in output and "nothing was changed" in output

    assert files_below(artifacts) == artifacts_before
    with platform.db.session() as session:
        assert "after-backup" in [p.name for p in list_projects(session)]
    assert platform.datasets.preview(platform.datasets.get(project, "qa"), rows=1) == [{"prompt": "q0"}]


def test_restore_refuses_stores_that_hold_data_unless_forced(
    platform: Platform, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "backup.tar"
    backup(platform.settings, archive)
    with platform.db.session() as session:
        create_project(session, name="after-backup", actor="test")

    code, output = run_cli(platform.settings, monkeypatch, "restore", str(archive))
    assert code == 1
    assert "restore refused: the database" in output and "pass --force" in output
    with platform.db.session() as session:
        assert "after-backup" in [p.name for p in list_projects(session)]

    platform.close()  # a restore replaces the database under the platform: stop it first
    code, output = run_cli(platform.settings, monkeypatch, "restore", str(archive), "--force")
    assert code == 0, output
    reopened = Platform.open(platform.settings)
    try:
        with reopened.db.session() as session:
            assert [p.name for p in list_projects(session)] == [project]
            assert audit.verify_chain(session) is None
    finally:
        reopened.close()


def test_a_gzip_backup_round_trips(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'meta.db'}")
    platform = Platform.open(settings)
    with platform.db.session() as session:
        create_project(session, name="zipped", actor="test")
    platform.close()
    archive = tmp_path / "backup.tar.gz"
    backup(settings, archive)
    assert archive.read_bytes()[:2] == b"\x1f\x8b"
    wipe(settings)
    report = restore(settings, archive)
    assert report.counts["projects"] == 1 and report.revision == report.head
    reopened = Platform.open(settings)
    with reopened.db.session() as session:
        assert [p.name for p in list_projects(session)] == ["zipped"]
    reopened.close()


def test_bad_paths_and_files_get_a_message_naming_them(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'meta.db'}")
    Platform.open(settings).close()

    code, output = run_cli(settings, monkeypatch, "backup", str(tmp_path / "backup.zip"))
    assert code == 2 and f"{tmp_path / 'backup.zip'}: a backup is written as NAME.tar" in output
    code, output = run_cli(settings, monkeypatch, "backup", str(tmp_path / "nowhere" / "b.tar"))
    assert code == 1 and f"{tmp_path / 'nowhere'}: no such folder" in output
    (tmp_path / "taken.tar").write_text("")
    code, output = run_cli(settings, monkeypatch, "backup", str(tmp_path / "taken.tar"))
    assert code == 1 and f"{tmp_path / 'taken.tar'} already exists" in output

    text = tmp_path / "notes.tar"
    text.write_text("not an archive\n" * 100)
    code, output = run_cli(settings, monkeypatch, "restore", str(text))
    assert code == 2 and f"{text}: not a deepext backup" in output
    foreign = tmp_path / "foreign.tar"
    with tarfile.open(foreign, "w") as tar:
        tar.add(text, arcname="notes.txt")
    code, output = run_cli(settings, monkeypatch, "restore", str(foreign))
    assert code == 2 and f"{foreign}: part manifest: no manifest.json" in output
    code, output = run_cli(settings, monkeypatch, "restore", str(tmp_path / "absent.tar"))
    assert code == 1 and f"{tmp_path / 'absent.tar'}: no such backup file" in output

    archive = tmp_path / "sqlite.tar"
    backup(settings, archive)
    on_postgres = Settings(home=tmp_path / "pg-home", database_url=postgres_url)
    code, output = run_cli(on_postgres, monkeypatch, "restore", str(archive))
    assert code == 2 and f"{archive} holds a sqlite database" in output


def test_a_remote_artifact_store_is_backed_up_through_its_filesystem(tmp_path: Path) -> None:
    import uuid

    import fsspec

    bucket = f"/deepext-backup-{uuid.uuid4().hex[:8]}"  # fsspec's in-process memory filesystem
    settings = Settings(
        home=tmp_path / "home", database_url=f"sqlite:///{tmp_path / 'meta.db'}", artifact_uri=f"memory://{bucket}"
    )
    platform = Platform.open(settings)
    with platform.db.session() as session:
        create_project(session, name="demo", actor="test")
    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(5)))
    platform.datasets.push("demo", "qa", rows, actor="test")
    platform.close()
    archive = tmp_path / "backup.tar"
    report = backup(settings, archive)
    assert len(report.manifest["parts"]["artifacts"]["files"]) == 1
    try:
        fsspec.filesystem("memory").rm(bucket, recursive=True)
        wipe(settings)
        restore(settings, archive)
        reopened = Platform.open(settings)
        rows_back = reopened.datasets.preview(reopened.datasets.get("demo", "qa"), rows=5)
        reopened.close()
        assert rows_back == [{"prompt": f"q{i}"} for i in range(5)]
    finally:
        fsspec.filesystem("memory").rm(bucket, recursive=True)
