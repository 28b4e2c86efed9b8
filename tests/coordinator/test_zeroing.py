"""Adaptive zeroing as a specification on synthetic norms (TFF's robust aggregator's rule)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.aggregation import Zeroing

norms = st.lists(st.floats(0.0, 1e4, allow_nan=False), max_size=40)


def test_the_defaults_are_tffs_robust_aggregator():
    zeroing = Zeroing()

    assert (zeroing.initial_estimate, zeroing.target_quantile) == (10.0, 0.98)
    assert zeroing.learning_rate == pytest.approx(math.log(10.0))
    assert zeroing.threshold(10.0) == 2.0 * 10.0 + 1.0


@settings(max_examples=100)
@given(norms, st.floats(0.01, 100.0))
def test_exactly_the_norms_above_multiplier_times_estimate_plus_increment_are_zeroed(
    values, estimate
):
    zeroing = Zeroing(multiplier=3.0, increment=0.5)

    step = zeroing.step(estimate, values)

    assert step.threshold == 3.0 * estimate + 0.5
    assert step.zeroed == tuple(value > step.threshold for value in values)
    assert step.count == sum(value > step.threshold for value in values)


def test_a_norm_on_the_threshold_is_kept():
    step = Zeroing(multiplier=1.0, increment=0.0).step(4.0, [4.0, 4.0001])

    assert step.zeroed == (False, True)


@settings(max_examples=100)
@given(norms.filter(bool), st.floats(0.01, 100.0))
def test_the_estimate_moves_geometrically_by_the_share_of_norms_below_it(values, estimate):
    zeroing = Zeroing()

    step = zeroing.step(estimate, values)

    below = np.mean(np.asarray(values) <= estimate)
    expected = estimate * math.exp(-zeroing.learning_rate * (below - zeroing.target_quantile))
    assert step.next_estimate == pytest.approx(expected)


def test_the_estimate_grows_while_too_few_norms_are_below_it_and_shrinks_otherwise():
    zeroing = Zeroing()

    assert zeroing.step(1.0, [5.0, 6.0]).next_estimate > 1.0
    assert zeroing.step(100.0, [5.0, 6.0]).next_estimate < 100.0


def test_an_empty_version_leaves_the_estimate_where_it_was():
    step = Zeroing().step(7.0, [])

    assert step.next_estimate == 7.0
    assert step.zeroed == ()


def test_a_zero_learning_rate_is_a_fixed_zeroing_norm():
    zeroing = Zeroing(learning_rate=0.0)

    assert zeroing.step(10.0, [0.1, 50.0, 3.0]).next_estimate == 10.0


def test_the_estimate_settles_at_the_target_quantile_of_a_norm_distribution():
    rng = np.random.default_rng(0)
    zeroing = Zeroing(initial_estimate=10.0, target_quantile=0.9, learning_rate=0.05)
    estimate = zeroing.initial_estimate

    history = []
    for _ in range(3000):
        estimate = zeroing.step(estimate, list(rng.lognormal(0.0, 0.5, size=20))).next_estimate
        history.append(estimate)

    true_quantile = math.exp(0.5 * 1.2815515655446004)  # the log-normal's 0.9 quantile
    assert np.mean(history[-1000:]) == pytest.approx(true_quantile, rel=0.05)


def test_once_settled_a_rare_scaled_update_is_zeroed_and_the_honest_ones_are_kept():
    rng = np.random.default_rng(1)
    zeroing = Zeroing()  # TFF's defaults: the 0.98 quantile, x2, +1
    estimate = zeroing.initial_estimate
    for _ in range(100):  # honest versions: norms around 1
        estimate = zeroing.step(estimate, list(rng.lognormal(0.0, 0.3, size=20))).next_estimate
    honest = list(rng.lognormal(0.0, 0.3, size=19))

    step = zeroing.step(estimate, [*honest, 10.0 * honest[0]])  # one device scales by 10

    assert step.zeroed == (False,) * 19 + (True,)


@pytest.mark.parametrize(
    "field, value",
    [
        ("initial_estimate", 0.0),
        ("target_quantile", 1.0),
        ("target_quantile", 0.0),
        ("learning_rate", -0.1),
        ("multiplier", 0.0),
        ("increment", -1.0),
        ("initial_estimate", math.inf),
    ],
)
def test_a_setting_out_of_range_is_refused_naming_it(field, value):
    with pytest.raises(ValueError, match=field):
        Zeroing(**{field: value})
