"""Pydantic models at the HTTP edge: admin requests and views.

The device protocol's messages are defined once, in :mod:`fedge.protocol`; a job's
configuration is :mod:`coordinator.config`, which :class:`JobView` shows.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, Field

from coordinator.config import JobCreate
from coordinator.fields import Strict
from fedge.protocol import ErrorBody

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
    503: "overloaded: new check-ins are shed (see Retry-After); working devices are served",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error codes a route can answer, all as ``ErrorBody``."""
    return {code: {"model": ErrorBody, "description": ERRORS[code]} for code in codes}


# --- admin views ---------------------------------------------------------------------------


class JobPrivacyView(BaseModel):
    """Where a DP job stands against its budget (docs/privacy.md)."""

    versions_within_budget: int
    """versions the job may publish before its next would exceed epsilon_max"""
    epsilon: float | None
    """ε (the headline method) after the current version; None before version 1"""
    epsilon_pld: float | None
    epsilon_rdp: float | None
    delta: float | None
    clip_norm: float
    """C of the next version's tasks"""
    calibrated_from: float | None
    """the target_epsilon the stored noise_multiplier was calibrated for, if any"""


class JobView(BaseModel):
    """A job as the admin API shows it."""

    id: int
    name: str
    plan_id: int
    mode: str
    status: str
    """running, paused, stopped, or budget_exhausted (a DP job's ε_max is spent)"""
    current_version: int
    config: JobCreate
    privacy: JobPrivacyView | None = None


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
    created_at: float = Field(description="when it was registered, Unix seconds")


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
    privacy: dict[str, Any] | None = None
    """a DP version's ε (PLD, RDP) at δ with its assumptions, z, C, n_actual, clipped
    fraction, and whether its noise came from a reproducible seed"""
    upload_bytes: int = 0
    """bytes of its updates' uploads as received (after compression)"""
    defences: dict[str, Any] | None = None
    """a version made with poisoning defences: ``zeroed`` (updates zeroed), ``zeroing_norm``,
    ``next_zeroing_estimate``; ``robust`` (the rule) and ``trimmed_per_side``"""


class BlobReceipt(BaseModel):
    """Where uploaded bytes now live."""

    sha256: str
    size: int


# --- listings ------------------------------------------------------------------------------

MAX_LISTED = 10_000


class DeviceView(BaseModel):
    """A registered device as the admin API lists it (never its token)."""

    id: str
    registered_at: float = Field(description="Unix seconds")
    last_seen_at: float = Field(description="its latest request, Unix seconds")
    runtime: str
    sdk_version: str


class DeviceList(BaseModel):
    """The devices seen most recently, and how many are registered in all."""

    total: int
    devices: list[DeviceView]
