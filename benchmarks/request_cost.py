"""What one device request costs the simulator's in-process coordinator: inline or threaded.

The simulator drives the real FastAPI app through an ASGI bridge, one request at a time, so the
app runs its blocking work inline (``create_app(..., inline_blocking=True)``); a server under
uvicorn hands it to a threadpool instead. This measures both on the same app and database: an
asynchronous job (C = 10) over ``--devices`` registered devices, ``--requests`` check-ins by
devices drawn at random (a few get tasks, most get retry windows) with the clock advancing
0.5 s each, then heartbeats on the leases handed out (most of them answer 409 once their
lease has gone silent). Interleaved ``--repeats`` times, each on a fresh database; the median
per request is printed with the ratio threaded / inline.

Run: ``.venv/bin/python -m benchmarks.request_cost [--devices 10000] [--requests 3000]``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import (
    add_json_argument,
    cell,
    emit,
    interleave,
    medians,
    print_table,
    publish_job,
    ratio,
)
from coordinator.admin_client import AdminClient
from device_sdk.client import CoordinatorClient
from device_sdk.errors import ProtocolError
from fedge.clock import ManualClock
from fedge.protocol import EligibilityFacts, Task
from simulator.config import SimulationConfig
from simulator.inprocess import ADMIN_TOKEN, InProcessCoordinator
from simulator.run import ensure_plan


def measure(inline: bool, args: argparse.Namespace, plan: Path) -> dict[str, float]:
    """Milliseconds per check-in and per heartbeat on a fresh coordinator."""
    with (
        tempfile.TemporaryDirectory() as work,
        InProcessCoordinator(
            Path(work),
            ManualClock(1_000_000.0),
            inline_blocking=inline,
            rate_limit_per_minute=1_000_000,
            retry_max_seconds=86_400.0,
        ) as coordinator,
    ):
        admin = AdminClient(coordinator.base_url, ADMIN_TOKEN, transport=coordinator.transport)
        job = SimulationConfig(devices=args.devices).job_config(0)
        publish_job(admin, plan, job.model_dump(mode="json", exclude_unset=True))
        tokens = coordinator.register_many(args.devices, runtime="bench", sdk_version="0")
        client = CoordinatorClient(coordinator.base_url, transport=coordinator.transport)
        facts = EligibilityFacts(num_examples=50)
        rng = np.random.default_rng(0)
        tasks: list[tuple[str, Task]] = []
        started = time.perf_counter()
        for _ in range(args.requests):
            client.token = tokens[int(rng.integers(args.devices))]
            coordinator.clock.advance(0.5)
            answer = client.check_in(facts)
            if isinstance(answer, Task):
                tasks.append((client.token, answer))
        check_in_ms = (time.perf_counter() - started) / args.requests * 1e3
        beats = 0
        started = time.perf_counter()
        while beats < args.requests:
            for token, task in tasks:
                client.token = token
                with contextlib.suppress(ProtocolError):  # 409: the device is told to stop
                    client.heartbeat(task)
                beats += 1
        heartbeat_ms = (time.perf_counter() - started) / beats * 1e3
        client.close()
        admin.close()
    return {"check_in_ms": check_in_ms, "heartbeat_ms": heartbeat_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_argument(parser)
    args = parser.parse_args()
    plan = ensure_plan(SimulationConfig())
    runs = interleave(
        {
            "inline": lambda: measure(True, args, plan),
            "threaded": lambda: measure(False, args, plan),
        },
        args.repeats,
    )
    figures = {name: medians(results) for name, results in runs.items()}
    print(f"{args.devices} devices, {args.requests} requests of each kind, {args.repeats} repeats")
    rows = []
    for key, label in (("check_in_ms", "check-in"), ("heartbeat_ms", "heartbeat")):
        inline, threaded = figures["inline"][key], figures["threaded"][key]
        rows.append((label, cell(inline), cell(threaded), cell(ratio(threaded, inline))))
    columns = [("ms / request", 14), ("inline", 10), ("threaded", 10), ("threaded/inline", 17)]
    print_table(columns, rows)
    emit(
        {"args": {k: v for k, v in vars(args).items() if k != "json"}, "medians": figures},
        args.json,
    )


if __name__ == "__main__":
    main()
