"""Content-addressed artifact store: datasets, checkpoints, model folders and logs.

Every blob is stored once under the sha256 of its bytes; a folder is stored as its files' blobs
plus a manifest blob (relative path -> blob key), and the manifest's key names the folder. Keys are
64 hex digits and nothing else, so no user-chosen name ever becomes a storage path.

The root is a local folder by default, or any URI that `pyarrow.fs` opens (s3://, gs://, hdfs://,
file://) or, failing that, `fsspec` (memory://, sftp://, ...): Ray workers on other nodes must read
the same artifacts, so a cluster points every node at one shared store.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pyarrow as pa
import pyarrow.fs as pafs

from deepext.errors import InvalidInput, NotFound

_KEY = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 4 << 20
MANIFEST_KIND = "deepext.tree/1"


def check_key(key: str) -> str:
    """`key` if it is a well-formed blob key, else InvalidInput: keys never carry paths."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidInput(f"not an artifact key (64 lowercase hex digits): {key!r}", field="key")
    return key


def _open_filesystem(uri: str) -> tuple[pafs.FileSystem, str, bool]:
    """(filesystem, root path inside it, whether the root is a local folder)."""
    if "://" not in uri:
        root = Path(uri).expanduser().resolve()
        return pafs.LocalFileSystem(), root.as_posix(), True
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        import fsspec

        fsspec_fs, root = fsspec.core.url_to_fs(uri)
        fs = pafs.PyFileSystem(pafs.FSSpecHandler(fsspec_fs))
    return fs, root.rstrip("/") or "/", isinstance(fs, pafs.LocalFileSystem)


@dataclass(frozen=True)
class TreeEntry:
    path: str
    key: str
    size: int


class BlobWriter:
    """A write-only file that hashes what it is given; `commit()` files it under its hash.

    Pass it wherever a binary file is expected (e.g. `pyarrow.parquet.ParquetWriter`), so large
    artifacts are hashed and stored in one pass.
    """

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store
        self._tmp = store._tmp_path()
        self._out = store.fs.open_output_stream(self._tmp)
        self._hash = hashlib.sha256()
        self.size = 0
        self.key: str | None = None

    # The file protocol pyarrow and the io module expect.
    closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._out.write(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._out.flush()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        """Closing does not commit: a writer abandoned on error leaves nothing behind."""
        if not self._out.closed:
            self._out.close()
        self.closed = True

    def commit(self) -> str:
        self.close()
        self.key = self._hash.hexdigest()
        self._store._install(self._tmp, self.key)
        return self.key

    def discard(self) -> None:
        self.close()
        self._store._remove_quietly(self._tmp)


class ArtifactStore:
    """Blobs and folders by content hash under one filesystem root."""

    def __init__(self, uri: str, *, cache_dir: Path | None = None) -> None:
        self.uri = uri
        self.fs, self.root, self.is_local = _open_filesystem(uri)
        self.fs.create_dir(f"{self.root}/blobs", recursive=True)
        self.fs.create_dir(f"{self.root}/tmp", recursive=True)
        if cache_dir is None:
            cache_dir = Path(self.root) / "trees" if self.is_local else Path("~/.deepext/cache").expanduser()
        self.cache_dir = cache_dir

    # ---- paths
    def _blob_path(self, key: str) -> str:
        check_key(key)
        return f"{self.root}/blobs/{key[:2]}/{key}"

    def _tmp_path(self) -> str:
        return f"{self.root}/tmp/{uuid.uuid4().hex}"

    def _install(self, tmp: str, key: str) -> None:
        final = self._blob_path(key)
        if self.exists(key):
            self._remove_quietly(tmp)
            return
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        self.fs.move(tmp, final)

    def _remove_quietly(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.delete_file(path)

    # ---- blobs
    def exists(self, key: str) -> bool:
        info = self.fs.get_file_info(self._blob_path(key))
        return bool(info.type == pafs.FileType.File)

    def size(self, key: str) -> int:
        info = self.fs.get_file_info(self._blob_path(key))
        if info.type != pafs.FileType.File:
            raise NotFound(f"artifact {key} is not in the store")
        return int(info.size)

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put_bytes(self, data: bytes) -> str:
        writer = self.writer()
        writer.write(data)
        return writer.commit()

    def put_file(self, path: Path | str) -> str:
        writer = self.writer()
        try:
            with open(path, "rb") as source:
                while chunk := source.read(_CHUNK):
                    writer.write(chunk)
        except BaseException:
            writer.discard()
            raise
        return writer.commit()

    def open(self, key: str) -> IO[bytes]:
        """A readable, seekable file of the blob (pyarrow and the io module both accept it)."""
        if not self.exists(key):
            raise NotFound(f"artifact {key} is not in the store")
        return self.fs.open_input_file(self._blob_path(key))

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as blob:
            return blob.read()

    def get_file(self, key: str, dest: Path | str) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.open(key) as blob, open(dest, "wb") as out:
            while chunk := blob.read(_CHUNK):
                out.write(chunk)
        return dest

    def local_path(self, key: str) -> Path | None:
        """The blob's own path when the store is a local folder (zero-copy reads), else None."""
        return Path(self._blob_path(key)) if self.is_local and self.exists(key) else None

    # ---- folders
    def put_dir(self, folder: Path | str) -> str:
        """Store every file below `folder`; returns the manifest's key, which names the folder."""
        folder = Path(folder)
        if not folder.is_dir():
            raise NotFound(f"{folder} is not a folder")
        entries = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            rel = path.relative_to(folder).as_posix()
            entries.append({"path": rel, "key": self.put_file(path), "size": path.stat().st_size})
        manifest = {"kind": MANIFEST_KIND, "files": entries}
        return self.put_bytes(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode())

    def tree(self, key: str) -> list[TreeEntry]:
        """The files of a stored folder; refuses manifests whose paths would leave the folder."""
        try:
            manifest = json.loads(self.read_bytes(key))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInput(f"artifact {key} is not a folder manifest") from exc
        if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
            raise InvalidInput(f"artifact {key} is not a folder manifest")
        entries = [TreeEntry(e["path"], check_key(e["key"]), int(e["size"])) for e in manifest["files"]]
        for entry in entries:
            parts = PurePosixPath(entry.path).parts
            if entry.path.startswith("/") or not parts or ".." in parts:
                raise InvalidInput(f"artifact {key}: unsafe path {entry.path!r} in manifest")
        return entries

    def get_dir(self, key: str, dest: Path | str) -> Path:
        dest = Path(dest)
        for entry in self.tree(key):
            self.get_file(entry.key, dest / entry.path)
        return dest

    def local_dir(self, key: str) -> Path:
        """A local folder holding the stored folder `key`, made once and then reused.

        Local stores hard-link the blobs (no copy); remote stores download into the cache. Tools
        that want a path (transformers, vLLM) load from here.
        """
        target = self.cache_dir / key
        if target.is_dir():
            return target
        staging = self.cache_dir / f".{key}.{uuid.uuid4().hex}"
        for entry in self.tree(key):
            dest = staging / entry.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = self.local_path(entry.key)
            if source is not None:
                try:
                    os.link(source, dest)
                    continue
                except OSError:
                    shutil.copyfile(source, dest)
                    continue
            self.get_file(entry.key, dest)
        try:
            staging.rename(target)
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def iter_keys(self) -> Iterator[str]:
        selector = pafs.FileSelector(f"{self.root}/blobs", recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and _KEY.match(info.base_name):
                yield info.base_name
