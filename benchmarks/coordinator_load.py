"""Load a real coordinator with concurrent devices over loopback, beside numpy's floor.

For each configuration (SQLite or PostgreSQL, one or two uvicorn workers) a fresh database and a
real ``fedge coordinator serve`` process are started, the ``mnist_cnn`` plan (406,922 float32
parameters, so ~1.6 MB per update in :mod:`fedge.wire`) is published through the admin API, and
an asynchronous FedBuff job is created with room for every device (large ``concurrency`` and
``max_staleness``, constant staleness weight, ``buffer_size`` 10). Then ``--devices`` threads,
each a registered device with its own :class:`~device_sdk.client.CoordinatorClient` that has
downloaded the plan once, loop for ``--seconds``: check in, download the task's weights, upload
a delta. Measured:

- check-ins/s and accepted updates/s over the wall time until the last device's loop ended;
- p50 / p99 latency of each request kind, as the device sees it;
- global versions made, and requests refused (by kind and reason);
- the server's resident memory: the sum of VmRSS over the server process and its worker
  children, sampled every 0.5 s (idle before the load, and the peak during it).

The floor: the time numpy alone needs to decode (:func:`fedge.wire.decode_vector`, CRC check
included) and sum into a float64 accumulator as many updates as the server accepted, in this
process; "server / floor" is the fraction of that bound the server reaches.

Deltas are encoded before the load starts, so client-side encoding is not measured. Each upload
is still distinct (the blob store is content-addressed and would skip storing a repeat): only
the last element and the CRC trailer change, the CRC continued from a precomputed prefix. The
per-device rate limit is raised for the run; it guards against runaway devices, not throughput.
The load generator shares the machine with the server, so on few cores it competes for CPU.

Run: ``.venv/bin/python -m benchmarks.coordinator_load [--devices 16] [--seconds 10]
[--configs sqlite1,sqlite2,pg1,pg2] [--plans DIR]``. PostgreSQL is reached as in the tests
(``FEDGE_TEST_POSTGRES``, default ``postgres@127.0.0.1:5432``); configurations needing it are
skipped when it is unreachable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np

from benchmarks.harness import (
    PeakMemory,
    add_json_argument,
    emit,
    export_plan,
    print_table,
    publish_job,
    serve_coordinator,
)
from coordinator.admin_client import AdminClient
from coordinator.served import ServedCoordinator
from device_sdk.client import CoordinatorClient
from device_sdk.errors import ProtocolError
from fedge.protocol import EligibilityFacts, Task
from fedge.wire import decode_vector, encode_vector
from tests.databases import POSTGRES_ADMIN, fresh_database, postgres_available

MODEL = "mnist_cnn"
ADMIN_TOKEN = "coordinator-load-admin-token"
CONFIGS = {  # name: (database, uvicorn workers)
    "sqlite1": ("sqlite", 1),
    "sqlite2": ("sqlite", 2),
    "pg1": ("postgres", 1),
    "pg2": ("postgres", 2),
}
KINDS = ("check_in", "download", "upload")
FACTS = EligibilityFacts(num_examples=50)
RSS_PERIOD = 0.5
T = TypeVar("T")


class Updates:
    """Distinct encoded deltas at the cost of a copy: vary the last element, continue the CRC."""

    def __init__(self, num_params: int, *, bases: int = 4, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.prefixes: list[tuple[bytes, int]] = []
        for _ in range(bases):
            encoded = encode_vector(rng.normal(0.0, 1e-3, num_params).astype(np.float32))
            prefix = encoded[:-8]  # all but the last element and the CRC-32 trailer
            self.prefixes.append((prefix, zlib.crc32(prefix)))
        self._next = 0
        self._lock = threading.Lock()

    def next(self) -> bytes:
        """A body no other call returned (for 2**23 calls): a last element in [2**-10, 2**-9)."""
        with self._lock:
            serial, self._next = self._next, self._next + 1
        prefix, crc = self.prefixes[serial % len(self.prefixes)]
        last = struct.pack("<I", (117 << 23) | (serial & 0x7FFFFF))  # float32 exponent -10
        return prefix + last + struct.pack("<I", zlib.crc32(last, crc))


@dataclass
class Tally:
    """What the devices saw, shared between their threads."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def timed(self, kind: str, call: Callable[[], T]) -> T | None:
        """Call, and record its latency if it succeeded; count a refusal and return None."""
        started = time.perf_counter()
        try:
            result = call()
        except ProtocolError as error:
            self.refuse(f"{kind}:{error.status} {error.reason}")
            return None
        except httpx.TransportError as error:
            self.refuse(f"{kind}:{type(error).__name__}")
            time.sleep(0.05)
            return None
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latencies[kind].append(elapsed)
        return result

    def refuse(self, reason: str) -> None:
        """Count a refused request."""
        with self.lock:
            self.refused[reason] += 1


