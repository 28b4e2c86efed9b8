"""The device protocol's messages as the device sees them: plain dataclasses parsed from JSON.

These mirror the coordinator's ``/v1`` schemas; device_sdk may not import the coordinator, so
the shape is pinned by the integration tests that run both ends against each other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from device_sdk.errors import DeviceError


class ProtocolError(DeviceError):
    """The server refused a request (4xx/5xx) or answered something unreadable."""

    def __init__(
        self, status: int, reason: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class HyperParameters:
    """Local training settings handed out with a task."""

    local_epochs: int
    batch_size: int
    learning_rate: float
    momentum: float
    mu: float


@dataclass(frozen=True)
class Task:
    """A leased unit of work."""

    lease_id: str
    job_id: int
    plan_sha256: str
    plan_url: str
    global_version: int
    weights_url: str
    weights_sha256: str
    hparams: HyperParameters
    deadline: float
    round: int | None
    heartbeat_seconds: float | None = None  # confirm the lease this often while working

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Task:
        """Parse the ``task`` member of a check-in answer.

        Fields this SDK does not know are ignored, so a newer coordinator can add some without
        breaking devices already in the field.
        """
        known = {f.name for f in fields(cls)}
        hparams = {f.name for f in fields(HyperParameters)}
        return cls(
            **{k: v for k, v in raw.items() if k in known and k != "hparams"},
            hparams=HyperParameters(**{k: v for k, v in raw["hparams"].items() if k in hparams}),
        )


@dataclass(frozen=True)
class RetryWindow:
    """Come back after a delay drawn uniformly from ``[min, max]`` seconds."""

    min: float
    max: float
    reason: str


@dataclass(frozen=True)
class UploadReceipt:
    """The server's acknowledgement of an update."""

    status: str
    lease_id: str
    global_version: int
    staleness: int
    clipped: bool


@dataclass(frozen=True)
class EligibilityFacts:
    """What a device reports at check-in."""

    num_examples: int
    charging: bool = True
    idle: bool = True
    unmetered: bool = True
    free_memory_mb: float = 1024.0
    runtime: str = ""
    sdk_version: str = ""
