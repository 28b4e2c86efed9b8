"""Domain errors of the coordinator; one handler maps each to an HTTP status and a message.

FedgeError (fedge.errors)
└── CoordinatorError            500 only if raised bare (a bug)
    ├── BadRequest              400 malformed or inconsistent input
    │   └── InvalidUpdate       400 an update that cannot be aggregated (shape, NaN, norm)
    ├── Unauthorized            401 missing or unknown token
    ├── Forbidden               403 acting as someone else
    ├── NotFound                404 unknown job, lease, plan, version, blob
    ├── Conflict                409 a state that forbids the request
    │   ├── LeaseClosed         409 expired, aborted or already used lease
    │   ├── StaleUpdate         409 base version too old (async) or round moved on (sync)
    │   ├── WrongBaseVersion    409 an update built on a version the lease did not hand out
    │   └── ContributionCapped  409 the device reached the job's contribution cap
    ├── PayloadTooLarge         413 body over the configured limit
    ├── InvalidConfig           422 a job config that validates but cannot run (DP budget)
    └── RateLimited             429 too many requests from one device (Retry-After)
"""

from __future__ import annotations

from fedge.errors import FedgeError
from fedge.protocol import Reason


class CoordinatorError(FedgeError):
    """Root of the coordinator's domain errors."""

    status_code = 500
    reason: str = Reason.INTERNAL

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class BadRequest(CoordinatorError):
    """Malformed or inconsistent input."""

    status_code = 400
    reason: str = Reason.BAD_REQUEST


class InvalidUpdate(BadRequest):
    """An update that cannot be aggregated: wrong length, NaN/Inf, norm above the bound."""

    reason: str = Reason.INVALID_UPDATE


class Unauthorized(CoordinatorError):
    """A missing, malformed or unknown bearer token."""

    status_code = 401
    reason: str = Reason.UNAUTHORIZED


class Forbidden(CoordinatorError):
    """A device acting as another device, or a device token on the admin API."""

    status_code = 403
    reason: str = Reason.FORBIDDEN


class NotFound(CoordinatorError):
    """An unknown job, lease, plan, version or blob."""

    status_code = 404
    reason: str = Reason.NOT_FOUND


class Conflict(CoordinatorError):
    """The current state forbids the request."""

    status_code = 409
    reason: str = Reason.CONFLICT


class LeaseClosed(Conflict):
    """The lease expired, was aborted, or already delivered a different update."""

    reason: str = Reason.LEASE_CLOSED


class StaleUpdate(Conflict):
    """The update's base version is too old to be used."""

    reason: str = Reason.STALE


class WrongBaseVersion(Conflict):
    """The update claims a base version other than the one its lease handed out."""

    reason: str = Reason.WRONG_BASE_VERSION


class ContributionCapped(Conflict):
    """The device already made as many updates as the job's contribution cap allows now."""

    reason: str = Reason.CONTRIBUTION_CAPPED


class InvalidConfig(CoordinatorError):
    """A job config that is well-formed but cannot run as asked: the message names the field."""

    status_code = 422
    reason: str = Reason.INVALID_REQUEST


class PayloadTooLarge(CoordinatorError):
    """The request body exceeds the configured limit."""

    status_code = 413
    reason: str = Reason.TOO_LARGE


class RateLimited(CoordinatorError):
    """Too many requests from one device; ``retry_after`` says when to come back."""

    status_code = 429
    reason: str = Reason.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnsupportedMediaType(CoordinatorError):
    """A body sent with a content type the route does not take."""

    status_code = 415
    reason: str = Reason.UNSUPPORTED_MEDIA_TYPE
