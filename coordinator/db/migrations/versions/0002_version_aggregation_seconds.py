"""Record how long each version took to aggregate.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``versions.aggregation_seconds``; existing versions get 0."""
    with op.batch_alter_table("versions") as batch_op:
        batch_op.add_column(
            sa.Column("aggregation_seconds", sa.Float(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("versions") as batch_op:
        batch_op.drop_column("aggregation_seconds")
