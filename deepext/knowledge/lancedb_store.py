"""The embedded vector store: LanceDB tables in a folder (default `<home>/vectors`) or under an object
store URI. One table per collection; search is exact (a flat scan with cosine distance, ~30 ms for
10k chunks of 384 values on two cores), filtered before ranking.

Every read sees the newest committed data (`read_consistency_interval=0`), so the API, the CLI and
Ray workers writing the same folder stay consistent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from deepext.config import Settings
from deepext.errors import Conflict, InvalidInput, NotFound
from deepext.knowledge.store import (
    Chunk,
    Hit,
    Where,
    check_collection,
    check_search,
    check_vectors,
    check_where,
)


def _schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("document_id", pa.int64(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("chunk_index", pa.int64(), nullable=False),
            pa.field("project", pa.string(), nullable=False),
        ]
    )


def _sql_filter(where: Where | None) -> str | None:
    """Equality on known columns (`check_where`), strings quoted SQL-style."""
    terms = []
    for key, value in check_where(where).items():
        literal = str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"
        terms.append(f"{key} = {literal}")
    return " AND ".join(terms) or None


class LanceDBStore:
    """`VectorStore` over a LanceDB database at `uri`."""

    def __init__(self, uri: str) -> None:
        import lancedb

        self.uri = uri
        self._db = lancedb.connect(uri, read_consistency_interval=dt.timedelta(0))

    @classmethod
    def from_settings(cls, settings: Settings) -> LanceDBStore:
        return cls(settings.resolved_vector_store_uri)

    # ---- collections
    def create_collection(self, name: str, dimension: int) -> None:
        check_collection(name)
        if dimension < 1:
            raise InvalidInput("dimension must be at least 1", field="dimension")
        if self.has_collection(name):
            have = self._dimension(self._table(name))
            if have != dimension:
                raise Conflict(f"collection {name!r} holds vectors of {have} values, not {dimension}")
            return
        self._db.create_table(name, schema=_schema(dimension), exist_ok=True)

    def drop_collection(self, name: str) -> None:
        check_collection(name)
        if self.has_collection(name):
            self._db.drop_table(name)

    def has_collection(self, name: str) -> bool:
        try:
            self._table(name)
        except NotFound:
            return False
        return True

    # ---- chunks
    def upsert(self, name: str, chunks: Sequence[Chunk]) -> None:
        table = self._table(name)
        if not chunks:
            return
        dimension = self._dimension(table)
        check_vectors(chunks, dimension)
        flat = np.asarray([np.asarray(c.vector, dtype=np.float32) for c in chunks], dtype=np.float32).reshape(-1)
        data = pa.table(
            {
                "id": [c.id for c in chunks],
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dimension),
                "text": [c.text for c in chunks],
                "document_id": pa.array([c.document_id for c in chunks], pa.int64()),
                "source": [c.source for c in chunks],
                "chunk_index": pa.array([c.chunk_index for c in chunks], pa.int64()),
                "project": [c.project for c in chunks],
            },
            schema=_schema(dimension),
        )
        table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)

    def search(self, name: str, vector: Sequence[float], k: int, where: Where | None = None) -> list[Hit]:
        table = self._table(name)
        check_search(vector, k, self._dimension(table))
        query = table.search(np.asarray(vector, dtype=np.float32)).distance_type("cosine").limit(k)
        sql = _sql_filter(where)
        if sql is not None:
            query = query.where(sql, prefilter=True)
        rows: list[dict[str, Any]] = query.select(
            ["id", "text", "document_id", "source", "chunk_index", "project", "_distance"]
        ).to_list()
        return [
            Hit(
                id=row["id"],
                score=1.0 - float(row["_distance"]),
                text=row["text"],
                document_id=int(row["document_id"]),
                source=row["source"],
                chunk_index=int(row["chunk_index"]),
                project=row["project"],
            )
            for row in rows
        ]

    def delete_document(self, name: str, document_id: int) -> None:
        try:
            table = self._table(name)
        except NotFound:
            return
        table.delete(f"document_id = {int(document_id)}")

    def count(self, name: str, where: Where | None = None) -> int:
        table = self._table(name)
        sql = _sql_filter(where)
        return int(table.count_rows(sql) if sql is not None else table.count_rows())

    def close(self) -> None:
        pass  # an embedded database holds no connection

    # ---- helpers
    def _table(self, name: str) -> Any:
        check_collection(name)
        try:
            return self._db.open_table(name)
        except ValueError:  # LanceDB: "Table 'x' was not found"
            raise NotFound(f"vector collection {name!r} not found") from None

    @staticmethod
    def _dimension(table: Any) -> int:
        return int(table.schema.field("vector").type.list_size)
