"""A version's federated evaluation statistics, against a direct numpy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.aggregation.evaluation import EvaluationSample, summarize, worst_share_mean

accuracies = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60)


def samples_of(values: list[float], *, tiers: tuple[str, ...] = ("",)) -> list[EvaluationSample]:
    return [
        EvaluationSample(
            loss=1.0 - a + 0.01 * i, accuracy=a, num_examples=1 + i % 7, tier=tiers[i % len(tiers)]
        )
        for i, a in enumerate(values)
    ]


@given(accuracies)
@settings(max_examples=60, deadline=None)
def test_means_and_quantiles_are_numpys_over_devices(values: list[float]):
    samples = samples_of(values)

    summary = summarize(samples)

    accuracy = np.array(values)
    examples = np.array([s.num_examples for s in samples])
    assert summary.reports == len(values) and summary.examples == examples.sum()
    assert summary.mean_accuracy == pytest.approx(accuracy.mean())
    assert summary.weighted_accuracy == pytest.approx((accuracy * examples).sum() / examples.sum())
    assert summary.mean_loss == pytest.approx(np.mean([s.loss for s in samples]))
    for name, q in (("p10", 10), ("p25", 25), ("p50", 50), ("p75", 75), ("p90", 90)):
        assert summary.quantiles[name] == pytest.approx(np.percentile(accuracy, q))


@given(accuracies)
@settings(max_examples=60, deadline=None)
def test_worst10_is_the_mean_of_the_lowest_decile_of_device_accuracy(values: list[float]):
    summary = summarize(samples_of(values))

    lowest = sorted(values)[: max(1, math.ceil(len(values) / 10))]
    assert summary.worst10_accuracy == pytest.approx(sum(lowest) / len(lowest))
    assert summary.worst10_accuracy <= summary.mean_accuracy + 1e-12


@given(accuracies)
@settings(max_examples=60, deadline=None)
def test_the_histogram_counts_each_device_once_in_its_tenth(values: list[float]):
    summary = summarize(samples_of(values))

    expected = [0] * 10
    for a in values:
        expected[min(int(a * 10), 9)] += 1  # 1.0 falls in the last bin
    # A value a hair below a bin edge may round into either side; counts must still add up.
    assert sum(summary.histogram) == len(values)
    assert np.abs(np.array(summary.histogram) - expected).sum() <= 2 * sum(
        1 for a in values if abs(a * 10 - round(a * 10)) < 1e-9
    )


def test_twenty_devices_worst10_is_the_mean_of_the_two_lowest():
    values = [0.9] * 18 + [0.2, 0.4]

    summary = summarize(samples_of(values))

    assert summary.worst10_accuracy == pytest.approx(0.3)
    assert summary.histogram == [0, 0, 1, 0, 1, 0, 0, 0, 0, 18]


def test_each_known_tier_gets_its_own_summary_and_unknown_tiers_none():
    values = [0.1, 0.9, 0.2, 0.8, 0.3, 0.7]
    samples = samples_of(values, tiers=("low", "high"))

    summary = summarize(samples)

    assert set(summary.by_tier) == {"low", "high"}
    assert summary.by_tier["low"].mean_accuracy == pytest.approx(np.mean([0.1, 0.2, 0.3]))
    assert summary.by_tier["high"].reports == 3
    assert summarize(samples_of(values)).by_tier == {}


def test_no_reports_cannot_be_summarized_and_worst_share_of_nothing_is_nan():
    with pytest.raises(ValueError, match="no evaluation reports"):
        summarize([])
    assert math.isnan(worst_share_mean([]))
