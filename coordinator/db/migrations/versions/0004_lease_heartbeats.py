"""Lease heartbeats, and an index for pace steering's recent leases.

``leases.alive_until``: with heartbeats on, a lease whose device has not confirmed it is still
working by then expires, long before its hard deadline — a vanished device frees its slot in
about three heartbeat intervals instead of a whole lease. ``ix_leases_job_closed``: pace steering
reads a job's 200 most recently closed leases on every refused check-in; without it SQLite
sorted all of the job's leases each time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``leases.alive_until`` (NULL for existing leases) and ``ix_leases_job_closed``."""
    with op.batch_alter_table("leases") as batch_op:
        batch_op.add_column(sa.Column("alive_until", sa.Float(), nullable=True))
    op.create_index("ix_leases_job_closed", "leases", ["job_id", "closed_at"])


def downgrade() -> None:
    """Drop both."""
    op.drop_index("ix_leases_job_closed", table_name="leases")
    with op.batch_alter_table("leases") as batch_op:
        batch_op.drop_column("alive_until")
