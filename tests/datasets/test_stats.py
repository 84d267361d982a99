"""Column statistics accumulate correctly across batches."""

from __future__ import annotations

import pyarrow as pa

from deepext.datasets.stats import ColumnStats


def test_stats_over_two_batches() -> None:
    stats = ColumnStats()
    stats.add(pa.RecordBatch.from_pydict({"text": ["ab", None], "n": [1, 5], "turns": [[1], [1, 2, 3]]}))
    stats.add(pa.RecordBatch.from_pydict({"text": ["abcd", "é"], "n": [3, None], "turns": [[], [1]]}))
    out = stats.as_dict()
    assert out["text"] == {"measure": "length", "rows": 4, "nulls": 1, "min": 1, "max": 4, "mean": 2.3333}
    assert out["n"] == {"measure": "value", "rows": 4, "nulls": 1, "min": 1, "max": 5, "mean": 3.0}
    assert out["turns"] == {"measure": "items", "rows": 4, "nulls": 0, "min": 0, "max": 3, "mean": 1.25}


def test_all_null_column() -> None:
    stats = ColumnStats()
    stats.add(pa.RecordBatch.from_pydict({"x": pa.array([None, None], pa.string())}))
    assert stats.as_dict()["x"]["min"] is None
    assert stats.as_dict()["x"]["nulls"] == 2
