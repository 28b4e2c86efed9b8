"""The pages and charts as pure functions of the overview's records."""

from __future__ import annotations

import re

from coordinator.dashboard import charts, pages
from coordinator.services.overview import DeviceHealth, FleetOverview, JobSummary, Population

HOSTILE = '<script>alert("x")</script>'


def fleet(*, job_name: str = "job", runtimes: dict[str, int] | None = None) -> FleetOverview:
    return FleetOverview(
        now=1_700_000_000.0,
        population=Population(
            registered=3,
            seen_last_hour=2,
            seen_last_day=3,
            active_leases=1,
            leased_last_hour=2,
            runtimes=runtimes or {"litert": 3},
            sdk_versions={"0.1.0": 3},
        ),
        health=DeviceHealth(
            lease_outcomes={"completed": 4, "aborted": 1},
            abort_reasons={"battery": 1},
            expiry_reasons={},
            upload_rejections={},
            task_seconds=[10.0, 20.0, 30.0],
        ),
        jobs=[JobSummary(7, job_name, "async", "running", 3, 6, 0, None)],
    )


def test_the_fleet_page_shows_each_population_figure_by_name():
    page = pages.fleet_page(fleet())

    figures = dict(re.findall(r'data-metric="([a-z-]+)">([^<]*)<', page))
    assert figures["registered"] == "3"
    assert figures["seen-last-hour"] == "2"
    assert figures["active-leases"] == "1"
    assert 'href="/dashboard/jobs/7"' in page


def test_names_the_fleet_reports_are_escaped_everywhere():
    page = pages.fleet_page(fleet(job_name=HOSTILE, runtimes={HOSTILE: 3}))

    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_the_login_page_keeps_only_an_escaped_next_path():
    page = pages.login_page(message="no", next_path='/dashboard/"><b>')

    assert '"><b>' not in page
    assert 'class="error"' in page


def test_a_histogram_counts_every_value_once():
    svg = charts.histogram([1.0, 2.0, 2.5, 9.0, 10.0], title="t", unit="s", bins=4)

    counts = [int(n) for n in re.findall(r": (\d+)</title></rect>", svg)]
    assert sum(counts) == 5
    assert counts == [2, 1, 0, 2]  # [0, 2.5), [2.5, 5), [5, 7.5), [7.5, 10]: the top one closed


def test_a_histogram_of_equal_durations_starts_at_zero():
    svg = charts.histogram([12.0, 12.0], title="t", unit="s", bins=4)

    assert ">0–3 s<" in svg and ">9–12 s<" in svg
    assert [int(n) for n in re.findall(r": (\d+)</title></rect>", svg)] == [0, 0, 0, 2]


def test_charts_without_data_say_so_instead_of_drawing_nothing():
    for svg in (
        charts.line_chart({"a": []}, title="t", x_label="x"),
        charts.sparkline([1.0], title="t"),
        charts.bar_chart({}, title="t"),
    ):
        assert "no data yet" in svg
        assert svg.startswith("<svg") and svg.endswith("</svg>")


def test_a_line_chart_labels_its_range_and_skips_non_finite_points():
    svg = charts.line_chart(
        {"loss": [(0.0, 2.0), (1.0, float("nan")), (2.0, 0.5)]}, title="t", x_label="version"
    )

    assert svg.count("<circle") == 2
    assert ">2<" in svg and ">0.5<" in svg
