"""Jobs: name, submitter, latest metrics, output artifacts, metric rows; model versions: usage counters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=128), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("submitted_by", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("metrics", JSON_TYPE, nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("output_key", sa.String(length=64), nullable=True))
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("usage_requests", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("usage_tokens", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "job_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("values", JSON_TYPE, nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job_metrics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_metrics_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_metrics", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_metrics_job_id"))
    op.drop_table("job_metrics")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("usage_tokens")
        batch_op.drop_column("usage_requests")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("output_key")
        batch_op.drop_column("metrics")
        batch_op.drop_column("submitted_by")
        batch_op.drop_column("name")
