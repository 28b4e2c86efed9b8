"""Federated evaluation: hand devices evaluation tasks, accept their metrics, summarize them.

A job with an ``evaluation`` section offers a share of eligible check-ins an evaluation task
instead of training (:func:`offer`, called by :func:`coordinator.services.leasing.check_in`):
the device downloads the version, runs the plan's ``evaluate`` signature on its held-out split
(or, for ``non_trainers``, on all its examples when it did not train that version) and reports
loss, accuracy and its example count (:func:`report`); never data. Which check-ins: a stable
hash of job, version and device below ``fraction``, so a device is asked consistently and a
run is reproducible. Evaluation leases hold no training slot; an unreported one simply lapses.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from coordinator.aggregation.evaluation import EvaluationSample, EvaluationSummary, summarize
from coordinator.config import JobCreate
from coordinator.db.models import Device, Evaluation, Job, Stage, Update, Version
from coordinator.errors import BadRequest, Forbidden, LeaseClosed, NotFound, WrongBaseVersion
from coordinator.services.jobs import get_version
from coordinator.services.plans import get_plan, manifest_of
from fedge import protocol
from fedge.protocol import EvaluationReceipt, EvaluationReport, Task


def held_evaluation(session: Session, job: Job, device: Device, *, now: float) -> Evaluation | None:
    """The device's open evaluation lease of ``job``, if one is still within its deadline."""
    return session.scalar(
        select(Evaluation).where(
            Evaluation.job_id == job.id,
            Evaluation.device_id == device.id,
            Evaluation.reported_at.is_(None),
            Evaluation.deadline_at >= now,
        )
    )


def offer(
    session: Session, job: Job, config: JobCreate, device: Device, *, now: float
) -> Evaluation | None:
    """A new evaluation lease for ``device`` if the job wants one of it now, else None."""
    wanted = config.evaluation
    if wanted is None:
        return None
    for version in _targets(session, job):
        if not _chosen(job.id, version, device.id, wanted.fraction):
            continue
        if _reports(session, job.id, version, open_at=now) >= wanted.max_reports:
            continue
        asked = session.scalar(
            select(Evaluation.id).where(
                Evaluation.job_id == job.id,
                Evaluation.version == version,
                Evaluation.device_id == device.id,
            )
        )
        if asked is not None:  # one evaluation of a version per device (a unique constraint)
            continue
        if wanted.on == "non_trainers" and _trained(session, job.id, version, device.id):
            continue
        evaluation = Evaluation(
            id=str(uuid.uuid4()),
            job_id=job.id,
            version=version,
            device_id=device.id,
            issued_at=now,
            deadline_at=now + config.task.lease_seconds,
            tier="",
        )
        session.add(evaluation)
        session.flush()
        return evaluation
    return None


def task_of(session: Session, job: Job, config: JobCreate, evaluation: Evaluation) -> Task:
    """The evaluation task of ``evaluation``: the version's plan and weights, metrics back."""
    plan = get_plan(session, job.plan_id)
    version = get_version(session, job.id, evaluation.version)
    return Task(
        lease_id=evaluation.id,
        job_id=job.id,
        plan_sha256=plan.plan_sha256,
        plan_url=protocol.PLAN.format(plan_sha256=plan.plan_sha256),
        global_version=evaluation.version,
        weights_url=protocol.WEIGHTS.format(job_id=job.id, number=evaluation.version),
        weights_sha256=version.weights_sha256,
        hparams=manifest_of(plan).hparams,
        deadline=evaluation.deadline_at,
        kind="evaluate",
        held_out_fraction=held_out_fraction(config),
    )


def held_out_fraction(config: JobCreate) -> float | None:
    """The share a job's training tasks hold out for evaluation (None: they train on all)."""
    wanted = config.evaluation
    return wanted.held_out_fraction if wanted and wanted.on == "held_out_split" else None


