"""Synchronous rounds (FedAvg as deployed by Bonawitz et al., SysML 2019).

A round selects ``target × over_selection`` devices and closes when ``target`` have reported or
at its deadline. At the deadline a round with at least ``minimum`` reports still makes a version
from what arrived; one with fewer fails and leaves the model unchanged. Reports after the close
are refused. Dropout is data here: the counters say what happened, nothing waits on a dead device.

An accepted report is never lost because another device vanished:

- **Carry-over.** A round that fails short of its minimum hands its accepted reports to the next
  round, which counts them towards its target and minimum from its opening. A failed round leaves
  the model unchanged, so a carried report was trained from exactly the version the next round
  starts from: it is as fresh as the next round's own reports. It is handed on again if that
  round fails too, until it is ``aggregation.carry_rounds`` rounds older than the open round;
  then it is dropped (counted in no version), as every report of a failed round was before. A
  round that failed with its minimum (its step would have overflowed the model) hands nothing on.
- **Reports per device.** As before, a device that reported may take another place in its round
  (or in the round its report was carried into): a small fleet fills its rounds. A job that wants
  one report per device per version sets ``population.contribution_cap`` to one per version
  (:mod:`coordinator.services.admission`), which counts carried reports too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from coordinator.aggregation import CohortPlan, NonFiniteError, RoundHistory, plan_cohort
from coordinator.config import HEARTBEAT_GRACE, JobCreate
from coordinator.db.models import Job, Lease, LeaseStatus, Rejection, Round, RoundStatus, Update
from coordinator.services import versions
from coordinator.services.jobs import job_config

log = logging.getLogger(__name__)


def selection_size(config: JobCreate) -> int:
    """Devices a round selects by the configured factor: target × over-selection, rounded up."""
    return math.ceil(config.aggregation.target * config.aggregation.over_selection)


def history(
    session: Session, job_id: int, *, now: float, rounds: int = 20, heartbeats: bool = False
) -> RoundHistory:
    """Outcomes of the devices selected in the job's last closed rounds.

    A device cut when its round closed is right-censored: it had not reported by then. With
    ``heartbeats`` it learnt of the close and stopped, so that moment is all that is known;
    without, it trains on, and either its refused upload shows its time or its silence up to
    the lease deadline says it is probably dead.
    """
    recent = (
        select(Round.id)
        .where(Round.job_id == job_id, Round.status != RoundStatus.OPEN)
        .order_by(Round.number.desc())
        .limit(rounds)
    )
    # A device cut when its round closed still finishes and tries to upload; the refusal is
    # recorded, and its time un-censors the device: it was slow, not dead.
    late = (
        select(Rejection.lease_id, func.min(Rejection.at).label("at"))
        .where(Rejection.lease_id.is_not(None))
        .group_by(Rejection.lease_id)
        .subquery()
    )
    leases = session.execute(
        select(
            Lease.status,
            Lease.close_reason,
            Lease.issued_at,
            Lease.closed_at,
            Lease.deadline_at,
            late.c.at,
        )
        .outerjoin(late, late.c.lease_id == Lease.id)
        .where(Lease.round_id.in_(recent))
    ).all()
    reported, censored, aborted = [], [], 0
    for status, reason, issued, closed, deadline, late_at in leases:
        if closed is None:
            continue
        if status == LeaseStatus.COMPLETED:
            reported.append(closed - issued)
        elif status == LeaseStatus.ABORTED or (
            status == LeaseStatus.EXPIRED and reason == "silent" and late_at is None
        ):  # gave up, or stopped its heartbeats: known dropouts
            aborted += 1
        elif late_at is not None and late_at >= closed:
            reported.append(late_at - issued)
        elif heartbeats and status == LeaseStatus.REJECTED:  # cut, and told to stop
            censored.append(closed - issued)
        else:  # cut or expired, and silent since: an alive device would upload by its deadline
            censored.append(min(now, deadline) - issued)
    return RoundHistory(report_seconds=reported, censored_seconds=censored, aborted=aborted)


def plan_next_round(session: Session, job: Job, config: JobCreate, *, now: float) -> CohortPlan:
    """Cohort size and deadline of the next round: learned, or as configured."""
    aggregation = config.aggregation
    if not aggregation.adaptive_over_selection:
        return CohortPlan(
            selection_size(config), aggregation.round_seconds, math.nan, math.nan, learned=False
        )
    interval = config.task.heartbeat_seconds
    return plan_cohort(
        history(session, job.id, now=now, heartbeats=interval is not None),
        target=aggregation.target,
        over_selection=aggregation.over_selection,
        round_seconds=aggregation.round_seconds,
        goal=aggregation.completion_goal,
        detection_seconds=None if interval is None else HEARTBEAT_GRACE * interval,
        max_surplus=aggregation.max_surplus,
    )


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
        cohort = plan_next_round(session, job, config, now=now)
        current = Round(
            job_id=job.id,
            number=(last or 0) + 1,
            base_version=job.current_version,
            status=RoundStatus.OPEN,
            target=config.aggregation.target,
            minimum=minimum_reports(config),
            to_select=cohort.to_select,
            opened_at=now,
            deadline_at=now + cohort.deadline_seconds,
        )
        # Reports carried from failed rounds count from the start (see the module docstring).
        current.reported = len(session.scalars(_reports(job.id, current, config)).all())
        session.add(current)
        session.flush()
    return current


def reports(session: Session, current: Round, config: JobCreate) -> Sequence[Update]:
    """The reports that make the round's version, oldest first: its own and those carried in.

    Carried in: the accepted reports, in no version yet, of the failed rounds before ``current``
    that failed short of their minimum, at most ``aggregation.carry_rounds`` rounds back, and
    trained from the version ``current`` starts from.
    """
    return session.scalars(_reports(current.job_id, current, config)).all()


def _reports(job_id: int, current: Round, config: JobCreate) -> Select[Update]:
    carried_from = select(Round.id).where(
        Round.job_id == job_id,
        Round.status == RoundStatus.FAILED,
        Round.reported < Round.minimum,  # short of reports; not a step that would overflow
        Round.number < current.number,
        Round.number >= current.number - config.aggregation.carry_rounds,
    )
    in_round: ColumnElement[bool] = Lease.round_id.in_(carried_from)
    if current.id is not None:  # None while the round is being opened: nothing of its own yet
        in_round = or_(in_round, Lease.round_id == current.id)
    return (
        select(Update)
        .join(Lease, Lease.id == Update.lease_id)
        .where(
            Update.job_id == job_id,
            Update.version.is_(None),
            Update.base_version == current.base_version,
            in_round,
        )
        .order_by(Update.id)
    )


def wants_more(session: Session, current: Round, *, now: float) -> bool:
    """Whether the round still selects devices: its live leases and its reports are below quota.

    Live leases are counted from the leases, not a counter, so an aborted, expired or overdue
    lease frees its place at once; the reports (``reported``) include those carried in.
    """
    live = session.scalar(
        select(func.count(Lease.id)).where(Lease.round_id == current.id, Lease.live(now))
    )
    return (live or 0) + current.reported < current.to_select


def numbers(session: Session, job_id: int) -> dict[int, int]:
    """The number of each of a job's rounds, by round id."""
    rows = session.execute(select(Round.id, Round.number).where(Round.job_id == job_id))
    return {round_id: number for round_id, number in rows}


