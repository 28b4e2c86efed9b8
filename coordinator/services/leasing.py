"""Check-in: hand an eligible device a task under a lease, or a jittered retry window.

Pace steering (Bonawitz et al., "Towards Federated Learning at Scale", SysML 2019, §2.3): a
device that gets no task is told when to come back, as a window ``[min, max]`` it jitters
within. The window is sized from the arrival rate the job needs, so that a fleet of thousands
neither stampedes the server nor leaves slots idle: see :func:`retry_window`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from coordinator.aggregation import ConcurrencyPlan, LeaseHistory, plan_concurrency
from coordinator.compression import choose_codec
from coordinator.config import HEARTBEAT_GRACE, JobCreate
from coordinator.db.models import (
    Device,
    Job,
    JobMode,
    JobStatus,
    Lease,
    LeaseStatus,
    Round,
    RoundStatus,
    Update,
)
from coordinator.errors import Forbidden, LeaseClosed, NotFound
from coordinator.services import admission, evaluation, privacy, rounds
from coordinator.services.devices import seen_within
from coordinator.services.jobs import get_version, job_config, refuse_if_ended
from coordinator.services.memo import ClockMemo
from coordinator.services.plans import get_plan, task_hparams
from coordinator.settings import Settings
from fedge import protocol
from fedge.protocol import CheckInResponse, EligibilityFacts, RetryWindow, Task

log = logging.getLogger(__name__)

BAD_PLAN = "bad_plan"  # the abort reason of a device whose runtime cannot run the plan


def check_in(
    session: Session, device: Device, facts: EligibilityFacts, *, now: float, settings: Settings
) -> CheckInResponse:
    """A task from the first running job that wants this device, else a retry window."""
    device.runtime = facts.runtime or device.runtime
    device.sdk_version = facts.sdk_version or device.sdk_version
    jobs = session.scalars(
        select(Job).where(Job.status == JobStatus.RUNNING).order_by(Job.id)
    ).all()
    if not jobs:
        return _retry(settings.retry_max_seconds / 2, settings, "no job is running")
    reasons: list[str] = []
    turn: Deferral | None = None  # the soonest a job wants this device, its ticket permitting
    for job in jobs:
        config = job_config(job)
        held = _active_lease(session, job.id, device.id)
        if held is not None:
            dead = held.overdue(now)
            if dead is None:  # a retried check-in gets the same task back, not a second slot
                return CheckInResponse(task=_task(session, job, config, held))
            held.close(LeaseStatus.EXPIRED, dead, now)
        asked = evaluation.held_evaluation(session, job, device, now=now)
        if asked is not None:  # a retried check-in gets its evaluation task back
            return CheckInResponse(task=evaluation.task_of(session, job, config, asked))
        refusal = _ineligible(session, job, config, device, facts, now)
        if refusal:
            reasons.append(refusal)
            continue
        asked = evaluation.offer(session, job, config, device, now=now)
        if asked is not None:  # evaluation tasks hold no training slot
            return CheckInResponse(task=evaluation.task_of(session, job, config, asked))
        lease = _issue(session, job, config, device, facts, now=now)
        if isinstance(lease, Lease):
            return CheckInResponse(task=_task(session, job, config, lease))
        if isinstance(lease, Deferral):
            turn = lease if turn is None or lease.seconds < turn.seconds else turn
            continue
        reasons.append(lease)
    if turn is not None:  # wanted, but not yet: come back when the ticket's turn comes
        low = max(turn.seconds, settings.retry_min_seconds)
        return CheckInResponse(retry=RetryWindow(min=low, max=low + 1.0, reason=turn.reason))
    return _retry(retry_window(session, jobs[0], now=now, settings=settings), settings, reasons[0])


def abort(
    session: Session, device: Device, lease_id: str, *, reason: str, now: float, detail: str = ""
) -> Lease:
    """Close a lease the device gave up on, freeing its slot at once.

    The device's ``detail`` is kept with the lease and logged: it is how an operator tells a
    plan the fleet's runtime cannot load from batteries running flat.
    """
    lease = owned_lease(session, device, lease_id)
    if lease.status != LeaseStatus.ACTIVE:
        raise LeaseClosed(f"lease {lease_id} is already {lease.status.value}")
    lease.close(LeaseStatus.ABORTED, f"aborted:{reason}", now)
    lease.abort_detail = detail or None
    (log.warning if reason == BAD_PLAN else log.info)(
        "job %s: device %s aborted lease %s (%s)%s",
        lease.job_id,
        device.id,
        lease_id,
        reason,
        f": {detail}" if detail else "",
    )
    return lease


def heartbeat(session: Session, device: Device, lease_id: str, *, now: float) -> Lease:
    """The device is still working on ``lease_id``: keep the lease alive another grace period.

    :class:`LeaseClosed` tells a device whose lease ended — its round reached its target, it
    was silent too long, the deadline passed, its job was stopped or finished — to stop
    training: nothing it uploads will count.
    """
    lease = owned_lease(session, device, lease_id, lock=True)
    if lease.status != LeaseStatus.ACTIVE:
        raise LeaseClosed(
            f"lease {lease_id} is {lease.status.value} ({lease.close_reason}): stop working on it"
        )
    if lease.overdue(now) is not None:
        raise LeaseClosed(f"lease {lease_id} has expired: stop working on it")
    job = session.get_one(Job, lease.job_id)
    refuse_if_ended(job, lease_id)
    interval = job_config(job).task.heartbeat_seconds
    if interval is not None:
        lease.alive_until = now + HEARTBEAT_GRACE * interval
    return lease


def _cannot_run_plan(session: Session, job_id: int, device_id: str) -> bool:
    """Whether ``device_id`` gave up a task of this job because its runtime cannot run the plan.

    A job's plan never changes, so such a device would fail it again on every lease.
    """
    return (
        session.scalar(
            select(Lease.id)
            .where(
                Lease.job_id == job_id,
                Lease.device_id == device_id,
                Lease.close_reason == f"aborted:{BAD_PLAN}",
            )
            .limit(1)
        )
        is not None
    )


def owned_lease(session: Session, device: Device, lease_id: str, *, lock: bool = False) -> Lease:
    """The lease ``lease_id`` if it belongs to ``device``."""
    statement = select(Lease).where(Lease.id == lease_id)
    if lock:
        statement = statement.with_for_update()
    lease = session.scalar(statement)
    if lease is None:
        raise NotFound(f"no lease {lease_id}")
    if lease.device_id != device.id:
        raise Forbidden(f"lease {lease_id} belongs to another device")
    return lease


def expire_leases(session: Session, job_id: int, *, now: float, slack: float = 0.0) -> int:
    """Record as EXPIRED a job's active leases past their deadline or silent too long.

    Such a lease is already dead — :meth:`Lease.live` leaves it out of every count, and its
    upload or heartbeat is refused — so no vanished device ever holds a slot or a round; this
    only writes it down (the periodic sweep calls it). Returns how many it closed.

    Liveness is judged at ``now - slack``: with requests queued in the server for ``slack``
    seconds, a heartbeat or upload that arrived while its lease lived may still be on its way,
    and a lease closed under it would refuse the device's finished work for the server's delay.
    """
    alive_at = now - slack
    overdue = session.scalars(
        select(Lease).where(
            Lease.job_id == job_id,
            Lease.status == LeaseStatus.ACTIVE,
            or_(Lease.deadline_at < alive_at, Lease.alive_until < alive_at),
        )
    ).all()
    for lease in overdue:
        lease.close(LeaseStatus.EXPIRED, lease.overdue(alive_at) or "deadline", now)
    return len(overdue)


def retry_window(session: Session, job: Job, *, now: float, settings: Settings) -> float:
    """Mean seconds a refused device should wait, from the arrival rate the job needs.

    A job keeps ``slots`` devices busy; each task lasts ``T`` seconds on average (measured over
    recent leases), so it needs ``slots / T`` check-ins per second. With ``P`` devices checking
    in, each should come back every ``P * T / slots`` seconds. Clamped to the settings' bounds.
    """
    config = job_config(job)
    if job.mode == JobMode.ASYNC:
        slots = concurrency(session, job, config, now=now).leases
    else:  # the open round's cohort; reading round history here would tax every refusal
        open_size = session.scalar(
            select(Round.to_select).where(Round.job_id == job.id, Round.status == RoundStatus.OPEN)
        )
        slots = open_size or rounds.selection_size(config)
    task_seconds = _task_seconds.get(
        session, job.id, lambda s: _mean_task_seconds(s, job.id), now=now
    )
    if task_seconds is None:  # no task has ended yet
        task_seconds = config.task.lease_seconds / 2
    population = max(seen_within(session, settings.retry_max_seconds, now=now), 1)
    mean = population * task_seconds / max(slots, 1)
    return min(max(mean, settings.retry_min_seconds), settings.retry_max_seconds)


_task_seconds = ClockMemo[float | None](60.0)


def _mean_task_seconds(session: Session, job_id: int) -> float | None:
    """Mean duration of the job's 200 most recently closed leases; None before any closed."""
    durations = session.scalars(
        select(Lease.closed_at - Lease.issued_at)
        .where(Lease.job_id == job_id, Lease.closed_at.is_not(None))
        .order_by(Lease.closed_at.desc())
        .limit(200)
    ).all()
    recent = [float(seconds) for seconds in durations if seconds is not None]
    return sum(recent) / len(recent) if recent else None


