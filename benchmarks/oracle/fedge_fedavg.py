"""The oracle's Fedge side: synchronous FedAvg through the real coordinator and device code.

Exports the ``synthetic_logreg`` plan with the ``fedge`` CLI, makes FedProx Synthetic(α, β)
clients, then runs a real coordinator (``create_app`` on a SQLite file with a ManualClock,
served by uvicorn on loopback, as ``tests/integration/conftest.py`` does) with one sync job:
every round takes all N clients (``target = minimum = N``, no over-selection), server SGD at
learning rate 1 (plain FedAvg, McMahan et al. 2017), client SGD without momentum or proximal
term. Each client is a registered device running ``device_sdk.session.device_session``
performed by ``device_sdk.runner.LocalRunner`` (HTTP, sha256-checked downloads, LiteRT).

A client's local pass is one full batch per epoch (``batch_size`` ≥ its example count), so the
shuffle a device draws cannot change its update and TFF sees the same gradient steps. Writes
``problem.npz`` (what ``tff_fedavg.py`` reproduces) and ``fedge.npz`` (the global weights after
each round, read back through the admin API).

Run: ``.venv/bin/python -m benchmarks.oracle.fedge_fedavg --work build/oracle``
(``benchmarks.oracle.run`` runs it).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn

from benchmarks.harness import export_plan, publish_job
from benchmarks.oracle.exchange import FEDGE_FILE, Problem, save_trajectory
from coordinator.admin_client import AdminClient
from coordinator.api.app import create_app
from coordinator.settings import Settings
from device_sdk.client import CoordinatorClient
from device_sdk.runner import LocalRunner
from device_sdk.session import device_session
from fedge.clock import ManualClock
from fedge.manifest import PlanManifest
from fedge.protocol import EligibilityFacts
from fedge.wire import decode_vector
from simulator.datasets import Dataset, synthetic_fedprox

MODEL = "synthetic_logreg"
ADMIN_TOKEN = "oracle-admin-token"


@dataclass(frozen=True)
class LiveCoordinator:
    """A coordinator serving on loopback in this process, and the clock it runs on."""

    url: str
    clock: ManualClock


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/oracle"), help="output folder")
    parser.add_argument("--plans", type=Path, default=Path("build/plans"), help="plan folder")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=0.02, help="client SGD step")
    parser.add_argument("--min-examples", type=int, default=20, help="smallest client")
    parser.add_argument("--max-examples", type=int, default=60, help="largest client")
    parser.add_argument("--alpha", type=float, default=1.0, help="Synthetic(α, β)")
    parser.add_argument("--beta", type=float, default=1.0, help="Synthetic(α, β)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def make_clients(args: argparse.Namespace) -> list[Dataset]:
    """N Synthetic(α, β) clients with sizes drawn uniformly in [min, max] examples."""
    rng = np.random.default_rng(args.seed)
    sizes = rng.integers(args.min_examples, args.max_examples, size=args.clients, endpoint=True)
    clients: list[Dataset] = synthetic_fedprox(
        alpha=args.alpha,
        beta=args.beta,
        num_devices=args.clients,
        rng=rng,
        examples_per_device=sizes,
    )
    return clients


@contextlib.contextmanager
def live_coordinator(db_path: Path) -> Iterator[LiveCoordinator]:
    """Serve ``create_app`` with uvicorn in a daemon thread on a free loopback port."""
    clock = ManualClock()
    settings = Settings(db_url=f"sqlite:///{db_path}", admin_token=ADMIN_TOKEN)
    app = create_app(settings, clock=clock, background_sweep=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the coordinator did not start")
            time.sleep(0.02)
        yield LiveCoordinator(url=f"http://127.0.0.1:{port}", clock=clock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.engine.dispose()
        sock.close()


def job_config(*, args: argparse.Namespace, batch_size: int) -> dict[str, Any]:
    """A sync job in which every round is all N clients, and plain FedAvg on the server."""
    return {
        "name": "oracle: FedAvg against TFF",
        "max_versions": args.rounds,
        "aggregation": {
            "mode": "sync",
            "target": args.clients,
            "minimum": args.clients,
            "over_selection": 1.0,
            "server_optimizer": "sgd",
            "server_learning_rate": 1.0,
        },
        "task": {
            "local_epochs": args.local_epochs,
            "batch_size": batch_size,
            "learning_rate": args.learning_rate,
            "momentum": 0.0,
            "mu": 0.0,
        },
    }


def run_round(
    number: int,
    runners: list[LocalRunner],
    clients: list[Dataset],
    *,
    coordinator: LiveCoordinator,
    admin: AdminClient,
    job_id: int,
) -> np.ndarray:
    """Each device checks in, trains and uploads once; return the version the round made."""
    for k, (runner, data) in enumerate(zip(runners, clients, strict=True)):
        session = device_session(
            functools.partial(EligibilityFacts, num_examples=len(data), runtime="oracle"),
            rng=runner.rng,
            now=coordinator.clock.now,
            max_tasks=1,
        )
        stats = runner.run(session)
        if stats.uploads_accepted != 1:
            raise RuntimeError(f"round {number}: client {k} did not report ({stats})")
    version = admin.versions(job_id)[-1]
    expected = (number, len(clients), sum(len(c) for c in clients))
    got = (version["number"], version["num_updates"], version["num_examples"])
    if got != expected:
        raise RuntimeError(
            f"round {number} made (version, updates, examples) = {got}, expected {expected}"
        )
    return np.asarray(admin.weights(job_id, number), dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    plan_path = export_plan(MODEL, args.plans)
    manifest_json = plan_path.with_suffix(".json").read_text()
    manifest = PlanManifest.from_json(manifest_json)
    clients = make_clients(args)
    # One full batch per epoch: the device's shuffle only permutes rows inside the batch.
    batch_size = max(len(c) for c in clients)

    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as tmp,
        live_coordinator(Path(tmp) / "oracle.db") as coordinator,
        AdminClient(coordinator.url, ADMIN_TOKEN) as admin,
    ):
        job_id, _ = publish_job(admin, plan_path, job_config(args=args, batch_size=batch_size))
        initial = np.asarray(admin.weights(job_id, 0), dtype=np.float32)
        shipped = decode_vector((args.plans / manifest.initial_weights_file).read_bytes())
        if not np.array_equal(initial, shipped):
            raise RuntimeError("version 0 differs from the plan's exported initial weights")

        problem = Problem(
            initial_weights=initial,
            x=np.concatenate([c.x for c in clients]),
            y=np.concatenate([c.y for c in clients]),
            client_sizes=np.array([len(c) for c in clients], dtype=np.int64),
            rounds=args.rounds,
            local_epochs=args.local_epochs,
            batch_size=batch_size,
            learning_rate=args.learning_rate,
            server_learning_rate=1.0,
            seed=args.seed,
            manifest_json=manifest_json,
        )
        problem.save(args.work)

        runners = []
        for k, data in enumerate(clients):
            client = CoordinatorClient(coordinator.url)
            client.register(runtime="oracle")
            runners.append(
                LocalRunner(
                    client,
                    manifest_for=lambda _sha: manifest,
                    x=data.x,
                    y=data.y,
                    rng=np.random.default_rng([args.seed, k]),
                    sleep=coordinator.clock.advance,  # a retry window passes in virtual time
                )
            )
        trajectory = [initial]
        try:
            for number in range(1, args.rounds + 1):
                trajectory.append(
                    run_round(
                        number,
                        runners,
                        clients,
                        coordinator=coordinator,
                        admin=admin,
                        job_id=job_id,
                    )
                )
        finally:
            for runner in runners:
                runner.client.close()
    seconds = time.perf_counter() - started
    save_trajectory(args.work / FEDGE_FILE, np.stack(trajectory), seconds)
    print(
        f"fedge: {args.rounds} rounds × {args.clients} devices "
        f"({problem.client_sizes.sum()} examples) in {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
