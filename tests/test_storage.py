"""The content-addressed artifact store, on a local folder and on an fsspec filesystem."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from deepext.errors import InvalidInput, NotFound
from deepext.storage import MANIFEST_KIND, ArtifactStore


def test_blobs_are_stored_once_under_their_sha256(artifacts: ArtifactStore) -> None:
    key = artifacts.put_bytes(b"hello")
    assert key == hashlib.sha256(b"hello").hexdigest()
    assert artifacts.put_bytes(b"hello") == key
    assert artifacts.read_bytes(key) == b"hello"
    assert list(artifacts.iter_keys()) == [key]
    assert artifacts.size(key) == 5


def test_put_file_streams_large_files(artifacts: ArtifactStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 40_000  # 10 MB, more than one read chunk
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    key = artifacts.put_file(source)
    assert key == hashlib.sha256(data).hexdigest()
    assert artifacts.get_file(key, tmp_path / "copy.bin").read_bytes() == data


def test_folders_round_trip_and_are_addressed_by_content(artifacts: ArtifactStore, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"\x00" * 100)
    key = artifacts.put_dir(folder)
    assert artifacts.put_dir(folder) == key
    restored = artifacts.get_dir(key, tmp_path / "restored")
    assert (restored / "sub" / "weights.bin").read_bytes() == b"\x00" * 100
    assert {e.path for e in artifacts.tree(key)} == {"config.json", "sub/weights.bin"}
    local = artifacts.local_dir(key)
    assert (local / "config.json").read_text() == "{}"
    assert artifacts.local_dir(key) == local  # made once, then reused
    (folder / "config.json").write_text('{"changed": true}')
    assert artifacts.put_dir(folder) != key


@pytest.mark.parametrize("key", ["../../etc/passwd", "a" * 63, "A" * 64, "/abs", "", "g" * 64])
def test_keys_that_are_not_hashes_are_refused(artifacts: ArtifactStore, key: str) -> None:
    with pytest.raises(InvalidInput, match="not an artifact key"):
        artifacts.open(key)


def test_manifest_paths_cannot_escape_the_folder(artifacts: ArtifactStore, tmp_path: Path) -> None:
    blob = artifacts.put_bytes(b"owned")
    for bad in ("../escape.txt", "/etc/owned", "a/../../b"):
        manifest = {"kind": MANIFEST_KIND, "files": [{"path": bad, "key": blob, "size": 5}]}
        key = artifacts.put_bytes(json.dumps(manifest).encode())
        with pytest.raises(InvalidInput, match="unsafe path"):
            artifacts.get_dir(key, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_missing_blob_is_not_found(artifacts: ArtifactStore) -> None:
    with pytest.raises(NotFound):
        artifacts.read_bytes("0" * 64)


def test_a_discarded_writer_leaves_nothing(artifacts: ArtifactStore) -> None:
    writer = artifacts.writer()
    writer.write(b"partial")
    writer.discard()
    assert list(artifacts.iter_keys()) == []
    assert list((Path(artifacts.root) / "tmp").iterdir()) == []


def test_fsspec_filesystems_work_too(tmp_path: Path) -> None:
    """memory:// is not a pyarrow filesystem, so this goes through the fsspec bridge."""
    store = ArtifactStore("memory://deepext-test", cache_dir=tmp_path / "cache")
    assert not store.is_local
    key = store.put_bytes(b"remote bytes")
    assert store.read_bytes(key) == b"remote bytes"
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.txt").write_text("A")
    tree = store.put_dir(folder)
    assert (store.local_dir(tree) / "a.txt").read_text() == "A"
    assert store.local_path(key) is None
