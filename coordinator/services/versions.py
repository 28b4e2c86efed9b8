"""Making global versions: the only place a job's model moves.

Both paths stream the updates' blobs one at a time through the aggregator, so memory is
O(model size) whatever K or the cohort. A blob holds the upload's bytes as received (format 1,
or a compressed format 2 body), decoded into the sum block by block; the upload that triggers a
version passes its own decoded bytes (``received``), which are folded without reading back the
blob just written in the same transaction. The caller holds the job's row lock, and the new
``Version`` row's primary key ``(job_id, number)`` makes a second writer of the same number fail
instead of forking history.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.aggregation import (
    Delta,
    FloatArray,
    NonFiniteError,
    configured,
    local_step_norm,
    magnitudes,
)
from coordinator.db.blobs import get_blob, put_blob, release
from coordinator.db.models import Job, JobStatus, Round, Update, Version
from coordinator.errors import Conflict, InvalidUpdate
from coordinator.services import accounting, defences
from coordinator.services.jobs import (
    decode_optimizer_state,
    encode_optimizer_state,
    end_job,
    job_config,
    version_weights,
)
from coordinator.services.plans import get_plan, task_hparams
from fedge.codecs import Payload
from fedge.manifest import HyperParameters
from fedge.protocol import Reason
from fedge.wire import decode_update, decode_vector, encode_vector

# Payloads decoded from the bytes a request carried, by the sha256 of the blob stored for them.
Received = Mapping[str, Payload]


def pending_updates(session: Session, job_id: int) -> Sequence[Update]:
    """A job's accepted updates not yet in any version, oldest first."""
    return session.scalars(
        select(Update).where(Update.job_id == job_id, Update.version.is_(None)).order_by(Update.id)
    ).all()


# Below this magnitude a delta cannot overflow a float32 model (max ~3.4e38) in fewer than
# ~2^64 steps, so only larger ones pay for a trial step against the current version.
TRIAL_MAGNITUDE = 2.0**64


def refuse_if_not_finite(
    session: Session, job: Job, delta: Delta, *, max_abs: float | None = None
) -> None:
    """Refuse (400 ``would_overflow``) an update whose server step alone would overflow the model.

    Run before the update is accepted, under the job's lock. The next version's mean delta is
    a weighted average of accepted deltas, so with plain SGD (FedAvg, FedBuff) it cannot
    overflow when no single accepted delta does; a momentum or adaptive step still can, and
    :func:`make_version_from_buffer` and :func:`rounds.close_round` refuse that step instead.
    """
    if max_abs is None:
        max_abs = magnitudes(delta).max_abs
    if max_abs < TRIAL_MAGNITUDE:
        return
    if isinstance(delta, Payload):
        delta = delta.decode()  # past 2^64 only: the trial step needs the vector
    weights = decode_vector(version_weights(session, job.id, job.current_version))
    optimizer_state = decode_optimizer_state(get_blob(session, _optimizer_sha(job)))
    try:
        optimizer = configured(job_config(job).aggregation).server_optimizer
        optimizer.apply(weights, delta, optimizer_state)
    except NonFiniteError as exc:
        raise InvalidUpdate(
            f"update refused: it would make the model non-finite ({exc})",
            reason=Reason.WOULD_OVERFLOW,
        ) from exc


