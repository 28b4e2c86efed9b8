"""Adaptive clipping converges to the target quantile of the update norms (Andrew et al.)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from coordinator.privacy import AdaptiveClipper, NoiseSource, count_within


@pytest.mark.parametrize("target", [0.5, 0.8])
def test_the_clip_norm_converges_to_the_target_quantile_of_lognormal_norms(
    target: float,
) -> None:
    rng = np.random.default_rng(21)
    mu, sigma, cohort = np.log(2.0), 0.6, 100
    clipper = AdaptiveClipper(
        target_quantile=target, learning_rate=0.2, clip_count_stddev=cohort / 20
    )
    state = clipper.start(0.1)  # the paper's start, far below the median of 2
    source = NoiseSource.reproducible(5)
    tail = []

    for step in range(400):
        norms = rng.lognormal(mu, sigma, size=cohort)
        state, _ = clipper.step(
            state, below=count_within(norms, state.clip_norm), n_actual=cohort, source=source
        )
        if step >= 300:
            tail.append(state.clip_norm)

    # The share of the norm distribution under the settled C is the target, within 5 points.
    settled = float(np.mean(tail))
    reached = float(stats.lognorm.cdf(settled, s=sigma, scale=np.exp(mu)))
    assert reached == pytest.approx(target, abs=0.05)


def test_too_many_updates_under_c_shrink_it_and_too_few_grow_it() -> None:
    clipper = AdaptiveClipper(clip_count_stddev=1e-9)
    state = clipper.start(1.0)
    source = NoiseSource.reproducible(0)

    shrunk, measured = clipper.step(state, below=90, n_actual=100, source=source)
    grown, _ = clipper.step(state, below=10, n_actual=100, source=source)

    assert shrunk.clip_norm < 1.0 < grown.clip_norm
    assert measured.noised_fraction == pytest.approx(0.9)
    assert shrunk.steps == 1


def test_the_count_is_of_original_norms_at_or_below_c() -> None:
    assert count_within([0.5, 1.0, 1.5], 1.0) == 2


@pytest.mark.parametrize(("below", "n_actual"), [(3, 2), (-1, 2), (0, 0)])
def test_an_impossible_count_is_refused(below: int, n_actual: int) -> None:
    clipper = AdaptiveClipper(clip_count_stddev=1.0)

    with pytest.raises(ValueError, match="n_actual"):
        clipper.step(
            clipper.start(1.0), below=below, n_actual=n_actual, source=NoiseSource.reproducible(0)
        )
