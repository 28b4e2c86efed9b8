"""The admin API (its own token, never a device's): blobs, plans, jobs, versions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from coordinator.api.deps import Admin, AppClock, AppSettings, Sessions
from coordinator.api.limits import read_body
from coordinator.api.schemas import (
    MAX_LISTED,
    BlobReceipt,
    DeviceList,
    DeviceView,
    Id,
    JobPrivacyView,
    JobView,
    PlanCreate,
    PlanView,
    VersionNumber,
    VersionView,
    error_responses,
)
from coordinator.config import JobCreate
from coordinator.db.blobs import put_blob
from coordinator.db.models import Device, Job, Plan, Version
from coordinator.db.session import transaction
from coordinator.services import history, jobs, listing, plans, rounds
from fedge.wire import MEDIA_TYPE

# Every admin route authenticates first: 400 (two Authorization headers), 401, 403; 422 for a
# malformed header.
router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[Admin],
    responses=error_responses(400, 401, 403, 422),
)
READ = error_responses(404, 422)
JSON_BODY = error_responses(404, 409, 413, 422)


@router.put("/blobs", status_code=201, responses=error_responses(413, 415))
async def upload_blob(
    request: Request, sessions: Sessions, clock: AppClock, settings: AppSettings
) -> BlobReceipt:
    """Store bytes (a plan, initial weights) under their sha256."""
    data = await read_body(request, settings.max_body_bytes)
    with transaction(sessions) as session:
        digest = put_blob(session, data, now=clock.now())
    return BlobReceipt(sha256=digest, size=len(data))


@router.post("/plans", status_code=201, responses=JSON_BODY)
def register_plan(body: PlanCreate, sessions: Sessions, clock: AppClock) -> PlanView:
    """Register a plan from uploaded blobs; its manifest must match them."""
    with transaction(sessions) as session:
        plan = plans.register_plan(
            session,
            manifest=body.manifest,
            plan_sha256=body.plan_sha256,
            initial_weights_sha256=body.initial_weights_sha256,
            inference_sha256=body.inference_sha256,
            now=clock.now(),
        )
        return _plan_view(plan)


@router.get("/plans")
def list_plans(sessions: Sessions) -> list[PlanView]:
    """Every registered plan, oldest first."""
    with transaction(sessions, read_only=True) as session:
        return [_plan_view(plan) for plan in listing.list_plans(session)]


@router.get("/devices", responses=error_responses(422))
def list_devices(
    sessions: Sessions,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED, description="most devices listed")] = 100,
) -> DeviceList:
    """The devices seen most recently (latest first) and how many are registered in all."""
    with transaction(sessions, read_only=True) as session:
        total, devices = listing.list_devices(session, limit=limit)
        return DeviceList(total=total, devices=[_device_view(device) for device in devices])


@router.post("/jobs", status_code=201, responses=JSON_BODY)
def create_job(
    body: JobCreate, sessions: Sessions, clock: AppClock, settings: AppSettings
) -> JobView:
    """Create a running training job; version 0 is the plan's initial weights.

    A DP job (a ``privacy`` section) is refused with 422 naming the field when it cannot run
    as asked; its ``noise_multiplier`` is calibrated first when it gives ``target_epsilon``.
    """
    allow_seed = settings.allow_seeded_noise
    with transaction(sessions) as session:
        job = jobs.create_job(session, body, now=clock.now(), allow_seeded_noise=allow_seed)
        return _job_view(job)


@router.get("/jobs")
def list_jobs(sessions: Sessions) -> list[JobView]:
    """Every job."""
    with transaction(sessions) as session:
        return [_job_view(job) for job in jobs.list_jobs(session)]


@router.get("/jobs/{job_id}", responses=READ)
def get_job(job_id: Id, sessions: Sessions) -> JobView:
    """One job."""
    with transaction(sessions) as session:
        return _job_view(jobs.get_job(session, job_id))


# One route per action, not ``/jobs/{job_id}/{action}``: that would swallow every POST under a
# job (``POST /jobs/1/versions`` is a 405, not an unknown action).
@router.post("/jobs/{job_id}/pause", responses=error_responses(404, 409, 422))
def pause_job(job_id: Id, sessions: Sessions, clock: AppClock) -> JobView:
    """Pause a job: no new tasks until it is resumed."""
    return _change_status(sessions, clock, job_id, "pause")


@router.post("/jobs/{job_id}/resume", responses=error_responses(404, 409, 422))
def resume_job(job_id: Id, sessions: Sessions, clock: AppClock) -> JobView:
    """Resume a paused job."""
    return _change_status(sessions, clock, job_id, "resume")


@router.post("/jobs/{job_id}/stop", responses=error_responses(404, 409, 422))
def stop_job(job_id: Id, sessions: Sessions, clock: AppClock) -> JobView:
    """Stop a job for good."""
    return _change_status(sessions, clock, job_id, "stop")


def _change_status(
    sessions: Sessions, clock: AppClock, job_id: int, action: jobs.Action
) -> JobView:
    with transaction(sessions) as session:
        return _job_view(jobs.change_status(session, job_id, action, now=clock.now()))


@router.get("/jobs/{job_id}/versions", responses=READ)
def list_versions(job_id: Id, sessions: Sessions) -> list[VersionView]:
    """A job's global versions with the measurements of the steps that made them."""
    with transaction(sessions, read_only=True) as session:
        made_by = rounds.numbers(session, job_id)
        return [
            _version_view(v, made_by.get(v.round_id) if v.round_id is not None else None)
            for v in jobs.list_versions(session, job_id)
        ]


