"""Read-only listings behind the admin API's ``GET /plans`` and ``GET /devices``."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.db.models import Device, Plan


def list_plans(session: Session) -> list[Plan]:
    """Every registered plan, oldest first."""
    return list(session.scalars(select(Plan).order_by(Plan.id)))


def list_devices(session: Session, *, limit: int) -> tuple[int, list[Device]]:
    """How many devices are registered, and the ``limit`` seen most recently, latest first."""
    total = session.scalar(select(func.count()).select_from(Device)) or 0
    recent = session.scalars(
        select(Device).order_by(Device.last_seen_at.desc(), Device.id).limit(limit)
    )
    return total, list(recent)
