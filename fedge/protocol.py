"""The device protocol, defined once: messages, paths, headers, reason codes.

Both ends import this module: the device SDK builds and parses these messages, and the
coordinator serves them (FastAPI validates and documents stdlib dataclasses through pydantic).
It needs nothing beyond the standard library, so a device install stays small.

A request's bounds (a count ``≥ 0``, a string of at most 64 characters, a strict boolean) are
declared beside its fields with :class:`Bound`. The coordinator's validation and its OpenAPI
schema come from them; the device never needs to check its own requests against them.

Evolution: a device ignores answer fields it does not know (:func:`parse`), so a newer
coordinator may add fields; a coordinator refuses request fields it does not know (a typo must
not be silently dropped), so a device must not send fields an older coordinator lacks.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from fedge.manifest import HyperParameters

__all__ = [
    "ABORT",
    "CHECK_IN",
    "EVALUATION",
    "HEADER_BASE_VERSION",
    "HEADER_METRICS",
    "HEADER_NUM_EXAMPLES",
    "HEARTBEAT",
    "INFERENCE_MODEL",
    "LEASE_GONE",
    "METRIC_WITHIN_CLIP",
    "PLAN",
    "REGISTER",
    "UPDATE",
    "WEIGHTS",
    "AbortReason",
    "AbortRequest",
    "Bound",
    "CheckInResponse",
    "EligibilityFacts",
    "ErrorBody",
    "EvaluationReceipt",
    "EvaluationReport",
    "HeartbeatResponse",
    "HyperParameters",
    "InferenceModel",
    "Reason",
    "RegisterRequest",
    "RegisterResponse",
    "RetryWindow",
    "Task",
    "UploadReceipt",
    "parse",
]

# --- paths ---------------------------------------------------------------------------------
# Format them with str.format (``UPDATE.format(lease_id=...)``); the coordinator routes them.

PREFIX = "/v1"
REGISTER = "/v1/devices"
CHECK_IN = "/v1/check-in"
PLAN = "/v1/plans/{plan_sha256}"
WEIGHTS = "/v1/jobs/{job_id}/versions/{number}/weights"
UPDATE = "/v1/leases/{lease_id}/update"
HEARTBEAT = "/v1/leases/{lease_id}/heartbeat"
ABORT = "/v1/leases/{lease_id}/abort"
# An evaluation task's metrics (never data): POST an :class:`EvaluationReport`.
EVALUATION = "/v1/leases/{lease_id}/evaluation"
# A deployed (live or canary) version's inference-only ``.tflite``, weights baked in.
INFERENCE_MODEL = "/v1/jobs/{job_id}/versions/{number}/model.tflite"

# --- headers of an upload (the body is fedge.wire's format) ------------------------------------

HEADER_BASE_VERSION = "X-Fedge-Base-Version"
HEADER_NUM_EXAMPLES = "X-Fedge-Num-Examples"
HEADER_METRICS = "X-Fedge-Metrics"
MAX_METRICS_BYTES = 4096

# In an upload's metrics (:data:`HEADER_METRICS`) when the task set ``clip_norm``: 1.0 if the
# delta's norm before clipping was at most C, else 0.0 — the bit adaptive clipping counts
# (Andrew et al., NeurIPS 2021). A job with adaptive clipping refuses an upload without it.
METRIC_WITHIN_CLIP = "within_clip"


# --- reason codes ----------------------------------------------------------------------------


class Reason(StrEnum):
    """The machine-readable ``error`` of a refusal (:class:`ErrorBody`)."""

    BAD_REQUEST = "bad_request"
    INVALID_REQUEST = "invalid_request"  # 422: the body or a parameter does not match the schema
    INVALID_UPDATE = "invalid_update"  # wrong length or encoding
    NON_FINITE = "non_finite"  # NaN or Inf in an update
    NORM_TOO_LARGE = "norm_too_large"  # above the job's norm bound or a DP task's clip_norm
    WOULD_OVERFLOW = "would_overflow"  # finite, but the model would not stay finite
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    LEASE_CLOSED = "lease_closed"  # expired, aborted, used, or its job ended: stop working
    STALE = "stale"
    WRONG_BASE_VERSION = "wrong_base_version"
    CONTRIBUTION_CAPPED = "contribution_capped"  # the device reached the job's cap: come back later
    TOO_LARGE = "too_large"
    CODEC_MISMATCH = "codec_mismatch"  # encoded with another codec than the lease's (or unknown)
    SEED_MISMATCH = "seed_mismatch"  # encoded under another seed than the lease's
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    # Never sent to a device: an accepted update its version's zeroing replaced by zeros
    # (coordinator.services.defences), counted with the refusals for operators.
    ZEROED = "zeroed"
    # 503: the coordinator sheds new check-ins under overload (Retry-After says when to return);
    # a working device's heartbeats and uploads are never shed.
    OVERLOADED = "overloaded"


# Statuses that mean a lease is gone (closed, unknown, not this device's): stop working on it.
LEASE_GONE = frozenset({403, 404, 409})

# ``bad_plan``: the device's runtime cannot load or run the plan; the coordinator does not
# lease that job's plan to the device again.
AbortReason = Literal[
    "battery", "user_activity", "not_eligible", "error", "timeout", "bad_plan", "other"
]


# --- request bounds --------------------------------------------------------------------------


@dataclass(frozen=True)
class Bound:
    """Bounds on a request field, honoured by pydantic where the coordinator validates.

    ``count`` and ``amount`` refuse a JSON boolean (pydantic's lax numbers take ``false`` as 0,
    JSON Schema's numbers do not); ``strict`` refuses anything but a real JSON boolean.
    The hook below is pydantic's documented ``__get_pydantic_core_schema__`` protocol, written
    with plain dicts so that this module imports no pydantic.
    """

    ge: float | None = None
    le: float | None = None
    max_length: int | None = None
    strict: bool = False
    number: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        schema = dict(handler(source))
        if self.ge is not None:
            schema["ge"] = self.ge
        if self.le is not None:
            schema["le"] = self.le
        if self.max_length is not None:
            schema["max_length"] = self.max_length
        if self.strict:
            schema["strict"] = True
        if not self.number:
            return schema
        return {
            "type": "function-before",
            "function": {"type": "no-info", "function": _not_a_bool},
            "schema": schema,
        }


def _not_a_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a number, not a boolean")
    return value


Count = Annotated[int, Bound(ge=0, number=True)]
PositiveCount = Annotated[int, Bound(ge=1, number=True)]
Flag = Annotated[bool, Bound(strict=True)]
Name = Annotated[str, Bound(max_length=64)]
Version = Annotated[str, Bound(max_length=32)]


def _describe(schema: dict[str, Any], cls: type) -> None:
    """JSON-schema hook: each field's ``doc`` (its metadata) becomes its description.

    Written as field metadata rather than attribute docstrings, which pydantic would re-read
    from the source file for every route that names the message (seconds at start-up).
    """
    for item in dataclasses.fields(cls):
        if "doc" in item.metadata:
            schema["properties"][item.name]["description"] = item.metadata["doc"]


def _doc(text: str) -> dict[str, str]:
    """Field metadata that documents a field (in the coordinator's OpenAPI schema)."""
    return {"doc": text}


# Requests refuse unknown fields: a typo must not be silently dropped.
_REQUEST: dict[str, Any] = {"extra": "forbid", "json_schema_extra": _describe}
_ANSWER: dict[str, Any] = {"json_schema_extra": _describe}


# --- messages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterRequest:
    """What a device says about itself when it registers (``POST`` :data:`REGISTER`)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _REQUEST

    runtime: Name = field(default="", metadata=_doc("TFLite runtime, e.g. ai_edge_litert"))
    sdk_version: Version = ""


@dataclass(frozen=True)
class RegisterResponse:
    """A device id and the bearer token the device must present from now on."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _ANSWER

    device_id: str
    token: str


@dataclass(frozen=True)
class EligibilityFacts:
    """What a device reports at check-in (``POST`` :data:`CHECK_IN`; Bonawitz et al. 2019, §2)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _REQUEST

    num_examples: Count = field(metadata=_doc("local examples available for training"))
    charging: Flag = True
    idle: Flag = True
    unmetered: Flag = True
    free_memory_mb: Annotated[float, Bound(ge=0, number=True)] = 1024.0
    runtime: Name = ""
    sdk_version: Version = ""
    uplink_bytes_per_second: Annotated[float, Bound(ge=0, number=True)] | None = field(
        default=None,
        metadata=_doc(
            "measured upload rate; the coordinator picks the lease's codec from it and the "
            "job's per-task budget. None: not measured"
        ),
    )
    downlink_bytes_per_second: Annotated[float, Bound(ge=0, number=True)] | None = field(
        default=None, metadata=_doc("measured download rate; None: not measured")
    )


@dataclass(frozen=True)
class Task:
    """A lease on one unit of work: train plan P from version V, upload before the deadline."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _ANSWER

    lease_id: str
    job_id: int
    plan_sha256: str
    plan_url: str
    global_version: int
    weights_url: str
    weights_sha256: str
    hparams: HyperParameters
    deadline: float = field(metadata=_doc("clock seconds; an upload after it is refused"))
    round: int | None = field(
        default=None,
        metadata=_doc("the synchronous round the lease belongs to; None in an asynchronous job"),
    )
    heartbeat_seconds: float | None = field(
        default=None,
        metadata=_doc(
            "confirm the lease (POST /v1/leases/{id}/heartbeat) this often while working"
        ),
    )
    clip_norm: float | None = field(
        default=None,
        metadata=_doc(
            "clip the delta to this L2 norm before uploading it (a DP job's C); None: do not "
            "clip. A DP job rejects an update above it (norm_too_large)"
        ),
    )
    kind: Literal["train", "evaluate"] = field(
        default="train",
        metadata=_doc(
            "train: upload a delta (PUT update); evaluate: run the plan's evaluate signature "
            "on the version and POST only its metrics (an EvaluationReport) to the "
            "evaluation path. A device that predates it trains instead, and its upload to an "
            "evaluation lease is refused (404): nothing is counted twice"
        ),
    )
    held_out_fraction: float | None = field(
        default=None,
        metadata=_doc(
            "the share of the device's examples held out of training for evaluation (the "
            "last ceil(f·n) by index, device_sdk.evaluation): train on the rest, evaluate on "
            "them. None: train on every example, and an evaluation task evaluates on all"
        ),
    )
    codec: str = field(
        default="float32",
        metadata=_doc(
            "encode the delta with this codec (fedge.codecs names, e.g. rot4); float32 may "
            "also be sent as a plain format-1 vector"
        ),
    )
    codec_seed: int = field(
        default=0,
        metadata=_doc("the task seed of the codec's rotation and random-k (fedge.wire format 2)"),
    )
    time_budget_seconds: float | None = field(
        default=None,
        metadata=_doc(
            "train until the epochs are done or this many seconds of training have passed, "
            "then upload what there is, its local step count in the metrics (partial work); "
            "None: train every epoch"
        ),
    )


@dataclass(frozen=True)
class RetryWindow:
    """Come back after a uniformly jittered delay in ``[min, max]`` seconds (pace steering)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _ANSWER

    min: float
    max: float
    reason: str = field(
        metadata=_doc("why there is no task now, for a person reading the device's log")
    )


@dataclass(frozen=True)
class InferenceModel:
    """The inference model a device should serve now: a job's live version, or its canary.

    A device is served the canary when a stable hash of its id falls in the canary's current
    share (staged rollout, coordinator.services.rollout).
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = _ANSWER

    job_id: int
    version: int
    stage: Literal["canary", "live"]
    model_url: str = field(
        metadata=_doc("GET the version's inference-only .tflite (INFERENCE_MODEL), if exported")
    )
    model_sha256: str | None = field(
        default=None,
        metadata=_doc("sha256 of that .tflite; None: the plan has no inference template"),
    )
    weights_url: str = ""
    weights_sha256: str = ""


@dataclass(frozen=True)
class CheckInResponse:
    """Either a task or a retry window, never both; beside either, the inference model."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _ANSWER

    task: Task | None = None
    retry: RetryWindow | None = None
    inference: InferenceModel | None = field(
        default=None,
        metadata=_doc(
            "which version's inference model to serve (staged rollout); None: no job has a "
            "deployed version"
        ),
    )


@dataclass(frozen=True)
class UploadReceipt:
    """The coordinator's answer to an upload (``PUT`` :data:`UPDATE`)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _ANSWER

    status: Literal["accepted", "already_accepted"]
    lease_id: str
    global_version: int = field(metadata=_doc("the current global version after this upload"))
    staleness: int
    clipped: bool = False


@dataclass(frozen=True)
class HeartbeatResponse:
    """The lease lives on: confirm again before ``alive_until`` (``POST`` :data:`HEARTBEAT`)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _ANSWER

    lease_id: str
    alive_until: float = field(metadata=_doc("clock seconds; silent past it, the lease expires"))
    deadline: float


@dataclass(frozen=True)
class AbortRequest:
    """Why a device gave up its task (``POST`` :data:`ABORT`)."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _REQUEST

    reason: AbortReason
    detail: Annotated[str, Bound(max_length=500)] = ""


@dataclass(frozen=True)
class EvaluationReport:
    """An evaluation task's metrics (``POST`` :data:`EVALUATION`): loss, accuracy, examples.

    Metrics only, never data. The coordinator refuses (400) a non-finite loss or accuracy, an
    accuracy outside [0, 1], a negative loss and zero examples; 409 a version other than the
    one the lease handed out or a lease no longer open.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = _REQUEST

    global_version: Count = field(metadata=_doc("the version evaluated (the task's)"))
    loss: Annotated[float, Bound(ge=0, number=True)] = field(
        metadata=_doc("mean loss over the evaluated examples")
    )
    accuracy: Annotated[float, Bound(ge=0, le=1, number=True)] = field(
        metadata=_doc("share of the evaluated examples predicted right")
    )
    num_examples: PositiveCount = field(metadata=_doc("examples evaluated (at least 1)"))
    tier: Name = field(default="", metadata=_doc("the device's tier, if it knows one"))


@dataclass(frozen=True)
class EvaluationReceipt:
    """The coordinator's answer to an evaluation report."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _ANSWER

    status: Literal["accepted", "already_accepted"]
    lease_id: str
    global_version: int


@dataclass(frozen=True)
class ErrorBody:
    """Every refusal (4xx): a machine-readable reason and a message a person can act on."""

    __pydantic_config__: ClassVar[dict[str, Any]] = _ANSWER

    error: str = field(
        metadata=_doc("machine-readable reason (:class:`Reason`), e.g. not_found, lease_closed")
    )
    message: str


# --- parsing answers on the device ---------------------------------------------------------

M = TypeVar("M")


def parse(message: type[M], raw: Mapping[str, Any]) -> M:
    """Build ``message`` from a decoded JSON object, ignoring fields this end does not know.

    Nested messages (a task's ``hparams``, a check-in's ``task``) are parsed the same way, so a
    newer coordinator can add fields anywhere without breaking devices already in the field.
    Missing required fields raise ``TypeError``; values are not coerced.
    """
    hints = typing.get_type_hints(message)
    known = {f.name for f in dataclasses.fields(message)}  # type: ignore[arg-type]
    values = {}
    for name, value in raw.items():
        if name in known:
            nested = _message_type(hints[name])
            is_object = nested is not None and isinstance(value, Mapping)
            values[name] = parse(nested, value) if is_object else value  # type: ignore[arg-type]
    return message(**values)


def _message_type(hint: Any) -> type | None:
    """The dataclass a field holds (``Task``, ``Task | None``), or None for a plain value."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        candidates = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = candidates[0] if len(candidates) == 1 else None
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) else None
