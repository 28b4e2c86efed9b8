"""Poisoning defences: what each version's zeroing and robust rule did.

``versions.defences`` (JSON, NULL for a version made without zeroing or a robust rule): the
zeroing norm the version's updates were judged by, how many it zeroed and the quantile estimate
the next version starts from; the robust rule and the values it trimmed per side
(``coordinator.services.defences``). Written with the version, in its transaction.

Added and dropped in place (``recreate="never"``), as 0006 does: recreating a table on SQLite
would fail on every row that names it.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``versions.defences``, NULL for every existing version."""
    with op.batch_alter_table("versions", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("defences", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop it, in place."""
    with op.batch_alter_table("versions", recreate="never") as batch_op:
        batch_op.drop_column("defences")
