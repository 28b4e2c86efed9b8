"""Where a request's blocking work (the database, numpy) runs: a threadpool, or inline.

Under uvicorn one worker serves many requests at once, so a handler hands its blocking work to
a threadpool and the event loop stays free for the others. The simulator's in-process bridge
serves one request at a time: there is nothing to overlap, and the hop to a thread and back is
pure cost — a quarter of a check-in and half a heartbeat on the simulator's profile. So
``create_app(..., inline_blocking=True)`` runs that work on the loop itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

P = ParamSpec("P")
T = TypeVar("T")


class Offload:
    """``await offload(fn, *args)``: ``fn(*args)`` on a worker thread, or inline."""

    def __init__(self, *, inline: bool = False) -> None:
        self.inline = inline

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """The result of ``fn(*args, **kwargs)``, run where this app runs blocking work."""
        if self.inline:
            return fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)
