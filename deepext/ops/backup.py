"""`deepext backup` / `deepext restore`: a platform's state in one tar archive, and back.

The archive (`NAME.tar`, or `NAME.tar.gz` compressed) holds these parts, then `manifest.json`:

    database/deepext.sqlite     SQLite: a consistent copy made with sqlite3's backup API
    database/deepext.pgdump     PostgreSQL: `pg_dump -Fc`, taken in the snapshot the row counts come from
    artifacts/blobs/xx/KEY      every blob of the artifact store (local folder or pyarrow/fsspec URI)
    vectors/...                 the LanceDB folder (knowledge-base vectors); Weaviate is not included
    secret/secret.key           only with `include_secret_key`: the key provider API keys are encrypted with

The manifest records the deepext version, the schema revision, row counts per table, when it was
made, and every file's size and sha256 (and a sha256 per part); its own `checksum` covers the rest.
Plain tar is the default because the big parts are already compressed (Parquet, pg_dump's custom
format) or barely compress (model weights): gzip would cost CPU time for little gain.

Restore checks everything before it changes anything: the manifest's checksum, that this deepext
knows the schema revision, that the targets are empty (unless `force`), and every file's sha256.
Only then does it write: the SQLite file is replaced atomically, PostgreSQL is loaded by
`pg_restore --single-transaction`, blobs are added to the artifact store (never deleted: keys are
content hashes, so the result is a superset of the backup), the LanceDB folder is swapped in.

The database is copied first, so every blob and vector it refers to is in the later parts (blobs are
never deleted). Not included: Ray's state (running jobs, Serve replicas), caches, a Weaviate
server's data, settings and the config file.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

import pyarrow as pa
import pyarrow.fs as pafs
from sqlalchemy.engine import URL, make_url

import deepext
from deepext.config import Settings
from deepext.errors import Conflict, DeepextError, InvalidInput, NotFound
from deepext.ops.database_copy import (
    database_tables,
    inventory,
    restore_postgres,
    restore_sqlite,
    shown,
    snapshot_database,
    sqlite_path,
)

FORMAT = "deepext.backup/1"
MANIFEST = "manifest.json"
PREFIXES = {"database": "database/", "artifacts": "artifacts/blobs/", "vectors": "vectors/", "secret_key": "secret/"}
_BLOB = re.compile(r"^[0-9a-f]{2}/([0-9a-f]{64})$")
_CHUNK = 1 << 20
_MAX_MANIFEST_BYTES = 256 << 20
_READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)
_Copy = Callable[[tarfile.TarInfo, IO[bytes] | None], None]  # stream a member, checked, into a sink (or nowhere)


class Progress(Protocol):
    """Where long work reports how far it is: one phase after another, each over a number of bytes."""

    def phase(self, label: str, total_bytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


class NoProgress:
    def phase(self, label: str, total_bytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass


@dataclass(frozen=True)
class BackupReport:
    path: Path
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreReport:
    revision: str | None
    head: str | None
    counts: dict[str, int]
    parts: list[str]
    notes: list[str] = field(default_factory=list)


# ---- backup
@dataclass(frozen=True)
class _Source:
    part: str
    member: str
    size: int
    open: Callable[[], IO[bytes]]


def backup(
    settings: Settings, archive: Path | str, *, include_secret_key: bool = False, progress: Progress | None = None
) -> BackupReport:
    """Write the platform's database, artifact store and vector store to `archive` (a new file)."""
    from deepext.storage import ArtifactStore

    progress = progress or NoProgress()
    archive = Path(archive).expanduser()
    compress = _compressed(archive)
    if archive.exists():
        raise Conflict(f"{archive} already exists; give the backup a new file name")
    if not archive.parent.is_dir():
        raise NotFound(f"{archive.parent}: no such folder for the backup")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix=".deepext-backup-", dir=archive.parent) as scratch:
        progress.phase("copying the database", 0)
        snapshot = snapshot_database(make_url(settings.resolved_database_url), Path(scratch))
        sources = [_local_source("database", f"database/{snapshot.file.name}", snapshot.file)]
        store = ArtifactStore(settings.resolved_artifact_uri, cache_dir=settings.home / "cache")
        sources += _tree_sources(store.fs, f"{store.root}/blobs", "artifacts", keep=lambda rel: bool(_BLOB.match(rel)))
        parts = ["database", "artifacts"]
        if settings.vector_store == "lancedb":
            fs, root = _vector_filesystem(settings.resolved_vector_store_uri)
            sources += _tree_sources(fs, root, "vectors")
            parts.append("vectors")
        else:
            notes.append("vector_store = weaviate: its data is not in the backup (use Weaviate's backup module)")
        key_file, key_note = _secret_key_source(settings, include_secret_key, snapshot.encrypted_provider_keys)
        if key_file is not None:
            sources.append(_local_source("secret_key", "secret/secret.key", key_file))
            parts.append("secret_key")
        if key_note:
            notes.append(key_note)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "deepext_version": deepext.__version__,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "database": {
                "backend": snapshot.backend,
                "revision": snapshot.revision,
                "counts": snapshot.counts,
                "encrypted_provider_keys": snapshot.encrypted_provider_keys,
            },
            "sources": {
                "database": make_url(settings.resolved_database_url).render_as_string(hide_password=True),
                "artifacts": settings.resolved_artifact_uri,
                "vectors": settings.resolved_vector_store_uri if "vectors" in parts else None,
            },
        }
        _write_archive(archive, compress, parts, sources, manifest, progress)
    return BackupReport(archive, manifest, notes)


