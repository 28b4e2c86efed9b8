"""Overload without loss: working devices' latency and lost work, with and without shedding.

Two configurations in one invocation, each a fresh SQLite database and a real ``fedge
coordinator serve`` (one worker): ``no-shed`` (``FEDGE_SHED_CHECK_INS_ABOVE`` out of reach, the
peer) and ``shed`` (``--threshold``). The ``mnist_mlp`` plan (~400 KB updates) is published and an
async job created with heartbeats every ``--heartbeat`` seconds. Then ``--devices`` threads loop
for ``--seconds``: check in (a retry window or a shed 503 is honoured: the device sleeps as told),
download the task's weights, "train" for ``--train`` seconds sending heartbeats on schedule, and
upload a delta; a ``--vanish`` fraction of tasks stops silently mid-way (its lease expires).

Measured per configuration: p50 / p99 of check-ins, heartbeats and uploads as the device sees
them, check-ins shed, heartbeats refused, uploads accepted and refused (``lease_closed`` among
them: finished work lost), versions made. No asserts: figures, and the ``shed`` / ``no-shed``
ratio of heartbeat and upload p99.

Run: ``.venv/bin/python -m benchmarks.overload [--devices 200] [--seconds 60] [--plans DIR]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import httpx
import numpy as np

from benchmarks.harness import add_json_argument, emit, export_plan, publish_job, serve_coordinator
from coordinator.admin_client import AdminClient
from coordinator.config import HEARTBEAT_GRACE
from device_sdk.client import CoordinatorClient
from device_sdk.errors import ProtocolError
from fedge.protocol import EligibilityFacts, RetryWindow, Task
from fedge.wire import encode_vector
from tests.databases import fresh_database

MODEL = "mnist_mlp"
ADMIN_TOKEN = "overload-benchmark-admin-token"
FACTS = EligibilityFacts(num_examples=50)
KINDS = ("check_in", "download", "heartbeat", "upload")


@dataclass
class Tally:
    """What the devices saw, shared between their threads."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    outcomes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float | None, outcome: str) -> None:
        with self.lock:
            if seconds is not None:
                self.latencies[kind].append(seconds)
            self.outcomes[f"{kind}:{outcome}"] += 1


def timed(tally: Tally, kind: str, call):  # type: ignore[no-untyped-def]
    """(result or the ProtocolError / transport error, seconds); the outcome counted."""
    started = time.perf_counter()
    try:
        result = call()
    except ProtocolError as error:
        tally.add(kind, time.perf_counter() - started, f"{error.status} {error.reason}")
        return error
    except httpx.TransportError as error:
        tally.add(kind, None, type(error).__name__)
        return error
    tally.add(kind, time.perf_counter() - started, "ok")
    return result


