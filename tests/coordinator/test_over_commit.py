"""Over-commit for asynchronous jobs: how many leases keep C devices working under dropout."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.aggregation.cohort import (
    MIN_OBSERVATIONS,
    LeaseHistory,
    over_commit,
    plan_concurrency,
)


def simulated_leases(*, leases=400, dropout=0.3, report=60.0, dead=180.0, seed=0) -> LeaseHistory:
    """A job's recent leases: a share ``dropout`` vanish and hold their slot ``dead`` seconds."""
    rng = np.random.default_rng(seed)
    vanish = rng.random(leases) < dropout
    times = rng.lognormal(math.log(report), 0.2, leases)
    return LeaseHistory(
        report_seconds=[float(t) for t in times[~vanish]],
        dropout_seconds=[dead] * int(vanish.sum()),
        working_seconds=[],
    )


def test_without_dropout_the_job_leases_exactly_its_useful_slots():
    assert over_commit(10, dropout=0.0, max_factor=4.0) == 10


@pytest.mark.parametrize(("dropout", "leases"), [(0.3, 15), (0.5, 20), (0.6, 25)])
def test_a_dead_lease_noticed_as_late_as_a_report_gives_c_over_one_minus_p(dropout, leases):
    assert over_commit(10, dropout=dropout, hold_ratio=1.0, max_factor=10.0) == leases
    assert leases == math.ceil(10 / (1 - dropout) - 1e-9)


def test_dead_leases_that_hold_their_slot_longer_than_a_report_need_more_leases():
    # 60 % dropout, a dead lease holds its slot 3× as long as a report takes: C·(1 + 3·0.6/0.4)
    assert over_commit(10, dropout=0.6, hold_ratio=3.0, max_factor=10.0) == 55


def test_dead_leases_noticed_sooner_than_a_report_need_fewer_leases_than_c_over_one_minus_p():
    assert over_commit(10, dropout=0.5, hold_ratio=0.5, max_factor=10.0) == 15


def test_over_commit_is_capped_at_max_factor_times_the_useful_slots():
    assert over_commit(10, dropout=0.9, max_factor=3.0) == 30
    assert over_commit(10, dropout=1.0, max_factor=2.5) == 25


@given(
    useful=st.integers(1, 500),
    dropout=st.floats(0.0, 1.0),
    hold_ratio=st.floats(0.0, 20.0),
    max_factor=st.floats(1.0, 10.0),
)
def test_over_commit_lies_between_the_useful_slots_and_the_cap(
    useful, dropout, hold_ratio, max_factor
):
    leases = over_commit(useful, dropout=dropout, hold_ratio=hold_ratio, max_factor=max_factor)

    assert useful <= leases <= math.ceil(useful * max_factor - 1e-9)
    if dropout < 1:  # the useful share of the leases' slot time covers the useful slots
        useful_share = (1 - dropout) / ((1 - dropout) + dropout * hold_ratio)
        uncapped = leases < math.ceil(useful * max_factor - 1e-9)
        assert not uncapped or leases * useful_share >= useful - 1e-6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"useful": 0, "dropout": 0.1}, "useful"),
        ({"useful": 10, "dropout": 1.5}, "dropout"),
        ({"useful": 10, "dropout": 0.1, "max_factor": 0.5}, "max_factor"),
    ],
)
def test_nonsense_inputs_are_refused_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        over_commit(**{"max_factor": 4.0, **kwargs})


def test_without_enough_leases_the_configured_concurrency_is_kept():
    history = simulated_leases(leases=MIN_OBSERVATIONS - 1, dropout=0.6)

    plan = plan_concurrency(history, useful=10, max_factor=4.0)

    assert (plan.leases, plan.learned) == (10, False)


@pytest.mark.parametrize("dropout", [0.0, 0.3, 0.6])
def test_the_learned_dropout_rate_is_the_observed_share_of_leases_that_never_report(dropout):
    history = simulated_leases(dropout=dropout)
    observed = len(history.dropout_seconds) / history.observations

    plan = plan_concurrency(history, useful=10, max_factor=10.0)

    assert plan.learned
    assert plan.dropout == pytest.approx(observed, abs=0.01)  # Laplace-smoothed: (k + 1)/(n + 2)
    assert plan.hold_ratio == pytest.approx(
        180.0 / np.mean(history.report_seconds) if history.dropout_seconds else 1.0
    )


def test_the_learned_lease_count_follows_the_dropout_and_the_slot_time_of_dropouts():
    history = simulated_leases(dropout=0.6, dead=180.0)

    plan = plan_concurrency(history, useful=10, max_factor=10.0)

    assert plan.leases == over_commit(
        10, dropout=plan.dropout, hold_ratio=plan.hold_ratio, max_factor=10.0
    )
    assert plan.leases > math.ceil(10 / (1 - 0.6))  # dead leases hold slots 3× a report


def test_leases_still_working_are_censored_not_counted_as_dropouts():
    finished = simulated_leases(leases=100, dropout=0.2)
    with_working = LeaseHistory(
        report_seconds=finished.report_seconds,
        dropout_seconds=finished.dropout_seconds,
        working_seconds=[5.0] * 50,  # just handed out: they say almost nothing yet
    )

    plain = plan_concurrency(finished, useful=10, max_factor=10.0)
    censored = plan_concurrency(with_working, useful=10, max_factor=10.0)

    assert censored.dropout == pytest.approx(plain.dropout, abs=0.03)
