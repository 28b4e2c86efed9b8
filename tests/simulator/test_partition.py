"""Specification of the client partitioners: coverage, reproducibility, skew and input checks."""

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator import partition

IndexArrays = list[npt.NDArray[np.int64]]

fast = settings(max_examples=40, deadline=None)


def labels_for(seed: int, num_examples: int, num_classes: int = 10) -> npt.NDArray[np.int64]:
    return np.random.default_rng(seed).integers(0, num_classes, size=num_examples)


def balanced_labels(num_classes: int, per_class: int) -> npt.NDArray[np.int64]:
    return np.repeat(np.arange(num_classes), per_class)


def assert_exact_cover(parts: IndexArrays, num_examples: int) -> None:
    joined = np.concatenate(parts)
    assert all(part.dtype == np.int64 for part in parts)
    assert joined.size == num_examples
    assert np.array_equal(np.sort(joined), np.arange(num_examples))


def mean_label_skew(labels: npt.NDArray[np.int64], parts: IndexArrays) -> float:
    """Mean total-variation distance between each client's label mix and the global one."""
    num_classes = int(labels.max()) + 1
    overall = np.bincount(labels, minlength=num_classes) / labels.size
    distances = [
        0.5 * np.abs(np.bincount(labels[p], minlength=num_classes) / p.size - overall).sum()
        for p in parts
    ]
    return float(np.mean(distances))


# --- iid ---------------------------------------------------------------------------------------


