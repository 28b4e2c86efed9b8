"""Differential privacy: the job's privacy ledger and each version's DP metadata.

``jobs.privacy_state`` (JSON, NULL for a job without privacy): the ledger of DP events composed
so far (``coordinator.privacy.PrivacyLedger.to_json``), the versions the budget allows, the
adaptive clip norm and the latest ε. ``versions.privacy`` (JSON, NULL without privacy): ε by
PLD and RDP at δ with their assumptions, z, C, n_actual, the clipped fraction and whether the
noise came from a reproducible seed. Both are written in the transaction that makes the
version, so a crash keeps both or neither (docs/privacy.md).

Columns are added and dropped in place (``recreate="never"``): recreating ``jobs`` on SQLite
would fail on every row that names a job, as 0005 explains.

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
    """Add ``jobs.privacy_state`` and ``versions.privacy``, NULL for every existing row."""
    with op.batch_alter_table("jobs", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("privacy_state", sa.JSON(), nullable=True))
    with op.batch_alter_table("versions", recreate="never") as batch_op:
        batch_op.add_column(sa.Column("privacy", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop both, in place."""
    with op.batch_alter_table("versions", recreate="never") as batch_op:
        batch_op.drop_column("privacy")
    with op.batch_alter_table("jobs", recreate="never") as batch_op:
        batch_op.drop_column("privacy_state")