def _compressed(archive: Path) -> bool:
    """Whether the name asks for gzip (NAME.tar.gz, NAME.tgz) or plain tar (NAME.tar)."""
    name = archive.name
    if name.endswith((".tar.gz", ".tgz")):
        return True
    if name.endswith(".tar"):
        return False
    raise InvalidInput(f"{archive}: a backup is written as NAME.tar (or NAME.tar.gz, compressed)", field="path")


def _write_archive(
    archive: Path,
    compress: bool,
    parts: list[str],
    sources: list[_Source],
    manifest: dict[str, Any],
    progress: Progress,
) -> None:
    """Stream every source into a temporary archive, hashing as it goes, add the manifest last, and
    move the finished archive into place (a failed backup leaves no half-written file)."""
    partial = archive.with_name(f".{archive.name}.partial-{uuid.uuid4().hex[:8]}")
    files: dict[str, list[dict[str, Any]]] = {part: [] for part in parts}
    progress.phase("writing the archive", sum(source.size for source in sources))
    try:
        # gzip's fastest level: most bytes are model weights and Parquet, which barely compress
        with tarfile.open(partial, "w:gz", compresslevel=1) if compress else tarfile.open(partial, "w") as tar:
            for source in sources:
                files[source.part].append(_add_source(tar, source, progress))
            manifest["parts"] = {part: _part_entry(entries) for part, entries in files.items()}
            manifest["checksum"] = _checksum(manifest)
            body = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = _tar_info(MANIFEST, len(body), 0o644)
            tar.addfile(info, _BytesReader(body))
        os.replace(partial, archive)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _add_source(tar: tarfile.TarFile, source: _Source, progress: Progress) -> dict[str, Any]:
    info = _tar_info(source.member, source.size, 0o600 if source.part == "secret_key" else 0o644)
    with source.open() as raw:
        reader = _HashingReader(raw, progress.advance)
        try:
            tar.addfile(info, reader)
        except OSError as exc:  # tarfile: "unexpected end of data" when a file shrank while being copied
            raise DeepextError(f"{source.member} changed while it was being backed up ({exc}); try again") from exc
    return {"path": source.member, "size": source.size, "sha256": reader.hexdigest()}


def _part_entry(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"files": entries, "bytes": sum(e["size"] for e in entries), "sha256": _canonical_sha256(entries)}


