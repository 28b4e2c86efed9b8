"""Example stores for real agents, filled from the simulator's offline datasets.

The path to three (or thirty) real ``fedge device run`` agents on one machine needs data on
each: this writes one example store per device, split from a dataset the way the simulator
splits it (IID, or label-skewed by a Dirichlet(α) draw), each in its own folder beside the
folder the agent keeps its state in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device_sdk.example_store import ExampleStore
from fedge.errors import FedgeError
from simulator import datasets, partition


class StoreFillError(FedgeError, ValueError):
    """Arguments no split can satisfy: too few examples, a non-positive count or α."""


@dataclass(frozen=True)
class FilledStore:
    """One device's folder: ``data`` for the agent's ``--data``, ``state`` for ``--state-dir``."""

    data: Path
    state: Path
    examples: int


def fill_stores(
    out: Path,
    *,
    devices: int,
    dataset: str = "mnist",
    alpha: float | None = None,
    examples_per_device: int | None = None,
    seed: int = 0,
) -> list[FilledStore]:
    """Write ``out/device-N/examples.db`` for N = 1..devices and make their state folders.

    Each example goes to at most one device. ``alpha`` splits by label (Dirichlet, small α:
    few classes per device); without it the split is IID. ``examples_per_device`` caps each
    store (the newest examples are what an agent trains on anyway).
    """
    if devices < 1:
        raise StoreFillError(f"--devices must be at least 1, not {devices}")
    if examples_per_device is not None and examples_per_device < 1:
        raise StoreFillError(f"--examples must be at least 1, not {examples_per_device}")
    if alpha is not None and not alpha > 0:
        raise StoreFillError(f"--alpha must be above 0, not {alpha}")
    data = datasets.load(dataset)
    rng = np.random.default_rng(seed)
    if len(data) < devices:
        raise StoreFillError(f"{dataset} has {len(data)} examples: too few for {devices} devices")
    parts = (
        partition.iid(len(data), num_clients=devices, rng=rng)
        if alpha is None
        else partition.dirichlet(data.y, num_clients=devices, alpha=alpha, rng=rng)
    )
    filled = []
    for number, indices in enumerate(parts, start=1):
        folder = out / f"device-{number}"
        state = folder / "state"
        state.mkdir(parents=True, exist_ok=True)
        store_file = folder / "examples.db"
        store_file.unlink(missing_ok=True)  # a second fill replaces, never adds to, a store
        chosen = indices[:examples_per_device]
        with ExampleStore(store_file, now=lambda: 0.0) as store:
            store.add(data.x[chosen], data.y[chosen])
        filled.append(FilledStore(data=store_file, state=state, examples=len(chosen)))
    return filled