def make_version_from_buffer(
    session: Session, job: Job, *, now: float, received: Received | None = None
) -> Version | None:
    """FedBuff: if K updates wait, fold them into version N+1; else do nothing.

    ``received``: updates decoded from this request's body, folded without reading their blob.
    """
    started = time.perf_counter()  # a duration for operators, not logic: no clock needed
    config = job_config(job)
    aggregator = configured(config.aggregation).fedbuff
    pending = pending_updates(session, job.id)[: config.aggregation.buffer_size]
    if len(pending) < config.aggregation.buffer_size:
        return None
    private = accounting.begin_version(job, config)
    num_params = get_plan(session, job.plan_id).num_params
    if defences.active(config):  # zeroing or a robust rule: folded at the close from the blobs
        try:
            return _defended_version(session, job, pending, num_params, None, started, now=now)
        except NonFiniteError as exc:  # the triggering upload is refused; the buffer is kept
            raise InvalidUpdate(
                f"update refused: the version it completes would be non-finite ({exc})",
                reason=Reason.WOULD_OVERFLOW,
            ) from exc
    state = aggregator.init(num_params)
    deltas = _deltas(session, pending, num_params, received or {})
    for update, delta in zip(pending, deltas, strict=True):
        # The staleness recorded at acceptance is the one that counts: a restart in between
        # must not make an update staler than the device's upload was.
        state = aggregator.accept(
            state, delta, update.num_examples, update.staleness, norm=_folded_norm(update)
        )
    weights = decode_vector(version_weights(session, job.id, job.current_version))
    optimizer_state = decode_optimizer_state(get_blob(session, _optimizer_sha(job)))
    try:
        new_weights, new_state, _, measured = aggregator.flush(
            weights, state, optimizer_state, average=None if private is None else private.average
        )
    except NonFiniteError as exc:  # the triggering upload is refused; the buffer is kept
        raise InvalidUpdate(
            f"update refused: the version it completes would be non-finite ({exc})",
            reason=Reason.WOULD_OVERFLOW,
        ) from exc
    return _commit_version(
        session,
        job,
        pending,
        weights=new_weights,
        optimizer_state=encode_optimizer_state(new_state),
        num_examples=measured.num_examples,
        mean_staleness=measured.mean_staleness,
        norm_mean=measured.update_norm_mean,
        norm_var=measured.update_norm_variance,
        round_id=None,
        seconds=time.perf_counter() - started,
        now=now,
        private=private,
    )


def make_version_from_round(
    session: Session,
    job: Job,
    current: Round,
    reports: Sequence[Update],
    *,
    now: float,
    received: Received | None = None,
) -> Version:
    """FedAvg: fold a closed round's ``reports`` (its own and those carried in) into version N+1.

    Raises :class:`NonFiniteError` (nothing written) if the step would overflow the model.
    """
    started = time.perf_counter()
    config = job_config(job)
    private = accounting.begin_version(job, config)
    num_params = get_plan(session, job.plan_id).num_params
    if defences.active(config):  # zeroing or a robust rule: folded at the close from the blobs
        return _defended_version(session, job, reports, num_params, current.id, started, now=now)
    aggregation = configured(config.aggregation)
    weights = decode_vector(version_weights(session, job.id, job.current_version))
    optimizer_state = decode_optimizer_state(get_blob(session, _optimizer_sha(job)))
    if aggregation.normalized:  # FedNova: each report by its local steps (never a DP job)
        hparams = task_hparams(get_plan(session, job.plan_id), config.task)
        floats = zip(reports, _float_deltas(session, reports, num_params), strict=True)
        triples = (
            (delta, update.num_examples, step_norm(update, hparams)) for update, delta in floats
        )
        new_weights, new_state, measured = aggregation.fednova.step(
            weights, optimizer_state, triples
        )
    else:
        deltas = _deltas(session, reports, num_params, received or {})
        pairs = (
            (delta, update.num_examples)
            if (norm := _folded_norm(update)) is None
            else (delta, update.num_examples, norm)
            for update, delta in zip(reports, deltas, strict=True)
        )
        new_weights, new_state, measured = aggregation.fedavg.step(
            weights, optimizer_state, pairs, average=None if private is None else private.average
        )
    return _commit_version(
        session,
        job,
        reports,
        weights=new_weights,
        optimizer_state=encode_optimizer_state(new_state),
        num_examples=measured.num_examples,
        mean_staleness=0.0,
        norm_mean=measured.update_norm_mean,
        norm_var=measured.update_norm_variance,
        round_id=current.id,
        seconds=time.perf_counter() - started,
        now=now,
        private=private,
    )


def local_steps(update: Update, hparams: HyperParameters) -> int:
    """The local steps behind ``update``: what its device reported, within what it was asked.

    A task asks for ``local_epochs`` epochs of ``batch_size``; a device on a time budget may do
    fewer steps and says how many (``metrics["steps"]``, from ``device_sdk.trainer``). A count
    that is missing or not a number (an older device) is taken as the full task, and one is
    clamped to [1, the full task] so that no device can claim an amplified weight.
    """
    full = hparams.local_epochs * math.ceil(update.num_examples / hparams.batch_size)
    reported = update.metrics.get("steps")
    if isinstance(reported, bool) or not isinstance(reported, int | float):
        return full
    if not math.isfinite(reported):
        return full
    return min(full, max(1, round(reported)))


def step_norm(update: Update, hparams: HyperParameters) -> float:
    """FedNova's ‖aᵢ‖₁ of ``update``: its local steps under the task's η, momentum and μ."""
    return local_step_norm(
        local_steps(update, hparams),
        learning_rate=hparams.learning_rate,
        momentum=hparams.momentum,
        mu=hparams.mu,
    )