def concurrency(session: Session, job: Job, config: JobCreate, *, now: float) -> ConcurrencyPlan:
    """The leases an asynchronous job keeps out: ``concurrency``, or more with ``over_commit``.

    With ``aggregation.over_commit`` the job learns from its recent leases how many never report
    and how long they hold a slot (:func:`coordinator.aggregation.plan_concurrency`), and leases
    enough that ``concurrency`` devices are, on average, working towards a report. Memoised for a
    minute of the clock: the estimate moves slowly, and every check-in asks.
    """
    aggregation = config.aggregation
    if not aggregation.over_commit:
        return ConcurrencyPlan(aggregation.concurrency, math.nan, math.nan, learned=False)
    return _concurrency.get(
        session,
        job.id,
        lambda s: plan_concurrency(
            lease_history(s, job.id, now=now),
            useful=aggregation.concurrency,
            max_factor=aggregation.max_over_commit,
        ),
        now=now,
    )


_concurrency = ClockMemo[ConcurrencyPlan](60.0)


def lease_history(session: Session, job_id: int, *, now: float, recent: int = 200) -> LeaseHistory:
    """What the job's ``recent`` most recently closed leases and its open ones did.

    Uploaded (accepted or refused): a report, after its lease's time. Aborted, silent or past
    its deadline: a dropout, holding its slot until it was counted dead (its last heartbeat's
    grace, or its deadline). Still live: working for so long, outcome unknown.
    """
    rows = session.execute(
        select(Lease.status, Lease.issued_at, Lease.closed_at, Lease.alive_until, Lease.deadline_at)
        .where(Lease.job_id == job_id, Lease.closed_at.is_not(None))
        .order_by(Lease.closed_at.desc())
        .limit(recent)
    ).all()
    open_rows = session.execute(
        select(
            Lease.status, Lease.issued_at, Lease.closed_at, Lease.alive_until, Lease.deadline_at
        ).where(Lease.job_id == job_id, Lease.status == LeaseStatus.ACTIVE)
    ).all()
    reports: list[float] = []
    dropouts: list[float] = []
    working: list[float] = []
    for status, issued, closed, alive_until, deadline in [*rows, *open_rows]:
        dead_at = min(deadline, math.inf if alive_until is None else alive_until)
        closed_at = now if closed is None else closed
        if status in (LeaseStatus.COMPLETED, LeaseStatus.REJECTED):
            reports.append(closed_at - issued)
        elif status == LeaseStatus.ABORTED:
            dropouts.append(closed_at - issued)
        elif status == LeaseStatus.EXPIRED or now > dead_at:  # silent, or out of time
            dropouts.append(dead_at - issued)
        else:
            working.append(now - issued)
    return LeaseHistory(report_seconds=reports, dropout_seconds=dropouts, working_seconds=working)