def report(
    session: Session, device: Device, lease_id: str, body: EvaluationReport, *, now: float
) -> tuple[Evaluation, EvaluationReceipt]:
    """Accept an evaluation task's metrics once; a retry of the same report is acknowledged.

    Raises :class:`BadRequest` for metrics no device could have measured, and the lease's
    refusals: 404 unknown, 403 another device's, 409 past its deadline or another version.
    """
    _check(body)
    evaluation = session.scalar(
        select(Evaluation).where(Evaluation.id == lease_id).with_for_update()
    )
    if evaluation is None:
        raise NotFound(f"no evaluation lease {lease_id}")
    if evaluation.device_id != device.id:
        raise Forbidden(f"evaluation lease {lease_id} belongs to another device")
    if body.global_version != evaluation.version:
        raise WrongBaseVersion(
            f"evaluation lease {lease_id} is of version {evaluation.version}, "
            f"not {body.global_version}"
        )
    receipt_of = EvaluationReceipt
    if evaluation.reported_at is not None:
        return evaluation, receipt_of("already_accepted", lease_id, evaluation.version)
    if now > evaluation.deadline_at:
        raise LeaseClosed(f"evaluation lease {lease_id} has expired")
    evaluation.reported_at = now
    evaluation.loss, evaluation.accuracy = body.loss, body.accuracy
    evaluation.num_examples, evaluation.tier = body.num_examples, body.tier
    session.flush()
    return evaluation, receipt_of("accepted", lease_id, evaluation.version)


@dataclass(frozen=True)
class VersionEvaluation:
    """A version's federated evaluation as the admin API and the dashboard read it."""

    job_id: int
    version: int
    stage: Stage
    summary: EvaluationSummary | None  # None before the first report


def summary_of(
    session: Session, job_id: int, version: int, *, since: float | None = None
) -> EvaluationSummary | None:
    """The summary of every report of ``version`` so far; None before the first.

    ``since``: only the reports that arrived after it (a rollout step's own evidence).
    """
    statement = select(
        Evaluation.loss, Evaluation.accuracy, Evaluation.num_examples, Evaluation.tier
    ).where(
        Evaluation.job_id == job_id,
        Evaluation.version == version,
        Evaluation.reported_at.is_not(None),
    )
    if since is not None:
        statement = statement.where(Evaluation.reported_at > since)
    rows = session.execute(statement).all()
    samples = [  # a reported row has all three (report writes them with reported_at)
        EvaluationSample(float(loss or 0.0), float(accuracy or 0.0), int(examples or 0), tier)
        for loss, accuracy, examples, tier in rows
    ]
    return summarize(samples) if samples else None


def version_evaluation(session: Session, job_id: int, version: int) -> VersionEvaluation:
    """The typed evaluation of one version (404 for an unknown one)."""
    row = session.get(Version, (job_id, version))
    if row is None:
        raise NotFound(f"job {job_id} has no version {version}")
    return VersionEvaluation(job_id, version, row.stage, summary_of(session, job_id, version))


def _check(body: EvaluationReport) -> None:
    """Refuse metrics no evaluation could produce (NaN, a negative loss, zero examples…)."""
    if not (math.isfinite(body.loss) and math.isfinite(body.accuracy)):
        raise BadRequest(f"loss and accuracy must be finite (got {body.loss}, {body.accuracy})")
    if body.loss < 0:
        raise BadRequest(f"loss must not be negative (got {body.loss})")
    if not 0.0 <= body.accuracy <= 1.0:
        raise BadRequest(f"accuracy must lie in [0, 1] (got {body.accuracy})")
    if body.num_examples < 1:
        raise BadRequest("an evaluation needs at least one example (num_examples 0)")


def _targets(session: Session, job: Job) -> list[int]:
    """Versions to evaluate, newest first: the current one, then a canary's and the live one."""
    deployed = session.scalars(
        select(Version.number)
        .where(Version.job_id == job.id, Version.stage.in_((Stage.CANARY, Stage.LIVE)))
        .order_by(Version.number.desc())
    ).all()
    return list(dict.fromkeys([job.current_version, *deployed]))


def _chosen(job_id: int, version: int, device_id: str, fraction: float) -> bool:
    """Whether a stable hash of (job, version, device) falls below ``fraction``."""
    digest = hashlib.sha256(f"{job_id}:{version}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


def _reports(session: Session, job_id: int, version: int, *, open_at: float) -> int:
    """Reports of a version so far plus its leases still open at ``open_at``."""
    statement = select(func.count(Evaluation.id)).where(
        Evaluation.job_id == job_id,
        Evaluation.version == version,
        or_(Evaluation.reported_at.is_not(None), Evaluation.deadline_at >= open_at),
    )
    return int(session.scalar(statement) or 0)


def _trained(session: Session, job_id: int, version: int, device_id: str) -> bool:
    """Whether the device's update went into ``version``."""
    return (
        session.scalar(
            select(Update.id).where(
                Update.job_id == job_id, Update.version == version, Update.device_id == device_id
            )
        )
        is not None
    )