def _commit_version(
    session: Session,
    job: Job,
    updates: Sequence[Update],
    *,
    weights: FloatArray,
    optimizer_state: bytes,
    num_examples: int,
    mean_staleness: float,
    norm_mean: float,
    norm_var: float,
    round_id: int | None,
    seconds: float,
    now: float,
    private: accounting.PrivateStep | None,
    defended: dict[str, Any] | None = None,
) -> Version:
    number = job.current_version + 1
    config = job_config(job)
    if config.max_versions is not None and number > config.max_versions:  # never past the limit
        raise Conflict(f"job {job.id} is finished: it made its {config.max_versions} versions")
    # The ledger (on the job row) and the version's ε are written here, in the transaction
    # that adds the version: both commit, or neither does.
    metadata = None if private is None else accounting.finish_version(job, private, updates)
    version = Version(
        job_id=job.id,
        number=number,
        weights_sha256=put_blob(session, encode_vector(weights), now=now),
        created_at=now,
        num_updates=len(updates),
        num_examples=num_examples,
        mean_staleness=mean_staleness,
        update_norm_mean=norm_mean,
        update_norm_var=norm_var,
        round_id=round_id,
        aggregation_seconds=seconds,
        privacy=metadata,
        upload_bytes=sum(update.upload_bytes or 0 for update in updates),
        defences=defended,
    )
    session.add(version)
    for update in updates:
        update.version = number
    session.flush()
    if not config.keep_updates:
        release(session, {update.delta_sha256 for update in updates})
    job.current_version = number
    job.optimizer_state_sha256 = put_blob(session, optimizer_state, now=now)
    if config.max_versions is not None and number >= config.max_versions:
        end_job(session, job, now=now)  # finished: its open leases close now
    elif private is not None and accounting.state_of(job).exhausted:
        # The next version would exceed ε_max: stop now, before anyone trains for it.
        end_job(session, job, now=now, status=JobStatus.BUDGET_EXHAUSTED)
    session.flush()
    return version


def _deltas(
    session: Session, updates: Sequence[Update], num_params: int, received: Received
) -> Iterator[Delta]:
    """Each update's payload: from ``received`` if this request carried it, else its blob.

    Codec and seed were checked against the lease at upload; the blob's bytes are read back
    as they were stored, one blob in memory at a time.
    """
    for update in updates:
        payload = received.get(update.delta_sha256)
        if payload is None:
            blob = get_blob(session, update.delta_sha256)
            payload = decode_update(blob, expected_length=num_params)
        yield payload


def _folded_norm(update: Update) -> float | None:
    """The norm measured at upload, if it is the stored delta's (not for a clipped update)."""
    return None if update.clipped else update.norm


def _defended_version(
    session: Session,
    job: Job,
    updates: Sequence[Update],
    num_params: int,
    round_id: int | None,
    started: float,
    *,
    now: float,
) -> Version:
    """Version N+1 of a job with zeroing or a robust rule (``coordinator.services.defences``)."""
    step = defences.fold(
        session,
        job,
        job_config(job),
        updates,
        _float_deltas(session, updates, num_params),
        weights=decode_vector(version_weights(session, job.id, job.current_version)),
        optimizer_state=decode_optimizer_state(get_blob(session, _optimizer_sha(job))),
        now=now,
    )
    return _commit_version(
        session,
        job,
        updates,
        weights=step.weights,
        optimizer_state=encode_optimizer_state(step.optimizer_state),
        num_examples=step.num_examples,
        mean_staleness=step.mean_staleness,
        norm_mean=step.norm_mean,
        norm_var=step.norm_var,
        round_id=round_id,
        seconds=time.perf_counter() - started,
        now=now,
        private=None,  # a DP job refuses these defences (coordinator.config)
        defended=step.metadata,
    )


def _float_deltas(
    session: Session, updates: Sequence[Update], num_params: int
) -> Iterator[FloatArray]:
    """Each stored update decoded to floats (a defence compares coordinates across updates)."""
    for update in updates:  # one blob decoded at a time; the defence holds what it needs
        yield decode_update(
            get_blob(session, update.delta_sha256), expected_length=num_params
        ).decode()


def _optimizer_sha(job: Job) -> str:
    if job.optimizer_state_sha256 is None:  # pragma: no cover - set at creation
        raise RuntimeError(f"job {job.id} has no optimizer state")
    return job.optimizer_state_sha256
