"""The Weaviate backend (weaviate-client v4): one Weaviate collection per deepext collection, named
`Deepext_<name>`, holding self-provided vectors in an HNSW index with cosine distance.

Set `vector_store = "weaviate"` and `weaviate_url` (e.g. `DEEPEXT_WEAVIATE_URL=http://weaviate:8080`;
the gRPC port is `weaviate_grpc_port`, default 50051, on the same host). Chunk ids become UUIDv5 of
the id, so writing a chunk again replaces it. A server that cannot be reached is `Unavailable`.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

from deepext.config import Settings
from deepext.errors import Conflict, DeepextError, InvalidInput, NotFound, Unavailable
from deepext.knowledge.store import (
    Chunk,
    Hit,
    Where,
    check_collection,
    check_search,
    check_vectors,
    check_where,
)

_PREFIX = "Deepext_"
_DESCRIPTION = "deepext knowledge chunks; vectors of {dimension} values"
_DELETE_ROUNDS = 1000  # delete_many removes at most the server's query limit (10,000 by default) per call


@contextlib.contextmanager
def _server_errors(what: str) -> Iterator[None]:
    from weaviate.exceptions import WeaviateBaseError

    try:
        yield
    except DeepextError:
        raise
    except WeaviateBaseError as exc:
        raise Unavailable(f"Weaviate {what}: {exc}") from exc


class WeaviateStore:
    """`VectorStore` over a Weaviate server."""

    def __init__(self, url: str, *, grpc_port: int = 50051, api_key: str | None = None) -> None:
        import weaviate
        from weaviate.auth import AuthApiKey

        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(f"weaviate_url {url!r}: expected http://HOST:PORT or https://HOST", field="weaviate_url")
        secure = parts.scheme == "https"
        self.url = url
        with _server_errors(f"at {url}"):
            self._client = weaviate.connect_to_custom(
                http_host=parts.hostname,
                http_port=parts.port or (443 if secure else 80),
                http_secure=secure,
                grpc_host=parts.hostname,
                grpc_port=grpc_port,
                grpc_secure=secure,
                auth_credentials=AuthApiKey(api_key) if api_key else None,
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> WeaviateStore:
        if not settings.weaviate_url:
            raise InvalidInput(
                "vector_store = weaviate needs weaviate_url (DEEPEXT_WEAVIATE_URL=http://HOST:8080)",
                field="weaviate_url",
            )
        key = settings.weaviate_api_key.get_secret_value() if settings.weaviate_api_key else None
        return cls(settings.weaviate_url, grpc_port=settings.weaviate_grpc_port, api_key=key)

    # ---- collections
    def create_collection(self, name: str, dimension: int) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances

        full = _PREFIX + check_collection(name)
        if dimension < 1:
            raise InvalidInput("dimension must be at least 1", field="dimension")
        with _server_errors(f"creating collection {name!r}"):
            if self._client.collections.exists(full):
                have = self._dimension(full)
                if have != dimension:
                    raise Conflict(f"collection {name!r} holds vectors of {have} values, not {dimension}")
                return
            exact = Tokenization.FIELD  # source and project are matched whole, not word by word
            self._client.collections.create(
                full,
                description=_DESCRIPTION.format(dimension=dimension),
                vector_config=Configure.Vectors.self_provided(
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
                ),
                properties=[
                    Property(name="chunk_id", data_type=DataType.TEXT, tokenization=exact),
                    Property(name="text", data_type=DataType.TEXT),
                    Property(name="document_id", data_type=DataType.INT),
                    Property(name="source", data_type=DataType.TEXT, tokenization=exact),
                    Property(name="chunk_index", data_type=DataType.INT),
                    Property(name="project", data_type=DataType.TEXT, tokenization=exact),
                ],
            )

    def drop_collection(self, name: str) -> None:
        with _server_errors(f"dropping collection {name!r}"):
            self._client.collections.delete(_PREFIX + check_collection(name))

    def has_collection(self, name: str) -> bool:
        with _server_errors("listing collections"):
            return bool(self._client.collections.exists(_PREFIX + check_collection(name)))

    # ---- chunks
    def upsert(self, name: str, chunks: Sequence[Chunk]) -> None:
        from weaviate.classes.data import DataObject
        from weaviate.util import generate_uuid5

        collection = self._collection(name)
        if not chunks:
            return
        check_vectors(chunks, self._dimension(collection.name))
        objects = [
            DataObject(
                uuid=generate_uuid5(c.id),
                vector=[float(v) for v in c.vector],
                properties={
                    "chunk_id": c.id,
                    "text": c.text,
                    "document_id": c.document_id,
                    "source": c.source,
                    "chunk_index": c.chunk_index,
                    "project": c.project,
                },
            )
            for c in chunks
        ]
        with _server_errors(f"writing to {name!r}"):
            result = collection.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise Unavailable(f"Weaviate refused {len(result.errors)} of {len(objects)} chunks: {first.message}")

    def search(self, name: str, vector: Sequence[float], k: int, where: Where | None = None) -> list[Hit]:
        from weaviate.classes.query import MetadataQuery

        collection = self._collection(name)
        check_search(vector, k, self._dimension(collection.name))
        with _server_errors(f"searching {name!r}"):
            answer = collection.query.near_vector(
                near_vector=[float(v) for v in vector],
                limit=k,
                filters=_filters(where),
                return_metadata=MetadataQuery(distance=True),
            )
        hits = []
        for found in answer.objects:
            props: dict[str, Any] = dict(found.properties)
            distance = found.metadata.distance if found.metadata.distance is not None else 1.0
            hits.append(
                Hit(
                    id=str(props["chunk_id"]),
                    score=1.0 - float(distance),
                    text=str(props["text"]),
                    document_id=int(props["document_id"]),
                    source=str(props["source"]),
                    chunk_index=int(props["chunk_index"]),
                    project=str(props["project"]),
                )
            )
        return hits

    def delete_document(self, name: str, document_id: int) -> None:
        if not self.has_collection(name):
            return
        collection = self._collection(name)
        where = _filters({"document_id": int(document_id)})
        with _server_errors(f"deleting from {name!r}"):
            for _ in range(_DELETE_ROUNDS):
                if collection.data.delete_many(where=where).matches == 0:
                    return

    def count(self, name: str, where: Where | None = None) -> int:
        collection = self._collection(name)
        with _server_errors(f"counting {name!r}"):
            total = collection.aggregate.over_all(total_count=True, filters=_filters(where)).total_count
        return int(total or 0)

    def close(self) -> None:
        self._client.close()

    # ---- helpers
    def _collection(self, name: str) -> Any:
        full = _PREFIX + check_collection(name)
        with _server_errors(f"opening {name!r}"):
            if not self._client.collections.exists(full):
                raise NotFound(f"vector collection {name!r} not found")
            return self._client.collections.use(full)

    def _dimension(self, full_name: str) -> int:
        with _server_errors(f"reading {full_name!r}"):
            description = self._client.collections.use(full_name).config.get().description or ""
        try:
            return int(description.rsplit("vectors of ", 1)[1].split()[0])
        except (IndexError, ValueError):
            raise Conflict(f"Weaviate collection {full_name!r} was not created by deepext") from None


def _filters(where: Where | None) -> Any:
    from weaviate.classes.query import Filter

    terms = [Filter.by_property(key).equal(value) for key, value in check_where(where).items()]
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else Filter.all_of(terms)
