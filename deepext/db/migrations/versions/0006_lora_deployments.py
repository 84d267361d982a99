"""LoRA deployments: a deployment may host LoRA adapters (`lora_slots` per replica), and a LoRA
version's deployment runs on such a host's engine (`host_deployment_id`) instead of its own.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lora_slots", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("host_deployment_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_deployments_host", "deployments", ["host_deployment_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_constraint("fk_deployments_host", type_="foreignkey")
        batch_op.drop_column("host_deployment_id")
        batch_op.drop_column("lora_slots")
