"""Each simulated device's local examples, made on demand so a large population costs no memory.

Two ways to give devices data, chosen by whether the pool is big enough:

- **disjoint**: the training pool is split once (IID, Dirichlet label skew, or shards, with
  :mod:`simulator.partition`) and every example belongs to exactly one device — the usual
  research setting, used whenever the devices' sizes fit in the pool;
- **sampled**: with more devices than the pool can split (10,000 devices on 4,000 MNIST digits),
  each device draws its own examples from the pool, seeded by its index: its label mix from a
  symmetric Dirichlet(α) (or uniform, or ``shards`` labels), its size from the partition's sizes.
  Devices then share examples, as in any simulation of a population larger than its dataset.

Synthetic(α, β) data (FedProx) is generated per device and held in memory, and so is
``shakespeare``: LEAF's natural split, one device per speaking role
(:func:`simulator.datasets.shakespeare_devices`), whatever the partition scheme says.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from simulator import partition
from simulator.config import PartitionConfig
from simulator.datasets import (
    Dataset,
    load,
    shakespeare_devices,
    synthetic_fedprox,
    train_test_split,
)

Arrays = tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]


class DeviceData:
    """Local data of every device in a population, plus the held-out test set."""

    test: Dataset  # the held-out set that global accuracy is measured on

    def __init__(
        self, dataset: str, num_devices: int, config: PartitionConfig, *, seed: int
    ) -> None:
        self.config = config
        self.num_devices = num_devices
        self.seed = seed
        rng = np.random.default_rng([seed, 7])
        self._generated: list[Dataset] | None = None
        self._parts: list[npt.NDArray[np.int64]] | None = None
        if dataset.startswith("synthetic"):
            self._init_synthetic(dataset, rng)
            return
        if dataset == "shakespeare":
            train, tests = shakespeare_devices(
                num_devices, mean_examples=config.mean_examples, rng=rng
            )
            self._init_generated(train, tests, mode="natural")
            # The global test set: test_size windows drawn from every device's test text.
            test = self.test
            pick = np.sort(
                rng.choice(len(test.y), size=min(config.test_size, len(test.y)), replace=False)
            )
            self.test = test.subset(pick)
            return
        pool, self.test = train_test_split(
            load(dataset), test_size=config.test_size, rng=np.random.default_rng([seed, 17])
        )
        self.pool = pool
        self.num_classes = pool.num_classes
        self._test_by_label = [np.flatnonzero(self.test.y == c) for c in range(self.num_classes)]
        self.sizes = self._draw_sizes(len(pool.y), rng)
        if int(self.sizes.sum()) <= len(pool.y):
            self.mode = "disjoint"
            self._parts = self._split(pool, rng)
            self.sizes = np.array([p.size for p in self._parts], dtype=np.int32)
        else:
            self.mode = "sampled"
            self._by_label = [np.flatnonzero(pool.y == c) for c in range(pool.num_classes)]

    def examples(self, device: int) -> Arrays:
        """The local ``(x, y)`` of ``device``; the same arrays every time."""
        if self._generated is not None:
            local = self._generated[device]
            return local.x, local.y
        if self._parts is not None:
            index = self._parts[device]
            return self.pool.x[index], self.pool.y[index]
        return self._sample(device)

    def held_out(self, device: int, size: int = 100) -> Arrays:
        """Test examples that follow ``device``'s label mix: how well the model serves it."""
        if self._generated is not None:
            local = self._tests[device]
            return local.x, local.y
        _, y = self.examples(device)
        if len(y) == 0:
            return self.test.x[:0], self.test.y[:0]
        mix = np.bincount(y, minlength=self.num_classes) / len(y)
        rng = np.random.default_rng([self.seed, 19, device])
        counts = partition.apportion(size, mix)
        picks = [
            rng.choice(members, size=int(k), replace=members.size < k)
            for members, k in zip(self._test_by_label, counts, strict=True)
            if k > 0 and members.size
        ]
        index = np.concatenate(picks) if picks else np.zeros(0, np.int64)
        return self.test.x[index], self.test.y[index]

    # --- construction -----------------------------------------------------------------------

    def _draw_sizes(self, pool_size: int, rng: np.random.Generator) -> npt.NDArray[np.int32]:
        cfg = self.config
        n = self.num_devices
        if cfg.sizes == "equal":
            return np.full(n, max(cfg.min_examples, round(cfg.mean_examples)), dtype=np.int32)
        total = max(round(cfg.mean_examples * n), cfg.min_examples * n)
        sizes = partition.power_law_sizes(
            total,
            num_clients=n,
            exponent=cfg.power_law_exponent,
            rng=rng,
            min_size=cfg.min_examples,
        )
        # A sampled device cannot hold more examples than the pool.
        return np.minimum(sizes, pool_size).astype(np.int32)

    def _split(self, pool: Dataset, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
        cfg = self.config
        if cfg.scheme == "iid":
            return partition.by_sizes(len(pool.y), self.sizes, rng=rng)
        if cfg.scheme == "shards":
            return partition.shards(
                pool.y,
                num_clients=self.num_devices,
                shards_per_client=cfg.shards_per_device,
                rng=rng,
            )
        return partition.dirichlet(
            pool.y, num_clients=self.num_devices, alpha=cfg.alpha, rng=rng, min_size=1
        )

    def _sample(self, device: int) -> Arrays:
        cfg = self.config
        rng = np.random.default_rng([self.seed, 11, device])
        size = int(self.sizes[device])
        classes = self.num_classes
        if cfg.scheme == "iid":
            mix = np.full(classes, 1.0 / classes)
        elif cfg.scheme == "shards":
            mix = np.zeros(classes)
            mix[rng.choice(classes, size=min(cfg.shards_per_device, classes), replace=False)] = 1
            mix /= mix.sum()
        else:
            mix = rng.dirichlet(np.full(classes, cfg.alpha))
        counts = partition.apportion(size, mix)
        picks = [
            rng.choice(members, size=min(int(k), members.size), replace=False)
            for members, k in zip(self._by_label, counts, strict=True)
            if k > 0 and members.size
        ]
        index = rng.permutation(np.concatenate(picks)) if picks else np.zeros(0, np.int64)
        return self.pool.x[index], self.pool.y[index]

    def _init_synthetic(self, dataset: str, rng: np.random.Generator) -> None:
        # "synthetic_1_1" is Synthetic(α=1, β=1); "synthetic_iid" the IID variant (FedProx §5.1).
        if dataset == "synthetic_iid":
            alpha, beta, iid = 0.0, 0.0, True
        else:
            try:
                _, a, b = dataset.split("_")
                alpha, beta, iid = float(a), float(b), False
            except ValueError:
                raise ValueError(
                    f"unknown synthetic dataset {dataset!r}: use synthetic_A_B or synthetic_iid"
                ) from None
        devices = synthetic_fedprox(
            alpha=alpha, beta=beta, num_devices=self.num_devices, rng=rng, iid=iid
        )
        # Each device keeps 80 % to train on and lends 20 % to the global test set (FedProx).
        train, tests = [], []
        for local in devices:
            cut = max(1, int(0.8 * len(local.y)))
            train.append(local.subset(np.arange(cut)))
            tests.append(local.subset(np.arange(cut, len(local.y))))
        self._init_generated(train, tests, mode="generated")

    def _init_generated(self, train: list[Dataset], tests: list[Dataset], *, mode: str) -> None:
        """Hold per-device training and test sets; the global test set is all of the latter."""
        self._generated = train
        self._tests = tests
        self.mode = mode
        self.num_classes = train[0].num_classes
        self.sizes = np.array([len(d.y) for d in train], dtype=np.int32)
        self.test = Dataset(
            x=np.concatenate([t.x for t in tests]),
            y=np.concatenate([t.y for t in tests]),
            num_classes=self.num_classes,
            name=train[0].name.split("/")[0],
        )
