"""Uplink codecs: the codec and seed a lease hands out, and the bytes each upload sent.

``leases.codec`` / ``leases.codec_seed``: what the device must encode its delta with (NULL: a
lease issued before codecs, float32). ``updates.codec`` / ``updates.upload_bytes``: what an
accepted upload was encoded with and its size on the wire; ``versions.upload_bytes``: the sum
over a version's updates (0 for existing rows, whose uploads were not counted).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the five columns (NULL, or 0 for the byte counts, on existing rows)."""
    with op.batch_alter_table("leases") as batch_op:
        batch_op.add_column(sa.Column("codec", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("codec_seed", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("updates") as batch_op:
        batch_op.add_column(sa.Column("codec", sa.String(64), nullable=True))
        batch_op.add_column(
            sa.Column("upload_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("versions") as batch_op:
        batch_op.add_column(
            sa.Column("upload_bytes", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("versions") as batch_op:
        batch_op.drop_column("upload_bytes")
    with op.batch_alter_table("updates") as batch_op:
        batch_op.drop_column("upload_bytes")
        batch_op.drop_column("codec")
    with op.batch_alter_table("leases") as batch_op:
        batch_op.drop_column("codec_seed")
        batch_op.drop_column("codec")
