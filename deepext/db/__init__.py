"""Metadata store: SQLAlchemy engine, ORM models and Alembic migrations."""

from deepext.db.engine import Database

__all__ = ["Database"]
