import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coordinator.aggregation import (
    FedAvgRound,
    NormBound,
    NormTooLargeError,
    ServerSGD,
    clip_by_norm,
)
from tests.coordinator.aggregation_cases import f32, finite32


def test_clip_by_norm_scales_a_long_update_down_to_the_bound():
    clipped, was_clipped = clip_by_norm(f32(3, 4), max_norm=1.0)

    np.testing.assert_allclose(clipped, f32(0.6, 0.8), rtol=1e-6)
    assert was_clipped


def test_clip_by_norm_returns_a_short_update_unchanged():
    delta = f32(0.3, 0.4)

    clipped, was_clipped = clip_by_norm(delta, max_norm=1.0)

    assert clipped is delta
    assert not was_clipped


@settings(max_examples=50)
@given(
    hnp.arrays(np.float32, 5, elements=finite32),
    st.floats(1e-3, 100),
)
def test_a_clipped_update_is_within_the_bound_and_keeps_its_direction(delta, max_norm):
    clipped, was_clipped = clip_by_norm(delta, max_norm)

    norm = np.linalg.norm(delta.astype(np.float64))
    assert np.linalg.norm(clipped.astype(np.float64)) <= max_norm * (1 + 1e-6)
    assert was_clipped == (norm > max_norm)
    if was_clipped:
        np.testing.assert_allclose(clipped, delta * (max_norm / norm), rtol=1e-5, atol=1e-7)


def test_clipping_composes_in_front_of_a_round():
    updates = [(f32(30, 40), 1), (f32(0.3, 0.4), 1)]
    clipped = ((clip_by_norm(delta, 1.0)[0], n) for delta, n in updates)

    new_weights, _, _ = FedAvgRound().step(f32(0, 0), ServerSGD().init(2), clipped)

    np.testing.assert_allclose(new_weights, f32(0.45, 0.6), rtol=1e-6)


@pytest.mark.parametrize("max_norm", [0.0, -1.0, float("inf"), float("nan")])
def test_clip_by_norm_refuses_a_bound_that_is_not_finite_and_positive(max_norm):
    with pytest.raises(ValueError, match="max_norm"):
        clip_by_norm(f32(1, 1), max_norm)


# --- a job's norm bound ------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["clip", "reject"])
def test_an_update_within_the_bound_passes_unchanged_under_either_policy(policy):
    delta = f32(3, 4)

    bounded, clipped = NormBound(max_norm=5.0, policy=policy).apply(delta, norm=5.0)

    assert bounded is delta
    assert not clipped


def test_the_reject_policy_refuses_a_long_update_naming_its_norm_and_the_bound():
    with pytest.raises(NormTooLargeError, match="update norm 5 exceeds the bound 1") as refused:
        NormBound(max_norm=1.0, policy="reject").apply(f32(3, 4), norm=5.0)

    assert (refused.value.norm, refused.value.max_norm) == (5.0, 1.0)


def test_the_clip_policy_scales_a_long_update_to_the_bound():
    bounded, clipped = NormBound(max_norm=1.0, policy="clip").apply(f32(3, 4), norm=5.0)

    np.testing.assert_allclose(bounded, f32(0.6, 0.8), rtol=1e-6)
    assert clipped


def test_a_norm_bound_refuses_an_unknown_policy():
    with pytest.raises(ValueError, match="policy"):
        NormBound(max_norm=1.0, policy="shrink")