def _retry(mean: float, settings: Settings, reason: str) -> CheckInResponse:
    low = max(settings.retry_min_seconds, 0.5 * mean)
    return CheckInResponse(retry=RetryWindow(min=low, max=max(low, 1.5 * mean), reason=reason))


def _active_lease(session: Session, job_id: int, device_id: str) -> Lease | None:
    return session.scalar(
        select(Lease).where(
            Lease.job_id == job_id,
            Lease.device_id == device_id,
            Lease.status == LeaseStatus.ACTIVE,
        )
    )


def _ineligible(
    session: Session,
    job: Job,
    config: JobCreate,
    device: Device,
    facts: EligibilityFacts,
    now: float,
) -> str | None:
    """Why this device may not train for this job now, or None if it may."""
    population = config.population
    if _cannot_run_plan(session, job.id, device.id):
        return "its runtime could not run this job's plan (bad_plan): not leased it again"
    if population.require_charging and not facts.charging:
        return "not charging"
    if population.require_idle and not facts.idle:
        return "not idle"
    if population.require_unmetered and not facts.unmetered:
        return "on a metered network"
    if facts.free_memory_mb < population.min_free_memory_mb:
        return f"needs {population.min_free_memory_mb} MB free memory"
    if facts.num_examples < population.min_examples:
        return f"needs at least {population.min_examples} local examples"
    window = population.admission_window_seconds
    if window is not None and admission.just_finished(
        session, job.id, device.id, window_seconds=window, now=now
    ):
        return "a task just ended: back to the pool of devices checking in"
    cap = population.contribution_cap
    if cap is not None and admission.capped(session, job, cap, device.id):
        return (
            f"contributed {cap.max_contributions} times in {cap.window_versions} versions: "
            "the job's contribution cap"
        )
    if population.min_separation_seconds > 0:
        last = session.scalar(
            select(func.max(Update.received_at)).where(
                Update.job_id == job.id, Update.device_id == device.id
            )
        )
        if last is not None and now - last < population.min_separation_seconds:
            return "contributed too recently"
    return privacy.window_refusal(session, job, config, device.id)


