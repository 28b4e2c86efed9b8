"""What an operator watches, read from the database as typed records: the fleet and each job.

Behind the dashboard (``/dashboard``) and its JSON twins in the admin API
(``GET /v1/admin/overview``, ``GET /v1/admin/jobs/{id}/overview``), so every number the pages
show can be read by a script too. Read-only: the caller's transaction may be a read-only one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.db.models import (
    Blob,
    Device,
    Job,
    JobMode,
    Lease,
    LeaseStatus,
    Rejection,
    Round,
    Update,
    Version,
)
from coordinator.services import evaluation, registry
from coordinator.services.devices import seen_within
from coordinator.services.history import EVAL_KEYS
from coordinator.services.jobs import get_job, job_config

HOUR, DAY = 3600.0, 86400.0
# The quantiles of update norms shown per version (the divergence signal to watch).
NORM_QUANTILES = (0.1, 0.5, 0.9)
# Task durations of the latest closed leases that make the runtime histogram.
RECENT_TASKS = 1000
ABORTED_PREFIX = "aborted:"


@dataclass(frozen=True)
class Population:
    """The fleet: registered devices, who is around, who holds a task, what they run."""

    registered: int
    seen_last_hour: int
    """devices that made any request in the last hour (``last_seen_at``, minute resolution)"""
    seen_last_day: int
    active_leases: int
    """leases live now: active and neither past their deadline nor silent"""
    leased_last_hour: int
    """distinct devices handed a task in the last hour: eligible and selected"""
    runtimes: dict[str, int]
    """devices by the TFLite runtime they reported"""
    sdk_versions: dict[str, int]


@dataclass(frozen=True)
class DeviceHealth:
    """How tasks ended, fleet-wide: outcomes, why devices gave up, why uploads were refused."""

    lease_outcomes: dict[str, int]
    """leases by status: active, completed, rejected, aborted, expired"""
    abort_reasons: dict[str, int]
    """an aborted lease's reason as the device sent it (``AbortReason``)"""
    expiry_reasons: dict[str, int]
    """an expired lease's cause: ``deadline`` or ``silent`` (missed heartbeats)"""
    upload_rejections: dict[str, int]
    """refused uploads by reason (the ``Reason`` codes of ``fedge.protocol``)"""
    task_seconds: list[float]
    """issue to upload of the latest completed tasks, for the runtime histogram"""


@dataclass(frozen=True)
class JobSummary:
    """One line of the jobs table."""

    id: int
    name: str
    mode: str
    status: str
    current_version: int
    accepted_updates: int
    rejected_uploads: int
    epsilon: float | None
    """a DP job's ε after its current version; None without DP (or before version 1)"""


@dataclass(frozen=True)
class FleetOverview:
    """The dashboard's front page."""

    now: float
    population: Population
    health: DeviceHealth
    jobs: list[JobSummary]


@dataclass(frozen=True)
class VersionRow:
    """A version, what went into it and the signals of its step."""

    number: int
    created_at: float
    accepted: int
    examples: int
    mean_staleness: float
    update_norm_mean: float
    update_norm_variance: float
    update_norm_quantiles: dict[str, float]
    """p10, p50, p90 and max of its updates' norms (before clipping); empty for version 0"""
    clipped: int
    """its updates the job's norm bound clipped (``norm_policy = "clip"``, or DP's shrunk C)"""
    uplink_bytes: int
    """bytes of its updates as stored (the uploads, or their clipped re-encoding)"""
    model_bytes: int
    """bytes of its weights in the wire format: what each task downloads"""
    aggregation_seconds: float
    fill_seconds: float | None
    """time since the previous version: how long the buffer (or round) took to fill"""
    eval_loss: float | None
    eval_accuracy: float | None
    """example-weighted means of what devices reported evaluating this version"""
    epsilon: float | None
    delta: float | None


@dataclass(frozen=True)
class RoundRow:
    """A synchronous round: requirements and what came of them."""

    number: int
    base_version: int
    status: str
    to_select: int
    target: int
    minimum: int
    reported: int
    fill_seconds: float | None
    """open to close; None while it is open"""


