"""Column statistics gathered batch by batch while a dataset streams in.

Per column: rows, nulls, and a min / max / mean of what matters for its type - the value for
numbers, the character length for text, the item count for lists (e.g. chat turns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class _Summary:
    measure: str  # value | length | items
    count: int = 0
    nulls: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None

    def add(self, values: pa.Array, nulls: int, rows: int) -> None:
        self.count += rows
        self.nulls += nulls
        if rows == nulls:
            return
        bounds = pc.min_max(values)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        self.total += float(pc.sum(values).as_py() or 0)

    def as_dict(self) -> dict[str, Any]:
        present = self.count - self.nulls
        return {
            "measure": self.measure,
            "rows": self.count,
            "nulls": self.nulls,
            "min": self.low,
            "max": self.high,
            "mean": round(self.total / present, 4) if present else None,
        }


def _measure(column: pa.Array) -> tuple[str, pa.Array] | None:
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "value", column
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "length", pc.utf8_length(column)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return "items", pc.list_value_length(column)
    return None


class ColumnStats:
    """Accumulates per-column statistics over record batches."""

    def __init__(self) -> None:
        self._columns: dict[str, _Summary | None] = {}
        self._nulls_only: dict[str, int] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            measured = _measure(column)
            if measured is None:
                self._nulls_only[name] = self._nulls_only.get(name, 0) + column.null_count
                self._columns.setdefault(name, None)
                continue
            measure, values = measured
            summary = self._columns.get(name) or _Summary(measure)
            summary.add(values, column.null_count, len(column))
            self._columns[name] = summary

    def as_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, summary in self._columns.items():
            if summary is None:
                out[name] = {"measure": None, "nulls": self._nulls_only.get(name, 0)}
            else:
                out[name] = summary.as_dict()
        return out
