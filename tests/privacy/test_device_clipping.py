"""clip_to_norm on the device: the bound holds, and small updates pass unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from device_sdk.clipping import clip_to_norm

deltas = arrays(
    np.float32,
    st.integers(1, 300),
    elements=st.floats(-1e6, 1e6, width=32, allow_nan=False, allow_infinity=False),
)
clip_norms = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


@given(delta=deltas, clip_norm=clip_norms)
def test_a_clipped_delta_is_within_the_coordinators_tolerance(
    delta: np.ndarray, clip_norm: float
) -> None:
    clipped, original = clip_to_norm(delta, clip_norm)

    norm = float(np.linalg.norm(clipped.astype(np.float64)))
    assert norm <= clip_norm * (1 + 1e-6)
    assert clipped.dtype == np.float32
    assert original == pytest.approx(float(np.linalg.norm(delta.astype(np.float64))))


@given(delta=deltas, clip_norm=clip_norms)
def test_a_clipped_delta_keeps_its_direction(delta: np.ndarray, clip_norm: float) -> None:
    clipped, original = clip_to_norm(delta, clip_norm)

    if original > clip_norm:
        scale = clip_norm / original
        expected = delta.astype(np.float64) * scale
        # float32 rounding, and coordinates that underflow to subnormals, within 1e-7·C
        np.testing.assert_allclose(clipped, expected, rtol=1e-6, atol=1e-7 * clip_norm)


def test_a_delta_within_the_bound_is_returned_unchanged() -> None:
    delta = np.array([0.3, -0.4], dtype=np.float32)  # norm 0.5

    clipped, original = clip_to_norm(delta, 1.0)

    assert clipped is delta
    assert original == pytest.approx(0.5)


def test_a_long_delta_is_scaled_to_the_bound() -> None:
    clipped, original = clip_to_norm(np.array([3.0, 4.0], dtype=np.float32), 1.0)

    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-6)
    assert original == pytest.approx(5.0)


@pytest.mark.parametrize("clip_norm", [0.0, -1.0, float("inf"), float("nan")])
def test_a_clip_norm_that_bounds_nothing_is_refused(clip_norm: float) -> None:
    with pytest.raises(ValueError, match="clip_norm"):
        clip_to_norm(np.ones(3, dtype=np.float32), clip_norm)


def test_a_float64_or_non_finite_delta_is_refused() -> None:
    with pytest.raises(ValueError, match="float32"):
        clip_to_norm(np.ones(3), 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        clip_to_norm(np.array([np.nan], dtype=np.float32), 1.0)
