"""The admin API of federated evaluation and the model registry (admin token, like the rest)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from coordinator.api.deps import Admin, AppClock, Sessions
from coordinator.api.schemas import Id, VersionNumber, error_responses
from coordinator.db.models import Stage
from coordinator.db.session import transaction
from coordinator.fields import Strict
from coordinator.services import evaluation, registry
from coordinator.services.evaluation import VersionEvaluation
from coordinator.services.registry import Move, RegistryEntry

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Admin],
    responses=error_responses(400, 401, 403, 422),
)
READ = error_responses(404, 422)
MOVE = error_responses(404, 409, 422)


class PromoteRequest(Strict):
    """Move a version forward in the registry."""

    to: Literal["canary", "live"] | None = Field(
        None, description="the stage to move to; None: the next one (candidate → canary → live)"
    )
    reason: str = Field("", max_length=500)


class RollbackRequest(Strict):
    """Retire the canary, or else the live version; the version it replaced goes live again."""

    reason: str = Field("", max_length=500)


class RegistryView(BaseModel):
    """A job's registry: every version with lineage, stage and evaluation; the moves so far."""

    job_id: int
    live: int | None
    versions: list[RegistryEntry]
    history: list[Move]


class RollbackView(BaseModel):
    """The version live after a rollback (None: there was none to return to)."""

    job_id: int
    live: int | None


@router.get("/jobs/{job_id}/versions/{number}/evaluation", responses=READ)
def version_evaluation(job_id: Id, number: VersionNumber, sessions: Sessions) -> VersionEvaluation:
    """A version's federated evaluation: mean, quantiles, worst-10 %, histogram, per tier."""
    with transaction(sessions, read_only=True) as session:
        return evaluation.version_evaluation(session, job_id, number)


@router.get("/jobs/{job_id}/registry", responses=READ)
def job_registry(job_id: Id, sessions: Sessions) -> RegistryView:
    """Every version's lineage (parent, plan, config digest, bytes, ε), stage and evaluation."""
    with transaction(sessions, read_only=True) as session:
        return RegistryView(
            job_id=job_id,
            live=registry.live_version(session, job_id),
            versions=registry.entries(session, job_id),
            history=registry.history(session, job_id),
        )


@router.post("/jobs/{job_id}/versions/{number}/promote", responses=MOVE)
def promote_version(
    job_id: Id, number: VersionNumber, body: PromoteRequest, sessions: Sessions, clock: AppClock
) -> RegistryEntry:
    """Promote a version (to canary or live; live retires the live one). 409: not forward."""
    to = None if body.to is None else Stage(body.to)
    with transaction(sessions) as session:
        registry.promote(session, job_id, number, to=to, now=clock.now(), reason=body.reason)
        return registry.entry(session, job_id, number)


@router.post("/jobs/{job_id}/rollback", responses=MOVE)
def rollback_job(
    job_id: Id, body: RollbackRequest, sessions: Sessions, clock: AppClock
) -> RollbackView:
    """Roll back the canary or live version. 409 when the job has neither."""
    with transaction(sessions) as session:
        live = registry.rollback(session, job_id, now=clock.now(), reason=body.reason)
        return RollbackView(job_id=job_id, live=None if live is None else live.number)