def _codec_for(session: Session, job: Job, config: JobCreate, facts: EligibilityFacts) -> str:
    """The lease's uplink codec: the least lossy allowed one that fits the job's budget."""
    compression = config.compression
    if len(compression.codecs) == 1:
        return compression.codecs[0]
    return choose_codec(
        compression.codecs,
        num_params=get_plan(session, job.plan_id).num_params,
        task_bytes=compression.task_bytes,
        task_seconds=compression.task_seconds,
        uplink_bytes_per_second=facts.uplink_bytes_per_second,
    )


def _codec_seed(job: Job, config: JobCreate, device: Device, *, now: float) -> int:
    """A lease's codec seed: 63 bits (a signed BIGINT), fresh, or derived from the job's seed.

    One seed per lease makes the codec errors of a version's updates independent
    (docs/compression.md); a derived one repeats in a simulated run, where time is virtual.
    """
    seed = config.compression.seed
    if seed is None:
        return secrets.randbits(63)
    digest = hashlib.sha256(f"{seed}:{job.id}:{now!r}:{device.registered_at!r}".encode())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


@dataclass(frozen=True)
class Deferral:
    """The job has room for the device, but its admission ticket's turn comes in ``seconds``."""

    seconds: float
    reason: str


def _issue(
    session: Session,
    job: Job,
    config: JobCreate,
    device: Device,
    facts: EligibilityFacts,
    *,
    now: float,
) -> Lease | Deferral | str:
    """A new lease if the job has room for one more device now, else when or why not."""
    full = f"job {job.id} has all the devices it needs now"
    round_id = None
    if job.mode == JobMode.ASYNC:
        active = session.scalar(
            select(func.count(Lease.id)).where(Lease.job_id == job.id, Lease.live(now))
        )
        if (active or 0) >= concurrency(session, job, config, now=now).leases:
            return full
        deadline = now + config.task.lease_seconds
    else:
        current = rounds.open_round(session, job, config, now=now)
        if current is None or not rounds.wants_more(session, current, now=now):
            return full
        round_id = current.id
        deadline = min(now + config.task.lease_seconds, current.deadline_at)
    window = config.population.admission_window_seconds
    if window is not None:  # admitted in the ticket's order (coordinator.services.admission)
        wait = admission.seconds_to_turn(job.id, device.id, window_seconds=window, now=now)
        if wait > 0:
            return Deferral(
                wait, f"admitted in a random order: this device's turn is in {wait:.0f} s"
            )
    interval = config.task.heartbeat_seconds
    lease = Lease(
        id=str(uuid.uuid4()),
        job_id=job.id,
        device_id=device.id,
        round_id=round_id,
        base_version=job.current_version,
        status=LeaseStatus.ACTIVE,
        issued_at=now,
        deadline_at=deadline,
        alive_until=None if interval is None else now + HEARTBEAT_GRACE * interval,
        codec=_codec_for(session, job, config, facts),
        codec_seed=_codec_seed(job, config, device, now=now),
    )
    session.add(lease)
    session.flush()
    return lease


def _task(session: Session, job: Job, config: JobCreate, lease: Lease) -> Task:
    plan = get_plan(session, job.plan_id)
    local = config.task
    version = get_version(session, job.id, lease.base_version)
    return Task(
        lease_id=lease.id,
        job_id=job.id,
        plan_sha256=plan.plan_sha256,
        plan_url=protocol.PLAN.format(plan_sha256=plan.plan_sha256),
        global_version=lease.base_version,
        weights_url=protocol.WEIGHTS.format(job_id=job.id, number=lease.base_version),
        weights_sha256=version.weights_sha256,
        hparams=task_hparams(plan, local),
        deadline=lease.deadline_at,
        round=rounds.round_number(session, lease.round_id),
        heartbeat_seconds=local.heartbeat_seconds,
        clip_norm=privacy.clip_norm_for(job, config),
        held_out_fraction=evaluation.held_out_fraction(config),
        codec=lease.codec or "float32",
        codec_seed=lease.codec_seed or 0,
        time_budget_seconds=local.time_budget_seconds,
    )
