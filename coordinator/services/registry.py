"""The model registry: each version's lineage and stage, moved by an admin or by the gates.

Stages: ``candidate → canary → live → retired``. At most one version of a job is live (a
partial unique index, migration 0007); promoting one to live retires the one before it, and a
rollback retires the live (or canary) version and makes the version it replaced live again.
Every move is a :class:`~coordinator.db.models.StageChange` row (who, when, why), which is
also how a rollback finds the version to return to. With ``promotion.auto`` the gates
(:func:`coordinator.services.promotion.decide`) judge a version each time an evaluation report
of it arrives (:func:`apply_gates`), in the report's transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.aggregation.evaluation import EvaluationSummary
from coordinator.db.models import Blob, Job, Stage, StageChange, Version
from coordinator.errors import Conflict
from coordinator.services.evaluation import summary_of
from coordinator.services.jobs import get_job, get_version, job_config
from coordinator.services.plans import get_plan
from coordinator.services.promotion import Decision, Verdict, decide

_NEXT = {Stage.CANDIDATE: Stage.CANARY, Stage.CANARY: Stage.LIVE}


@dataclass(frozen=True)
class Lineage:
    """Where a version came from and what it is (immutable, like the version)."""

    job_id: int
    version: int
    parent: int | None  # the version it was trained from; None for version 0
    plan_sha256: str
    config_sha256: str  # sha256 of the job's config as stored (canonical JSON)
    weights_sha256: str
    bytes: int  # of its weights
    epsilon: float | None  # a DP version's ε
    created_at: float


@dataclass(frozen=True)
class RegistryEntry:
    """A version in the registry: its lineage, stage and federated evaluation."""

    lineage: Lineage
    stage: Stage
    evaluation: EvaluationSummary | None


@dataclass(frozen=True)
class Move:
    """A stage change, as the admin API and the dashboard read it."""

    version: int
    from_stage: Stage
    to_stage: Stage
    at: float
    actor: str
    reason: str


def entries(session: Session, job_id: int) -> list[RegistryEntry]:
    """Every version of a job in the registry, oldest first."""
    job = get_job(session, job_id)
    plan_sha = get_plan(session, job.plan_id).plan_sha256
    digest = _config_sha256(job)
    versions = session.scalars(
        select(Version).where(Version.job_id == job_id).order_by(Version.number)
    ).all()
    return [
        RegistryEntry(
            _lineage(session, v, plan_sha, digest), v.stage, summary_of(session, job_id, v.number)
        )
        for v in versions
    ]


def entry(session: Session, job_id: int, number: int) -> RegistryEntry:
    """One version in the registry (404 for an unknown one)."""
    job = get_job(session, job_id)
    version = get_version(session, job_id, number)
    lineage = _lineage(
        session, version, get_plan(session, job.plan_id).plan_sha256, _config_sha256(job)
    )
    return RegistryEntry(lineage, version.stage, summary_of(session, job_id, number))


def history(session: Session, job_id: int) -> list[Move]:
    """A job's stage changes, oldest first."""
    get_job(session, job_id)
    rows = session.scalars(
        select(StageChange).where(StageChange.job_id == job_id).order_by(StageChange.id)
    )
    return [Move(r.version, r.from_stage, r.to_stage, r.at, r.actor, r.reason) for r in rows]


def live_version(session: Session, job_id: int) -> int | None:
    """The job's live version, or None."""
    return session.scalar(
        select(Version.number).where(Version.job_id == job_id, Version.stage == Stage.LIVE)
    )


def promote(
    session: Session,
    job_id: int,
    number: int,
    *,
    to: Stage | None = None,
    now: float,
    actor: str = "admin",
    reason: str = "",
) -> Version:
    """Move a version forward: to ``to`` (canary or live), or one stage on if None.

    Promoting to live retires the job's live version. 409 for a move backwards or sideways.
    """
    get_job(session, job_id, for_update=True)  # one registry move of a job at a time
    version = get_version(session, job_id, number)
    target = to or _NEXT.get(version.stage)
    if target not in (Stage.CANARY, Stage.LIVE) or not _forward(version.stage, target):
        raise Conflict(
            f"version {number} is {version.stage.value}: it cannot be promoted"
            + (f" to {target.value}" if target else "")
        )
    if target == Stage.LIVE:
        current = _version_at(session, job_id, Stage.LIVE)
        if current is not None:
            _move(session, current, Stage.RETIRED, now, actor, f"replaced by version {number}")
    _move(session, version, target, now, actor, reason)
    return version