@dataclass(frozen=True)
class PrivacyStanding:
    """A DP job against its budget (docs/privacy.md)."""

    epsilon: float | None
    delta: float | None
    epsilon_max: float | None
    noise_multiplier: float | None
    clip_norm: float
    versions_within_budget: int


@dataclass(frozen=True)
class WastedWork:
    """Tasks handed out whose training did not reach a version."""

    aborted: int
    expired: int
    rejected: int
    refused_uploads: int
    waiting: int
    """accepted updates not yet in a version (the buffer, or an open round's reports)"""
    wasted_fraction: float | None
    """(aborted + expired + rejected) / closed leases; None before any lease closed"""


@dataclass(frozen=True)
class JobDetail:
    """One job's page: its funnel, buffers or rounds, learning, privacy, bytes and versions."""

    now: float
    summary: JobSummary
    buffer_size: int | None
    """K of an async job; None for a sync one"""
    leases: dict[str, int]
    selected: int
    """leases ever issued: the top of the selected → completed → dropped funnel"""
    rejections: dict[str, int]
    wasted: WastedWork
    staleness: dict[int, int]
    """accepted updates by staleness (versions behind)"""
    rounds: list[RoundRow]
    versions_total: int
    """every version of the job, version 0 included (as ``GET /jobs/{id}/versions`` lists)"""
    versions: list[VersionRow]
    """the latest versions, oldest first (at most ``limit``)"""
    privacy: PrivacyStanding | None
    uplink_bytes: int
    evaluation: dict[str, Any] | None = field(default=None)
    """The live version and the newest version's federated evaluation (None before either)."""


def fleet_overview(session: Session, *, now: float) -> FleetOverview:
    """The fleet's population and health, and every job in one line each."""
    return FleetOverview(
        now=now,
        population=population(session, now=now),
        health=device_health(session),
        jobs=[_summary(session, job) for job in session.scalars(select(Job).order_by(Job.id))],
    )


def population(session: Session, *, now: float) -> Population:
    """Registered devices, who was seen, who holds a task, and what they run."""
    registered = session.scalar(select(func.count()).select_from(Device)) or 0
    leased = session.scalar(
        select(func.count(func.distinct(Lease.device_id))).where(Lease.issued_at >= now - HOUR)
    )
    active = session.scalar(select(func.count()).select_from(Lease).where(Lease.live(now)))
    return Population(
        registered=registered,
        seen_last_hour=seen_within(session, HOUR, now=now),
        seen_last_day=seen_within(session, DAY, now=now),
        active_leases=active or 0,
        leased_last_hour=leased or 0,
        runtimes=_counts(session, Device.runtime),
        sdk_versions=_counts(session, Device.sdk_version),
    )


def device_health(session: Session) -> DeviceHealth:
    """Lease outcomes, abort and expiry reasons, refused uploads, recent task durations."""
    outcomes = {status.value: n for status, n in _grouped(session, Lease.status).items()}
    aborts: Counter[str] = Counter()
    expiries: Counter[str] = Counter()
    for status, reason, count in session.execute(
        select(Lease.status, Lease.close_reason, func.count())
        .where(Lease.status.in_([LeaseStatus.ABORTED, LeaseStatus.EXPIRED]))
        .group_by(Lease.status, Lease.close_reason)
    ):
        target = aborts if status == LeaseStatus.ABORTED else expiries
        target[(reason or "unknown").removeprefix(ABORTED_PREFIX)] += count
    durations = session.execute(
        select(Lease.closed_at - Lease.issued_at)
        .where(Lease.status == LeaseStatus.COMPLETED, Lease.closed_at.is_not(None))
        .order_by(Lease.closed_at.desc())
        .limit(RECENT_TASKS)
    ).scalars()
    return DeviceHealth(
        lease_outcomes=outcomes,
        abort_reasons=dict(aborts),
        expiry_reasons=dict(expiries),
        upload_rejections=_grouped(session, Rejection.reason),
        task_seconds=[float(d) for d in durations if d is not None],
    )


