"""The vector-store contract every backend keeps, and the choice of backend from settings.

A collection holds the chunks of one knowledge base: each chunk has a string id, a vector of the
collection's dimension, its text and four metadata fields (`FILTER_FIELDS`). Search ranks by cosine
similarity (`Hit.score`, 1.0 = same direction) and may be narrowed by equality on metadata fields.
The contract is tested once for every backend (`tests/knowledge/test_store_contract.py`).

Backends are imported by module path when chosen, so an unused one costs nothing:
`vector_store = "lancedb"` (embedded, the default; a folder under the home) or `"weaviate"` (a
server at `weaviate_url`).
"""

from __future__ import annotations

import importlib
import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from deepext.config import Settings
from deepext.errors import InvalidInput

FILTER_FIELDS = {"document_id": int, "source": str, "chunk_index": int, "project": str}
BACKENDS = {
    "lancedb": "deepext.knowledge.lancedb_store:LanceDBStore",
    "weaviate": "deepext.knowledge.weaviate_store:WeaviateStore",
}
_COLLECTION = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

Where = Mapping[str, str | int]


@dataclass(frozen=True)
class Chunk:
    """One stored piece of a document."""

    id: str
    vector: Sequence[float]  # shape (dimension,); a numpy row is fine
    text: str
    document_id: int
    source: str  # the document's name
    chunk_index: int  # position of the chunk in its document, from 0
    project: str


@dataclass(frozen=True)
class Hit:
    """A search result: the chunk and its cosine similarity to the query vector."""

    id: str
    score: float
    text: str
    document_id: int
    source: str
    chunk_index: int
    project: str


class VectorStore(Protocol):
    """What a knowledge base needs from a vector store."""

    def create_collection(self, name: str, dimension: int) -> None:
        """Create `name` for vectors of `dimension`; a no-op when it exists with that dimension,
        `Conflict` when it exists with another."""

    def drop_collection(self, name: str) -> None:
        """Remove `name` and everything in it; a no-op when it does not exist."""

    def has_collection(self, name: str) -> bool: ...

    def upsert(self, name: str, chunks: Sequence[Chunk]) -> None:
        """Insert the chunks, replacing those with the same id. `NotFound` for a missing collection,
        `InvalidInput` for a vector of the wrong dimension."""

    def search(self, name: str, vector: Sequence[float], k: int, where: Where | None = None) -> list[Hit]:
        """The `k` chunks closest to `vector` among those matching `where`, best first."""

    def delete_document(self, name: str, document_id: int) -> None:
        """Remove every chunk of a document; a no-op when there is none (or no collection)."""

    def count(self, name: str, where: Where | None = None) -> int:
        """How many chunks match `where` (all of them when None)."""

    def close(self) -> None: ...


def check_collection(name: str) -> str:
    if not _COLLECTION.match(name):
        raise InvalidInput(f"collection name {name!r}: lowercase letters, digits and '_', starting with a letter")
    return name


def check_where(where: Where | None) -> dict[str, str | int]:
    """A metadata filter: equality on known fields, each value of the field's type."""
    checked: dict[str, str | int] = {}
    for key, value in (where or {}).items():
        kind = FILTER_FIELDS.get(key)
        if kind is None:
            raise InvalidInput(f"filter on {key!r}: one of {', '.join(FILTER_FIELDS)}", field="where")
        if type(value) is not kind:
            raise InvalidInput(f"filter {key}={value!r}: expected {kind.__name__}", field="where")
        checked[key] = value
    return checked


def check_vectors(chunks: Sequence[Chunk], dimension: int) -> None:
    for chunk in chunks:
        if len(chunk.vector) != dimension:
            raise InvalidInput(
                f"chunk {chunk.id}: vector of {len(chunk.vector)} values, the collection holds {dimension}",
                field="vector",
            )


def check_search(vector: Sequence[float], k: int, dimension: int) -> None:
    if k < 1:
        raise InvalidInput("k must be at least 1", field="k")
    if len(vector) != dimension:
        raise InvalidInput(f"query vector of {len(vector)} values, the collection holds {dimension}", field="vector")
    if not all(math.isfinite(float(v)) for v in vector):
        raise InvalidInput("the query vector has a value that is not a finite number", field="vector")


def open_vector_store(settings: Settings) -> VectorStore:
    """A new connection to the backend the settings choose (the caller closes it)."""
    module_name, _, class_name = BACKENDS[settings.vector_store].partition(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    store: VectorStore = backend.from_settings(settings)
    return store


def vector_store(settings: Settings) -> VectorStore:
    """The process's shared connection to the configured backend (one per backend and location)."""
    key = (settings.vector_store, _location(settings))
    with _SHARED_LOCK:
        store = _SHARED.get(key)
        if store is None:
            store = _SHARED[key] = open_vector_store(settings)
        return store


def _location(settings: Settings) -> str:
    if settings.vector_store == "weaviate":
        return f"{settings.weaviate_url}|{settings.weaviate_grpc_port}"
    return settings.resolved_vector_store_uri


_SHARED: dict[tuple[str, str], VectorStore] = {}
_SHARED_LOCK = threading.Lock()
