"""A DP job's rules on the request path: the clip norm C of a task, its re-check, the window.

The device clips its delta to the task's C (``device_sdk.clipping``); the coordinator only
re-checks and rejects (``norm_too_large``), whatever the job's ``norm_policy``: a device that
did not clip is refused, never silently fixed. The capped participation model (docs/privacy.md)
is enforced here too: a device contributes at most once in any W consecutive versions.
"""

from __future__ import annotations

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from coordinator.config import JobCreate
from coordinator.db.models import Job, Lease, Round, RoundStatus, Update
from coordinator.errors import InvalidUpdate
from coordinator.privacy import CappedParticipation, FixedClipping
from fedge.protocol import Reason

# The device's float32 rounding of a clipped delta stays far inside this (device_sdk.clipping).
NORM_TOLERANCE = 1e-6


def is_private(config: JobCreate) -> bool:
    """Whether the job publishes differentially private versions."""
    return config.privacy.mechanism == "gaussian"


def clip_norm_for(job: Job, config: JobCreate) -> float | None:
    """The C a task of ``job`` is given now (and its upload re-checked against); None: no DP."""
    clipping = config.privacy.clipping
    if not is_private(config) or clipping is None:
        return None
    if isinstance(clipping, FixedClipping):
        return clipping.clip_norm
    return clipping.initial_clip_norm


def check_norm(norm: float, clip_norm: float) -> None:
    """Refuse (400 ``norm_too_large``) an update longer than the task's C, with tolerance."""
    if norm > clip_norm * (1.0 + NORM_TOLERANCE):
        raise InvalidUpdate(
            f"update norm {norm:.6g} exceeds this DP job's clip norm {clip_norm:.6g}: the "
            "device must clip its delta to the task's clip_norm before uploading it",
            reason=Reason.NORM_TOO_LARGE,
        )


def window_refusal(session: Session, job: Job, config: JobCreate, device_id: str) -> str | None:
    """Why ``device_id`` may not contribute to ``job``'s next version, or None if it may.

    Capped participation: no device contributes twice within any W consecutive versions. An
    update still waiting (in the FedBuff buffer or the open round) goes into the next version,
    so it blocks a second one; an update of a failed round was never published and does not.
    """
    participation = config.privacy.participation
    if not is_private(config) or not isinstance(participation, CappedParticipation):
        return None
    waiting = session.scalar(
        select(func.count(Update.id))
        .join(Lease, Lease.id == Update.lease_id)
        .outerjoin(Round, Round.id == Lease.round_id)
        .where(
            Update.job_id == job.id,
            Update.device_id == device_id,
            Update.version.is_(None),
            or_(Lease.round_id.is_(None), Round.status == RoundStatus.OPEN),
        )
    )
    if waiting:
        return "its update already waits for the next version (privacy window)"
    last = session.scalar(
        select(func.max(Update.version)).where(
            Update.job_id == job.id, Update.device_id == device_id
        )
    )
    if last is not None and job.current_version + 1 - last < participation.window:
        return (
            f"contributed to version {last}; this DP job takes one update per device in any "
            f"{participation.window} versions"
        )
    return None
