"""The device population model: diurnal availability, windows, fates, footprint."""

import numpy as np
import pytest

from simulator.config import PopulationConfig
from simulator.population import DAY, synthesize


def population(n=20_000, **overrides):
    config = PopulationConfig(**overrides)
    sizes = np.full(n, 10, dtype=np.int32)
    return synthesize(n, config, num_examples=sizes, rng=np.random.default_rng(0))


def test_eligible_devices_swing_about_four_times_over_a_day():
    # Bonawitz et al. 2019 report a ~4x diurnal swing in participating devices.
    fractions = population().eligible_fraction(np.arange(0, 24, 0.25))

    assert 3.5 < fractions.max() / fractions.min() < 5.5
    assert np.argmax(fractions) / 4 < 6 or np.argmax(fractions) / 4 > 20  # the peak is at night


def test_without_diurnal_windows_every_device_is_always_eligible():
    fleet = population(n=100, diurnal=False)

    assert all(fleet.available(d, t) for d in range(100) for t in (0.0, 4e4, 9e4))
    assert fleet.window_end(0, 123.0) == np.inf


def test_a_device_is_eligible_exactly_inside_its_window_every_day():
    fleet = population(n=50)
    d = 7
    start, length = float(fleet.window_start[d]), float(fleet.window_length[d])

    for day in (0, 3):
        t = day * DAY + start
        assert fleet.available(d, t + 1)
        assert fleet.available(d, t + length - 1)
        assert not fleet.available(d, t + length + 1)
        assert fleet.window_end(d, t + 1) == pytest.approx(t + length)


def test_next_window_is_now_when_eligible_and_the_next_opening_otherwise():
    fleet = population(n=50)
    d = 3
    start, length = float(fleet.window_start[d]), float(fleet.window_length[d])
    after = start + length + 10

    assert fleet.next_window(d, start + 5) == start + 5
    assert fleet.next_window(d, after) == pytest.approx(start + DAY)


def test_dropout_strikes_the_configured_share_of_tasks_in_the_configured_phases():
    fleet = population(n=10, dropout=0.3, dropout_phases={"training": 1.0})
    rng = np.random.default_rng(1)

    fates = [fleet.fate(rng) for _ in range(4000)]

    dropped = [f for f in fates if f.drop_phase is not None]
    assert len(dropped) / len(fates) == pytest.approx(0.3, abs=0.03)
    assert {f.drop_phase for f in dropped} == {"training"}


def test_an_unknown_dropout_phase_is_refused():
    with pytest.raises(ValueError, match="dropout_phases"):
        PopulationConfig(dropout_phases={"sleeping": 1.0})


def test_an_idle_device_costs_under_200_bytes():
    assert population(n=1000).bytes_per_device <= 200


def test_slower_tiers_train_slower():
    fleet = population()
    by_tier = [np.median(fleet.ms_per_example[fleet.tier == t]) for t in range(3)]

    assert by_tier[0] < by_tier[1] < by_tier[2]


def test_a_tier_with_its_own_link_gets_its_rates_and_latency_the_others_the_populations():
    from simulator.config import Tier

    tiers = [
        Tier(name="wifi", share=0.5, compute_factor=1.0, memory_mb=4096),
        Tier(
            name="cellular",
            share=0.5,
            compute_factor=1.0,
            memory_mb=4096,
            up_mbps=1.0,
            down_mbps=5.0,
            rtt_ms=100.0,
        ),
    ]
    fleet = population(tiers=tiers, bandwidth_sigma=0.0)
    wifi, cellular = fleet.tier == 0, fleet.tier == 1

    assert np.allclose(fleet.up_kbps[cellular], 1_000) and np.allclose(fleet.up_kbps[wifi], 5_000)
    assert np.allclose(fleet.down_kbps[cellular], 5_000)
    assert np.median(fleet.rtt_s[cellular]) == pytest.approx(0.1, rel=0.05)
    assert np.median(fleet.rtt_s[wifi]) == pytest.approx(0.06, rel=0.05)
