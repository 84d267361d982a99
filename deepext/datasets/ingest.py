"""Turn a pushed file into one validated Parquet part in the artifact store, in a single stream.

    scan (sha256 + UTF-8 check) -> parse batches -> detect format -> check rows -> stats -> Parquet

Nothing is stored unless every row passes: the Parquet part is written through a `BlobWriter`
that is committed only at the end, and discarded on any error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from deepext.datasets.formats import DatasetFormat, check_schema, detect_format, find_row_problem
from deepext.datasets.readers import Progress, _no_progress, line_of_record, read_batches
from deepext.datasets.stats import ColumnStats
from deepext.errors import DatasetFormatError
from deepext.storage import ArtifactStore

PARQUET_COMPRESSION = "zstd"


@dataclass(frozen=True)
class Part:
    """One Parquet file of a dataset version."""

    key: str
    rows: int
    size: int

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "rows": self.rows, "size": self.size}


@dataclass(frozen=True)
class IngestResult:
    part: Part
    format: str
    schema: dict[str, str]
    stats: dict[str, Any]


def schema_as_dict(schema: pa.Schema) -> dict[str, str]:
    return {field.name: str(field.type) for field in schema}


def write_part(
    store: ArtifactStore,
    batches: Iterable[pa.RecordBatch],
    *,
    source: str,
    source_format: str = "parquet",
    source_path: Path | None = None,
    expected_format: str | None = None,
    expected_schema: dict[str, str] | None = None,
) -> IngestResult:
    """Validate `batches` and store them as one Parquet part.

    `expected_format` / `expected_schema` pin what an appended part must match its parent on.
    Errors name `source` and the user-visible row (a line for JSONL and CSV).
    """
    writer = store.writer()
    parquet: pq.ParquetWriter | None = None
    stats = ColumnStats()
    rows = 0
    try:
        for batch in batches:
            if parquet is None:
                fmt = _format_of(batch.schema, source, expected_format, expected_schema)
                parquet = pq.ParquetWriter(writer, batch.schema, compression=PARQUET_COMPRESSION)
                schema = batch.schema
            elif not batch.schema.equals(schema):
                batch = _conform(batch, schema, source, rows)
            problem = find_row_problem(fmt, batch)
            if problem is not None:
                index = rows + problem.index
                row = line_of_record(source_path, source_format, index) if source_path else index + 1
                raise DatasetFormatError(source, row, problem.reason)
            stats.add(batch)
            parquet.write_batch(batch)
            rows += batch.num_rows
        if parquet is None or rows == 0:
            raise DatasetFormatError(source, None, "no rows")
        parquet.close()
        key = writer.commit()
    except BaseException:
        if parquet is not None and parquet.is_open:
            parquet.close()
        writer.discard()
        raise
    return IngestResult(Part(key, rows, writer.size), fmt.name, schema_as_dict(schema), stats.as_dict())


def _format_of(
    schema: pa.Schema, source: str, expected_format: str | None, expected_schema: dict[str, str] | None
) -> DatasetFormat:
    try:
        fmt = detect_format(schema.names)
    except ValueError as exc:
        raise DatasetFormatError(source, None, str(exc)) from exc
    if expected_format and fmt.name != expected_format:
        raise DatasetFormatError(source, None, f"holds {fmt.name} rows but the parent version holds {expected_format}")
    if expected_schema is not None and schema_as_dict(schema) != expected_schema:
        raise DatasetFormatError(
            source,
            None,
            f"columns {schema_as_dict(schema)} differ from the parent version's {expected_schema}",
        )
    reason = check_schema(fmt, schema)
    if reason:
        raise DatasetFormatError(source, None, reason)
    return fmt


def _conform(batch: pa.RecordBatch, schema: pa.Schema, source: str, rows_before: int) -> pa.RecordBatch:
    """A later batch with the first batch's columns and types (JSON infers types per block)."""
    if set(batch.schema.names) - set(schema.names):
        extra = sorted(set(batch.schema.names) - set(schema.names))
        raise DatasetFormatError(source, None, f"columns {extra} appear after row {rows_before} but not before")
    try:
        columns = [
            batch.column(f.name).cast(f.type) if f.name in batch.schema.names else pa.nulls(len(batch), f.type)
            for f in schema
        ]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DatasetFormatError(source, None, f"column types change after row {rows_before}: {exc}") from exc
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def ingest_file(
    store: ArtifactStore, path: Path, source_format: str, *, progress: Progress = _no_progress, **expect: Any
) -> IngestResult:
    """Stream the file at `path` into a validated Parquet part."""
    return write_part(
        store,
        read_batches(path, source_format, progress),
        source=str(path),
        source_format=source_format,
        source_path=path,
        **expect,
    )
