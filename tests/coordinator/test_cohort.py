import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.aggregation.cohort import (
    MIN_OBSERVATIONS,
    RoundHistory,
    _at_least,
    fit_report_times,
    plan_cohort,
)


def simulated_history(*, rounds=30, cohort=26, dropout=0.1, seed=0) -> RoundHistory:
    """Rounds that close at their target, as a coordinator sees them: the slow are cut but
    reveal their time by a refused late upload; half the dropouts are silent (censored)."""
    rng = np.random.default_rng(seed)
    reported, censored, aborted = [], [], 0
    for _ in range(rounds):
        times = rng.lognormal(np.log(120), 0.5, cohort)
        drops = rng.random(cohort) < dropout
        finishing = np.sort(times[~drops])
        reported += list(finishing)  # on time, or refused late: either way the time is seen
        silent = rng.random(int(drops.sum())) < 0.5
        censored += [900.0] * int(silent.sum())  # silent through their lease deadline
        aborted += int((~silent).sum())
    return RoundHistory(report_seconds=reported, censored_seconds=censored, aborted=aborted)


def test_without_enough_history_the_configured_factor_and_deadline_are_used():
    history = RoundHistory(report_seconds=[60.0] * 5, censored_seconds=[], aborted=1)

    plan = plan_cohort(history, target=100, over_selection=1.3, round_seconds=600)

    assert (plan.to_select, plan.deadline_seconds, plan.learned) == (130, 600, False)


def test_the_censored_fit_recovers_the_report_time_distribution_the_cut_devices_hide():
    history = simulated_history(dropout=0.1)

    model = fit_report_times(history)
    naive_mu = float(np.mean(np.log(history.report_seconds)))

    assert model.mu == pytest.approx(np.log(120), abs=0.08)
    assert model.sigma == pytest.approx(0.5, abs=0.08)
    # Counting only the on-time reports would have believed the fleet far faster than it is.
    on_time = [t for t in history.report_seconds if t <= np.quantile(history.report_seconds, 0.75)]
    assert naive_mu > float(np.mean(np.log(on_time)))
    assert model.never == pytest.approx(0.1, abs=0.03)


@pytest.mark.parametrize("dropout", [0.06, 0.1, 0.2, 0.3])
def test_the_learned_cohort_reaches_the_target_with_the_goal_probability(dropout):
    history = simulated_history(dropout=dropout, seed=1)

    plan = plan_cohort(history, target=20, over_selection=1.3, round_seconds=900)

    assert plan.learned
    assert plan.completion_probability >= 0.95
    # …and it is the smallest such cohort: one device fewer would miss the goal.
    assert _at_least(20, plan.to_select - 1, plan.report_probability) < 0.95


def test_more_dropout_means_a_larger_cohort():
    sizes = [
        plan_cohort(
            simulated_history(dropout=d, seed=2), target=20, over_selection=1.3, round_seconds=900
        ).to_select
        for d in (0.06, 0.2, 0.3)
    ]

    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_with_heartbeats_a_round_whose_surplus_would_waste_too_much_waits_for_one_refill():
    history = simulated_history(dropout=0.3, seed=4)
    common = {"target": 20, "over_selection": 1.3, "round_seconds": 900}

    without = plan_cohort(history, **common)
    refilled = plan_cohort(history, **common, detection_seconds=90, max_surplus=0.10)

    median = fit_report_times(history).quantile(0.5)
    assert refilled.deadline_seconds == pytest.approx(without.deadline_seconds + 0.5 * median + 90)
    assert (refilled.to_select - 20) / refilled.to_select <= 0.10
    assert refilled.to_select < without.to_select
    assert refilled.completion_probability >= 0.95


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_with_heartbeats_a_round_whose_surplus_wastes_little_keeps_its_short_deadline(dropout):
    history = simulated_history(dropout=dropout, seed=4)
    common = {"target": 20, "over_selection": 1.3, "round_seconds": 900}

    without = plan_cohort(history, **common)
    refilled = plan_cohort(history, **common, detection_seconds=90, max_surplus=0.10)

    assert refilled.deadline_seconds == without.deadline_seconds
    assert (refilled.to_select - 20) / refilled.to_select <= 0.10
    assert refilled.to_select <= without.to_select
    assert refilled.completion_probability >= 0.95


def test_the_surplus_bound_decides_between_short_rounds_and_fewer_surplus_devices():
    history = simulated_history(dropout=0.1, seed=4)
    common = {"target": 20, "over_selection": 1.3, "round_seconds": 900, "detection_seconds": 90}

    lenient = plan_cohort(history, **common, max_surplus=0.9)
    strict = plan_cohort(history, **common, max_surplus=0.01)

    assert strict.deadline_seconds > lenient.deadline_seconds
    assert strict.to_select <= lenient.to_select


def test_the_room_for_a_refill_never_stretches_a_round_past_its_bound():
    history = simulated_history(dropout=0.3, seed=4)

    plan = plan_cohort(
        history, target=20, over_selection=1.3, round_seconds=300, detection_seconds=90
    )

    assert plan.deadline_seconds == 300


def test_the_deadline_is_a_high_quantile_of_the_model_within_the_configured_bound():
    history = simulated_history(dropout=0.0, seed=3)

    free = plan_cohort(history, target=20, over_selection=1.3, round_seconds=10_000)
    capped = plan_cohort(history, target=20, over_selection=1.3, round_seconds=200)

    assert free.deadline_seconds == pytest.approx(120 * math.exp(2.326 * 0.5), rel=0.2)
    assert capped.deadline_seconds == 200


def test_a_cohort_never_exceeds_the_ceiling_even_when_the_goal_is_out_of_reach():
    history = RoundHistory(
        report_seconds=[100.0, 110.0], censored_seconds=[], aborted=10 * MIN_OBSERVATIONS
    )

    plan = plan_cohort(history, target=50, over_selection=1.3, round_seconds=600)

    assert plan.to_select == 150
    assert plan.completion_probability < 0.95


@given(st.integers(1, 60), st.integers(0, 80), st.floats(0.01, 0.99))
def test_binomial_tail_matches_the_direct_sum(k, extra, p):
    n = k + extra
    direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))

    assert _at_least(k, n, p) == pytest.approx(direct, rel=1e-9, abs=1e-12)


def test_a_goal_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="goal"):
        plan_cohort(simulated_history(), target=5, over_selection=1.3, round_seconds=60, goal=1.0)