@fast
@given(seed=st.integers(0, 2**32 - 1), num_clients=st.integers(1, 20), extra=st.integers(0, 500))
def test_iid_assigns_every_example_exactly_once_with_sizes_within_one(
    seed: int, num_clients: int, extra: int
) -> None:
    # Prepare
    num_examples = num_clients + extra

    # Execute
    parts = partition.iid(num_examples, num_clients=num_clients, rng=np.random.default_rng(seed))

    # Assert
    assert len(parts) == num_clients
    assert_exact_cover(parts, num_examples)
    sizes = [p.size for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_iid_shuffles_rather_than_cutting_in_order() -> None:
    parts = partition.iid(1000, num_clients=4, rng=np.random.default_rng(0))

    assert not np.array_equal(parts[0], np.arange(250))


# --- dirichlet ---------------------------------------------------------------------------------


@fast
@given(
    seed=st.integers(0, 2**32 - 1),
    num_clients=st.integers(1, 8),
    per_client=st.integers(30, 80),
    alpha=st.floats(1.0, 100.0),
    min_size=st.integers(0, 3),
)
def test_dirichlet_assigns_every_example_exactly_once_and_respects_min_size(
    seed: int, num_clients: int, per_client: int, alpha: float, min_size: int
) -> None:
    # Prepare
    labels = labels_for(seed, num_clients * per_client)

    # Execute
    parts = partition.dirichlet(
        labels,
        num_clients=num_clients,
        alpha=alpha,
        min_size=min_size,
        rng=np.random.default_rng(seed),
    )

    # Assert
    assert len(parts) == num_clients
    assert_exact_cover(parts, labels.size)
    assert min(p.size for p in parts) >= min_size


def test_dirichlet_with_small_alpha_is_more_label_skewed_than_with_large_alpha() -> None:
    # Prepare
    labels = balanced_labels(num_classes=10, per_class=200)

    # Execute
    skewed = partition.dirichlet(labels, num_clients=10, alpha=0.1, rng=np.random.default_rng(1))
    mixed = partition.dirichlet(labels, num_clients=10, alpha=100.0, rng=np.random.default_rng(1))

    # Assert: near-IID clients hold nearly the global mix; α = 0.1 clients hold few classes.
    assert mean_label_skew(labels, mixed) < 0.1
    assert mean_label_skew(labels, skewed) > 0.5


def test_dirichlet_gives_up_with_a_clear_error_when_min_size_is_out_of_reach() -> None:
    labels = balanced_labels(num_classes=2, per_class=50)

    with pytest.raises(ValueError, match="in 20 attempts; raise alpha"):
        partition.dirichlet(
            labels,
            num_clients=50,
            alpha=0.01,
            min_size=2,
            max_attempts=20,
            rng=np.random.default_rng(0),
        )


# --- shards ------------------------------------------------------------------------------------


@fast
@given(
    seed=st.integers(0, 2**32 - 1),
    num_clients=st.integers(10, 60),
    shards_per_client=st.integers(1, 4),
)
def test_shards_assign_every_example_exactly_once_and_limit_labels_per_client(
    seed: int, num_clients: int, shards_per_client: int
) -> None:
    # Prepare: at least 10 shards, so no shard is larger than a class and spans > 2 labels.
    labels = np.random.default_rng(seed).permutation(balanced_labels(num_classes=10, per_class=100))

    # Execute
    parts = partition.shards(
        labels,
        num_clients=num_clients,
        shards_per_client=shards_per_client,
        rng=np.random.default_rng(seed),
    )

    # Assert
    assert len(parts) == num_clients
    assert_exact_cover(parts, labels.size)
    assert all(np.unique(labels[p]).size <= 2 * shards_per_client for p in parts)


def test_shards_with_one_shard_each_give_single_label_clients_when_shards_align() -> None:
    labels = balanced_labels(num_classes=10, per_class=60)

    parts = partition.shards(
        labels, num_clients=20, shards_per_client=1, rng=np.random.default_rng(3)
    )

    assert all(np.unique(labels[p]).size == 1 for p in parts)


# --- sizes -------------------------------------------------------------------------------------


@fast
@given(
    seed=st.integers(0, 2**32 - 1),
    num_clients=st.integers(1, 50),
    extra=st.integers(0, 5000),
    exponent=st.floats(0.3, 5.0),
    min_size=st.integers(0, 5),
)
def test_power_law_sizes_sum_exactly_and_respect_min_size(
    seed: int, num_clients: int, extra: int, exponent: float, min_size: int
) -> None:
    # Prepare
    num_examples = num_clients * min_size + extra

    # Execute
    sizes = partition.power_law_sizes(
        num_examples,
        num_clients=num_clients,
        exponent=exponent,
        min_size=min_size,
        rng=np.random.default_rng(seed),
    )

    # Assert
    assert sizes.dtype == np.int64
    assert sizes.shape == (num_clients,)
    assert int(sizes.sum()) == num_examples
    assert int(sizes.min()) >= min_size


def test_power_law_sizes_with_smaller_exponent_concentrate_data_on_fewer_clients() -> None:
    # Prepare
    def largest_share(exponent: float) -> float:
        shares = [
            partition.power_law_sizes(
                10_000, num_clients=100, exponent=exponent, rng=np.random.default_rng(seed)
            ).max()
            / 10_000
            for seed in range(20)
        ]
        return float(np.median(shares))

    # Execute
    heavy, light = largest_share(0.8), largest_share(5.0)

    # Assert: with 100 equal clients the largest would hold 1%.
    assert light < 0.05
    assert heavy > 3 * light


@fast
@given(seed=st.integers(0, 2**32 - 1), sizes=st.lists(st.integers(0, 40), min_size=1, max_size=20))
def test_by_sizes_gives_each_client_its_size_from_disjoint_examples(
    seed: int, sizes: list[int]
) -> None:
    # Prepare
    num_examples = sum(sizes) + 7

    # Execute
    parts = partition.by_sizes(num_examples, sizes, rng=np.random.default_rng(seed))

    # Assert
    assert [p.size for p in parts] == sizes
    joined = np.concatenate(parts)
    assert np.unique(joined).size == joined.size
    assert joined.size == 0 or (joined.min() >= 0 and joined.max() < num_examples)


def test_power_law_sizes_compose_with_by_sizes_into_an_exact_cover() -> None:
    rng = np.random.default_rng(5)

    sizes = partition.power_law_sizes(1000, num_clients=30, exponent=1.5, rng=rng)
    parts = partition.by_sizes(1000, sizes, rng=rng)

    assert_exact_cover(parts, 1000)


@fast
@given(total=st.integers(0, 10_000), weights=st.lists(st.floats(0.0, 1e6), min_size=1))
def test_apportion_sums_exactly_and_stays_within_one_of_each_exact_quota(
    total: int, weights: list[float]
) -> None:
    if sum(weights) == 0:
        weights = [*weights[:-1], 1.0]

    shares = partition.apportion(total, weights)

    exact = total * np.asarray(weights) / sum(weights)
    assert int(shares.sum()) == total
    assert np.all(np.abs(shares - exact) < 1)


# --- reproducibility ---------------------------------------------------------------------------

LABELS = balanced_labels(num_classes=10, per_class=50)

PARTITIONERS: dict[str, Callable[[np.random.Generator], IndexArrays]] = {
    "iid": lambda rng: partition.iid(500, num_clients=7, rng=rng),
    "dirichlet": lambda rng: partition.dirichlet(LABELS, num_clients=7, alpha=0.5, rng=rng),
    "shards": lambda rng: partition.shards(LABELS, num_clients=7, shards_per_client=2, rng=rng),
    "by_sizes": lambda rng: partition.by_sizes(500, [100, 50, 3, 0, 200], rng=rng),
    "power_law_sizes": lambda rng: [
        partition.power_law_sizes(500, num_clients=7, exponent=1.2, rng=rng)
    ],
}


@pytest.mark.parametrize("name", sorted(PARTITIONERS))
@fast
@given(seed=st.integers(0, 2**32 - 1))
def test_partitioners_give_identical_results_for_the_same_seed(name: str, seed: int) -> None:
    split = PARTITIONERS[name]

    first = split(np.random.default_rng(seed))
    second = split(np.random.default_rng(seed))

    assert len(first) == len(second)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("name", ["iid", "dirichlet", "shards", "by_sizes", "power_law_sizes"])
def test_partitioners_differ_across_seeds(name: str) -> None:
    split = PARTITIONERS[name]

    first, second = split(np.random.default_rng(0)), split(np.random.default_rng(1))

    assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


# --- input checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda rng: partition.iid(10, num_clients=0, rng=rng), "num_clients must be >= 1"),
        (lambda rng: partition.iid(3, num_clients=5, rng=rng), r"more clients \(5\) than"),
        (
            lambda rng: partition.dirichlet(LABELS, num_clients=5, alpha=0.0, rng=rng),
            "alpha must be a positive",
        ),
        (
            lambda rng: partition.dirichlet(LABELS, num_clients=5, alpha=float("nan"), rng=rng),
            "alpha must be a positive",
        ),
        (
            lambda rng: partition.dirichlet(
                LABELS, num_clients=5, alpha=1.0, min_size=101, rng=rng
            ),
            "needs 505 examples, only 500",
        ),
        (
            lambda rng: partition.dirichlet(
                LABELS.astype(float), num_clients=5, alpha=1.0, rng=rng
            ),
            "integer class ids",
        ),
        (
            lambda rng: partition.dirichlet(
                LABELS.reshape(10, 50), num_clients=5, alpha=1.0, rng=rng
            ),
            "1-D array",
        ),
        (
            lambda rng: partition.shards(LABELS, num_clients=5, shards_per_client=0, rng=rng),
            "shards_per_client must be >= 1",
        ),
        (
            lambda rng: partition.shards(LABELS, num_clients=300, shards_per_client=2, rng=rng),
            "600 shards, more than the 500",
        ),
        (
            lambda rng: partition.power_law_sizes(100, num_clients=5, exponent=-1.0, rng=rng),
            "exponent must be a positive",
        ),
        (
            lambda rng: partition.power_law_sizes(
                10, num_clients=5, exponent=1.0, min_size=3, rng=rng
            ),
            "needs 15 examples, only 10",
        ),
        (lambda rng: partition.by_sizes(10, [6, 5], rng=rng), "sum to 11, more than the 10"),
        (lambda rng: partition.by_sizes(10, [6, -1], rng=rng), "sizes must be >= 0"),
        (lambda rng: partition.by_sizes(10, cast(Any, [1.5, 2.0]), rng=rng), "must be integers"),
    ],
)
def test_bad_arguments_raise_a_value_error_that_says_what_is_wrong(
    call: Callable[[np.random.Generator], object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        call(np.random.default_rng(0))
