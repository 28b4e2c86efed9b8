"""Pydantic models at the HTTP edge: request bodies, answers, admin views.

A job's configuration is :mod:`coordinator.config`; :class:`JobView` shows it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, Field

from coordinator.config import Amount, Count, JobCreate, Strict

# --- devices -------------------------------------------------------------------------------


class RegisterRequest(Strict):
    """What a device says about itself when it registers."""

    runtime: str = Field("", max_length=64, description="TFLite runtime, e.g. ai_edge_litert")
    sdk_version: str = Field("", max_length=32)


class RegisterResponse(BaseModel):
    """A device id and the bearer token the device must present from now on."""

    device_id: str
    token: str


class CheckInRequest(Strict):
    """Eligibility facts a device reports at check-in (Bonawitz et al. 2019, §2)."""

    charging: bool = Field(True, strict=True)
    idle: bool = Field(True, strict=True)
    unmetered: bool = Field(True, strict=True)
    free_memory_mb: Amount = Field(1024.0, ge=0)
    num_examples: Count = Field(..., ge=0, description="local examples available for training")
    runtime: str = Field("", max_length=64)
    sdk_version: str = Field("", max_length=32)


class TaskHyperParameters(BaseModel):
    """Local training hyper-parameters handed to the device with a task."""

    local_epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    mu: Amount = Field(description="FedProx proximal term (Li et al., MLSys 2020); 0 = FedAvg")


class Task(BaseModel):
    """A lease on one unit of work: train plan P from version V, upload before the deadline."""

    lease_id: str
    job_id: int
    plan_sha256: str
    plan_url: str
    global_version: int
    weights_url: str
    weights_sha256: str
    hparams: TaskHyperParameters
    deadline: Amount = Field(description="clock seconds; an upload after it is refused")
    round: int | None = None
    heartbeat_seconds: float | None = Field(
        None, description="send POST /v1/leases/{id}/heartbeat this often while working"
    )


class RetryWindow(BaseModel):
    """Come back after a uniformly jittered delay in ``[min, max]`` seconds (pace steering)."""

    min: float
    max: float
    reason: str


class CheckInResponse(BaseModel):
    """Either a task or a retry window, never both."""

    task: Task | None = None
    retry: RetryWindow | None = None


class UploadReceipt(BaseModel):
    """The coordinator's answer to an upload."""

    status: Literal["accepted", "already_accepted"]
    lease_id: str
    global_version: Count = Field(description="the current global version after this upload")
    staleness: int
    clipped: bool = False


class HeartbeatResponse(BaseModel):
    """The lease lives on: confirm again before ``alive_until``."""

    lease_id: str
    alive_until: Amount = Field(description="clock seconds; silent past it, the lease expires")
    deadline: float


class AbortRequest(Strict):
    """Why a device gave up its task."""

    reason: Literal["battery", "user_activity", "not_eligible", "error", "timeout", "other"]
    detail: str = Field("", max_length=500)


class ErrorBody(BaseModel):
    """Every 4xx answer: a machine-readable reason and a message a person can act on."""

    error: str = Field(description="machine-readable reason, e.g. not_found, lease_closed")
    message: str


# The ids are 32-bit integer columns (PostgreSQL INTEGER): a larger one is refused with 422
# before it reaches the database, and the spec says so.
MAX_ID = 2**31 - 1
Id = Annotated[int, Path(ge=1, le=MAX_ID, description="a database id")]
VersionNumber = Annotated[int, Path(ge=0, le=MAX_ID, description="a global version number")]

ERRORS: dict[int, str] = {
    400: "malformed or inconsistent input (e.g. two Authorization headers)",
    401: "missing, malformed or unknown bearer token",
    403: "a token that may not act here (admin token as a device, device token as admin)",
    404: "unknown job, lease, plan, version or blob",
    409: "a state that forbids the request",
    413: "body over the configured limit",
    415: "unsupported Content-Type",
    422: "a request that does not match the schema",
    429: "too many requests from one device (see Retry-After)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error codes a route can answer, all as ``ErrorBody``."""
    return {code: {"model": ErrorBody, "description": ERRORS[code]} for code in codes}


# --- admin views ---------------------------------------------------------------------------


class JobView(BaseModel):
    """A job as the admin API shows it."""

    id: int
    name: str
    plan_id: int
    mode: str
    status: str
    current_version: int
    config: JobCreate


class PlanCreate(Strict):
    """Register a plan whose bytes were uploaded as blobs first."""

    manifest: dict[str, object]
    plan_sha256: str = Field(..., pattern="^[0-9a-f]{64}$")
    initial_weights_sha256: str = Field(..., pattern="^[0-9a-f]{64}$")
    inference_sha256: str | None = Field(
        None, pattern="^[0-9a-f]{64}$", description="the inference-only template, if exported"
    )


class PlanView(BaseModel):
    """A registered plan."""

    id: int
    name: str
    plan_sha256: str
    num_params: int


class VersionView(BaseModel):
    """A global version and the measurements of the step that produced it."""

    number: int
    weights_sha256: str
    created_at: float
    num_updates: int
    num_examples: int
    mean_staleness: float
    update_norm_mean: float
    update_norm_var: float
    round: int | None = None


class BlobReceipt(BaseModel):
    """Where uploaded bytes now live."""

    sha256: str
    size: int
