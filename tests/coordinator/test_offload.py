"""Where a request's blocking work runs: a worker thread under uvicorn, inline in-process."""

import asyncio
import threading

from coordinator.api.offload import Offload


def where(offload: Offload) -> tuple[int, int]:
    """(the thread that awaited, the thread that ran the work)."""

    async def main() -> tuple[int, int]:
        ran = await offload(threading.get_ident)
        return threading.get_ident(), ran

    return asyncio.run(main())


def test_blocking_work_runs_on_a_worker_thread_by_default():
    awaited, ran = where(Offload())

    assert ran != awaited


def test_inline_blocking_work_runs_on_the_event_loops_own_thread():
    awaited, ran = where(Offload(inline=True))

    assert ran == awaited


def test_arguments_and_results_pass_through_either_way():
    for offload in (Offload(), Offload(inline=True)):
        assert asyncio.run(offload(divmod, 17, 5)) == (3, 2)
