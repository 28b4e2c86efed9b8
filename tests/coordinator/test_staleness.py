import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.aggregation import (
    AggregationError,
    Constant,
    Hinge,
    Polynomial,
    StalenessFunction,
    staleness_from_config,
)

# The contract every staleness function keeps, checked for each implementation.
FUNCTIONS = [Constant(), Polynomial(), Polynomial(exponent=2.0), Hinge(), Hinge(a=0.5, b=0)]
each_function = pytest.mark.parametrize("function", FUNCTIONS, ids=repr)


@each_function
def test_a_fresh_update_counts_fully(function):
    assert function(0) == 1.0


@each_function
@settings(max_examples=50)
@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_weight_never_grows_with_staleness(function, a, b):
    older, newer = max(a, b), min(a, b)

    assert function(older) <= function(newer)


@each_function
@settings(max_examples=50)
@given(st.integers(0, 10_000))
def test_weight_is_in_zero_one(function, staleness):
    assert 0.0 < function(staleness) <= 1.0


@each_function
def test_negative_staleness_is_refused(function):
    with pytest.raises(AggregationError, match="staleness must be >= 0, got -1"):
        function(-1)


@each_function
def test_each_function_satisfies_the_protocol(function):
    assert isinstance(function, StalenessFunction)


def test_constant_counts_an_old_update_fully():
    assert Constant()(1_000) == 1.0


def test_polynomial_default_is_fedbuffs_inverse_square_root():
    assert Polynomial()(3) == pytest.approx(1 / 2)
    assert Polynomial()(8) == pytest.approx(1 / 3)
    assert Polynomial()(99) == pytest.approx(1 / 10)


def test_polynomial_with_exponent_one_is_one_over_one_plus_staleness():
    assert Polynomial(exponent=1.0)(4) == pytest.approx(1 / 5)


def test_hinge_gives_full_weight_up_to_b():
    assert [Hinge()(s) for s in range(5)] == [1.0] * 5


def test_hinge_past_b_is_one_over_a_times_excess_plus_one():
    assert Hinge()(5) == pytest.approx(1 / 11)
    assert Hinge()(6) == pytest.approx(1 / 21)
    assert Hinge(a=2.0, b=0)(3) == pytest.approx(1 / 7)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Polynomial(exponent=-0.5), "exponent"),
        (lambda: Polynomial(exponent=math.nan), "exponent"),
        (lambda: Hinge(a=0.0), "a must be"),
        (lambda: Hinge(a=math.inf), "a must be"),
        (lambda: Hinge(b=-1), "b must be"),
    ],
)
def test_bad_parameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_config_builds_each_function_by_name():
    assert staleness_from_config("constant") == Constant()
    assert staleness_from_config("Polynomial", exponent=1.0) == Polynomial(exponent=1.0)
    assert staleness_from_config("hinge", a=5.0, b=2) == Hinge(a=5.0, b=2)


def test_config_names_the_choices_for_an_unknown_function():
    with pytest.raises(ValueError, match=r"unknown staleness function 'linear'.*constant, hinge"):
        staleness_from_config("linear")


def test_config_refuses_a_parameter_the_function_does_not_take():
    with pytest.raises(ValueError, match=r"'hinge' takes a, b; got unknown \['exponent'\]"):
        staleness_from_config("hinge", exponent=2.0)