def job_detail(session: Session, job_id: int, *, now: float, limit: int = 100) -> JobDetail:
    """One job: its lease funnel, rounds, staleness, the latest ``limit`` versions, privacy."""
    job = get_job(session, job_id)
    config = job_config(job)
    leases = {
        status.value: n
        for status, n in _grouped(session, Lease.status, Lease.job_id == job_id).items()
    }
    rejections = _grouped(session, Rejection.reason, Rejection.job_id == job_id)
    waiting = session.scalar(
        select(func.count()).where(Update.job_id == job_id, Update.version.is_(None))
    )
    versions = _versions(session, job_id, since=job.current_version - limit)
    uplink = session.scalar(
        select(func.coalesce(func.sum(Blob.size), 0))
        .select_from(Update)
        .join(Blob, Blob.sha256 == Update.delta_sha256)
        .where(Update.job_id == job_id)
    )
    return JobDetail(
        now=now,
        summary=_summary(session, job),
        buffer_size=config.aggregation.buffer_size if job.mode == JobMode.ASYNC else None,
        leases=leases,
        selected=sum(leases.values()),
        rejections=rejections,
        wasted=_wasted(leases, sum(rejections.values()), waiting or 0),
        staleness={
            int(s): n
            for s, n in _grouped(session, Update.staleness, Update.job_id == job_id).items()
        },
        rounds=_rounds(session, job_id, limit=limit),
        versions_total=session.scalar(select(func.count()).where(Version.job_id == job_id)) or 0,
        versions=versions,
        privacy=_privacy(job, config.privacy.epsilon_max, config.privacy.noise_multiplier),
        uplink_bytes=int(uplink or 0),
        evaluation=_evaluation(session, job_id, versions),
    )


def _evaluation(session: Session, job_id: int, versions: list[VersionRow]) -> dict[str, Any] | None:
    """The registry's stages and the newest federated evaluation, or None before either."""
    figures: dict[str, Any] = {}
    live = registry.live_version(session, job_id)
    if live is not None:
        figures["live version"] = live
    for row in reversed(versions):
        summary = evaluation.summary_of(session, job_id, row.number)
        if summary is None:
            continue
        figures.update(
            {
                "evaluated version": row.number,
                "evaluation reports": summary.reports,
                "mean accuracy (devices)": round(summary.mean_accuracy, 4),
                "worst-10 % accuracy": round(summary.worst10_accuracy, 4),
                "mean loss (devices)": round(summary.mean_loss, 4),
            }
        )
        break
    return figures or None


def _summary(session: Session, job: Job) -> JobSummary:
    accepted = session.scalar(select(func.count()).where(Update.job_id == job.id))
    rejected = session.scalar(select(func.count()).where(Rejection.job_id == job.id))
    state = job.privacy_state or {}
    return JobSummary(
        id=job.id,
        name=job.name,
        mode=job.mode.value,
        status=job.status.value,
        current_version=job.current_version,
        accepted_updates=accepted or 0,
        rejected_uploads=rejected or 0,
        epsilon=(state.get("epsilon") or {}).get("epsilon"),
    )


