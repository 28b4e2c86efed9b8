"""Training on Ray: the same workers as the process pool, as Ray actors on one machine or many.

``--backend ray`` starts a local Ray cluster (or joins ``ray_address``) and runs one actor per
worker, each holding a :class:`~simulator.training.Worker` (one interpreter per plan, the
devices' data rebuilt from the run's seed). Plans and weights go through Ray's object store, so
actors on other machines need no shared folder: the driver puts each blob once and an actor
fetches it the first time it needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ray

from device_sdk.plan_runner import EvalResult
from device_sdk.session import Failure
from device_sdk.trainer import TrainResult
from simulator.training import DataSpec, TrainTask, Worker

_KEEP = 8  # blobs (the plan and recent versions' weights) an actor or the driver holds on to


class _ObjectStoreWorker(Worker):
    """A worker whose blobs come from Ray's object store."""

    def __init__(self, data: DataSpec, manifests: dict[str, str]) -> None:
        super().__init__(data, Path("."), manifests)
        self.refs: dict[str, Any] = {}

    def read_blob(self, sha256: str) -> bytes:
        blob: bytes = ray.get(self.refs[sha256])
        return blob

    def train_with(
        self, task: TrainTask, refs: dict[str, list[Any]]
    ) -> TrainResult | EvalResult | Failure:
        # Refs arrive wrapped in lists so Ray does not fetch blobs this actor already holds.
        for sha256, (ref,) in refs.items():
            self.refs.setdefault(sha256, ref)
        while len(self.refs) > _KEEP:  # old versions' weights: let the object store free them
            del self.refs[next(iter(self.refs))]
        return self.train(task)


class RayTrainers:
    """Train on Ray actors, round-robin; results are Ray object refs."""

    def __init__(
        self,
        data: DataSpec,
        blobs: Path,
        manifests: dict[str, str],
        *,
        workers: int,
        address: str | None = None,
    ) -> None:
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                options["num_cpus"] = workers
            ray.init(address=address, **options)
        actor: Any = ray.remote(num_cpus=1)(_ObjectStoreWorker)
        self._actors: list[Any] = [actor.remote(data, manifests) for _ in range(workers)]
        self._blobs = blobs
        self._refs: dict[str, Any] = {}
        self._next = 0

    def _ref(self, sha256: str) -> Any:
        ref = self._refs.pop(sha256, None)
        if ref is None:
            ref = ray.put((self._blobs / sha256).read_bytes())
        self._refs[sha256] = ref  # most recently used last
        while len(self._refs) > _KEEP:
            del self._refs[next(iter(self._refs))]
        return ref

    def submit(self, task: TrainTask) -> Any:
        """Queue ``task`` on the next actor."""
        refs = {sha: [self._ref(sha)] for sha in (task.plan_sha256, task.weights_sha256)}
        actor = self._actors[self._next % len(self._actors)]
        self._next += 1
        return actor.train_with.remote(task, refs)

    def result(self, handle: Any) -> TrainResult | EvalResult | Failure:
        """Wait for the task."""
        outcome: TrainResult | EvalResult | Failure = ray.get(handle)
        return outcome

    def close(self) -> None:
        """Stop the actors, and Ray if this backend started it."""
        for actor in self._actors:
            ray.kill(actor)
        if self._owns_ray:
            ray.shutdown()
