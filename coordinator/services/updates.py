"""Uploads: check an update, accept it exactly once per lease, and move the model when due.

Order of checks: the lease (exists, is the caller's, still active, before its deadline), the
base version, then the payload (decodes, right length, finite, norm bound; for a DP job the
lease's clip norm C and the within-C bit), then, under the job's lock, the job (not stopped,
finished or out of privacy budget), staleness, a DP job's participation window, the current C,
and that the step it feeds stays finite.
Nothing reaches the model before every check passed, inside one transaction with the version
step, so an upload is either wholly accepted or not at all.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator.aggregation import NormTooLargeError, clip_by_norm, configured, magnitudes
from coordinator.config import JobCreate
from coordinator.db.blobs import put_blob, release
from coordinator.db.models import (
    Device,
    Job,
    JobMode,
    Lease,
    LeaseStatus,
    Rejection,
    Round,
    Update,
)
from coordinator.db.session import transaction, writes_serialised
from coordinator.errors import (
    BadRequest,
    Conflict,
    ContributionCapped,
    CoordinatorError,
    InvalidUpdate,
    LeaseClosed,
    StaleUpdate,
    WrongBaseVersion,
)
from coordinator.services import admission, privacy, rounds, versions
from coordinator.services.jobs import end_reason, get_job, job_config, refuse_if_ended
from coordinator.services.leasing import owned_lease
from coordinator.services.plans import get_plan
from fedge.codecs import Codec, Float32, Payload
from fedge.errors import NonFiniteValues, WireFormatError
from fedge.protocol import Reason, UploadReceipt
from fedge.wire import FORMAT_VERSION, decode_update, decode_vector, encode_vector

FLOAT32 = "float32"

MAX_EXAMPLES = 10_000_000


def upload(
    session: Session,
    device: Device,
    lease_id: str,
    body: bytes,
    *,
    base_version: int,
    num_examples: int,
    metrics: dict[str, Any],
    now: float,
    arrived: float | None = None,
) -> UploadReceipt:
    """Accept one update for ``lease_id``; a retry of an accepted upload is acknowledged again.

    The payload is decoded, checked and stored before the job's row is locked: the lock
    serialises every upload of a job, so only the state checks and the version step are
    done while holding it. The lease's liveness is judged at ``arrived`` (when the request
    reached the server; default ``now``): waiting in the server's queue is not the device's.
    """
    alive_at = now if arrived is None else min(arrived, now)
    lease = owned_lease(session, device, lease_id)
    job = get_job(session, lease.job_id)  # no lock yet: plan and config never change
    digest = hashlib.sha256(body).hexdigest()
    received = body
    if lease.status == LeaseStatus.COMPLETED:
        return _replay(session, job, lease, digest)
    _check_lease(lease, base_version=base_version, now=alive_at)
    if not 1 <= num_examples <= MAX_EXAMPLES:
        raise BadRequest(f"num_examples must lie in [1, {MAX_EXAMPLES}], got {num_examples}")

    config = job_config(job)
    delta = _decode(body, get_plan(session, job.plan_id).num_params, lease, config)
    sizes = magnitudes(delta)  # the decoded update's, streamed: no float copy of a payload
    norm = sizes.norm
    clipped = False
    private = privacy.is_private(config)
    if private:  # the device clips to its task's C; we only check (whatever norm_policy)
        privacy.check_norm(norm, privacy.lease_clip_norm(session, job, config, lease.base_version))
        privacy.within_clip(config, metrics)
    bound = configured(config.aggregation).norm_bound
    if bound is not None and norm > bound.max_norm:  # decoded only when it must be clipped
        try:
            clipped_delta, clipped = bound.apply(_floats(delta), norm)
        except NormTooLargeError as exc:
            raise InvalidUpdate(str(exc), reason=Reason.NORM_TOO_LARGE) from exc
        body = encode_vector(clipped_delta)
        delta = decode_update(body)
    stored = put_blob(session, body, now=now, digest=None if clipped else digest)

    if not writes_serialised(session):  # SQLite's writers hold the lock since their BEGIN
        job = get_job(session, lease.job_id, for_update=True)  # serialises version steps
        session.refresh(lease, with_for_update=True)
    if _completed(lease):  # re-read under the lock: a concurrent retry of this upload won
        return _replay(session, job, lease, digest)
    _check_lease(lease, base_version=base_version, now=alive_at)
    refuse_if_ended(job, lease.id)  # a lease issued while the job was being stopped
    staleness = job.current_version - lease.base_version
    if job.mode == JobMode.ASYNC and staleness > config.aggregation.max_staleness:
        raise StaleUpdate(
            f"update is {staleness} versions stale; this job accepts at most "
            f"{config.aggregation.max_staleness}"
        )
    admission.refuse_if_capped(session, job, config, device.id)  # under the lock: a guarantee
    if (refusal := privacy.window_refusal(session, job, config, device.id)) is not None:
        raise Conflict(f"update refused: the device {refusal}")
    current_round = session.get(Round, lease.round_id) if lease.round_id is not None else None
    if current_round is not None and current_round.closed_at is not None:
        raise StaleUpdate(f"round {current_round.number} closed before this report arrived")
    clip_norm = privacy.clip_norm_for(job, config)  # read under the lock: C cannot move now
    if clip_norm is not None and norm > clip_norm * (1.0 + privacy.NORM_TOLERANCE):
        # Adaptive C shrank since this task was handed out: the device honoured its C, and the
        # version's bound is today's, so the coordinator scales the update down to it.
        scaled, clipped = clip_by_norm(_floats(delta), clip_norm)
        release(session, {stored})  # the unclipped bytes are never read
        body = encode_vector(scaled)
        delta = decode_update(body)
        stored = put_blob(session, body, now=now)
    versions.refuse_if_not_finite(session, job, delta, max_abs=sizes.max_abs)

    session.add(
        Update(
            lease_id=lease.id,
            job_id=job.id,
            device_id=device.id,
            base_version=lease.base_version,
            staleness=staleness,
            num_examples=num_examples,
            delta_sha256=stored,
            norm=norm,
            clipped=clipped,
            metrics=metrics | {"upload_sha256": digest},
            received_at=now,
            codec=lease.codec or FLOAT32,  # as received (a clipped one is stored as float32)
            upload_bytes=len(received),
        )
    )
    lease.close(LeaseStatus.COMPLETED, "uploaded", now)
    session.flush()
    # The blob is written in this transaction (a restart refolds it from there); this upload
    # itself is folded from the bytes received, not read back.
    folded = {stored: delta}
    if current_round is not None:
        rounds.on_report(session, job, current_round, now=now, received=folded)
    else:
        versions.make_version_from_buffer(session, job, now=now, received=folded)
    return UploadReceipt(
        status="accepted",
        lease_id=lease.id,
        global_version=job.current_version,
        staleness=staleness,
        clipped=clipped,
    )


def record_rejection(
    sessions: sessionmaker[Session],
    error: CoordinatorError,
    *,
    device_id: str,
    lease_id: str,
    now: float,
) -> None:
    """Count a refused upload in its own transaction; one that cannot succeed closes its lease.

    Too stale, overdue, or on a job stopped after the lease was issued: retrying cannot help.

    Called after the upload's transaction rolled back, so the refusal is durable while nothing
    of the refused update is.
    """
    with transaction(sessions) as session:
        lease = session.get(Lease, lease_id)
        known = lease is not None and lease.device_id == device_id
        session.add(
            Rejection(
                job_id=lease.job_id if known and lease else None,
                device_id=device_id,
                lease_id=lease_id if known else None,
                reason=error.reason,
                at=now,
            )
        )
        if known and lease and lease.status == LeaseStatus.ACTIVE:
            if isinstance(error, StaleUpdate | ContributionCapped):  # retrying cannot help
                lease.close(LeaseStatus.REJECTED, error.reason, now)
            elif isinstance(error, LeaseClosed) and (dead := lease.overdue(now)) is not None:
                lease.close(LeaseStatus.EXPIRED, dead, now)
            elif isinstance(error, LeaseClosed):
                job = session.get_one(Job, lease.job_id)
                if job.status.ended:  # issued while the job was being stopped
                    lease.close(LeaseStatus.REJECTED, end_reason(job), now)


def _completed(lease: Lease) -> bool:
    return lease.status == LeaseStatus.COMPLETED


def _check_lease(lease: Lease, *, base_version: int, now: float) -> None:
    if lease.status != LeaseStatus.ACTIVE:
        raise LeaseClosed(f"lease {lease.id} is {lease.status.value} ({lease.close_reason})")
    dead = lease.overdue(now)
    if dead == "deadline":
        raise LeaseClosed(f"lease {lease.id} expired {now - lease.deadline_at:.1f} s ago")
    if dead == "silent":
        silent_for = now - (lease.alive_until or now)
        raise LeaseClosed(
            f"lease {lease.id} expired: its device went silent ({silent_for:.1f} s past the"
            " heartbeat grace)"
        )
    if base_version != lease.base_version:
        raise WrongBaseVersion(
            f"lease {lease.id} handed out version {lease.base_version}, "
            f"the update says it was trained from version {base_version}"
        )


def _replay(session: Session, job: Job, lease: Lease, digest: str) -> UploadReceipt:
    accepted = session.scalar(select(Update).where(Update.lease_id == lease.id))
    if accepted is None or accepted.metrics.get("upload_sha256") != digest:
        raise LeaseClosed(f"lease {lease.id} already delivered a different update")
    return UploadReceipt(
        status="already_accepted",
        lease_id=lease.id,
        global_version=job.current_version,
        staleness=accepted.staleness,
        clipped=accepted.clipped,
    )


def _decode(body: bytes, num_params: int, lease: Lease, config: JobCreate) -> Payload:
    """The upload as a payload (views of ``body``), checked against the lease's codec and seed.

    A format-1 float32 vector is taken for a float32 lease (devices before codecs send one).
    """
    codec = lease.codec or FLOAT32
    try:
        if body[4:5] == bytes([FORMAT_VERSION]):
            vector = decode_vector(body, expected_length=num_params)
            if not np.isfinite(vector).all():
                raise InvalidUpdate("update contains NaN or Inf", reason=Reason.NON_FINITE)
            payload = _float32_payload(vector, seed=lease.codec_seed or 0)
        else:
            payload = decode_update(body, expected_length=num_params)
    except NonFiniteValues as exc:
        raise InvalidUpdate(f"update contains NaN or Inf: {exc}", reason=Reason.NON_FINITE) from exc
    except WireFormatError as exc:
        raise InvalidUpdate(f"update body is not a valid weight delta: {exc}") from exc
    if payload.codec.name != codec:
        allowed = ", ".join(config.compression.codecs)
        raise InvalidUpdate(
            f"lease {lease.id} asked for codec {codec}, the update is encoded with "
            f"{payload.codec.name} (this job allows {allowed})",
            reason=Reason.CODEC_MISMATCH,
        )
    if body[4:5] != bytes([FORMAT_VERSION]) and payload.seed != (lease.codec_seed or 0):
        raise InvalidUpdate(
            f"lease {lease.id} handed out codec seed {lease.codec_seed or 0}, the update was "
            f"encoded under seed {payload.seed}",
            reason=Reason.SEED_MISMATCH,
        )
    return payload


def _float32_payload(vector: npt.NDArray[np.float32], *, seed: int) -> Payload:
    """A decoded format-1 vector as a float32 payload (a view of it, no copy)."""
    return Payload(
        codec=Codec(values=Float32()),
        length=vector.size,
        seed=seed,
        scales=np.zeros(0, np.float32),
        packed=vector.view(np.uint8),
    )


def _floats(delta: Payload) -> npt.NDArray[np.float32]:
    """The decoded update as float32: only where it must be scaled (clipping)."""
    return delta.decode()