def _versions(session: Session, job_id: int, *, since: int) -> list[VersionRow]:
    rows = list(
        session.scalars(
            select(Version)
            .where(Version.job_id == job_id, Version.number >= since)
            .order_by(Version.number)
        )
    )
    if not rows:
        return []
    first = rows[0].number
    norms: dict[int, list[float]] = {}
    clipped: Counter[int] = Counter()
    uplink: Counter[int] = Counter()
    evaluations: dict[int, dict[str, list[tuple[float, int]]]] = {}
    for number, norm, was_clipped, size in session.execute(
        select(Update.version, Update.norm, Update.clipped, Blob.size)
        .join(Blob, Blob.sha256 == Update.delta_sha256)
        .where(Update.job_id == job_id, Update.version >= first)
    ):
        if number is None:  # pragma: no cover - excluded by the filter
            continue
        norms.setdefault(number, []).append(norm)
        clipped[number] += int(was_clipped)
        uplink[number] += size
    for base, examples, metrics in session.execute(
        select(Update.base_version, Update.num_examples, Update.metrics).where(
            Update.job_id == job_id, Update.base_version >= first
        )
    ):
        for key in EVAL_KEYS:
            value = metrics.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                evaluations.setdefault(base, {}).setdefault(key, []).append((value, examples))
    sizes = dict(
        session.execute(
            select(Blob.sha256, Blob.size).where(
                Blob.sha256.in_({version.weights_sha256 for version in rows})
            )
        ).all()
    )
    previous = session.get(Version, (job_id, first - 1)) if first > 0 else None
    result = []
    for version in rows:
        privacy = version.privacy or {}
        evaluated = evaluations.get(version.number, {})
        result.append(
            VersionRow(
                number=version.number,
                created_at=version.created_at,
                accepted=version.num_updates,
                examples=version.num_examples,
                mean_staleness=version.mean_staleness,
                update_norm_mean=version.update_norm_mean,
                update_norm_variance=version.update_norm_var,
                update_norm_quantiles=_quantiles(norms.get(version.number, [])),
                clipped=clipped[version.number],
                uplink_bytes=uplink[version.number],
                model_bytes=sizes.get(version.weights_sha256, 0),
                aggregation_seconds=version.aggregation_seconds,
                fill_seconds=None if previous is None else version.created_at - previous.created_at,
                eval_loss=_weighted_mean(evaluated.get("eval_loss")),
                eval_accuracy=_weighted_mean(evaluated.get("eval_accuracy")),
                epsilon=privacy.get("epsilon"),
                delta=privacy.get("delta"),
            )
        )
        previous = version
    return result


def _rounds(session: Session, job_id: int, *, limit: int) -> list[RoundRow]:
    latest = session.scalars(
        select(Round).where(Round.job_id == job_id).order_by(Round.number.desc()).limit(limit)
    )
    return [
        RoundRow(
            number=r.number,
            base_version=r.base_version,
            status=r.status.value,
            to_select=r.to_select,
            target=r.target,
            minimum=r.minimum,
            reported=r.reported,
            fill_seconds=None if r.closed_at is None else r.closed_at - r.opened_at,
        )
        for r in reversed(list(latest))
    ]


def _privacy(
    job: Job, epsilon_max: float | None, noise_multiplier: float | None
) -> PrivacyStanding | None:
    state = job.privacy_state
    if not state:
        return None
    reported = state.get("epsilon") or {}
    return PrivacyStanding(
        epsilon=reported.get("epsilon"),
        delta=reported.get("delta"),
        epsilon_max=epsilon_max,
        noise_multiplier=noise_multiplier,
        clip_norm=float(state["clip_norm"]),
        versions_within_budget=int(state["versions_within_budget"]),
    )


def _wasted(leases: dict[str, int], refused: int, waiting: int) -> WastedWork:
    dropped = {status: leases.get(status, 0) for status in ("aborted", "expired", "rejected")}
    closed = sum(n for status, n in leases.items() if status != LeaseStatus.ACTIVE.value)
    return WastedWork(
        **dropped,
        refused_uploads=refused,
        waiting=waiting,
        wasted_fraction=sum(dropped.values()) / closed if closed else None,
    )


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values, dtype=np.float64)
    found = np.quantile(array, NORM_QUANTILES)
    named = {f"p{round(q * 100)}": float(v) for q, v in zip(NORM_QUANTILES, found, strict=True)}
    return named | {"max": float(array.max())}


def _weighted_mean(pairs: list[tuple[float, int]] | None) -> float | None:
    if not pairs:
        return None
    total = sum(weight for _, weight in pairs)
    return sum(value * weight for value, weight in pairs) / total if total else None


def _grouped(session: Session, column: Any, *where: Any) -> dict[Any, int]:
    statement = select(column, func.count()).group_by(column)
    if where:
        statement = statement.where(*where)
    return {key: count for key, count in session.execute(statement)}


def _counts(session: Session, column: Any) -> dict[str, int]:
    return {key or "unknown": count for key, count in _grouped(session, column).items()}
