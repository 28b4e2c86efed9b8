"""The participation figures of a run's summary: Gini and max / mean of updates per device."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.report import gini, participation


def test_equal_contributions_have_a_gini_of_zero():
    assert gini(np.full(50, 7)) == 0.0


def test_one_device_with_everything_has_a_gini_of_one_less_one_over_n():
    counts = np.zeros(10)
    counts[3] = 40

    assert gini(counts) == pytest.approx(0.9)


def test_gini_matches_the_mean_absolute_difference_definition():
    counts = np.array([1, 2, 3, 4, 0, 9])
    pairs = np.abs(counts[:, None] - counts[None, :]).sum()

    assert gini(counts) == pytest.approx(pairs / (2 * counts.size**2 * counts.mean()))


def test_participation_reports_max_over_mean_and_the_share_left_out():
    figures = participation(np.array([0, 2, 4, 2]))

    assert figures["max"] == 4
    assert figures["max_over_mean"] == 2.0
    assert figures["share_with_none"] == 0.25
