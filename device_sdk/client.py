"""A synchronous HTTP client for the coordinator's device protocol (httpx).

:class:`CoordinatorClient` raises :class:`~device_sdk.errors.ProtocolError` for a refusal and
``httpx.TransportError`` for a lost connection; :func:`attempt` is the one place both become the
session's :class:`~device_sdk.session.Failure`, for every performer (runner, durable runner,
simulator).
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import httpx

from device_sdk.errors import ProtocolError
from device_sdk.session import Failure
from fedge import protocol
from fedge.protocol import (
    AbortReason,
    AbortRequest,
    CheckInResponse,
    EligibilityFacts,
    EvaluationReceipt,
    EvaluationReport,
    HeartbeatResponse,
    RegisterRequest,
    RegisterResponse,
    RetryWindow,
    Task,
    UploadReceipt,
)
from fedge.wire import MEDIA_TYPE

T = TypeVar("T")


def _max_length(message: type, field: str) -> int:
    """The ``max_length`` the protocol puts on a message's text field (its ``Bound``)."""
    hint = typing.get_type_hints(message, include_extras=True)[field]
    return int(
        next(bound.max_length for bound in hint.__metadata__ if bound.max_length is not None)
    )


# An abort's detail longer than the protocol allows would be refused (422) and the slot held.
ABORT_DETAIL_CHARS = _max_length(AbortRequest, "detail")


class CoordinatorClient:
    """One device's view of a coordinator at ``base_url``; pass a token once registered."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self.token = token

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def register(self, *, runtime: str = "", sdk_version: str = "") -> tuple[str, str]:
        """Register; remember and return ``(device_id, token)``."""
        request = RegisterRequest(runtime=runtime, sdk_version=sdk_version)
        body = self._json("POST", protocol.REGISTER, json=asdict(request))
        registered = protocol.parse(RegisterResponse, body)
        self.token = registered.token
        return registered.device_id, registered.token

    def check_in(self, facts: EligibilityFacts) -> Task | RetryWindow:
        """A task, or the window to retry within."""
        answer = protocol.parse(
            CheckInResponse, self._json("POST", protocol.CHECK_IN, json=_measured(facts))
        )
        if answer.task is not None:
            return answer.task
        if answer.retry is None:
            raise ProtocolError(200, "unreadable", "a check-in answer with neither task nor retry")
        return answer.retry

    def download(self, url: str) -> bytes:
        """Bytes of a plan or weights URL handed out with a task."""
        return self._send("GET", url).content

    def upload(
        self,
        task: Task,
        update: bytes,
        *,
        num_examples: int,
        metrics: dict[str, float] | None = None,
    ) -> UploadReceipt:
        """Upload an encoded weight delta for ``task``; safe to retry."""
        headers = {
            "Content-Type": MEDIA_TYPE,
            protocol.HEADER_BASE_VERSION: str(task.global_version),
            protocol.HEADER_NUM_EXAMPLES: str(num_examples),
            protocol.HEADER_METRICS: json.dumps(metrics or {}),
        }
        url = protocol.UPDATE.format(lease_id=task.lease_id)
        body = self._json("PUT", url, content=update, headers=headers)
        return protocol.parse(UploadReceipt, body)

    def heartbeat(self, task: Task) -> float:
        """Confirm the device still works on ``task``; the time by which to confirm again.

        A :class:`ProtocolError` 409 ``lease_closed`` means stop: the lease ended (its round
        reached its target, or it expired) and an upload would be refused.
        """
        body = self._json("POST", protocol.HEARTBEAT.format(lease_id=task.lease_id))
        return protocol.parse(HeartbeatResponse, body).alive_until

    def report_evaluation(self, task: Task, report: EvaluationReport) -> EvaluationReceipt:
        """Send an evaluation task's metrics; safe to retry (counted once per lease)."""
        url = protocol.EVALUATION.format(lease_id=task.lease_id)
        return protocol.parse(EvaluationReceipt, self._json("POST", url, json=asdict(report)))

    def abort(self, task: Task, reason: AbortReason, detail: str = "") -> None:
        """Give a task back so its slot frees at once; a long ``detail`` is cut to the bound."""
        request = AbortRequest(reason=reason, detail=detail[:ABORT_DETAIL_CHARS])
        self._send("POST", protocol.ABORT.format(lease_id=task.lease_id), json=asdict(request))

    def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, url, **kwargs)
        try:
            body = response.json()
        except ValueError as exc:
            raise ProtocolError(response.status_code, "unreadable", response.text[:200]) from exc
        if not isinstance(body, dict):
            raise ProtocolError(response.status_code, "unreadable", response.text[:200])
        return body

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        response = self._http.request(method, url, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise refusal(response)
        return response


def _measured(facts: EligibilityFacts) -> dict[str, Any]:
    """The facts as JSON, without the rates not measured: a coordinator before codecs lacks them."""
    return {name: value for name, value in asdict(facts).items() if value is not None}


def refusal(response: httpx.Response) -> ProtocolError:
    """The error a 4xx/5xx answer stands for: the server's reason, message and Retry-After."""
    try:
        error = response.json()
        reason, message = str(error["error"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        reason, message = "http_error", response.text[:200]
    retry_after = response.headers.get("Retry-After")
    return ProtocolError(
        response.status_code,
        reason,
        message,
        float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


def attempt(request: Callable[[], T]) -> T | Failure:
    """Make one request; a refusal or a lost connection comes back as the session's Failure.

    ``status`` is the HTTP status of a refusal (with the server's reason, message and
    ``Retry-After``) and 0 for a transport error (reason ``"transport"``).
    """
    try:
        return request()
    except ProtocolError as refused:
        return failure_of(refused)
    except httpx.TransportError as lost:
        return Failure(0, "transport", str(lost))


def failure_of(refused: ProtocolError) -> Failure:
    """The session's view of a refused request."""
    return Failure(refused.status, refused.reason, refused.message, refused.retry_after)
