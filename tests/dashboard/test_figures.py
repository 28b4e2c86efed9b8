"""Every figure the dashboard shows is also in the admin API or at /metrics, and they agree."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from tests.dashboard.conftest import ADMIN_TOKEN, TASK_SECONDS, UPLOADS, LiveJob

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def scrape(live: LiveJob) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = live.http.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def job_overview(live: LiveJob) -> dict:
    response = live.http.get(f"/v1/admin/jobs/{live.job_id}/overview", headers=BEARER)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_job_overview_agrees_with_the_versions_and_metrics_history(live_job):
    detail = job_overview(live_job)
    versions = live_job.admin.versions(live_job.job_id)
    history = live_job.admin.metrics(live_job.job_id)

    assert detail["versions_total"] == len(versions)
    assert [v["number"] for v in detail["versions"]] == [v["number"] for v in versions]
    assert [v["accepted"] for v in detail["versions"]] == [v["num_updates"] for v in versions]
    assert detail["summary"]["accepted_updates"] == sum(v["num_updates"] for v in versions)
    assert detail["leases"] == history["leases"]
    assert detail["rejections"] == history["rejected"]
    assert detail["selected"] == sum(history["leases"].values())


def test_the_funnel_counts_the_scripted_fleet(live_job):
    detail = job_overview(live_job)

    assert detail["summary"]["accepted_updates"] == UPLOADS
    assert detail["leases"] == {"completed": UPLOADS, "aborted": 1, "active": 1}
    assert detail["rejections"] == {"non_finite": 1}
    assert detail["wasted"]["wasted_fraction"] == 1 / (UPLOADS + 1)  # one abort of 7 closed
    assert detail["staleness"] == {"0": UPLOADS}


def test_each_versions_norm_quantiles_lie_within_its_updates_norms(live_job):
    for version in job_overview(live_job)["versions"][1:]:
        quantiles = version["update_norm_quantiles"]

        assert quantiles["p10"] <= quantiles["p50"] <= quantiles["p90"] <= quantiles["max"]
        assert abs(quantiles["p50"] - version["update_norm_mean"]) < 1e-9  # two updates each
        assert version["fill_seconds"] == 2 * (30.0 + TASK_SECONDS)  # two devices a version


def test_the_fleet_overview_and_metrics_count_the_same_devices_and_refusals(live_job):
    fleet = live_job.http.get("/v1/admin/overview", headers=BEARER).json()
    scraped = scrape(live_job)

    registered = live_job.admin.devices()["total"]
    assert fleet["population"]["registered"] == registered
    assert (
        scraped[("fedge_devices", (("runtime", "litert"), ("sdk_version", "0.1.0")))] == registered
    )
    assert fleet["health"]["abort_reasons"] == {"battery": 1}
    assert fleet["health"]["task_seconds"] == [TASK_SECONDS] * UPLOADS
    job = str(live_job.job_id)
    aborted = (
        "fedge_leases_closed_total",
        (("job", job), ("reason", "aborted:battery"), ("status", "aborted")),
    )
    assert scraped[aborted] == 1
    for reason, count in fleet["health"]["upload_rejections"].items():
        assert scraped[("fedge_updates_rejected_total", (("reason", reason),))] == count
        assert (
            scraped[("fedge_job_uploads_rejected_total", (("job", job), ("reason", reason)))]
            == count
        )


def test_uplink_bytes_and_waiting_updates_are_at_metrics_as_on_the_page(live_job):
    detail = job_overview(live_job)
    scraped = scrape(live_job)
    job = (("job", str(live_job.job_id)),)

    assert scraped[("fedge_uplink_bytes_total", job)] == detail["uplink_bytes"]
    assert detail["uplink_bytes"] == sum(v["uplink_bytes"] for v in detail["versions"])
    assert scraped[("fedge_updates_waiting", job)] == detail["wasted"]["waiting"]
    assert scraped[("fedge_updates_clipped_total", job)] == sum(
        v["clipped"] for v in detail["versions"]
    )
    page = live_job.http.get(f"/dashboard/jobs/{live_job.job_id}", headers=BEARER).text
    shown = re.search(r'data-metric="uplink-bytes">(\d+)<', page)
    assert shown is not None and int(shown.group(1)) == detail["uplink_bytes"]


def test_an_unknown_job_is_404_with_a_reason(live_job):
    response = live_job.http.get("/v1/admin/jobs/999/overview", headers=BEARER)

    assert response.status_code == 404
    assert response.json()["message"] == "no job 999"
