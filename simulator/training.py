"""Real local training for simulated devices, on a small pool of LiteRT interpreters.

A CNN training interpreter takes many times the memory of its weights (figures in
``benchmarks/RESULTS.md``), so no device ever owns one: each worker keeps one
:class:`~device_sdk.plan_runner.PlanRunner` per plan and swaps the device's base weights in
before training (``train_locally`` does ``set_weights``). Training runs the device SDK's own
``train_locally`` on the device's own examples.

Plans and weights travel by content address: the simulator writes each blob once to a folder,
named by its sha256, and a worker reads it from there (the page cache makes that cheap), so a
task sent to another process carries a few short strings, not megabytes.

Backends: ``local`` trains in the simulator's process; ``process`` in a pool of worker processes
(every core); ``ray`` in Ray tasks, on one machine or a cluster. A submitted task is a future:
the simulator asks for its result only when the device's virtual training time has passed, so
training of many devices overlaps. An evaluation task (``Task.kind == "evaluate"``) travels the
same way and runs the device SDK's own ``evaluate_task`` on the device's held-out split.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from device_sdk.errors import DeviceError
from device_sdk.evaluation import evaluate_task
from device_sdk.plan_runner import EvalResult, PlanRunner
from device_sdk.runner import train_task
from device_sdk.session import Failure
from device_sdk.trainer import ExampleBudget, TrainResult
from fedge.errors import ManifestError
from fedge.manifest import PlanManifest
from fedge.protocol import Task
from simulator.attacks import Adversary
from simulator.audit import AuditPlan
from simulator.config import PartitionConfig
from simulator.device_data import DeviceData


@dataclass(frozen=True)
class DataSpec:
    """Enough to rebuild every device's examples in another process."""

    dataset: str
    num_devices: int
    partition: PartitionConfig
    seed: int
    adversary: Adversary | None = None  # the malicious devices and their attack, if any
    audit: AuditPlan | None = None  # the privacy audit's canary devices, if any


@dataclass(frozen=True)
class TrainTask:
    """One device's local training: which plan, from which weights, with what settings."""

    device: int
    task: Task
    seed: tuple[int, ...]
    max_examples: int | None = None  # the task's time budget, in examples at the device's speed

    @property
    def plan_sha256(self) -> str:
        """The plan to train."""
        return self.task.plan_sha256

    @property
    def weights_sha256(self) -> str:
        """The base weights."""
        return self.task.weights_sha256


class Trainers(Protocol):
    """Where training runs."""

    def submit(self, task: TrainTask) -> Any:
        """Start training; return a handle for :meth:`result`."""
        ...

    def result(self, handle: Any) -> TrainResult | EvalResult | Failure:
        """Wait for a task's outcome."""
        ...

    def close(self) -> None:
        """Release workers."""
        ...


class Worker:
    """A worker's state: the devices' data, its interpreters and a blob folder to read from."""

    def __init__(
        self,
        data: DataSpec | DeviceData,
        blobs: Path,
        manifests: dict[str, str],
        adversary: Adversary | None = None,
        audit: AuditPlan | None = None,
    ) -> None:
        if isinstance(data, DataSpec):
            adversary, audit = data.adversary, data.audit
            data = DeviceData(data.dataset, data.num_devices, data.partition, seed=data.seed)
        self.data = data
        self.adversary = adversary
        self.audit = audit
        self.blobs = blobs
        self.manifests = manifests  # plan sha256 -> manifest JSON
        self._runners: dict[str, PlanRunner] = {}

    def train(self, task: TrainTask) -> TrainResult | EvalResult | Failure:
        """Run the device SDK's local training for ``task`` (``device_sdk.runner.train_task``).

        An evaluation task runs ``device_sdk.evaluation.evaluate_task`` instead: the plan's
        ``evaluate`` signature on the device's held-out split, on the same shared interpreter.
        """
        try:
            runner = self._runner(task.plan_sha256)
        except (DeviceError, ManifestError) as broken:
            return Failure(0, "bad_plan", str(broken))
        examples = self.data.examples(task.device)
        weights = self.read_blob(task.weights_sha256)
        if task.task.kind == "evaluate":
            return evaluate_task(
                runner, weights=weights, x=examples[0], y=examples[1], task=task.task
            )
        rng = np.random.default_rng(list(task.seed))

        def train(x: Any, y: Any) -> TrainResult | Failure:
            return train_task(
                runner,
                weights=weights,
                x=x,
                y=y,
                task=task.task,
                rng=rng,
                # Never the wall clock: a time budget is charged in virtual time (simulator.fleet).
                budget=ExampleBudget(task.max_examples),
            )

        if self.audit is not None and self.audit.is_canary(task.device):
            return self.audit.train(task.device, examples, train, clip_norm=task.task.clip_norm)
        if self.adversary is None:
            return train(*examples)
        poisoning = np.random.default_rng([*task.seed, 23])  # apart from training's shuffles
        return self.adversary.train(task.device, examples, train, rng=poisoning)

    def read_blob(self, sha256: str) -> bytes:
        """The bytes of a plan or weights blob, by content address."""
        return (self.blobs / sha256).read_bytes()

    def _runner(self, sha256: str) -> PlanRunner:
        runner = self._runners.get(sha256)
        if runner is None:
            manifest = PlanManifest.from_json(self.manifests[sha256])
            runner = PlanRunner(self.read_blob(sha256), manifest, num_threads=1)
            self._runners = {sha256: runner}  # one plan at a time: interpreters are big
        return runner


class LocalTrainers:
    """Train in this process, when the result is asked for."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def submit(self, task: TrainTask) -> TrainTask:
        """Nothing runs yet: training happens in :meth:`result`."""
        return task

    def result(self, handle: TrainTask) -> TrainResult | EvalResult | Failure:
        """Train now."""
        return self.worker.train(handle)

    def close(self) -> None:
        """Nothing to release."""


_WORKER: Worker | None = None


def _start_worker(data: DataSpec, blobs: str, manifests: dict[str, str]) -> None:
    global _WORKER
    # Ctrl-C reaches the whole process group: the parent decides (it stops the run and writes
    # a partial report); a worker killed by it would only break the pool under it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = Worker(data, Path(blobs), manifests)


def _train_in_worker(task: TrainTask) -> TrainResult | EvalResult | Failure:
    if _WORKER is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker not initialised")
    return _WORKER.train(task)


class ProcessTrainers:
    """Train in a pool of worker processes, one per core by default."""

    def __init__(
        self, data: DataSpec, blobs: Path, manifests: dict[str, str], *, workers: int
    ) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers,
            initializer=_start_worker,
            initargs=(data, str(blobs), manifests),
        )

    def submit(
        self, task: TrainTask
    ) -> concurrent.futures.Future[TrainResult | EvalResult | Failure]:
        """Queue ``task`` on the pool."""
        return self._pool.submit(_train_in_worker, task)

    def result(
        self, handle: concurrent.futures.Future[TrainResult | EvalResult | Failure]
    ) -> TrainResult | EvalResult | Failure:
        """Wait for the task."""
        return handle.result()

    def close(self) -> None:
        """Stop the workers."""
        self._pool.shutdown(wait=True, cancel_futures=True)
