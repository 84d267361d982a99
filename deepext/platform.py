"""The platform's stores, opened from settings: what every entry point (CLI, API, jobs) starts from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from deepext.config import Settings
from deepext.datasets import DatasetStore
from deepext.db import Database
from deepext.storage import ArtifactStore


@dataclass
class Platform:
    settings: Settings
    db: Database
    artifacts: ArtifactStore

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Platform:
        """Connect to the metadata and artifact stores; bring the schema up to date unless told not to."""
        settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        if migrate and not db.is_migrated():
            db.upgrade()
        return cls(settings, db, ArtifactStore(settings.resolved_artifact_uri, cache_dir=settings.home / "cache"))

    @cached_property
    def datasets(self) -> DatasetStore:
        return DatasetStore(self.db, self.artifacts)

    def close(self) -> None:
        self.db.dispose()
