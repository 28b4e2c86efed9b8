"""What a device said when it gave up a task.

``leases.abort_detail``: the cause a device sends with an abort ("bad_plan: the runtime cannot
load …") was dropped; an operator needs it to tell a broken plan from a flaky fleet, and the
lease service reads it to stop leasing a plan to a device that cannot run it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``leases.abort_detail`` (NULL for existing leases)."""
    with op.batch_alter_table("leases") as batch_op:
        batch_op.add_column(sa.Column("abort_detail", sa.String(500), nullable=True))


def downgrade() -> None:
    """Drop it."""
    with op.batch_alter_table("leases") as batch_op:
        batch_op.drop_column("abort_detail")
