"""Drop ``rounds.selected``: a counter that stayed 0, nothing ever incremented or read it.

A round's selection is counted from its leases (``rounds.wants_more``), so an aborted, expired
or overdue lease frees its place at once.

On SQLite the column is dropped in place (``ALTER TABLE … DROP COLUMN``, SQLite ≥ 3.35) rather
than by batch mode's copy-and-rename: the coordinator runs migrations with foreign keys on and
inside a transaction (where ``PRAGMA foreign_keys=OFF`` is a no-op), so dropping the old
``rounds`` table would fail on every lease and version that names a round.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop ``rounds.selected``, in place on both databases."""
    with op.batch_alter_table("rounds", recreate="never") as batch_op:
        batch_op.drop_column("selected")


def downgrade() -> None:
    """Bring it back as 0 for every round, as it always was."""
    with op.batch_alter_table("rounds") as batch_op:
        batch_op.add_column(sa.Column("selected", sa.Integer(), nullable=False, server_default="0"))
