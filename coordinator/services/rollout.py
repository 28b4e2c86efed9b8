"""Staged rollout of the inference model: a canary widened step by step, or rolled back.

With ``promotion.rollout_steps`` (e.g. ``[0.01, 0.1, 1.0]``) a version the gates pass does not
go live at once: it becomes a **canary** served to the devices whose stable hash of (job,
version, device id) falls below the current step's share (:func:`in_canary`; a device in the
1 % is also in the 10 %). Each step is judged on its own evidence — the evaluation reports that
arrived after the step began — against the live version: ``min_reports`` of them passing the
gates widen the canary one step (:func:`advance`, pure, specified in
``tests/coordinator/test_rollout.py``), passing at the last step makes it live, and a failing
gate at any step rolls it back (the live version stays). One rollout at a time: a candidate that
passes while a canary is out holds. Evaluation tasks are handed to any chosen device, not only
the canary's cohort, so a 1 % step is judged on enough reports without waiting for them.

A widening is a ``canary → canary`` row in the stage history (who, when, to what share), so the
rollout's state is read from the history and needs no column of its own. Devices learn at
check-in which version to serve (:func:`inference_for`, ``CheckInResponse.inference``).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator.db.blobs import get_blob
from coordinator.db.models import Job, Stage, StageChange, Version
from coordinator.errors import NotFound
from coordinator.services import registry
from coordinator.services.jobs import get_version, job_config
from coordinator.services.plans import get_plan, inference_model, manifest_of
from coordinator.services.promotion import Decision, Verdict
from fedge import protocol
from fedge.protocol import InferenceModel


class Action(enum.StrEnum):
    """What the rollout does after a gate decision."""

    START = "start"  # a candidate becomes a canary at the first step
    WIDEN = "widen"  # a canary moves on to the next step
    LIVE = "live"  # a canary that passed its last step goes live
    HOLD = "hold"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Advance:
    """A rollout move: the action, and the step (its index and share) the version is at after it."""

    action: Action
    step: int | None = None
    fraction: float | None = None


def advance(steps: Sequence[float], *, stage: Stage, step: int | None, verdict: Verdict) -> Advance:
    """The rollout's move for a version at ``stage`` (a canary at ``step``) given ``verdict``.

    - hold: nothing moves, whatever the stage;
    - rollback: a canary or live version is rolled back (a candidate's failure is a hold);
    - promote: a candidate starts at step 0, a canary widens to the next step, and a canary
      at the last step goes live; a live version holds.
    """
    if verdict == Verdict.HOLD:
        return Advance(Action.HOLD, step, None if step is None else steps[step])
    if verdict == Verdict.ROLLBACK:
        deployed = stage in (Stage.CANARY, Stage.LIVE)
        return Advance(Action.ROLLBACK if deployed else Action.HOLD)
    if stage == Stage.CANDIDATE:
        return Advance(Action.START, 0, steps[0])
    if stage != Stage.CANARY:  # live already, or retired: nothing to widen
        return Advance(Action.HOLD)
    at = 0 if step is None else step
    if at + 1 < len(steps):
        return Advance(Action.WIDEN, at + 1, steps[at + 1])
    return Advance(Action.LIVE)


def in_canary(job_id: int, version: int, device_id: str, fraction: float) -> bool:
    """Whether a stable hash of (job, version, device) falls below ``fraction``."""
    digest = hashlib.sha256(f"rollout:{job_id}:{version}:{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < fraction


@dataclass(frozen=True)
class RolloutState:
    """A job's canary in flight: its version, step (index and share) and when the step began."""

    version: int
    step: int
    fraction: float
    since: float


def state(session: Session, job: Job) -> RolloutState | None:
    """The job's canary and its step, read from the stage history; None without a canary."""
    steps = job_config(job).promotion.rollout_steps
    canary = session.scalar(
        select(Version.number)
        .where(Version.job_id == job.id, Version.stage == Stage.CANARY)
        .order_by(Version.number.desc())
        .limit(1)
    )
    if canary is None:
        return None
    widened, since = session.execute(
        select(func.count(StageChange.id), func.max(StageChange.at)).where(
            StageChange.job_id == job.id,
            StageChange.version == canary,
            StageChange.to_stage == Stage.CANARY,
        )
    ).one()
    step = max(0, int(widened or 0) - 1)  # the first row is the move into canary
    if not steps:  # an admin's canary without rollout steps: served to nobody until live
        return RolloutState(canary, 0, 0.0, float(since or 0.0))
    step = min(step, len(steps) - 1)
    return RolloutState(canary, step, steps[step], float(since or 0.0))


def apply_gates(session: Session, job: Job, number: int, *, now: float) -> Decision | None:
    """With ``promotion.auto``, judge version ``number`` and carry out the rollout's move.

    Without rollout steps this is :func:`coordinator.services.registry.apply_gates` (a passing
    version goes live at once). Called in the evaluation report's transaction.
    """
    gates = job_config(job).promotion
    if not gates.auto:
        return None
    steps = gates.rollout_steps
    if steps is None:
        return registry.apply_gates(session, job, number, now=now)
    version = get_version(session, job.id, number)
    current = state(session, job)
    if version.stage == Stage.CANDIDATE and current is not None:
        return Decision(Verdict.HOLD, (f"version {current.version}'s rollout is in progress",))
    ours = current if current is not None and current.version == number else None
    decision = registry.judge(session, job, number, since=None if ours is None else ours.since)
    move = advance(
        steps,
        stage=version.stage,
        step=None if ours is None else ours.step,
        verdict=decision.verdict,
    )
    why = "; ".join(decision.reasons)
    if move.action == Action.START:
        reason = f"canary at {move.fraction:.0%}: {why}"
        registry.promote(
            session, job.id, number, to=Stage.CANARY, now=now, actor="gate", reason=reason
        )
    elif move.action == Action.WIDEN:
        reason = f"widened to {move.fraction:.0%}: {why}"
        registry.widen(session, job.id, number, now=now, actor="gate", reason=reason)
    elif move.action == Action.LIVE:
        reason = f"rollout complete: {why}"
        registry.promote(
            session, job.id, number, to=Stage.LIVE, now=now, actor="gate", reason=reason
        )
    elif move.action == Action.ROLLBACK:
        registry.rollback(session, job.id, now=now, actor="gate", reason=why)
    return decision


def inference_for(session: Session, device_id: str) -> InferenceModel | None:
    """The inference model ``device_id`` should serve: the newest job's with a deployed version.

    The job's canary if the device falls in its current share, else its live version; None
    when neither applies (no job has deployed a version, or only a canary the device is
    outside of).
    """
    job_id = session.scalar(
        select(Version.job_id)
        .where(Version.stage.in_((Stage.CANARY, Stage.LIVE)))
        .order_by(Version.job_id.desc())
        .limit(1)
    )
    if job_id is None:
        return None
    job = session.get_one(Job, job_id)
    current = state(session, job)
    if current is not None and in_canary(job.id, current.version, device_id, current.fraction):
        return _model(session, job, current.version, canary=True)
    live = registry.live_version(session, job.id)
    return None if live is None else _model(session, job, live, canary=False)


def deployed_model(session: Session, job_id: int, number: int) -> bytes:
    """The inference ``.tflite`` of a live or canary version (404 for any other version)."""
    version = get_version(session, job_id, number)
    if version.stage not in (Stage.CANARY, Stage.LIVE):
        raise NotFound(f"version {number} of job {job_id} is {version.stage.value}, not deployed")
    job = session.get_one(Job, job_id)
    return _render(session, job, version)


# Rendered models' sha256 by (template sha256, weights sha256): a pure function of content, so
# a per-process memo is safe; it saves rendering a version at every check-in.
_RENDERED: dict[tuple[str, str], str] = {}


def _model(session: Session, job: Job, number: int, *, canary: bool) -> InferenceModel:
    version = get_version(session, job.id, number)
    template = manifest_of(get_plan(session, job.plan_id)).inference_sha256
    digest = None
    if template is not None:
        key = (template, version.weights_sha256)
        digest = _RENDERED.get(key)
        if digest is None:
            try:
                digest = hashlib.sha256(_render(session, job, version)).hexdigest()
            except NotFound:  # the template was never uploaded
                digest = None
            else:
                if len(_RENDERED) > 256:
                    _RENDERED.clear()
                _RENDERED[key] = digest
    return InferenceModel(
        job_id=job.id,
        version=number,
        stage="canary" if canary else "live",
        model_url=protocol.INFERENCE_MODEL.format(job_id=job.id, number=number),
        model_sha256=digest,
        weights_url=protocol.WEIGHTS.format(job_id=job.id, number=number),
        weights_sha256=version.weights_sha256,
    )


def _render(session: Session, job: Job, version: Version) -> bytes:
    plan = get_plan(session, job.plan_id)
    return inference_model(session, plan, get_blob(session, version.weights_sha256))
