"""Noise N(0, (zC)²) on the sum, and an average over the updates actually summed.

The statistical tests standardise the realised noise and bound its sum of squares by the χ²
quantiles at a stated false-alarm rate (with a seeded source they are deterministic; the rate
says how unlikely a failure is for a correct implementation on any seed).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from coordinator.privacy import NoiseSource, add_gaussian_noise, private_average

FALSE_ALARM = 1e-6  # per test, two-sided


def _chi2_bounds(draws: int, false_alarm: float) -> tuple[float, float]:
    return (
        float(stats.chi2.ppf(false_alarm / 2, draws)),
        float(stats.chi2.isf(false_alarm / 2, draws)),
    )


def _clipped_updates(rng: np.random.Generator, count: int, dim: int, clip: float) -> np.ndarray:
    updates = rng.normal(size=(count, dim))
    norms = np.linalg.norm(updates, axis=1, keepdims=True)
    return updates * np.minimum(1.0, clip / norms)


def test_the_sum_noise_std_is_z_times_c_over_many_versions() -> None:
    z, clip, dim, versions = 1.3, 0.5, 1_000, 100
    source = NoiseSource.reproducible(15)
    rng = np.random.default_rng(1)
    squares = 0.0

    for _ in range(versions):
        total = _clipped_updates(rng, 20, dim, clip).sum(axis=0)
        noised = add_gaussian_noise(total, stddev=z * clip, source=source)
        squares += float(np.sum(((noised - total) / (z * clip)) ** 2))

    low, high = _chi2_bounds(versions * dim, FALSE_ALARM)
    assert low <= squares <= high


def test_the_average_noise_is_z_c_over_n_actual_in_every_version_under_dropout() -> None:
    z, clip, dim, versions, selected = 1.0, 1.0, 2_000, 40, 100
    source = NoiseSource.reproducible(7)
    rng = np.random.default_rng(2)
    # Bonferroni: each version's test at FALSE_ALARM / versions keeps the whole test at 1e-6.
    low, high = _chi2_bounds(dim, FALSE_ALARM / versions)
    wrong_sizing_passes = 0

    for _ in range(versions):
        n_actual = int(rng.binomial(selected, 0.7))  # 30 % of the selected drop out
        total = _clipped_updates(rng, n_actual, dim, clip).sum(axis=0)

        average, record = private_average(
            total, n_actual=n_actual, clip_norm=clip, noise_multiplier=z, source=source
        )

        noise = average.astype(np.float64) - total / n_actual
        assert low <= float(np.sum((noise / (z * clip / n_actual)) ** 2)) <= high
        assert record.n_actual == n_actual
        # The trap this avoids: noise sized to the number selected would be read as this one.
        wrong = float(np.sum((noise / (z * clip / selected)) ** 2))
        wrong_sizing_passes += int(low <= wrong <= high)
    assert wrong_sizing_passes == 0


def test_the_record_says_whether_the_noise_was_reproducible() -> None:
    total = np.zeros(4)

    _, seeded = private_average(
        total, n_actual=2, clip_norm=1.0, noise_multiplier=1.0, source=NoiseSource.reproducible(0)
    )
    _, service = private_average(
        total, n_actual=2, clip_norm=1.0, noise_multiplier=1.0, source=NoiseSource.from_entropy()
    )

    assert seeded.seeded is True
    assert service.seeded is False
    assert service.as_dict()["stddev"] == 1.0


def test_two_service_sources_draw_different_noise() -> None:
    first = add_gaussian_noise(np.zeros(8), stddev=1.0, source=NoiseSource.from_entropy())
    second = add_gaussian_noise(np.zeros(8), stddev=1.0, source=NoiseSource.from_entropy())

    assert not np.array_equal(first, second)


def test_the_same_seed_draws_the_same_noise() -> None:
    first = add_gaussian_noise(np.zeros(8), stddev=1.0, source=NoiseSource.reproducible(3))
    second = add_gaussian_noise(np.zeros(8), stddev=1.0, source=NoiseSource.reproducible(3))

    np.testing.assert_array_equal(first, second)


def test_the_sum_is_left_untouched() -> None:
    total = np.ones(5)

    add_gaussian_noise(total, stddev=1.0, source=NoiseSource.reproducible(0))

    np.testing.assert_array_equal(total, np.ones(5))


@pytest.mark.parametrize("n_actual", [0, -1])
def test_an_average_of_no_updates_is_refused(n_actual: int) -> None:
    with pytest.raises(ValueError, match="n_actual"):
        private_average(
            np.zeros(3),
            n_actual=n_actual,
            clip_norm=1.0,
            noise_multiplier=1.0,
            source=NoiseSource.reproducible(0),
        )


def test_a_float32_sum_is_refused() -> None:
    with pytest.raises(ValueError, match="float64"):
        add_gaussian_noise(
            np.zeros(3, dtype=np.float32), stddev=1.0, source=NoiseSource.reproducible(0)
        )


@pytest.mark.parametrize("z", [0.0, -1.0, float("nan")])
def test_no_noise_is_refused(z: float) -> None:
    with pytest.raises(ValueError, match="noise_multiplier"):
        private_average(
            np.zeros(3),
            n_actual=1,
            clip_norm=1.0,
            noise_multiplier=z,
            source=NoiseSource.reproducible(0),
        )
