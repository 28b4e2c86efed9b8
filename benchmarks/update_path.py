"""What one client update costs, by cost centre, and how many SQL statements and commits it takes.

Two paths, each profiled by :mod:`benchmarks.profiling` (a stack sampler and SQLAlchemy engine
events; nothing in the product is patched or edited):

(a) ``simulate``: one short ``fedge simulate`` run in this process (the ``local`` training
    backend, so training is sampled too), the coordinator in-process behind the ASGI bridge as
    the simulator always runs it. Statements are grouped by the device request (or sweep,
    evaluation, admin call) on the stack when they were sent.
(b) ``live``: a served coordinator (``create_app`` under uvicorn, one worker, in a child
    process that runs the samplers) and ``--devices`` device threads in this process looping
    check-in -> download the task's weights -> upload a delta, as
    :mod:`benchmarks.coordinator_load` does, for ``--seconds``. Statements are grouped by the
    route of the request that sent them. Only the timed window is measured (registration, plan
    download and publishing are not).

Per client update = divided by the updates the coordinator accepted in that window. Statement
and commit counts do not depend on the machine's load; times do (they stretch with every other
process on the cores), so read the shares more than the milliseconds.

Run: ``.venv/bin/python -m benchmarks.update_path [--paths simulate,live] [--devices 300]
[--hours 2] [--no-group] [--live-devices 4] [--seconds 10] [--database sqlite|postgres]``.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from benchmarks.harness import ROOT, add_json_argument, cell, emit, print_table
from benchmarks.profiling import StackSampler, StatementCounter

ADMIN_TOKEN = "update-path-admin-token-0123456789abcdef"
CONTROL_VERBS = {"BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT"}
CLIENT_CALLS = {"check_in", "heartbeat", "upload", "download", "abort", "register"}

# --- (a) the simulator's path ---------------------------------------------------------------


def simulator_phase(frame: FrameType | None) -> str:
    """What the simulator was doing on this stack: the device request, or its own work."""
    while frame is not None:
        code = frame.f_code
        filename = code.co_filename.replace("\\", "/")
        if filename.endswith("device_sdk/client.py") and code.co_name in CLIENT_CALLS:
            return code.co_name
        if filename.endswith("simulator/inprocess.py") and code.co_name in {
            "sweep",
            "register_many",
        }:
            return code.co_name
        if filename.endswith("fedge/admin_client.py"):
            return "admin"
        if filename.endswith("simulator/run.py") and code.co_name in {
            "row",
            "final_weights",
            "per_device",
        }:
            return "evaluate"
        if filename.endswith("simulator/training.py"):
            return "train"
        frame = frame.f_back
    return "simulator"


def profile_simulation(args: argparse.Namespace) -> dict[str, Any]:
    """One in-process ``fedge simulate`` run under the sampler and the statement counter."""
    from simulator.config import SimulationConfig
    from simulator.run import ensure_plan, simulate

    with tempfile.TemporaryDirectory(prefix="fedge-update-path-") as out:
        config = SimulationConfig(
            devices=args.devices,
            hours=args.hours,
            backend="local",
            out=Path(out),
            progress=False,
            plans_dir=args.plans_dir,
            population={"dropout": 0.3},
            # The in-process coordinator groups requests' transactions unless told not to.
            coordinator={} if args.group else {"group_transactions": False},
        )
        ensure_plan(config)  # an export (TensorFlow) is not the run's cost
        main = {threading.get_ident()}
        counter = StatementCounter(lambda: simulator_phase(sys._getframe()))
        sampler = StackSampler(threads=main, phase=simulator_phase)
        cpu = time.process_time()
        with counter, sampler:
            outcome = simulate(config)
        cpu = time.process_time() - cpu
    stats = outcome.fleet.stats
    return {
        "config": {
            "devices": args.devices,
            "hours": args.hours,
            "dropout": 0.3,
            "grouped_transactions": args.group,
        },
        "wall_seconds": outcome.wall_seconds,
        "cpu_seconds": cpu,
        "updates": stats.accepted,
        "requests": {
            "check_in": stats.check_ins,
            "heartbeat": stats.heartbeats,
            "upload": stats.accepted + sum(stats.rejected.values()),
        },
        "trainings": stats.trained,
        "samples": sampler.samples,
        "centres_seconds": sampler.by_centre(),
        "phase_centre_seconds": {f"{p}|{c}": s for (c, p), s in sampler.seconds.items()},
        "sql": counter.summary(),
    }


# --- (b) the live upload path -----------------------------------------------------------------

PHASE: contextvars.ContextVar[str] = contextvars.ContextVar("phase", default="background")
ROUTES = (  # (pattern on the path, phase); the first match wins
    (re.compile(r"^/v1/check-in"), "check_in"),
    (re.compile(r"/heartbeat$"), "heartbeat"),
    (re.compile(r"/update$"), "upload"),
    (re.compile(r"/weights$"), "download"),
    (re.compile(r"^/v1/plans/"), "download_plan"),
    (re.compile(r"^/v1/devices"), "register"),
    (re.compile(r"^/v1/admin"), "admin"),
)
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Measured:
    """An ASGI wrapper: names each request's phase (for the statement counter) and counts them.

    ``POST /_bench/start`` zeroes the counts and starts the sampler; ``POST /_bench/stop`` stops
    it and answers the figures as JSON. Everything else goes to the app.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counter = StatementCounter(PHASE.get)
        self.requests: dict[str, int] = {}
        self.sampler: StackSampler | None = None
        self.started = self.cpu = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith("/_bench/"):
            await self._control(path, send)
            return
        phase = next((name for pattern, name in ROUTES if pattern.search(path)), "other")
        self.requests[phase] = self.requests.get(phase, 0) + 1
        token = PHASE.set(phase)
        try:
            await self.app(scope, receive, send)
        finally:
            PHASE.reset(token)

    async def _control(self, path: str, send: Send) -> None:
        body: dict[str, Any] = {}
        if path == "/_bench/start":
            self.counter.__enter__()
            self.requests = {}
            self.sampler = StackSampler(skip_idle=True).__enter__()
            self.started, self.cpu = time.perf_counter(), time.process_time()
        elif path == "/_bench/stop" and self.sampler is not None:
            self.sampler.__exit__()
            self.counter.__exit__()
            body = {
                "wall_seconds": time.perf_counter() - self.started,
                "cpu_seconds": time.process_time() - self.cpu,
                "requests": self.requests,
                "samples": self.sampler.samples,
                "centres_seconds": self.sampler.by_centre(),
                "sql": self.counter.summary(),
            }
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def serve_measured(db_url: str, port: int) -> None:
    """The child process: the coordinator's app, wrapped in :class:`Measured`, under uvicorn."""
    import uvicorn

    from coordinator.api.app import create_app
    from coordinator.settings import Settings

    settings = Settings(
        db_url=db_url,
        admin_token=ADMIN_TOKEN,
        rate_limit_per_minute=1_000_000,  # it guards against runaway devices, not load
    )
    uvicorn.run(Measured(create_app(settings)), host="127.0.0.1", port=port, log_level="warning")


