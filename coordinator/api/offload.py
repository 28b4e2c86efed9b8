"""Where a request's blocking work (the database, numpy) runs: a threadpool, or inline.

Under uvicorn one worker serves many requests at once, so a handler hands its blocking work to
a threadpool and the event loop stays free for the others. The simulator's in-process bridge
serves one request at a time: there is nothing to overlap, and the hop to a thread and back is
pure cost — a quarter of a check-in and half a heartbeat on the simulator's profile. So
``create_app(..., inline_blocking=True)`` runs that work on the loop itself.

A working device's requests (heartbeats, uploads, aborts) take :meth:`Offload.priority`: a lane
of threads of their own, so under load they never queue behind check-ins and downloads
(:mod:`coordinator.api.shedding`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from starlette.concurrency import run_in_threadpool

P = ParamSpec("P")
T = TypeVar("T")


class Offload:
    """``await offload(fn, *args)``: ``fn(*args)`` on a worker thread, or inline."""

    def __init__(self, *, inline: bool = False, priority_threads: int = 16) -> None:
        self.inline = inline
        self.priority_threads = priority_threads
        self._priority: CapacityLimiter | None = None  # made on the event loop, when first used

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """The result of ``fn(*args, **kwargs)``, run where this app runs blocking work."""
        if self.inline:
            return fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)

    async def priority(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Like calling the offload, on the working devices' own lane of worker threads."""
        if self.inline:
            return fn(*args, **kwargs)
        if self._priority is None:
            self._priority = CapacityLimiter(self.priority_threads)
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self._priority
        )
