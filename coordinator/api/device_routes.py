"""The device protocol's routes (:mod:`fedge.protocol`): register, check in, download, upload."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from sqlalchemy.orm import Session, sessionmaker

from coordinator.api.deps import (
    AppClock,
    AppSettings,
    AppTelemetry,
    Arrived,
    Blocking,
    Credentials,
    DeviceCredentials,
    Sessions,
    Uploader,
    mark_seen,
)
from coordinator.api.limits import read_body
from coordinator.api.schemas import Id, VersionNumber, error_responses
from coordinator.db.session import transaction
from coordinator.errors import BadRequest, CoordinatorError, NotFound, UnsupportedMediaType
from coordinator.services import devices, evaluation, jobs, leasing, rollout, updates
from coordinator.services.memo import BlobCache
from fedge import protocol
from fedge.protocol import (
    AbortRequest,
    CheckInResponse,
    EligibilityFacts,
    EvaluationReceipt,
    EvaluationReport,
    HeartbeatResponse,
    RegisterRequest,
    RegisterResponse,
    UploadReceipt,
)
from fedge.wire import MEDIA_TYPE

router = APIRouter(tags=["devices"])
# A device route authenticates (400 for two Authorization headers, 401, 403) and is rate-limited.
AUTHENTICATED = error_responses(400, 401, 403, 422, 429)
DOWNLOAD = {
    206: {"description": "the requested byte range (Content-Range)"},
    304: {"description": "not modified: the ETag matches If-None-Match"},
    416: {"description": "range not satisfiable"},
    **AUTHENTICATED,
    **error_responses(404),
}


@router.post(protocol.REGISTER, status_code=201, responses=error_responses(400, 413, 422))
async def register(
    body: RegisterRequest, sessions: Sessions, clock: AppClock, offload: Blocking
) -> RegisterResponse:
    """Register a device. The token in the answer is shown once: keep it secret."""

    def work() -> RegisterResponse:
        with transaction(sessions) as session:
            device_id, token = devices.register(
                session, runtime=body.runtime, sdk_version=body.sdk_version, now=clock.now()
            )
        return RegisterResponse(device_id=device_id, token=token)

    return await offload(work)


@router.post(protocol.CHECK_IN, responses={**AUTHENTICATED, **error_responses(404, 413, 503)})
async def check_in(
    body: EligibilityFacts,
    telemetry: AppTelemetry,
    credentials: Credentials,
    sessions: Sessions,
    clock: AppClock,
    settings: AppSettings,
    offload: Blocking,
) -> CheckInResponse:
    """Report eligibility facts; get a task under a lease, or a retry window to jitter within."""
    telemetry.check_ins.inc()

    def work() -> CheckInResponse:
        with transaction(sessions) as session:
            # Now, once the transaction holds the database (SQLite's writers wait for its lock
            # at BEGIN): a new lease's heartbeat grace is not spent in the server's queue.
            session.connection()
            now = clock.now()
            device = credentials.device(session, now=now)
            answer = leasing.check_in(session, device, body, now=now, settings=settings)
            serve = rollout.inference_for(session, device.id)
            return answer if serve is None else dataclasses.replace(answer, inference=serve)

    return await offload(work)


@router.get(
    protocol.PLAN,
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **DOWNLOAD},
)
async def download_plan(
    plan_sha256: str,
    credentials: Credentials,
    sessions: Sessions,
    clock: AppClock,
    offload: Blocking,
    if_none_match: Annotated[str | None, Header()] = None,
    range_: Annotated[str | None, Header(alias="Range")] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    """The plan's ``.tflite`` bytes. Immutable: cache by ETag (its sha256); resume with Range."""
    request = _Download("application/octet-stream", if_none_match, range_, if_range)
    return await offload(request.serve, sessions, credentials, clock.now(), lambda _: plan_sha256)