@router.get("/jobs/{job_id}/metrics", responses=READ)
def job_metrics(job_id: Id, sessions: Sessions) -> dict[str, Any]:
    """A job's metrics history.

    Per version: the accepted count, mean staleness, mean and variance of update norms (the
    divergence signals), aggregation time and the evaluation devices reported.
    """
    with transaction(sessions) as session:
        return history.job_history(session, job_id)


@router.get(
    "/jobs/{job_id}/versions/{number}/weights",
    response_class=Response,
    responses={200: {"content": {MEDIA_TYPE: {}}}, **READ},
)
def version_weights(job_id: Id, number: VersionNumber, sessions: Sessions) -> Response:
    """Any version's weights in the binary wire format."""
    with transaction(sessions) as session:
        data = jobs.version_weights(session, job_id, number)
    return Response(content=data, media_type=MEDIA_TYPE)


@router.get(
    "/jobs/{job_id}/versions/{number}/model.tflite",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **READ},
)
def version_inference_model(job_id: Id, number: VersionNumber, sessions: Sessions) -> Response:
    """An inference-only ``.tflite`` of any version: the plan's forward pass, weights baked in."""
    with transaction(sessions) as session:
        job = jobs.get_job(session, job_id)
        model = plans.inference_model(
            session,
            plans.get_plan(session, job.plan_id),
            jobs.version_weights(session, job_id, number),
        )
    return Response(
        content=model,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="job{job_id}-v{number}.tflite"'},
    )


def _plan_view(plan: Plan) -> PlanView:
    return PlanView(
        id=plan.id,
        name=plan.name,
        plan_sha256=plan.plan_sha256,
        num_params=plan.num_params,
        created_at=plan.created_at,
    )


def _device_view(device: Device) -> DeviceView:
    return DeviceView(
        id=device.id,
        registered_at=device.registered_at,
        last_seen_at=device.last_seen_at,
        runtime=device.runtime,
        sdk_version=device.sdk_version,
    )


def _job_view(job: Job) -> JobView:
    return JobView(
        id=job.id,
        name=job.name,
        plan_id=job.plan_id,
        mode=job.mode.value,
        status=job.status.value,
        current_version=job.current_version,
        config=jobs.job_config(job),
        privacy=None if job.privacy_state is None else _privacy_view(job.privacy_state),
    )


def _privacy_view(state: dict[str, Any]) -> JobPrivacyView:
    epsilon = state["epsilon"]
    return JobPrivacyView(
        versions_within_budget=state["versions_within_budget"],
        epsilon=epsilon.get("epsilon"),
        epsilon_pld=epsilon.get("epsilon_pld"),
        epsilon_rdp=epsilon.get("epsilon_rdp"),
        delta=epsilon.get("delta"),
        clip_norm=state["clip_norm"],
        calibrated_from=state["calibrated_from"],
    )


def _version_view(version: Version, round_number: int | None = None) -> VersionView:
    return VersionView(
        number=version.number,
        weights_sha256=version.weights_sha256,
        created_at=version.created_at,
        num_updates=version.num_updates,
        num_examples=version.num_examples,
        mean_staleness=version.mean_staleness,
        update_norm_mean=version.update_norm_mean,
        update_norm_var=version.update_norm_var,
        round=round_number,
        privacy=version.privacy,
        upload_bytes=version.upload_bytes,
        defences=version.defences,
    )