def rollback(
    session: Session, job_id: int, *, now: float, actor: str = "admin", reason: str = ""
) -> Version | None:
    """Retire the canary (if any) or else the live version; the version it replaced is live.

    Returns the version live afterwards (None when there was none to return to); 409 when
    the job has neither a canary nor a live version.
    """
    get_job(session, job_id, for_update=True)
    failing = _version_at(session, job_id, Stage.CANARY) or _version_at(session, job_id, Stage.LIVE)
    if failing is None:
        raise Conflict(f"job {job_id} has no canary or live version to roll back")
    was = failing.stage
    _move(session, failing, Stage.RETIRED, now, actor, reason or "rolled back")
    if was == Stage.CANARY:
        return _version_at(session, job_id, Stage.LIVE)
    previous = _previously_live(session, job_id, exclude=failing.number)
    if previous is not None:
        _move(session, previous, Stage.LIVE, now, actor, f"version {failing.number} rolled back")
    return previous


def judge(session: Session, job: Job, number: int, *, since: float | None = None) -> Decision:
    """The gates' decision on version ``number`` of ``job`` now.

    ``since``: judge only the reports that arrived after it (a rollout step's own evidence).
    """
    config = job_config(job)
    version = get_version(session, job.id, number)
    if version.stage == Stage.LIVE:  # judged against the version it replaced
        replaced = _previously_live(session, job.id, exclude=number)
        baseline_number = None if replaced is None else replaced.number
    else:
        baseline_number = live_version(session, job.id)
    baseline = (
        None
        if baseline_number is None or baseline_number == number
        else summary_of(session, job.id, baseline_number)
    )
    epsilon = (version.privacy or {}).get("epsilon")
    return decide(
        config.promotion,
        stage=version.stage,
        evaluation=summary_of(session, job.id, number, since=since),
        min_reports=config.evaluation.min_reports if config.evaluation else 1,
        baseline=baseline,
        epsilon=None if epsilon is None else float(epsilon),
    )


def apply_gates(session: Session, job: Job, number: int, *, now: float) -> Decision | None:
    """With ``promotion.auto``, judge version ``number`` and carry the decision out."""
    if not job_config(job).promotion.auto:
        return None
    decision = judge(session, job, number)
    why = "; ".join(decision.reasons)
    if decision.verdict == Verdict.PROMOTE:
        promote(session, job.id, number, to=Stage.LIVE, now=now, actor="gate", reason=why)
    elif decision.verdict == Verdict.ROLLBACK:
        rollback(session, job.id, now=now, actor="gate", reason=why)
    return decision


def widen(
    session: Session, job_id: int, number: int, *, now: float, actor: str, reason: str
) -> Version:
    """Record a canary's next rollout step (a ``canary → canary`` move; 409 for no canary)."""
    get_job(session, job_id, for_update=True)
    version = get_version(session, job_id, number)
    if version.stage != Stage.CANARY:
        raise Conflict(f"version {number} is {version.stage.value}, not a canary to widen")
    _move(session, version, Stage.CANARY, now, actor, reason)
    return version


def _move(
    session: Session, version: Version, to: Stage, now: float, actor: str, reason: str
) -> None:
    session.add(
        StageChange(
            job_id=version.job_id,
            version=version.number,
            from_stage=version.stage,
            to_stage=to,
            at=now,
            actor=actor,
            reason=reason[:500],
        )
    )
    version.stage = to
    session.flush()  # the one-live index sees each move in order


def _forward(stage: Stage, target: Stage) -> bool:
    order = [Stage.CANDIDATE, Stage.CANARY, Stage.LIVE]
    return stage in order and order.index(target) > order.index(stage)


def _version_at(session: Session, job_id: int, stage: Stage) -> Version | None:
    return session.scalar(
        select(Version)
        .where(Version.job_id == job_id, Version.stage == stage)
        .order_by(Version.number.desc())
        .limit(1)
    )


def _previously_live(session: Session, job_id: int, *, exclude: int) -> Version | None:
    """The most recent version other than ``exclude`` that was retired from live."""
    numbers = session.scalars(
        select(StageChange.version)
        .where(
            StageChange.job_id == job_id,
            StageChange.from_stage == Stage.LIVE,
            StageChange.to_stage == Stage.RETIRED,
            StageChange.version != exclude,
        )
        .order_by(StageChange.id.desc())
    ).all()
    for number in numbers:
        version = get_version(session, job_id, number)
        if version.stage == Stage.RETIRED:
            return version
    return None


def _lineage(session: Session, version: Version, plan_sha: str, config_sha: str) -> Lineage:
    epsilon = (version.privacy or {}).get("epsilon")
    return Lineage(
        job_id=version.job_id,
        version=version.number,
        parent=version.number - 1 if version.number > 0 else None,
        plan_sha256=plan_sha,
        config_sha256=config_sha,
        weights_sha256=version.weights_sha256,
        bytes=session.get_one(Blob, version.weights_sha256).size,
        epsilon=None if epsilon is None else float(epsilon),
        created_at=version.created_at,
    )


def _config_sha256(job: Job) -> str:
    canonical = json.dumps(job.config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
