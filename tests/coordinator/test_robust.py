"""Coordinate-wise trimmed mean and median, against numpy's median and SciPy's trim_mean."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from coordinator.aggregation import (
    AggregationError,
    CoordinateWise,
    FedAdam,
    NonFiniteError,
    ServerSGD,
)
from tests.coordinator.aggregation_cases import f32

values = st.floats(-1e3, 1e3, allow_nan=False, width=32)
stacks = st.tuples(st.integers(1, 12), st.integers(1, 6)).flatmap(
    lambda shape: hnp.arrays(np.float32, shape, elements=values)
)


def fold(rule: CoordinateWise, stack: np.ndarray, scales=None):
    scales = [1.0] * len(stack) if scales is None else scales
    pairs = zip(list(stack.copy()), scales, strict=True)
    return rule.fold(pairs, count=len(stack), num_params=stack.shape[1])


@settings(max_examples=100)
@given(stacks)
def test_the_median_is_numpys_median_of_each_coordinate(stack):
    mean, measured = fold(CoordinateWise(rule="median"), stack)

    np.testing.assert_allclose(mean, np.median(stack, axis=0), rtol=1e-6, atol=1e-6)
    assert measured.trimmed_per_side == 0


@settings(max_examples=100)
@given(stacks, st.floats(0.0, 0.49))
def test_the_trimmed_mean_is_scipys_trim_mean_of_each_coordinate(stack, beta):
    mean, measured = fold(CoordinateWise(rule="trimmed_mean", trim_fraction=beta), stack)

    expected = stats.trim_mean(stack.astype(np.float64), beta, axis=0)
    np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-4)
    assert measured.trimmed_per_side == int(beta * len(stack))


def test_a_trim_of_zero_is_the_plain_mean():
    stack = np.array([[1, 2], [3, 4], [5, 9]], np.float32)

    mean, _ = fold(CoordinateWise(rule="trimmed_mean", trim_fraction=0.0), stack)

    np.testing.assert_allclose(mean, stack.mean(axis=0))


def test_one_huge_update_among_ten_does_not_move_the_trimmed_mean_or_median_past_the_honest():
    rng = np.random.default_rng(0)
    honest = rng.normal(0.0, 1.0, size=(9, 50)).astype(np.float32)
    stack = np.vstack([honest, np.full((1, 50), 1e6, np.float32)])

    for rule in (CoordinateWise(rule="median"), CoordinateWise(rule="trimmed_mean")):
        mean, _ = fold(rule, stack)

        assert np.all(mean <= honest.max(axis=0)) and np.all(mean >= honest.min(axis=0))


def test_each_delta_is_scaled_by_its_staleness_weight_before_the_sort():
    stack = np.array([[2.0], [4.0], [100.0]], np.float32)

    mean, _ = fold(CoordinateWise(rule="median"), stack, scales=[1.0, 0.5, 0.01])

    assert mean[0] == pytest.approx(np.median([2.0, 2.0, 1.0]))


def test_the_step_applies_the_robust_aggregate_with_the_server_optimizer():
    rule = CoordinateWise(rule="median")
    weights = f32(1.0, 1.0)
    deltas = [(f32(1.0, -1.0), 1.0), (f32(3.0, -3.0), 1.0), (f32(50.0, 50.0), 1.0)]
    optimizer = ServerSGD(learning_rate=0.5)

    new_weights, state, measured = rule.step(
        weights, optimizer.init(2), iter(deltas), count=3, server_optimizer=optimizer
    )

    np.testing.assert_allclose(new_weights, weights + 0.5 * f32(3.0, -1.0))
    assert state.step == 1 and measured.count == 3


def test_an_adaptive_server_optimizer_takes_the_robust_aggregate_as_its_pseudo_gradient():
    rule = CoordinateWise(rule="trimmed_mean", trim_fraction=0.34)
    optimizer = FedAdam(learning_rate=0.1)
    deltas = [(f32(1.0), 1.0), (f32(2.0), 1.0), (f32(-90.0), 1.0)]

    robust_weights, _, _ = rule.step(
        f32(0.0), optimizer.init(1), iter(deltas), count=3, server_optimizer=optimizer
    )

    direct_weights, _ = optimizer.apply(f32(0.0), f32(1.0), optimizer.init(1))
    np.testing.assert_allclose(robust_weights, direct_weights)


def test_a_fold_whose_count_does_not_match_its_updates_is_refused():
    rule = CoordinateWise(rule="median")

    with pytest.raises(AggregationError, match="1 updates arrived of the 2"):
        rule.fold(iter([(f32(1.0), 1.0)]), count=2, num_params=1)
    with pytest.raises(AggregationError, match="more than the 1"):
        rule.fold(iter([(f32(1.0), 1.0), (f32(2.0), 1.0)]), count=1, num_params=1)
    with pytest.raises(AggregationError, match="at least one"):
        rule.fold(iter([]), count=0, num_params=1)


def test_a_delta_of_the_wrong_length_or_not_finite_is_refused():
    rule = CoordinateWise(rule="median")

    with pytest.raises(AggregationError, match="shape"):
        rule.fold(iter([(f32(1.0, 2.0), 1.0)]), count=1, num_params=1)
    with pytest.raises(AggregationError, match="non-finite"):
        rule.fold(iter([(f32(np.nan), 1.0)]), count=1, num_params=1)


def test_a_trimmed_mean_that_overflows_float32_is_refused():
    rule = CoordinateWise(rule="trimmed_mean", trim_fraction=0.0)
    big = np.finfo(np.float32).max

    mean, _ = rule.fold(iter([(f32(big), 1.0), (f32(big), 1.0)]), count=2, num_params=1)
    assert np.isfinite(mean).all()  # the sum is float64: the mean of two maxima is the max
    with pytest.raises(NonFiniteError):
        rule.step(
            f32(big),
            ServerSGD().init(1),
            iter([(f32(big), 1.0)]),
            count=1,
            server_optimizer=ServerSGD(),
        )


@pytest.mark.parametrize(
    "changes, match",
    [({"rule": "mean"}, "rule"), ({"trim_fraction": 0.5}, "trim_fraction")],
)
def test_a_rule_or_trim_out_of_range_is_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        CoordinateWise(**{"rule": "trimmed_mean", **changes})
