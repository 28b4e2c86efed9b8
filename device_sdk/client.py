"""A synchronous HTTP client for the coordinator's device protocol (httpx).

:class:`CoordinatorClient` raises :class:`~device_sdk.protocol.ProtocolError` for a refusal and
``httpx.TransportError`` for a lost connection; :func:`attempt` is the one place both become the
session's :class:`~device_sdk.session.Failure`, for every performer (runner, durable runner,
simulator).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import httpx

from device_sdk.protocol import EligibilityFacts, ProtocolError, RetryWindow, Task, UploadReceipt
from device_sdk.session import Failure
from fedge.wire import MEDIA_TYPE

T = TypeVar("T")


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
        body = self._json(
            "POST", "/v1/devices", json={"runtime": runtime, "sdk_version": sdk_version}
        )
        self.token = str(body["token"])
        return str(body["device_id"]), self.token

    def check_in(self, facts: EligibilityFacts) -> Task | RetryWindow:
        """A task, or the window to retry within."""
        body = self._json("POST", "/v1/check-in", json=asdict(facts))
        if body.get("task"):
            return Task.from_json(body["task"])
        return RetryWindow(**body["retry"])

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
            "X-Fedge-Base-Version": str(task.global_version),
            "X-Fedge-Num-Examples": str(num_examples),
            "X-Fedge-Metrics": json.dumps(metrics or {}),
        }
        body = self._json(
            "PUT", f"/v1/leases/{task.lease_id}/update", content=update, headers=headers
        )
        return UploadReceipt(**body)

    def heartbeat(self, task: Task) -> float:
        """Confirm the device still works on ``task``; the time by which to confirm again.

        A :class:`ProtocolError` 409 ``lease_closed`` means stop: the lease ended (its round
        reached its target, or it expired) and an upload would be refused.
        """
        body = self._json("POST", f"/v1/leases/{task.lease_id}/heartbeat")
        return float(body["alive_until"])

    def abort(self, task: Task, reason: str, detail: str = "") -> None:
        """Give a task back so its slot frees at once."""
        self._send(
            "POST", f"/v1/leases/{task.lease_id}/abort", json={"reason": reason, "detail": detail}
        )

    def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, url, **kwargs)
        try:
            body: dict[str, Any] = response.json()
        except ValueError as exc:
            raise ProtocolError(response.status_code, "unreadable", response.text[:200]) from exc
        return body

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        response = self._http.request(method, url, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise refusal(response)
        return response


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
