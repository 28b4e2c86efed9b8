"""Graceful degradation under overload: shed new check-ins first, never a working device's request.

A coordinator that takes more requests than it can serve queues them all together, and the
queue itself then does the damage: a heartbeat that waits in it lets its lease expire, and a
finished upload is refused ``lease_closed`` for the server's own slowness. So, as plain ASGI
middleware at the outermost edge of the app (:class:`AdmissionControl`):

- every request is stamped with its arrival time (``request.state.arrived``, the earliest moment
  the app sees it): liveness checks judge a heartbeat or an upload by when it *arrived*;
- the requests in flight are tracked (:class:`Backlog`); above ``Settings.shed_check_ins_above``
  a *check-in* — a device asking for new work — is answered at once with 503, reason
  ``overloaded`` and a jittered ``Retry-After`` (the device session honours it), and counted in
  ``fedge_check_ins_shed_total``. Heartbeats, uploads, aborts and evaluation reports of devices
  already working are never shed, and run their blocking work on a lane of their own
  (:meth:`coordinator.api.offload.Offload.priority`) so they do not wait behind check-ins;
- the lease sweep is given the age of the oldest working request still in flight as slack
  (:meth:`Backlog.slack`): a lease is not expired for silence while a request that may keep it
  alive is still queued.

Shedding at the door costs no authentication, body parsing or database work: that is the point.
A device holding a lease does not check in (it heartbeats and uploads), so every check-in asks
for new work; one whose answer was lost and that retries is shed like the others and, once back,
gets its own task again while its lease lives.
"""

from __future__ import annotations

import enum
import itertools
import json
import random
import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from fedge import protocol
from fedge.clock import Clock
from fedge.protocol import Reason


class Kind(enum.Enum):
    """What a request is to admission control."""

    CHECK_IN = "check_in"  # asks for new work: shed first
    WORKING = "working"  # a working device's heartbeat, upload, abort or evaluation: never shed
    OTHER = "other"  # register, downloads, admin, metrics: counted, not shed


# The lease routes of a device already working: /v1/leases/{id}/heartbeat, /update, /abort...
_LEASE_ROUTE = re.compile(r"^" + re.escape(protocol.PREFIX) + r"/leases/[^/]+/[a-z_]+$")


def kind_of(method: str, path: str) -> Kind:
    """The kind of a request, by its method and path alone (no body, no database)."""
    if method == "POST" and path == protocol.CHECK_IN:
        return Kind.CHECK_IN
    if method in ("POST", "PUT") and _LEASE_ROUTE.match(path):
        return Kind.WORKING
    return Kind.OTHER


class Backlog:
    """The requests in flight in this process, with their arrival times (event-loop only)."""

    def __init__(self) -> None:
        self._tickets = itertools.count()
        self._arrived: dict[int, tuple[Kind, float]] = {}

    def enter(self, kind: Kind, arrived: float) -> int:
        """Record a request that arrived at ``arrived``; returns its ticket for :meth:`leave`."""
        ticket = next(self._tickets)
        self._arrived[ticket] = (kind, arrived)
        return ticket

    def leave(self, ticket: int) -> None:
        """The request of ``ticket`` was answered (or its client went away)."""
        self._arrived.pop(ticket, None)

    @property
    def in_flight(self) -> int:
        """How many requests are being served or wait to be."""
        return len(self._arrived)

    def slack(self, now: float) -> float:
        """Seconds since the oldest working request still in flight arrived (0 if none).

        The lease sweep judges liveness at ``now - slack``: a heartbeat or upload that arrived
        while its lease was alive is still on its way through this process.
        """
        working = [at for kind, at in self._arrived.values() if kind is Kind.WORKING]
        return max(0.0, now - min(working)) if working else 0.0


class AdmissionControl:
    """Stamps arrival, tracks the backlog and sheds check-ins above ``limit`` (plain ASGI).

    ``limit`` None never sheds. A shed check-in's ``Retry-After`` is drawn uniformly from
    ``[retry_after, 2 * retry_after]`` whole seconds, so the devices turned away together do not
    come back together.
    """

    def __init__(
        self,
        app: Any,
        *,
        clock: Clock,
        backlog: Backlog,
        limit: int | None,
        retry_after: float,
        registry: CollectorRegistry,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.clock = clock
        self.backlog = backlog
        self.limit = limit
        self.retry_after = retry_after
        self.rng = rng or random.Random()
        self.shed = Counter(
            "fedge_check_ins_shed",
            "Check-ins answered 503 overloaded by this process's admission control",
            registry=registry,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Shed a check-in when overloaded; otherwise serve the request, tracked while in flight."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = self.clock.now()
        scope.setdefault("state", {})["arrived"] = arrived
        kind = kind_of(scope["method"], scope["path"])
        if kind is Kind.CHECK_IN and self.overloaded():
            self.shed.inc()
            await self._shed(send)
            return
        ticket = self.backlog.enter(kind, arrived)
        try:
            await self.app(scope, receive, send)
        finally:
            self.backlog.leave(ticket)

    def overloaded(self) -> bool:
        """Whether a new check-in would now be shed."""
        return self.limit is not None and self.backlog.in_flight >= self.limit

    async def _shed(self, send: Any) -> None:
        seconds = max(1, round(self.rng.uniform(self.retry_after, 2 * self.retry_after)))
        body = json.dumps(
            {
                "error": Reason.OVERLOADED,
                "message": f"the coordinator is overloaded: check in again in {seconds} s",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(seconds).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