@router.get(
    protocol.WEIGHTS,
    response_class=Response,
    responses={200: {"content": {MEDIA_TYPE: {}}}, **DOWNLOAD},
)
async def download_weights(
    job_id: Id,
    number: VersionNumber,
    credentials: Credentials,
    sessions: Sessions,
    clock: AppClock,
    offload: Blocking,
    if_none_match: Annotated[str | None, Header()] = None,
    range_: Annotated[str | None, Header(alias="Range")] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    """A global version's weights (binary wire format). Immutable: ETag-cached, Range-resumable."""

    def digest(session: Session) -> str:
        return jobs.get_version(session, job_id, number).weights_sha256

    request = _Download(MEDIA_TYPE, if_none_match, range_, if_range)
    return await offload(request.serve, sessions, credentials, clock.now(), digest)


@router.put(
    protocol.UPDATE,
    responses={**AUTHENTICATED, **error_responses(404, 409, 413, 415)},
    # The body is read raw (no pydantic model), so the spec names it here: the wire format.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_update(
    lease_id: str,
    request: Request,
    uploader: Uploader,
    sessions: Sessions,
    clock: AppClock,
    settings: AppSettings,
    offload: Blocking,
    arrived: Arrived,
    base_version: Annotated[
        int,
        Header(
            alias=protocol.HEADER_BASE_VERSION, description="version the update was trained from"
        ),
    ],
    num_examples: Annotated[
        int, Header(alias=protocol.HEADER_NUM_EXAMPLES, description="local examples trained on")
    ],
    metrics_json: Annotated[
        str, Header(alias=protocol.HEADER_METRICS, description="JSON object of local metrics")
    ] = "{}",
) -> UploadReceipt:
    """Upload a weight delta (binary wire format). Idempotent per lease: a retry counts once."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != MEDIA_TYPE:
        raise UnsupportedMediaType(f"send the update as Content-Type: {MEDIA_TYPE}")
    body = await read_body(request, settings.max_body_bytes)
    metrics = _metrics(metrics_json)

    def accept() -> UploadReceipt:
        now = clock.now()
        try:  # one write transaction: the authentication that counts, then the upload
            with transaction(sessions) as session:
                return updates.upload(
                    session,
                    uploader.device(session, now=now),
                    lease_id,
                    body,
                    base_version=base_version,
                    num_examples=num_examples,
                    metrics=metrics,
                    now=now,
                    arrived=arrived,  # liveness as the upload arrived, not after the queue
                )
        except CoordinatorError as error:
            updates.record_rejection(
                sessions, error, device_id=uploader.device_id, lease_id=lease_id, now=now
            )
            raise

    return await offload.priority(accept)


@router.post(protocol.HEARTBEAT, responses={**AUTHENTICATED, **error_responses(404, 409)})
async def heartbeat(
    lease_id: str,
    credentials: Credentials,
    sessions: Sessions,
    offload: Blocking,
    arrived: Arrived,
) -> HeartbeatResponse:
    """Still working on the task: keep its lease alive. 409 ``lease_closed``: stop working."""
    now = arrived  # alive as it arrived: the time it waits in the server is not the device's

    def work() -> HeartbeatResponse:
        with transaction(sessions) as session:
            device = credentials.device(session, now=now)
            lease = leasing.heartbeat(session, device, lease_id, now=now)
            alive_until = lease.alive_until if lease.alive_until is not None else lease.deadline_at
            return HeartbeatResponse(
                lease_id=lease.id, alive_until=alive_until, deadline=lease.deadline_at
            )

    return await offload.priority(work)


@router.post(
    protocol.ABORT,
    status_code=204,
    response_class=Response,
    responses={**AUTHENTICATED, **error_responses(404, 409, 413)},
)
async def abort(
    lease_id: str,
    body: AbortRequest,
    credentials: Credentials,
    sessions: Sessions,
    clock: AppClock,
    offload: Blocking,
) -> Response:
    """Give up a task (battery, user activity, error…): its slot frees at once."""
    now = clock.now()

    def work() -> None:
        with transaction(sessions) as session:
            device = credentials.device(session, now=now)
            leasing.abort(
                session, device, lease_id, reason=body.reason, detail=body.detail, now=now
            )

    await offload.priority(work)
    return Response(status_code=204)


@router.post(protocol.EVALUATION, responses={**AUTHENTICATED, **error_responses(404, 409, 413)})
async def report_evaluation(
    lease_id: str,
    body: EvaluationReport,
    credentials: Credentials,
    sessions: Sessions,
    clock: AppClock,
    offload: Blocking,
) -> EvaluationReceipt:
    """An evaluation task's metrics (loss, accuracy, examples; never data). Idempotent per lease.

    With the job's ``promotion.auto`` the registry's gates judge the version in the same
    transaction.
    """
    now = clock.now()

    def work() -> EvaluationReceipt:
        with transaction(sessions) as session:
            device = credentials.device(session, now=now)
            row, receipt = evaluation.report(session, device, lease_id, body, now=now)
            if receipt.status == "accepted":
                job = jobs.get_job(session, row.job_id)
                rollout.apply_gates(session, job, row.version, now=now)
            return receipt

    return await offload.priority(work)


@router.get(
    protocol.INFERENCE_MODEL,
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **DOWNLOAD},
)
async def download_inference_model(
    job_id: Id,
    number: VersionNumber,
    credentials: Credentials,
    sessions: Sessions,
    clock: AppClock,
    offload: Blocking,
) -> Response:
    """A deployed (live or canary) version's inference-only ``.tflite``; 404 for any other."""
    now = clock.now()

    def work() -> Response:
        with transaction(sessions, read_only=True) as session:
            device_id, stale = credentials.reader(session, now=now)
            model = rollout.deployed_model(session, job_id, number)
        if stale:  # at most once a minute per device
            mark_seen(sessions, device_id, now=now)
        return Response(content=model, media_type="application/octet-stream")

    return await offload(work)


# Plans and global weights by sha256: what every device of a version downloads, read once.
_served = BlobCache(64 * 1024 * 1024)


class _Download:
    """One conditional, ranged download of an immutable blob (RFC 9110 §13, §14)."""

    def __init__(
        self,
        media_type: str,
        if_none_match: str | None,
        range_header: str | None,
        if_range: str | None,
    ) -> None:
        self.media_type = media_type
        self.if_none_match = if_none_match
        self.range_header = range_header
        self.if_range = if_range

    def serve(
        self,
        sessions: sessionmaker[Session],
        credentials: DeviceCredentials,
        now: float,
        digest_of: Callable[[Session], str],
    ) -> Response:
        """Authenticate, find the blob's digest and its bytes, in one read-only transaction."""
        with transaction(sessions, read_only=True) as session:
            device_id, stale = credentials.reader(session, now=now)
            digest = digest_of(session)
            response = self._answer(session, digest)
        if stale:  # at most once a minute per device
            mark_seen(sessions, device_id, now=now)
        return response

    def _answer(self, session: Session, digest: str) -> Response:
        etag = f'"{digest}"'
        headers = {
            "ETag": etag,
            "Cache-Control": "public, max-age=31536000, immutable",
            "Accept-Ranges": "bytes",
        }
        if self.if_none_match is not None and etag in {
            t.strip() for t in self.if_none_match.split(",")
        }:
            return Response(status_code=304, headers=headers)
        try:
            data = _served.get(session, digest)
        except NotFound:
            raise NotFound(f"nothing stored under {digest}") from None
        media_type = self.media_type
        # A Range whose If-Range names another entity (or is malformed) gets the whole blob.
        if self.range_header is None or (
            self.if_range is not None and self.if_range.strip() != etag
        ):
            return Response(content=data, media_type=media_type, headers=headers)
        span = _byte_range(self.range_header, len(data))
        if span is None:
            return Response(content=data, media_type=media_type, headers=headers)
        start, end = span
        if start >= len(data):
            headers["Content-Range"] = f"bytes */{len(data)}"
            return Response(status_code=416, headers=headers)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return Response(
            status_code=206, content=data[start : end + 1], media_type=media_type, headers=headers
        )


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=N-``, ``bytes=N-M`` or ``bytes=-K`` as an inclusive span; None if unsupported."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # multipart ranges are not worth it for one blob: send it whole
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    try:
        if first == "":
            suffix = int(last)
            return (max(0, size - suffix), size - 1) if suffix > 0 else None
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return start, start  # unsatisfiable: the caller answers 416
    if start < 0 or end < start:
        return None
    return start, min(end, size - 1)


def _metrics(raw: str) -> dict[str, Any]:
    try:
        metrics = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{protocol.HEADER_METRICS} is not valid JSON: {exc}") from exc
    if not isinstance(metrics, dict) or len(raw) > protocol.MAX_METRICS_BYTES:
        raise BadRequest(
            f"{protocol.HEADER_METRICS} must be a JSON object of at most "
            f"{protocol.MAX_METRICS_BYTES} bytes"
        )
    return metrics
