"""Uniform admission: which of the devices that check in gets the next place, and how often.

First come, first served is not a sample of the population. A device that has just reported
checks in again at once, while refused devices wait out their retry window, so the slot its
report freed (or the first place of the next round) goes back to it: in the Flower comparison
179 of 1,000 devices did all 1,000 trainings. With ``population.admission_window_seconds`` = w:

- **Back to the pool.** A device whose task for the job ended (reported, aborted, cut, expired)
  less than w ago is refused with an ordinary, pace-steered retry window: it rejoins the same
  cycle of check-ins as every other device, so what it just did gives it no head start.
- **A random order within each window.** Time is cut into windows ``[k·w, (k+1)·w)``. In window
  k each device holds one ticket u, uniform on [0, 1) and fixed for the window (a hash of job,
  window and device, so checking in again does not draw again); it is admitted, room allowing,
  only from ``k·w + u·w`` on, and told to come back then if it is early. The devices that check
  in during a window are served in a uniformly random order instead of in order of arrival.

So every device's check-ins follow the same process whatever its history, and the places go to
them regardless of who they are: participation over a run is close to uniform over the devices
that are eligible. The cost is a slot idle for a moment until a device in the pool comes back,
instead of handed at once to the device that freed it.

``population.contribution_cap`` bounds what any one device gives, W versions at a time:
:func:`refuse_if_capped` (the privacy accounting's *capped* participation model).
"""

from __future__ import annotations

import hashlib
import math

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from coordinator.config import ContributionCap, JobCreate
from coordinator.db.models import Job, JobMode, Lease, Update
from coordinator.errors import ContributionCapped


def ticket(job_id: int, window: int, device_id: str) -> float:
    """The device's lottery ticket in admission window ``window`` of a job: uniform on [0, 1).

    A hash, not a draw: the same ticket on every check-in within a window, no state kept, and
    device ids are the coordinator's own random UUIDs, so a device cannot pick a good ticket.
    """
    digest = hashlib.sha256(f"fedge-admission:{job_id}:{window}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def seconds_to_turn(job_id: int, device_id: str, *, window_seconds: float, now: float) -> float:
    """Seconds until the device's ticket admits it in the current window (0: it may go now)."""
    window = math.floor(now / window_seconds)
    turn = (window + ticket(job_id, window, device_id)) * window_seconds
    return max(0.0, turn - now)


def just_finished(
    session: Session, job_id: int, device_id: str, *, window_seconds: float, now: float
) -> bool:
    """Whether the device's last task for the job ended less than ``window_seconds`` ago."""
    ended = session.scalar(
        select(func.max(Lease.closed_at)).where(
            Lease.job_id == job_id, Lease.device_id == device_id
        )
    )
    return ended is not None and now - ended < window_seconds


def contributions_in_window(
    session: Session, job: Job, device_id: str, *, window_versions: int
) -> int:
    """The device's updates in the W versions up to the next one, pending updates included.

    The next version is ``current_version + 1``; the window is versions ``next − W + 1`` to
    ``next``. An accepted update not yet in a version will enter ``next`` or a later one, so it
    counts, except, in a synchronous job, one trained from an older version than the current:
    a round's report left behind by a completed round never enters any version.
    """
    first = job.current_version + 2 - window_versions
    pending: ColumnElement[bool] = Update.version.is_(None)
    if job.mode == JobMode.SYNC:
        pending = and_(pending, Update.base_version == job.current_version)
    count = session.scalar(
        select(func.count(Update.id)).where(
            Update.job_id == job.id,
            Update.device_id == device_id,
            or_(pending, Update.version >= first),
        )
    )
    return count or 0


def capped(session: Session, job: Job, cap: ContributionCap, device_id: str) -> bool:
    """Whether one more update of the device would exceed ``cap`` (see :func:`refuse_if_capped`)."""
    made = contributions_in_window(session, job, device_id, window_versions=cap.window_versions)
    return made >= cap.max_contributions


def refuse_if_capped(session: Session, job: Job, config: JobCreate, device_id: str) -> None:
    """Raise :class:`ContributionCapped` if accepting one more update would break the job's cap.

    Guarantee: called under the job's row lock before every acceptance (``updates.upload`` does),
    no device has more than ``max_contributions`` updates in any ``window_versions`` consecutive
    versions of the job. An update accepted now enters version ``current + 1`` or later and the
    count covers the window ending at ``current + 1``, so windows ending later hold no more of
    the device's earlier updates. With the defaults (``max_contributions`` 1) a device is in at
    most ⌈T/W⌉ of T versions, at most once in each. Check-in calls :func:`capped` too, so a
    capped device gets no task instead of training for a refusal.
    """
    cap = config.population.contribution_cap
    if cap is not None and capped(session, job, cap, device_id):
        raise ContributionCapped(
            f"this device made {cap.max_contributions} of its updates allowed in "
            f"{cap.window_versions} consecutive versions of job {job.id}; it may contribute "
            "again once the job has moved on"
        )