def round_number(session: Session, round_id: int | None) -> int | None:
    """The number of round ``round_id`` (None for asynchronous leases)."""
    if round_id is None:
        return None
    found = session.get(Round, round_id)
    return found.number if found else None


def on_report(
    session: Session,
    job: Job,
    current: Round,
    *,
    now: float,
    received: versions.Received | None = None,
) -> None:
    """Count an accepted report; the target-th closes the round (``received``: see versions)."""
    current.reported += 1
    if current.reported >= current.target:
        close_round(session, job, current, now=now, received=received)


def close_round(
    session: Session,
    job: Job,
    current: Round,
    *,
    now: float,
    received: versions.Received | None = None,
) -> None:
    """Close a round: make a version from its reports if enough came, else mark it failed.

    A failed round's reports stay stored, in no version: the next round opened carries them
    in while they are fresh enough (see the module docstring), else they are never used.
    """
    current.closed_at = now
    config = job_config(job)
    if current.reported >= current.minimum:
        try:
            versions.make_version_from_round(
                session, job, current, reports(session, current, config), now=now, received=received
            )
            current.status = RoundStatus.COMPLETED
        except NonFiniteError as exc:  # never publish an Inf model: the round fails instead
            log.warning("round %d of job %d failed: %s", current.number, job.id, exc)
            current.status = RoundStatus.FAILED
    else:  # the model is unchanged; the reports carry into the next round
        current.status = RoundStatus.FAILED
        log.info(
            "round %d of job %d failed with %d of its minimum %d reports; they carry into "
            "the next round (for up to %d rounds)",
            current.number,
            job.id,
            current.reported,
            current.minimum,
            config.aggregation.carry_rounds,
        )
    stragglers = session.scalars(
        select(Lease).where(Lease.round_id == current.id, Lease.status == LeaseStatus.ACTIVE)
    ).all()
    for lease in stragglers:  # their reports would arrive after the close: free them now
        dead = lease.overdue(now)  # already dead (the sweep had not recorded it): say why
        if dead is None:
            lease.close(LeaseStatus.REJECTED, "round_closed", now)
        else:
            lease.close(LeaseStatus.EXPIRED, dead, now)
