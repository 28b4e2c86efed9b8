"""Store blobs uncompressed on PostgreSQL.

Weight vectors are float32 noise to pglz: with the default EXTENDED storage every insert of a
weight vector tries to compress, fails, and stores the raw bytes anyway: a much slower insert
than with EXTERNAL (figures: benchmarks/RESULTS.md, "Coordinator under load"). SQLite has no
such setting.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """SET STORAGE EXTERNAL on blobs.data (PostgreSQL only)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    """Back to the default."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTENDED")
