"""Pydantic models at the HTTP edge: admin requests and views, job configuration.

The device protocol's messages are defined once, in :mod:`fedge.protocol`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from fedge.protocol import ErrorBody


class Strict(BaseModel):
    """Unknown fields are an error: a typo in a config must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


def _not_a_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a count, not a boolean")
    return value


# JSON Schema's numbers: 3 and 3.0, but not ``false``, which pydantic's lax int/float take as 0.
Count = Annotated[int, BeforeValidator(_not_a_bool)]
Amount = Annotated[float, BeforeValidator(_not_a_bool)]


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


# --- jobs ----------------------------------------------------------------------------------


class PopulationConfig(Strict):
    """Who may train: eligibility requirements and population policies."""

    min_examples: Count = Field(1, ge=1)
    min_separation_seconds: Amount = Field(
        0.0, ge=0, description="least time between two contributions of one device"
    )
    require_charging: bool = True
    require_idle: bool = True
    require_unmetered: bool = True
    min_free_memory_mb: Amount = Field(0.0, ge=0)


class AggregationConfig(Strict):
    """How updates become versions."""

    mode: Literal["async", "sync"] = "async"
    # Asynchronous (FedBuff, Nguyen et al., AISTATS 2022)
    concurrency: Count = Field(100, ge=1, description="most leases out at once (C)")
    buffer_size: Count = Field(10, ge=1, description="accepted updates per new version (K)")
    max_staleness: Count = Field(20, ge=0)
    staleness: Literal["constant", "polynomial", "hinge"] = "polynomial"
    staleness_exponent: Amount = Field(0.5, ge=0)
    hinge_a: Amount = Field(10.0, gt=0)
    hinge_b: Count = Field(4, ge=0)
    # Synchronous (FedAvg rounds, Bonawitz et al., SysML 2019)
    target: Count = Field(10, ge=1, description="reports that close a round")
    minimum: int | None = Field(None, ge=1, description="fewest reports for a round to count")
    over_selection: Amount = Field(1.3, ge=1.0)
    round_seconds: Amount = Field(600.0, gt=0, description="reporting deadline of a round")
    adaptive_over_selection: bool = Field(
        False,
        description="learn the cohort size and deadline from past rounds (coordinator.selection)",
    )
    completion_goal: Amount = Field(
        0.95, gt=0, lt=1, description="wanted share of rounds reaching the target (adaptive)"
    )
    max_surplus: Amount = Field(
        0.05,
        gt=0,
        lt=1,
        description="with heartbeats, the share of surplus devices in a cohort above which a "
        "round waits for one refill instead of selecting them (adaptive); 5 % kept the work "
        "wasted within 15 % at 6-30 % dropout in benchmarks/over_selection.py",
    )
    # Server optimizer (Reddi et al., ICLR 2021)
    server_optimizer: Literal["sgd", "fedavgm", "fedadam", "fedyogi"] = "sgd"
    server_learning_rate: Amount = Field(1.0, gt=0)
    server_momentum: Amount = Field(0.9, ge=0, lt=1)
    beta1: Amount = Field(0.9, ge=0, lt=1)
    beta2: Amount = Field(0.99, ge=0, lt=1)
    tau: Amount = Field(1e-3, gt=0)
    # Update checks
    max_update_norm: float | None = Field(None, gt=0)
    norm_policy: Literal["clip", "reject"] = "reject"

    @model_validator(mode="after")
    def _minimum_within_target(self) -> AggregationConfig:
        if self.minimum is not None and self.minimum > self.target:
            raise ValueError(f"minimum ({self.minimum}) exceeds target ({self.target})")
        return self


# A lease survives this many missed heartbeats: one lost request or a slow step is not death.
HEARTBEAT_GRACE = 3


class TaskConfig(Strict):
    """Local training settings; unset fields take the plan's defaults."""

    local_epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    learning_rate: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    mu: float | None = Field(None, ge=0)
    lease_seconds: Amount = Field(600.0, gt=0, description="time a device has to upload")
    heartbeat_seconds: float | None = Field(
        None,
        gt=0,
        description="how often a device confirms it is still working on its task; a lease "
        f"unconfirmed for {HEARTBEAT_GRACE} intervals expires and frees its slot. None: no "
        "heartbeats, a vanished device holds its slot until lease_seconds run out",
    )


class JobCreate(Strict):
    """An admin's request for a new training job."""

    name: str = Field(..., min_length=1, max_length=128)
    plan_id: Count
    aggregation: AggregationConfig = AggregationConfig()
    population: PopulationConfig = PopulationConfig()
    task: TaskConfig = TaskConfig()
    max_versions: int | None = Field(None, ge=1, description="stop after this many versions")
    keep_updates: bool = Field(
        False,
        description="keep each update's bytes after it is folded into a version (audit, "
        "replay); otherwise they are released, and the database grows by one model per "
        "version instead of one per update",
    )


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
