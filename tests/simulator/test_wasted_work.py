"""The report's wasted device work: tasks whose update never entered a version, and why."""

from collections import Counter

import pytest

from simulator.fleet import FleetStats
from simulator.report import _wasted_work


def test_wasted_work_splits_dropouts_from_what_the_coordinator_threw_away():
    stats = FleetStats(
        tasks=100,
        accepted=62,
        dropped=Counter(training=20, download=5, upload=5, after_upload=2),
        rejected=Counter(stale=3),
        aborted=Counter(user_activity=2),
        cut=3,
    )

    shares = _wasted_work(stats, in_versions=60)  # two accepted updates wait in the buffer

    assert shares == {
        "tasks_wasted_share": pytest.approx(0.40),
        "tasks_lost_to_dropout_share": pytest.approx(0.30),  # a crash after upload loses nothing
        "tasks_wasted_by_coordinator_share": pytest.approx((3 + 3 + 2 + 2) / 100),
    }


def test_a_run_without_tasks_reports_no_shares():
    assert _wasted_work(FleetStats(), in_versions=0) == {}