def profile_live(args: argparse.Namespace) -> dict[str, Any]:
    """Serve a measured coordinator, drive it with device threads, and collect its figures."""
    from benchmarks.coordinator_load import Tally, Updates, Window, load_job, run_device
    from benchmarks.harness import publish_job
    from coordinator.admin_client import AdminClient
    from coordinator.served import free_port
    from fedge.manifest import PlanManifest, manifest_path_for
    from simulator.config import SimulationConfig
    from simulator.run import ensure_plan
    from tests.databases import fresh_database

    plan = ensure_plan(SimulationConfig(plans_dir=args.plans_dir))
    manifest = PlanManifest.from_json(manifest_path_for(plan).read_text())
    updates = Updates(manifest.num_params)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (
        tempfile.TemporaryDirectory(prefix="fedge-update-path-") as tmp,
        fresh_database(args.database, Path(tmp)) as db_url,
        open(Path(tmp) / "server.log", "wb") as log,
    ):
        command = [sys.executable, "-m", "benchmarks.update_path", "--serve", db_url, str(port)]
        server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_healthy(url, server)
            with AdminClient(url, ADMIN_TOKEN, timeout=120) as admin:
                job = load_job(args.live_devices)
                job["aggregation"]["buffer_size"] = args.buffer_size  # type: ignore[index]
                job_id, plan_sha = publish_job(admin, plan, job)
                tally, window = Tally(), Window(args.seconds)
                control = httpx.Client(base_url=url, timeout=120)

                def open_window() -> None:
                    control.post("/_bench/start").raise_for_status()
                    window.open()

                ready = threading.Barrier(args.live_devices + 1, action=open_window)
                devices = [
                    threading.Thread(
                        target=run_device,
                        args=(url, plan_sha, updates, tally, ready, window),
                        daemon=True,
                    )
                    for _ in range(args.live_devices)
                ]
                for device in devices:
                    device.start()
                ready.wait(timeout=300)
                for device in devices:
                    device.join()
                figures: dict[str, Any] = control.post("/_bench/stop").json()
                control.close()
                versions = int(admin.job(job_id)["current_version"])
        finally:
            server.terminate()
            server.wait(timeout=60)
    return {
        "config": {
            "database": args.database,
            "devices": args.live_devices,
            "seconds": args.seconds,
            "model": manifest.name,
            "update_bytes": len(updates.next()),
            "buffer_size": args.buffer_size,
        },
        **figures,
        "updates": tally.accepted,
        "versions": versions,
        "refused": dict(tally.refused),
    }