def _tar_info(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = int(time.time())
    return info


def _local_source(part: str, member: str, path: Path) -> _Source:
    return _Source(part, member, path.stat().st_size, lambda: open(path, "rb"))


def _tree_sources(
    fs: pafs.FileSystem, root: str, part: str, keep: Callable[[str], bool] = lambda _rel: True
) -> list[_Source]:
    """Every file below `root` on `fs` (local or remote), as archive members under the part's prefix."""
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    sources = []
    for info in sorted(fs.get_file_info(selector), key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        rel = PurePosixPath(info.path).relative_to(root).as_posix()
        if keep(rel):
            sources.append(
                _Source(part, PREFIXES[part] + rel, int(info.size), functools.partial(fs.open_input_stream, info.path))
            )
    return sources


def _vector_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The LanceDB location as a filesystem and root: a local folder, or a URI pyarrow opens."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), Path(uri).expanduser().resolve().as_posix()
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(
            f"the vector store at {uri} is not a folder or a URI pyarrow opens ({exc}); back it up with its own tools"
        ) from exc
    return fs, root.rstrip("/")


def _secret_key_source(settings: Settings, include: bool, encrypted_keys: int) -> tuple[Path | None, str | None]:
    """The key file to include, if asked for, and a note when provider keys need a key kept elsewhere."""
    from deepext.serve.providers.secrets import KEY_FILE

    path = settings.home / KEY_FILE
    if include and settings.secret_key is not None:
        return None, "the secret key comes from DEEPEXT_SECRET_KEY, so it is not in the backup: keep that value safe"
    if include:
        return (path, None) if path.is_file() else (None, f"there is no {path} to include")
    if encrypted_keys:
        where = "DEEPEXT_SECRET_KEY" if settings.secret_key is not None else str(path)
        return None, (
            f"{encrypted_keys} provider API key(s) are encrypted with {where}, which is not in the backup: keep a "
            "copy of it (or back up with --include-secret-key)"
        )
    return None, None


class _HashingReader:
    """A file's `read` that also hashes the bytes and reports them to the progress bar."""

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self._on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        self._on_read(len(data))
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def read(self, size: int = -1) -> bytes:
        size = len(self._data) if size < 0 else size
        chunk, self._data = self._data[:size], self._data[size:]
        return bytes(chunk)


def _canonical_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _checksum(manifest: dict[str, Any]) -> str:
    return _canonical_sha256({k: v for k, v in manifest.items() if k != "checksum"})


# ---- restore
@dataclass(frozen=True)
class _Expected:
    part: str
    size: int
    sha256: str


def restore(
    settings: Settings, archive: Path | str, *, force: bool = False, progress: Progress | None = None
) -> RestoreReport:
    """Restore `archive` into the stores `settings` name. Refuses stores that hold data unless `force`;
    changes nothing unless the manifest and every file's sha256 check out."""
    progress = progress or NoProgress()
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise NotFound(f"{archive}: no such backup file")
    with _open_archive(archive) as tar:
        members = _index(tar, archive)
        manifest = _read_manifest(tar, members, archive)
        expected = _expected_files(manifest, archive)
        _check_members(members, expected, archive)
        url = make_url(settings.resolved_database_url)
        _check_compatible(manifest, url, archive)
        tables = database_tables(url)
        occupied = _occupied(settings, url, manifest, tables)
        if occupied and not force:
            raise Conflict(
                "restore refused: " + "; ".join(occupied) + " already hold data. Restore into empty stores, or "
                "pass --force to replace them"
            )
        files = [members[name] for name in expected]
        files.sort(key=lambda info: info.offset)
        progress.phase("verifying the archive", sum(info.size for info in files))
        for info in files:
            _read_member(tar, info, expected[info.name], archive, progress.advance, sink=None, restoring=False)
        progress.phase("restoring", sum(info.size for info in files))
        notes = _apply(settings, url, tar, files, expected, manifest, archive, progress, clean=bool(tables))
    return _report(settings, url, manifest, notes)


def _open_archive(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except _READ_ERRORS as exc:
        raise InvalidInput(f"{archive}: not a deepext backup (not a tar archive: {exc})", field="path") from exc


def _index(tar: tarfile.TarFile, archive: Path) -> dict[str, tarfile.TarInfo]:
    try:
        infos = tar.getmembers()
    except _READ_ERRORS as exc:
        raise InvalidInput(f"{archive}: the archive is damaged ({exc}); nothing was changed", field="path") from exc
    members: dict[str, tarfile.TarInfo] = {}
    for info in infos:
        if info.name in members:
            raise InvalidInput(f"{archive}: {info.name} appears twice; not an archive deepext wrote", field="path")
        members[info.name] = info
    return members


def _read_manifest(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], archive: Path) -> dict[str, Any]:
    def damaged(reason: str) -> InvalidInput:
        return InvalidInput(f"{archive}: part manifest: {reason}; nothing was changed", field="path")

    info = members.get(MANIFEST)
    if info is None:
        raise damaged(f"no {MANIFEST} (not a deepext backup, or a truncated or damaged one)")
    if not info.isreg() or info.size > _MAX_MANIFEST_BYTES:
        raise damaged(f"{MANIFEST} is not a regular file of a sensible size")
    try:
        handle = tar.extractfile(info)
        manifest = json.loads(handle.read() if handle else b"")
    except (*_READ_ERRORS, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(f"{MANIFEST} cannot be read ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise damaged(f"{MANIFEST} has format {found!r}, this deepext reads {FORMAT!r}")
    if manifest.get("checksum") != _checksum(manifest):
        raise damaged(f"{MANIFEST} does not match its checksum (the archive is damaged)")
    return manifest


def _expected_files(manifest: dict[str, Any], archive: Path) -> dict[str, _Expected]:
    """Member name -> what it must be, from the manifest; refuses paths that could escape a target."""
    expected: dict[str, _Expected] = {}
    parts = manifest.get("parts")
    if not isinstance(parts, dict) or "database" not in parts:
        raise InvalidInput(f"{archive}: part manifest: it lists no database part", field="path")
    for part, entry in parts.items():
        prefix = PREFIXES.get(part)
        if prefix is None:
            raise InvalidInput(f"{archive}: part manifest: unknown part {part!r}", field="path")
        files = entry.get("files") if isinstance(entry, dict) else None
        if not isinstance(files, list) or _canonical_sha256(files) != entry.get("sha256"):
            raise InvalidInput(f"{archive}: part {part}: its file list does not match its sha256", field="path")
        for file in files:
            path = str(file.get("path", ""))
            if not path.startswith(prefix) or not _is_safe(path[len(prefix) :]):
                raise InvalidInput(f"{archive}: part {part}: unsafe or misplaced path {path!r}", field="path")
            if part == "artifacts" and not _BLOB.match(path[len(prefix) :]):
                raise InvalidInput(f"{archive}: part artifacts: {path!r} is not a blob path", field="path")
            expected[path] = _Expected(part, int(file["size"]), str(file["sha256"]))
    if sum(1 for e in expected.values() if e.part == "database") != 1:
        raise InvalidInput(f"{archive}: part database: expected exactly one file", field="path")
    return expected


def _is_safe(relative: str) -> bool:
    parts = PurePosixPath(relative).parts
    return bool(parts) and not relative.startswith("/") and ".." not in parts and "\\" not in relative


def _check_members(members: dict[str, tarfile.TarInfo], expected: dict[str, _Expected], archive: Path) -> None:
    for name, want in expected.items():
        info = members.get(name)
        if info is None:
            raise InvalidInput(f"{archive}: part {want.part}: {name} is missing from the archive; nothing was changed")
        if not info.isreg() or info.size != want.size:
            raise InvalidInput(
                f"{archive}: part {want.part}: {name} holds {info.size} bytes, the manifest says {want.size}; "
                "nothing was changed"
            )
    extra = sorted(set(members) - set(expected) - {MANIFEST})
    if extra:
        raise InvalidInput(f"{archive}: {extra[0]} is in the archive but not in its manifest; nothing was changed")


def _check_compatible(manifest: dict[str, Any], url: URL, archive: Path) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from deepext.db.engine import alembic_config

    database = manifest.get("database") or {}
    backend, revision = database.get("backend"), database.get("revision")
    if backend != url.get_backend_name():
        raise InvalidInput(
            f"{archive} holds a {backend} database, and this platform's database_url is "
            f"{url.get_backend_name()}: restore into a {backend} database"
        )
    if revision is not None:
        try:
            ScriptDirectory.from_config(alembic_config(url.render_as_string(hide_password=False))).get_revision(
                revision
            )
        except CommandError as exc:
            raise InvalidInput(
                f"{archive}: its schema revision {revision} is unknown to this deepext "
                f"{deepext.__version__} (made by deepext {manifest.get('deepext_version')}): restore with that version"
            ) from exc


def _occupied(settings: Settings, url: URL, manifest: dict[str, Any], tables: list[str]) -> list[str]:
    """The targets that already hold data, each named."""
    from deepext.serve.providers.secrets import KEY_FILE
    from deepext.storage import ArtifactStore

    parts = manifest["parts"]
    found = []
    if tables:
        found.append(f"the database {shown(url)} ({len(tables)} tables)")
    store = ArtifactStore(settings.resolved_artifact_uri, cache_dir=settings.home / "cache")
    if any(True for _ in store.iter_keys()):
        found.append(f"the artifact store {settings.resolved_artifact_uri}")
    if "vectors" in parts and settings.vector_store == "lancedb":
        fs, root = _vector_filesystem(settings.resolved_vector_store_uri)
        if fs.get_file_info(pafs.FileSelector(root, recursive=False, allow_not_found=True)):
            found.append(f"the vector store {settings.resolved_vector_store_uri}")
    key_path = settings.home / KEY_FILE
    if "secret_key" in parts and key_path.is_file():
        found.append(f"the key file {key_path}")
    return found


def _read_member(
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    want: _Expected,
    archive: Path,
    on_read: Callable[[int], None],
    sink: IO[bytes] | None,
    *,
    restoring: bool,
) -> None:
    """Stream one member (into `sink` when given) and refuse it, naming its part, unless its sha256 is
    the manifest's. Before `restoring`, this is the check that runs before anything is written."""
    outcome = "it changed while it was being restored" if restoring else "nothing was changed"

    def damaged(reason: str) -> InvalidInput:
        return InvalidInput(f"{archive}: part {want.part}: {info.name} {reason}: the archive is damaged; {outcome}")

    try:
        source = tar.extractfile(info)
    except _READ_ERRORS as exc:
        raise damaged(f"cannot be read ({exc})") from exc
    if source is None:
        raise damaged("is not a regular file")
    reader = _HashingReader(source, on_read)
    while True:
        try:
            chunk = reader.read(_CHUNK)
        except _READ_ERRORS as exc:
            raise damaged(f"cannot be read ({exc})") from exc
        if not chunk:
            break
        if sink is not None:
            sink.write(chunk)
    if reader.hexdigest() != want.sha256:
        raise damaged("does not match its sha256 in the manifest")


def _apply(
    settings: Settings,
    url: URL,
    tar: tarfile.TarFile,
    files: list[tarfile.TarInfo],
    expected: dict[str, _Expected],
    manifest: dict[str, Any],
    archive: Path,
    progress: Progress,
    *,
    clean: bool,
) -> list[str]:
    """Write every part to its target, database first."""
    by_part: dict[str, list[tarfile.TarInfo]] = {}
    for info in files:
        by_part.setdefault(expected[info.name].part, []).append(info)

    def copy(info: tarfile.TarInfo, sink: IO[bytes] | None) -> None:
        _read_member(tar, info, expected[info.name], archive, progress.advance, sink, restoring=True)

    notes: list[str] = []
    settings.home.mkdir(parents=True, exist_ok=True)
    (database_member,) = by_part["database"]
    if url.get_backend_name() == "sqlite":
        restore_sqlite(sqlite_path(url), lambda sink: copy(database_member, sink))
    else:
        restore_postgres(url, settings.home, lambda sink: copy(database_member, sink), clean=clean)
    _restore_blobs(settings, by_part.get("artifacts", []), copy)
    if "vectors" in manifest["parts"]:
        if settings.vector_store == "lancedb":
            _restore_tree(settings.resolved_vector_store_uri, by_part.get("vectors", []), copy)
        else:
            notes.append("the backup's LanceDB vectors were not restored: this platform uses Weaviate")
    if "secret_key" in manifest["parts"]:
        (key_member,) = by_part["secret_key"]
        _restore_key_file(settings, lambda sink: copy(key_member, sink))
    elif manifest["database"].get("encrypted_provider_keys"):
        notes.append(
            f"{manifest['database']['encrypted_provider_keys']} provider API key(s) need the secret key of the "
            "platform that was backed up (DEEPEXT_SECRET_KEY, or its <home>/secret.key)"
        )
    return notes


def _restore_blobs(settings: Settings, members: list[tarfile.TarInfo], copy: _Copy) -> None:
    """Each blob the way the store files one (a temporary file moved under its key), so a blob is never
    seen half-written; blobs already there are kept (same key, same bytes)."""
    from deepext.storage import ArtifactStore

    store = ArtifactStore(settings.resolved_artifact_uri, cache_dir=settings.home / "cache")
    for info in members:
        key = info.name.rsplit("/", 1)[1]
        if store.exists(key):
            copy(info, None)  # still checked and counted
            continue
        staged = f"{store.root}/tmp/{uuid.uuid4().hex}"
        with store.fs.open_output_stream(staged) as sink:
            copy(info, sink)
        final = f"{store.root}/blobs/{key[:2]}/{key}"
        store.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        store.fs.move(staged, final)


def _restore_tree(uri: str, members: list[tarfile.TarInfo], copy: _Copy) -> None:
    """The LanceDB folder: a local one is written beside the old and swapped in; a remote one is
    emptied and written."""
    fs, root = _vector_filesystem(uri)
    local = isinstance(fs, pafs.LocalFileSystem)
    target = f"{root}.restoring-{uuid.uuid4().hex[:8]}" if local else root
    if not local:
        fs.delete_dir_contents(root, missing_dir_ok=True)
    fs.create_dir(target, recursive=True)
    for info in members:
        path = f"{target}/{info.name[len(PREFIXES['vectors']) :]}"
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as sink:
            copy(info, sink)
    if local:
        old = Path(f"{root}.old-{uuid.uuid4().hex[:8]}")
        if Path(root).exists():
            os.replace(root, old)
        os.replace(target, root)
        shutil.rmtree(old, ignore_errors=True)


def _restore_key_file(settings: Settings, write: Callable[[IO[bytes]], None]) -> None:
    from deepext.serve.providers.secrets import KEY_FILE

    path = settings.home / KEY_FILE
    staged = path.with_name(f".{KEY_FILE}.restoring-{uuid.uuid4().hex[:8]}")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as sink:
            write(sink)
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def _report(settings: Settings, url: URL, manifest: dict[str, Any], notes: list[str]) -> RestoreReport:
    """Count the restored rows against the manifest: a restore that lost rows must not look fine."""
    from deepext.db import Database

    database = manifest["database"]
    db = Database(url.render_as_string(hide_password=False))
    try:
        with db.engine.connect() as connection:
            revision, counts, _keys = inventory(connection)
        head = db.head_revision()
    finally:
        db.dispose()
    for name, want in database["counts"].items():
        if counts.get(name) != want:
            raise DeepextError(
                f"the restored database holds {counts.get(name)} rows in {name}, the backup's manifest says {want}"
            )
    if revision != head:
        notes.append(
            f"the schema is at revision {revision}; `deepext db upgrade` (or `deepext up`) brings it to {head}"
        )
    return RestoreReport(revision, head, counts, sorted(manifest["parts"]), notes)


def iter_part_sizes(manifest: dict[str, Any]) -> Iterator[tuple[str, int, int]]:
    """(part, files, bytes) of each part, for reports."""
    for part, entry in manifest.get("parts", {}).items():
        yield part, len(entry["files"]), int(entry["bytes"])
