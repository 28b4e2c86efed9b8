"""Synchronous rounds (FedAvg as deployed by Bonawitz et al., SysML 2019).

A round selects ``target × over_selection`` devices and closes when ``target`` have reported or
at its deadline. At the deadline a round with at least ``minimum`` reports still makes a version;
one with fewer fails and leaves the model unchanged. Reports after the close are refused.
Dropout is data here: the counters say what happened, nothing waits on a dead device.
"""

from __future__ import annotations

import math

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.api.schemas import JobCreate
from coordinator.db.models import Job, Lease, LeaseStatus, Round, RoundStatus
from coordinator.services import versions


def selection_size(config: JobCreate) -> int:
    """Devices a round selects: the target times the over-selection factor, rounded up."""
    return math.ceil(config.aggregation.target * config.aggregation.over_selection)


def minimum_reports(config: JobCreate) -> int:
    """Fewest reports for a round to count; 80 % of the target when not configured."""
    aggregation = config.aggregation
    return aggregation.minimum or max(1, math.ceil(0.8 * aggregation.target))


def open_round(session: Session, job: Job, config: JobCreate, *, now: float) -> Round | None:
    """The job's open round, closing an overdue one and opening the next as needed."""
    current = session.scalar(
        select(Round).where(Round.job_id == job.id, Round.status == RoundStatus.OPEN)
    )
    if current is not None and current.deadline_at < now:
        close_round(session, job, current, now=now)
        current = None
    if current is None:
        last = session.scalar(select(func.max(Round.number)).where(Round.job_id == job.id))
        current = Round(
            job_id=job.id,
            number=(last or 0) + 1,
            base_version=job.current_version,
            status=RoundStatus.OPEN,
            target=config.aggregation.target,
            minimum=minimum_reports(config),
            to_select=selection_size(config),
            opened_at=now,
            deadline_at=now + config.aggregation.round_seconds,
        )
        session.add(current)
        session.flush()
    return current


def wants_more(session: Session, current: Round) -> bool:
    """Whether the round still selects devices: its live and finished leases are below quota.

    Counted from the leases, not a counter, so an aborted or expired lease frees its place.
    """
    taken = session.scalar(
        select(func.count(Lease.id)).where(
            Lease.round_id == current.id,
            Lease.status.in_([LeaseStatus.ACTIVE, LeaseStatus.COMPLETED]),
        )
    )
    return (taken or 0) < current.to_select


def round_number(session: Session, round_id: int | None) -> int | None:
    """The number of round ``round_id`` (None for asynchronous leases)."""
    if round_id is None:
        return None
    found = session.get(Round, round_id)
    return found.number if found else None


def on_report(session: Session, job: Job, current: Round, *, now: float) -> None:
    """Count an accepted report; the target-th closes the round."""
    current.reported += 1
    if current.reported >= current.target:
        close_round(session, job, current, now=now)


def close_round(session: Session, job: Job, current: Round, *, now: float) -> None:
    """Close a round: make a version from its reports if enough came, else mark it failed."""
    current.closed_at = now
    if current.reported >= current.minimum:
        versions.make_version_from_round(session, job, current, now=now)
        current.status = RoundStatus.COMPLETED
    else:  # its reports stay stored but never enter a version: the model is unchanged
        current.status = RoundStatus.FAILED
    stragglers = session.scalars(
        select(Lease).where(Lease.round_id == current.id, Lease.status == LeaseStatus.ACTIVE)
    ).all()
    for lease in stragglers:  # their reports would arrive after the close: free them now
        lease.status, lease.close_reason, lease.closed_at = (
            LeaseStatus.REJECTED,
            "round_closed",
            now,
        )