def run_device(url: str, delta: bytes, args: argparse.Namespace, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    end = time.monotonic() + args.seconds
    with CoordinatorClient(url, timeout=300) as client:
        client.register(runtime="overload-benchmark")
        time.sleep(rng.uniform(0, 2.0))  # devices arrive over two seconds
        while time.monotonic() < end:
            answer = timed(tally, "check_in", partial(client.check_in, FACTS))
            if isinstance(answer, ProtocolError):
                time.sleep(answer.retry_after or 1.0)
                continue
            if isinstance(answer, RetryWindow):
                time.sleep(rng.uniform(answer.min, answer.max))
                continue
            if not isinstance(answer, Task):
                time.sleep(1.0)
                continue
            task, last_sign = answer, time.monotonic()  # the lease was alive as its answer came
            if isinstance(
                timed(tally, "download", partial(client.download, task.weights_url)), Exception
            ):
                continue
            vanish_at = args.train * rng.random() if rng.random() < args.vanish else None
            trained, alive = 0.0, True
            while trained < args.train:
                step = min(args.heartbeat, args.train - trained)
                if vanish_at is not None and trained + step > vanish_at:
                    time.sleep(max(0.0, vanish_at - trained))
                    alive = False
                    break
                time.sleep(step)
                trained += step
                sent = time.monotonic()
                beat = timed(tally, "heartbeat", partial(client.heartbeat, task))
                if isinstance(beat, ProtocolError) and beat.status == 409:
                    # Silent longer than the grace as the device itself measures it (a slow
                    # download, a slow previous answer), or refused within it: the server's loss.
                    late = sent - last_sign > HEARTBEAT_GRACE * args.heartbeat
                    which = "first" if trained == step else "later"
                    how = "closed" if " is " in beat.message else "overdue on arrival"
                    label = "after a silence" if late else f"in grace ({which}, {how})"
                    tally.add("heartbeat", None, f"409 {label}")
                    alive = False
                    break
                last_sign = sent
            if alive:
                timed(tally, "upload", partial(client.upload, task, delta, num_examples=50))


@dataclass
class Row:
    """One configuration's figures; latencies in ms."""

    config: str
    threshold: int
    outcomes: dict[str, int]
    p50_ms: dict[str, float]
    p99_ms: dict[str, float]
    versions: int


def measure(name: str, threshold: int, plan: Path, args: argparse.Namespace, work: Path) -> Row:
    (work / name).mkdir()
    with fresh_database("sqlite", work / name) as db_url:
        served = serve_coordinator(
            db_url,
            admin_token=ADMIN_TOKEN,
            log_path=work / f"{name}.log",
            extra_env={
                "FEDGE_SHED_CHECK_INS_ABOVE": str(threshold),
                "FEDGE_RATE_LIMIT_PER_MINUTE": "100000",
                "FEDGE_RETRY_MIN_SECONDS": "1",
                "FEDGE_RETRY_MAX_SECONDS": "10",
                "FEDGE_SHED_RETRY_AFTER_SECONDS": str(args.retry_after),
            },
        )
        with served:
            with AdminClient(served.url, ADMIN_TOKEN) as admin:
                job_id, _ = publish_job(
                    admin,
                    plan,
                    {
                        "name": f"overload {name}",
                        "aggregation": {
                            "mode": "async",
                            "concurrency": args.concurrency,
                            "buffer_size": 10,
                            "max_staleness": 1000,
                        },
                        "task": {"lease_seconds": 600, "heartbeat_seconds": args.heartbeat},
                    },
                )
                num_params = int(admin.plans()[0]["num_params"])
            delta = encode_vector(np.full(num_params, 1e-4, np.float32))
            tally = Tally()
            threads = [
                threading.Thread(target=run_device, args=(served.url, delta, args, tally, seed))
                for seed in range(args.devices)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            with AdminClient(served.url, ADMIN_TOKEN) as admin:
                versions = int(admin.job(job_id)["current_version"])

    def quantile(kind: str, q: int) -> float:
        values = sorted(tally.latencies[kind])
        if not values:
            return float("nan")
        if len(values) == 1:
            return values[0] * 1000
        return statistics.quantiles(values, n=100)[q - 1] * 1000

    return Row(
        config=name,
        threshold=threshold,
        outcomes=dict(sorted(tally.outcomes.items())),
        p50_ms={k: round(quantile(k, 50), 1) for k in KINDS},
        p99_ms={k: round(quantile(k, 99), 1) for k in KINDS},
        versions=versions,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200, help="device threads")
    parser.add_argument("--seconds", type=float, default=60.0, help="load per configuration")
    parser.add_argument("--concurrency", type=int, default=100, help="the job's leases at once")
    parser.add_argument("--threshold", type=int, default=32, help="shed above this in flight")
    parser.add_argument("--retry-after", type=float, default=10.0, help="a shed's Retry-After")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="heartbeat_seconds")
    parser.add_argument("--train", type=float, default=6.0, help="seconds a task 'trains'")
    parser.add_argument("--vanish", type=float, default=0.3, help="fraction of tasks lost")
    parser.add_argument("--plans", type=Path, help="a directory holding mnist_mlp.* (else export)")
    add_json_argument(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fedge-overload-") as tmp:
        work = Path(tmp)
        plan = export_plan(MODEL, args.plans or work / "plans", reuse=args.plans is not None)
        rows = [
            measure("no-shed", 1_000_000, plan, args, work),
            measure("shed", args.threshold, plan, args, work),
        ]
    for row in rows:
        print(
            f"{row.config:8} p50/p99 ms  check-in {row.p50_ms['check_in']:.0f}/"
            f"{row.p99_ms['check_in']:.0f}  heartbeat {row.p50_ms['heartbeat']:.0f}/"
            f"{row.p99_ms['heartbeat']:.0f}  download {row.p50_ms['download']:.0f}/"
            f"{row.p99_ms['download']:.0f}  upload {row.p50_ms['upload']:.0f}/"
            f"{row.p99_ms['upload']:.0f}  versions {row.versions}"
        )
        print(f"         {row.outcomes}")
    peer, shed = rows
    for kind in ("heartbeat", "upload"):
        print(f"{kind} p99 shed / no-shed: {shed.p99_ms[kind] / peer.p99_ms[kind]:.2f}")
    emit(
        {
            "benchmark": "overload",
            "args": vars(args) | {"plans": str(args.plans), "json": str(args.json)},
            "rows": [asdict(r) for r in rows],
        },
        args.json,
    )


if __name__ == "__main__":
    main()