def _wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the measured coordinator exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the measured coordinator did not answer /healthz within {timeout} s")


# --- the tables -------------------------------------------------------------------------------


def print_centres(title: str, run: dict[str, Any]) -> None:
    """Milliseconds per accepted update and share, per cost centre."""
    updates = max(int(run["updates"]), 1)
    total = sum(run["centres_seconds"].values()) or 1.0
    rows = [
        (centre, cell(1e3 * seconds / updates), cell(100 * seconds / total, 1))
        for centre, seconds in run["centres_seconds"].items()
    ]
    rows.append(("total sampled (thread-s)", cell(1e3 * total / updates), "100.0"))
    print(
        f"\n{title}: {run['updates']} updates accepted, {run['wall_seconds']:.1f} s wall "
        f"({1e3 * run['wall_seconds'] / updates:.1f} ms/update), {run['cpu_seconds']:.1f} s CPU, "
        f"{run['samples']} samples; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores: times stretch with it, counts do not"
    )
    print_table([("cost centre", 30), ("ms/update", 11), ("share %", 9)], rows)


def print_statements(run: dict[str, Any]) -> None:
    """Statements and commits per request of each phase and per accepted update."""
    updates = max(int(run["updates"]), 1)
    requests = run["requests"]
    rows = []
    for phase, figures in run["sql"].items():
        count = requests.get(phase)
        per_request = (
            (cell(figures["statements"] / count), cell(figures["commits"] / count))
            if count
            else ("-", "-")
        )
        rows.append(
            (
                phase,
                str(figures["statements"]),
                str(figures["commits"]),
                str(count or "-"),
                *per_request,
                cell(figures["statements"] / updates),
                cell(figures["commits"] / updates),
            )
        )
    statements = sum(f["statements"] for f in run["sql"].values())
    commits = sum(f["commits"] for f in run["sql"].values())
    totals = (str(statements), str(commits), "-", "-", "-")
    rows.append(("all", *totals, cell(statements / updates), cell(commits / updates)))
    # BEGIN, SAVEPOINT, RELEASE, ROLLBACK: what a transaction costs, apart from its reads and writes
    control = sum(
        n for f in run["sql"].values() for v, n in f["by_verb"].items() if v in CONTROL_VERBS
    )
    data = statements - control
    rows.append(("all but BEGIN…", str(data), "-", "-", "-", "-", cell(data / updates), "-"))
    columns = [("phase", 14), ("stmts", 8), ("commits", 9), ("requests", 10)]
    columns += [("stmts/req", 11), ("commits/req", 13), ("stmts/upd", 11), ("commits/upd", 13)]
    print_table(columns, rows)


def main() -> None:
    """Run the selected paths, print their tables and one JSON line."""
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve_measured(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default="simulate,live", help="simulate, live or both")
    parser.add_argument("--devices", type=int, default=300, help="(a) simulated devices")
    parser.add_argument("--hours", type=float, default=2.0, help="(a) virtual hours")
    parser.add_argument(
        "--no-group",
        dest="group",
        action="store_false",
        help="(a) one transaction per request, as over a socket, instead of grouped ones",
    )
    parser.add_argument("--live-devices", type=int, default=4, help="(b) device threads")
    parser.add_argument("--seconds", type=float, default=10.0, help="(b) timed load")
    parser.add_argument("--buffer-size", type=int, default=10, help="(b) FedBuff K")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--plans-dir", type=Path, default=Path("build/plans"))
    add_json_argument(parser)
    args = parser.parse_args()
    paths = set(args.paths.split(","))
    summary: dict[str, Any] = {"load_average_start": os.getloadavg()[0]}
    if "simulate" in paths:
        summary["simulate"] = run = profile_simulation(args)
        print_centres("(a) fedge simulate, in-process", run)
        print_statements(run)
    if "live" in paths:
        summary["live"] = run = profile_live(args)
        print_centres(f"(b) served coordinator ({args.database}), upload path", run)
        print_statements(run)
    emit(summary, args.json)


if __name__ == "__main__":
    main()