@dataclass
class Window:
    """The timed load: set when every device is ready; ``stop`` ends it early (Ctrl-C)."""

    seconds: float
    start: float = float("inf")
    stop: threading.Event = field(default_factory=threading.Event)

    def open(self) -> None:
        """Start the clock (the ready barrier's action)."""
        self.start = time.monotonic()

    def over(self) -> bool:
        """Whether devices should stop starting new loops."""
        return self.stop.is_set() or time.monotonic() >= self.start + self.seconds


def run_device(
    url: str,
    plan_sha256: str,
    updates: Updates,
    tally: Tally,
    ready: threading.Barrier,
    window: Window,
) -> None:
    """Register and fetch the plan, wait for the start, then loop until the window is over."""
    with CoordinatorClient(url, timeout=120) as client:
        try:
            client.register(runtime="coordinator-load")
            client.download(f"/v1/plans/{plan_sha256}")  # once: a device caches it by ETag
        except BaseException:
            ready.abort()  # the main thread stops waiting for this device
            raise
        ready.wait()
        while not window.over():
            task = tally.timed("check_in", partial(client.check_in, FACTS))
            if not isinstance(task, Task):
                if task is not None:  # a retry window: the job is full (it should not be)
                    tally.refuse("check_in:retry window")
                    time.sleep(0.05)
                continue
            if tally.timed("download", partial(client.download, task.weights_url)) is None:
                continue
            upload = partial(client.upload, task, updates.next(), num_examples=50)
            receipt = tally.timed("upload", upload)
            if receipt is not None and receipt.status == "accepted":
                with tally.lock:
                    tally.accepted += 1


@dataclass
class Row:
    """One configuration's measurements; latencies in ms, memory in MB."""

    config: str
    database: str
    workers: int
    seconds: float
    check_ins: int
    check_ins_per_s: float
    updates: int
    updates_per_s: float
    versions: int
    check_in_p50_ms: float
    check_in_p99_ms: float
    download_p50_ms: float
    download_p99_ms: float
    upload_p50_ms: float
    upload_p99_ms: float
    refused: dict[str, int]
    rss_idle_mb: float
    rss_peak_mb: float
    floor_updates_per_s: float
    server_over_floor: float


def load_job(devices: int) -> dict[str, object]:
    """An async FedBuff job with room for every device, K = 10, constant staleness weight."""
    aggregation = {"mode": "async", "concurrency": 100 * devices, "buffer_size": 10}
    aggregation |= {"max_staleness": 1_000_000, "staleness": "constant"}
    return {"name": "coordinator load", "aggregation": aggregation}


def floor_rate(updates: Updates, count: int, num_params: int, repeats: int = 3) -> float:
    """Updates/s that numpy alone decodes and sums into float64 (median of ``repeats``)."""
    bodies = [updates.next() for _ in range(min(count, 8))]
    rates = []
    for _ in range(repeats):
        total = np.zeros(num_params, np.float64)
        started = time.perf_counter()
        for i in range(count):
            total += decode_vector(bodies[i % len(bodies)], expected_length=num_params)
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


@dataclass
class Load:
    """One timed load's raw results."""

    tally: Tally
    seconds: float
    versions: int
    rss_idle_mb: float
    rss_peak_mb: float


def drive(
    server: ServedCoordinator, args: argparse.Namespace, plans: Path, updates: Updates
) -> Load:
    """Publish the plan and job, then run the devices for the window, sampling the RSS."""
    assert server.process is not None
    with AdminClient(server.url, ADMIN_TOKEN, timeout=120) as admin:
        job_id, plan_sha = publish_job(admin, plans / f"{MODEL}.tflite", load_job(args.devices))
        tally, window = Tally(), Window(args.seconds)
        ready = threading.Barrier(args.devices + 1, action=window.open)
        devices = [
            threading.Thread(
                target=run_device,
                args=(server.url, plan_sha, updates, tally, ready, window),
                daemon=True,
            )
            for _ in range(args.devices)
        ]
        try:
            for device in devices:
                device.start()
            # Entered while the devices register: its first sample is near idle.
            with PeakMemory(server.process.pid, interval=RSS_PERIOD, pss=False) as memory:
                ready.wait(timeout=300)
                for device in devices:
                    device.join()
                seconds = time.monotonic() - window.start
        finally:
            window.stop.set()  # on an error or Ctrl-C, devices leave after their request
        versions = int(admin.job(job_id)["current_version"])
    return Load(tally, seconds, versions, memory.first_rss_mb, memory.peak_rss_mb)


