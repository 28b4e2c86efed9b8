"""Periodic upkeep: expire silent leases, close overdue rounds."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import exists, or_, select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db.models import Job, JobStatus, Lease, LeaseStatus, Round, RoundStatus
from coordinator.db.session import transaction
from coordinator.services import rounds
from coordinator.services.jobs import get_job
from coordinator.services.leasing import expire_leases


def sweep(sessions: sessionmaker[Session], *, now: float, slack: float = 0.0) -> None:
    """One pass over the running jobs that have something due, each in its own transaction.

    Most sweeps find nothing to do, so they ask first, in one read that takes no write lock:
    a job whose leases are all live and whose round is not overdue is left alone. Leases are
    judged ``slack`` seconds in the past: the age of the oldest heartbeat or upload still
    queued in the server, which must not be charged to the device (api/shedding.py).
    """
    with transaction(sessions, read_only=True) as session:
        job_ids = jobs_due(session, now=now, slack=slack)
    for job_id in job_ids:
        with transaction(sessions) as session:
            job = get_job(session, job_id, for_update=True)
            expire_leases(session, job.id, now=now, slack=slack)
            overdue = session.scalar(
                select(Round).where(
                    Round.job_id == job.id,
                    Round.status == RoundStatus.OPEN,
                    Round.deadline_at < now,
                )
            )
            if overdue is not None:
                rounds.close_round(session, job, overdue, now=now)


def jobs_due(session: Session, *, now: float, slack: float = 0.0) -> Sequence[int]:
    """Running jobs with an active lease past its deadline or silent, or an overdue open round.

    Exactly the jobs on which a sweep at ``now`` changes something (:func:`expire_leases`'
    condition, and the overdue round's), so skipping the others changes nothing.
    """
    alive_at = now - slack
    lease_due = exists().where(
        Lease.job_id == Job.id,
        Lease.status == LeaseStatus.ACTIVE,
        or_(Lease.deadline_at < alive_at, Lease.alive_until < alive_at),
    )
    round_due = exists().where(
        Round.job_id == Job.id, Round.status == RoundStatus.OPEN, Round.deadline_at < now
    )
    return session.scalars(
        select(Job.id)
        .where(Job.status == JobStatus.RUNNING, or_(lease_due, round_due))
        .order_by(Job.id)
    ).all()
