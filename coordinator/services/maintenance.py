"""Periodic upkeep: expire silent leases, close overdue rounds."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.db.models import Job, JobStatus, Round, RoundStatus
from coordinator.db.session import transaction
from coordinator.services import rounds
from coordinator.services.jobs import get_job
from coordinator.services.leasing import expire_leases


def sweep(sessions: sessionmaker[Session], *, now: float) -> None:
    """One pass over running jobs, each in its own transaction."""
    with transaction(sessions) as session:
        job_ids = session.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING)).all()
    for job_id in job_ids:
        with transaction(sessions) as session:
            job = get_job(session, job_id, for_update=True)
            expire_leases(session, job.id, now=now)
            overdue = session.scalar(
                select(Round).where(
                    Round.job_id == job.id,
                    Round.status == RoundStatus.OPEN,
                    Round.deadline_at < now,
                )
            )
            if overdue is not None:
                rounds.close_round(session, job, overdue, now=now)