def measure(name: str, args: argparse.Namespace, plans: Path, updates: Updates) -> Row:
    """Start a fresh database and server for ``name``, load it, and stop both."""
    kind, workers = CONFIGS[name]
    num_params = int(json.loads((plans / f"{MODEL}.json").read_text())["num_params"])
    with (
        tempfile.TemporaryDirectory(prefix="fedge-load-") as tmp,
        fresh_database(kind, Path(tmp)) as db_url,
    ):
        served = serve_coordinator(
            db_url,
            workers=workers,
            admin_token=ADMIN_TOKEN,
            log_path=Path(tmp) / "server.log",
            extra_env={"FEDGE_RATE_LIMIT_PER_MINUTE": "1000000"},
        )
        with served as server:
            load = drive(server, args, plans, updates)

    tally, seconds = load.tally, load.seconds

    def ms(kind: str, q: float) -> float:
        values = tally.latencies[kind]
        return float(1e3 * np.percentile(values, q)) if values else float("nan")

    floor = floor_rate(updates, max(tally.accepted, 1), num_params)
    check_ins = len(tally.latencies["check_in"])
    return Row(
        config=name,
        database=kind,
        workers=workers,
        seconds=seconds,
        check_ins=check_ins,
        check_ins_per_s=check_ins / seconds,
        updates=tally.accepted,
        updates_per_s=tally.accepted / seconds,
        versions=load.versions,
        check_in_p50_ms=ms("check_in", 50),
        check_in_p99_ms=ms("check_in", 99),
        download_p50_ms=ms("download", 50),
        download_p99_ms=ms("download", 99),
        upload_p50_ms=ms("upload", 50),
        upload_p99_ms=ms("upload", 99),
        refused=dict(tally.refused),
        rss_idle_mb=load.rss_idle_mb,
        rss_peak_mb=load.rss_peak_mb,
        floor_updates_per_s=floor,
        server_over_floor=(tally.accepted / seconds) / floor,
    )


def print_rows(rows: list[Row]) -> None:
    """Print the rows side by side."""
    columns = [("config", 9), ("chk-in/s", 9), ("upd/s", 7), ("vers", 5)]
    columns += [("chk-in p50/p99", 16), ("download p50/p99", 18), ("upload p50/p99", 16)]
    columns += [("refused", 8), ("RSS idle/peak", 15), ("floor/s", 9), ("srv/floor", 10)]
    print_table(
        columns,
        [
            (
                r.config,
                f"{r.check_ins_per_s:.1f}",
                f"{r.updates_per_s:.1f}",
                str(r.versions),
                f"{r.check_in_p50_ms:.0f}/{r.check_in_p99_ms:.0f}",
                f"{r.download_p50_ms:.0f}/{r.download_p99_ms:.0f}",
                f"{r.upload_p50_ms:.0f}/{r.upload_p99_ms:.0f}",
                str(sum(r.refused.values())),
                f"{r.rss_idle_mb:.0f}/{r.rss_peak_mb:.0f}",
                f"{r.floor_updates_per_s:.0f}",
                f"{r.server_over_floor:.4f}",
            )
            for r in rows
        ],
        notes=[
            "latencies in ms as a device sees them; RSS in MB, server and worker processes "
            "summed; floor = numpy decode + float64 sum of as many updates, in one process"
        ],
    )


def main() -> None:
    """Parse the options, load every selected configuration, print a table and a JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=16, help="concurrent device threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="load per configuration")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated, of " + ",".join(CONFIGS)
    )
    parser.add_argument("--plans", type=Path, help=f"a directory holding {MODEL}.* (else export)")
    add_json_argument(parser)
    args = parser.parse_args()

    names = args.configs.split(",")
    unknown = set(names) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs {sorted(unknown)}; choose from {','.join(CONFIGS)}")
    skipped = {}
    if any(CONFIGS[n][0] == "postgres" for n in names) and not postgres_available():
        for n in [n for n in names if CONFIGS[n][0] == "postgres"]:
            skipped[n] = f"PostgreSQL unreachable at {POSTGRES_ADMIN} (set FEDGE_TEST_POSTGRES)"
            names.remove(n)
        print(f"skipping {','.join(skipped)}: PostgreSQL is unreachable at {POSTGRES_ADMIN}")

    with tempfile.TemporaryDirectory(prefix="fedge-load-plan-") as tmp:
        plans = args.plans or export_plan(MODEL, Path(tmp)).parent
        num_params = int(json.loads((plans / f"{MODEL}.json").read_text())["num_params"])
        updates = Updates(num_params)
        rows = []
        for name in names:
            print(f"{name}: {args.devices} devices for {args.seconds:g} s …", flush=True)
            rows.append(measure(name, args, plans, updates))
    print_rows(rows)
    summary = {
        "model": MODEL,
        "num_params": num_params,
        "update_bytes": len(updates.next()),
        "devices": args.devices,
        "seconds": args.seconds,
        "buffer_size": 10,
        "skipped": skipped,
        "configs": {row.config: asdict(row) for row in rows},
    }
    emit(summary, args.json)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the servers were stopped and the databases dropped on the way
        sys.exit("interrupted")
