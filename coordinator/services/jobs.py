"""Training jobs: creation (version 0 from the plan's initial weights), lifecycle, versions."""

from __future__ import annotations

import io
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.aggregation import OptimizerState, configured
from coordinator.config import JobCreate
from coordinator.db.blobs import get_blob, put_blob
from coordinator.db.models import (
    Job,
    JobMode,
    JobStatus,
    Lease,
    LeaseStatus,
    Round,
    RoundStatus,
    Version,
)
from coordinator.errors import Conflict, LeaseClosed, NotFound
from coordinator.services import accounting
from coordinator.services.memo import ImmutableRows
from coordinator.services.plans import get_plan

Action = Literal["pause", "resume", "stop"]
_TRANSITIONS: dict[str, tuple[set[JobStatus], JobStatus]] = {
    "pause": ({JobStatus.RUNNING}, JobStatus.PAUSED),
    "resume": ({JobStatus.PAUSED}, JobStatus.RUNNING),
    "stop": ({JobStatus.RUNNING, JobStatus.PAUSED}, JobStatus.STOPPED),
}


def encode_optimizer_state(state: OptimizerState) -> bytes:
    """Serialise an optimizer state as ``.npz`` bytes (no pickle)."""
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {f"slot_{k}": np.asarray(v) for k, v in state.slots.items()}
    arrays.update(step=np.int64(state.step), num_params=np.int64(state.num_params))
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode_optimizer_state(data: bytes) -> OptimizerState:
    """Inverse of :func:`encode_optimizer_state`."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        slots = {k.removeprefix("slot_"): npz[k] for k in npz.files if k.startswith("slot_")}
        return OptimizerState(slots=slots, num_params=int(npz["num_params"]), step=int(npz["step"]))


def create_job(
    session: Session, request: JobCreate, *, now: float, allow_seeded_noise: bool = False
) -> Job:
    """Create a running job whose version 0 is the plan's initial weights.

    A DP job is stored with its noise multiplier calibrated (when it gave ``target_epsilon``)
    and its privacy state: an empty ledger and the versions its budget allows
    (:func:`coordinator.services.accounting.prepare`, which refuses a job that cannot run).
    """
    plan = get_plan(session, request.plan_id)
    privacy_state = None
    if request.privacy.mechanism == "gaussian":
        request, state = accounting.prepare(request, allow_seeded_noise=allow_seeded_noise)
        privacy_state = state.to_json()
    optimizer = configured(request.aggregation).server_optimizer
    state_sha = put_blob(session, encode_optimizer_state(optimizer.init(plan.num_params)), now=now)
    job = Job(
        name=request.name,
        plan_id=plan.id,
        mode=JobMode(request.aggregation.mode),
        status=JobStatus.RUNNING,
        config=request.model_dump(mode="json"),
        current_version=0,
        optimizer_state_sha256=state_sha,
        created_at=now,
        privacy_state=privacy_state,
    )
    session.add(job)
    session.flush()
    session.add(
        Version(job_id=job.id, number=0, weights_sha256=plan.initial_weights_sha256, created_at=now)
    )
    session.flush()
    return job


def get_job(session: Session, job_id: int, *, for_update: bool = False) -> Job:
    """The job with ``job_id``; with ``for_update`` its row is locked until the transaction ends.

    The lock serialises everything that moves a job's version, so two workers never both make
    version N+1 (SQLite serialises writers anyway). On PostgreSQL it is ``FOR NO KEY UPDATE``:
    a plain ``FOR UPDATE`` would also block the ``FOR KEY SHARE`` lock that every insert of a
    lease takes through its foreign key to the job, stalling check-ins behind uploads.
    """
    statement = select(Job).where(Job.id == job_id)
    if for_update:
        # populate_existing: a Job loaded earlier in this session must be re-read under the
        # lock, or the identity map hands back its stale current_version.
        statement = statement.with_for_update(key_share=True).execution_options(
            populate_existing=True
        )
    job = session.scalar(statement)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


def job_config(job: Job) -> JobCreate:
    """The validated configuration a job was created with."""
    return JobCreate.model_validate(job.config)


def change_status(session: Session, job_id: int, action: Action, *, now: float) -> Job:
    """Pause, resume or stop a job; an impossible transition is a :class:`Conflict`.

    Stopping also closes the job's open leases and round (see :func:`end_job`).
    """
    allowed, target = _TRANSITIONS[action]
    job = get_job(session, job_id, for_update=True)
    if job.status not in allowed:
        raise Conflict(f"cannot {action} job {job_id}: it is {job.status.value}")
    if target == JobStatus.STOPPED:
        end_job(session, job, now=now)
    else:
        job.status = target
    return job


def end_reason(job: Job) -> str:
    """Why a job ended: "job finished" (``max_versions``), its privacy budget, or "job stopped"."""
    if job.status == JobStatus.BUDGET_EXHAUSTED:
        return "privacy budget exhausted"
    max_versions = job_config(job).max_versions
    if max_versions is not None and job.current_version >= max_versions:
        return "job finished"
    return "job stopped"


def end_job(
    session: Session, job: Job, *, now: float, status: JobStatus = JobStatus.STOPPED
) -> None:
    """End ``job`` for good: close its active leases and its open round, in this transaction.

    ``status`` is ``STOPPED`` (stopped or finished) or ``BUDGET_EXHAUSTED`` (a DP job whose
    next version would exceed its ε_max).

    The caller holds the job's row lock. A device told of the close (409 ``lease_closed`` on
    upload or heartbeat) stops training; an upload on a lease issued concurrently with the end
    is refused by :func:`refuse_if_ended`, which reads the job's row under the same lock.
    """
    job.status = status
    reason = end_reason(job)
    leases = session.scalars(
        select(Lease).where(Lease.job_id == job.id, Lease.status == LeaseStatus.ACTIVE)
    ).all()
    for lease in leases:
        lease.close(LeaseStatus.REJECTED, reason, now)
    open_round = session.scalar(
        select(Round).where(
            Round.job_id == job.id,
            Round.status == RoundStatus.OPEN,
            Round.closed_at.is_(None),  # not the round whose close made the final version
        )
    )
    if open_round is not None:  # its reports never enter a version: the model is final
        open_round.status, open_round.closed_at = RoundStatus.FAILED, now
    session.flush()


def refuse_if_ended(job: Job, lease_id: str) -> None:
    """Raise :class:`LeaseClosed` if ``job`` has ended: its model must never move again."""
    if job.status.ended:
        raise LeaseClosed(f"lease {lease_id} is closed ({end_reason(job)}): stop working on it")


def list_jobs(session: Session) -> list[Job]:
    """Every job, oldest first."""
    return list(session.scalars(select(Job).order_by(Job.id)))


def list_versions(session: Session, job_id: int) -> list[Version]:
    """A job's versions, oldest first."""
    get_job(session, job_id)
    return list(
        session.scalars(select(Version).where(Version.job_id == job_id).order_by(Version.number))
    )


# A version's weights, counts and metrics never change once made; its registry stage does.
_versions = ImmutableRows(Version, mutable=("stage",))


def get_version(session: Session, job_id: int, number: int) -> Version:
    """Version ``number`` of a job; :class:`NotFound` if it does not exist (yet).

    Read from memory once committed (all but its registry ``stage``, read fresh when asked):
    a version's contents are immutable, and one not yet made is not kept.
    """
    version = _versions.get(session, (job_id, number))
    if version is None:
        raise NotFound(f"job {job_id} has no version {number}")
    return version


def version_weights(session: Session, job_id: int, number: int) -> bytes:
    """The encoded weights of a version."""
    return get_blob(session, get_version(session, job_id, number).weights_sha256)
