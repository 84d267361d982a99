"""The vector-store contract, once per backend: LanceDB always; Weaviate against the server that
DEEPEXT_TEST_WEAVIATE_URL names (gRPC port: DEEPEXT_TEST_WEAVIATE_GRPC_PORT, default 50051)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from deepext.config import Settings
from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.knowledge.store import Chunk, VectorStore, open_vector_store

WEAVIATE_URL = os.environ.get("DEEPEXT_TEST_WEAVIATE_URL", "")
BACKENDS = [
    "lancedb",
    pytest.param(
        "weaviate",
        marks=pytest.mark.skipif(
            not WEAVIATE_URL, reason="no Weaviate server configured (set DEEPEXT_TEST_WEAVIATE_URL)"
        ),
    ),
]
DIM = 8


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "lancedb":
        settings = Settings(home=tmp_path / "home", vector_store="lancedb")
    else:
        port = int(os.environ.get("DEEPEXT_TEST_WEAVIATE_GRPC_PORT", "50051"))
        settings = Settings(
            home=tmp_path / "home", vector_store="weaviate", weaviate_url=WEAVIATE_URL, weaviate_grpc_port=port
        )
    opened = open_vector_store(settings)
    yield opened
    opened.close()


@pytest.fixture
def name(store: VectorStore) -> Iterator[str]:
    """A new collection of DIM-value vectors, dropped afterwards."""
    collection = f"t_{uuid.uuid4().hex[:12]}"  # unique, so a shared Weaviate server sees no leftovers
    store.create_collection(collection, DIM)
    yield collection
    store.drop_collection(collection)


def _unit(*values: float) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[: len(values)] = values
    return vector / np.linalg.norm(vector)


def _chunk(doc: int, index: int, vector: np.ndarray, *, source: str = "a.md", project: str = "p") -> Chunk:
    return Chunk(
        id=f"{doc}:{index}",
        vector=vector,
        text=f"doc {doc} chunk {index}",
        document_id=doc,
        source=source,
        chunk_index=index,
        project=project,
    )


def test_collections_are_created_once_dropped_and_keep_their_dimension(store: VectorStore, name: str) -> None:
    assert store.has_collection(name)
    store.create_collection(name, DIM)  # again: a no-op
    with pytest.raises(Conflict, match="8 values"):
        store.create_collection(name, DIM + 1)
    assert store.count(name) == 0
    store.drop_collection(name)
    assert not store.has_collection(name)
    store.drop_collection(name)  # a missing collection: a no-op
    with pytest.raises(InvalidInput):
        store.create_collection("Bad Name", DIM)


def test_upsert_inserts_and_replaces_by_id(store: VectorStore, name: str) -> None:
    store.upsert(name, [_chunk(1, 0, _unit(1)), _chunk(1, 1, _unit(0, 1))])
    assert store.count(name) == 2
    replaced = Chunk(**{**_chunk(1, 0, _unit(1)).__dict__, "text": "new text"})
    store.upsert(name, [replaced])
    assert store.count(name) == 2
    (hit,) = store.search(name, _unit(1), k=1)
    assert (hit.id, hit.text, hit.document_id, hit.chunk_index, hit.source, hit.project) == (
        "1:0",
        "new text",
        1,
        0,
        "a.md",
        "p",
    )
    store.upsert(name, [])  # nothing to do


def test_search_ranks_by_cosine_similarity(store: VectorStore, name: str) -> None:
    store.upsert(
        name,
        [
            _chunk(1, 0, _unit(1, 0)),  # the query itself
            _chunk(1, 1, _unit(1, 1)),  # 45 degrees: cos 0.707
            _chunk(1, 2, _unit(0, 1)),  # orthogonal: cos 0
            _chunk(1, 3, _unit(-1, 0)),  # opposite: cos -1
        ],
    )
    hits = store.search(name, _unit(1, 0), k=3)
    assert [h.id for h in hits] == ["1:0", "1:1", "1:2"]
    assert [round(h.score, 3) for h in hits] == [1.0, 0.707, 0.0]
    assert len(store.search(name, _unit(1, 0), k=10)) == 4
    assert store.search(name, _unit(1, 0), k=10)[-1].score == pytest.approx(-1.0, abs=1e-3)


def test_search_filters_on_metadata_before_ranking(store: VectorStore, name: str) -> None:
    store.upsert(
        name,
        [
            _chunk(1, 0, _unit(1), source="o'brien.md"),
            _chunk(2, 0, _unit(1, 0.1), source="other.md"),
            _chunk(3, 0, _unit(1, 0.2), source="o'brien.md", project="q"),
        ],
    )
    assert [h.id for h in store.search(name, _unit(1), k=5, where={"document_id": 2})] == ["2:0"]
    assert [h.id for h in store.search(name, _unit(1), k=5, where={"source": "o'brien.md"})] == ["1:0", "3:0"]
    assert [h.id for h in store.search(name, _unit(1), k=5, where={"source": "o'brien.md", "project": "q"})] == ["3:0"]
    assert store.search(name, _unit(1), k=5, where={"project": "nobody"}) == []
    assert store.count(name, where={"project": "p"}) == 2
    with pytest.raises(InvalidInput, match="filter on 'text'"):
        store.search(name, _unit(1), k=5, where={"text": "x"})
    with pytest.raises(InvalidInput, match="expected int"):
        store.count(name, where={"document_id": "1"})


def test_delete_document_removes_only_its_chunks(store: VectorStore, name: str) -> None:
    store.upsert(name, [_chunk(1, i, _unit(1, i)) for i in range(3)] + [_chunk(2, 0, _unit(0, 1))])
    store.delete_document(name, 1)
    assert store.count(name) == 1
    assert store.count(name, where={"document_id": 1}) == 0
    assert [h.id for h in store.search(name, _unit(1), k=5)] == ["2:0"]
    store.delete_document(name, 99)  # nothing to delete
    store.delete_document("t_missing_collection", 1)  # no collection: nothing to delete


def test_wrong_dimensions_and_missing_collections_are_refused(store: VectorStore, name: str) -> None:
    with pytest.raises(InvalidInput, match="3 values"):
        store.upsert(name, [Chunk("1:0", [0.1, 0.2, 0.3], "t", 1, "a.md", 0, "p")])
    with pytest.raises(InvalidInput, match="query vector"):
        store.search(name, [1.0, 0.0], k=1)
    with pytest.raises(InvalidInput, match="k must"):
        store.search(name, _unit(1), k=0)
    with pytest.raises(NotFound):
        store.search("t_missing_collection", _unit(1), k=1)
    with pytest.raises(NotFound):
        store.upsert("t_missing_collection", [_chunk(1, 0, _unit(1))])
    with pytest.raises(NotFound):
        store.count("t_missing_collection")


def test_the_backend_comes_from_settings_and_a_bad_weaviate_setting_is_named(tmp_path: Path) -> None:
    from deepext.errors import Unavailable
    from deepext.knowledge.lancedb_store import LanceDBStore

    assert isinstance(open_vector_store(Settings(home=tmp_path)), LanceDBStore)
    with pytest.raises(InvalidInput, match="needs weaviate_url") as raised:
        open_vector_store(Settings(home=tmp_path, vector_store="weaviate"))
    assert raised.value.field == "weaviate_url"
    with pytest.raises(InvalidInput, match="expected http://HOST:PORT"):
        open_vector_store(Settings(home=tmp_path, vector_store="weaviate", weaviate_url="ftp://x"))
    with pytest.raises(Unavailable, match=r"Weaviate at http://127\.0\.0\.1:1"):
        open_vector_store(Settings(home=tmp_path, vector_store="weaviate", weaviate_url="http://127.0.0.1:1"))
