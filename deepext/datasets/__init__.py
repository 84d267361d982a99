"""Versioned datasets: streaming ingest, format detection, validation, versions, splits."""

from deepext.datasets.service import DatasetStore, PushOutcome, VersionView

__all__ = ["DatasetStore", "PushOutcome", "VersionView"]
