"""Federated evaluation and the model registry.

``evaluations``: an evaluation task's lease and its reported metrics (loss, accuracy, example
count, the device's tier), one per device per version (unique ``job_id, version, device_id``).
``stage_changes``: every move of a version between registry stages, by whom and why.
``versions.stage``: ``CANDIDATE`` for every existing version, with at most one ``LIVE`` per
job (a partial unique index, on SQLite and PostgreSQL alike).

The column is added in place (``recreate="never"``), as 0006 explains for ``jobs``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STAGES = ("CANDIDATE", "CANARY", "LIVE", "RETIRED")


def _stage(name: str) -> sa.Enum:
    return sa.Enum(*STAGES, name=name, native_enum=False, length=16)


def upgrade() -> None:
    """Add the two tables, the stage column and its one-live-per-job index."""
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=36), nullable=False),
        sa.Column("issued_at", sa.Float(), nullable=False),
        sa.Column("deadline_at", sa.Float(), nullable=False),
        sa.Column("reported_at", sa.Float(), nullable=True),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("accuracy", sa.Float(), nullable=True),
        sa.Column("num_examples", sa.Integer(), nullable=True),
        sa.Column("tier", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "version", "device_id"),
    )
    op.create_index("ix_evaluations_device_id", "evaluations", ["device_id"])
    op.create_index(
        "ix_evaluations_job_version", "evaluations", ["job_id", "version", "reported_at"]
    )
    op.create_table(
        "stage_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("from_stage", _stage("stage"), nullable=False),
        sa.Column("to_stage", _stage("stage"), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_stage_changes_job", "stage_changes", ["job_id", "id"])
    with op.batch_alter_table("versions", recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column("stage", _stage("stage"), nullable=False, server_default="CANDIDATE")
        )
    op.create_index(
        "uq_versions_one_live",
        "versions",
        ["job_id"],
        unique=True,
        sqlite_where=sa.text("stage = 'LIVE'"),
        postgresql_where=sa.text("stage = 'LIVE'"),
    )


def downgrade() -> None:
    """Drop them again, the column in place."""
    op.drop_index("uq_versions_one_live", table_name="versions")
    with op.batch_alter_table("versions", recreate="never") as batch_op:
        batch_op.drop_column("stage")
    op.drop_index("ix_stage_changes_job", table_name="stage_changes")
    op.drop_table("stage_changes")
    op.drop_index("ix_evaluations_job_version", table_name="evaluations")
    op.drop_index("ix_evaluations_device_id", table_name="evaluations")
    op.drop_table("evaluations")
