"""A DP job on a live coordinator: devices clip, versions carry ε, the budget stops the job."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.privacy import PrivacyAccountant, PrivacyConfig
from tests.integration.test_device_sessions import run_devices

PRIVACY: dict[str, Any] = {
    "mechanism": "gaussian",
    "participation": {"model": "capped", "population": 100, "window": 1},
    "noise_multiplier": 2.0,
    "delta": 1e-4,
    "epsilon_max": 3.0,  # ε(2) = 2.53 ≤ 3 < ε(3) = 3.21: two versions
    "clipping": {"kind": "fixed", "clip_norm": 0.01},  # short enough that devices clip
}


def create_dp_job(coordinator, **changes: Any):
    body = {
        "name": "dp job",
        "plan_id": coordinator.publish_plan(),
        "aggregation": {"mode": "async", "buffer_size": 2, "weighting": "uniform"},
        "privacy": PRIVACY,
        "max_versions": 10,
        **changes,
    }
    return coordinator.admin.post("/v1/admin/jobs", json=body)


def test_a_dp_job_publishes_versions_with_epsilon_and_stops_at_its_budget(coordinator):
    created = create_dp_job(coordinator)
    assert created.status_code == 201, created.text
    job = created.json()

    stats = run_devices(coordinator, devices=4, tasks=1)  # the real session: it clips to C

    assert [s.uploads_accepted for s in stats] == [1, 1, 1, 1]
    versions = coordinator.versions(job["id"])
    assert [v["number"] for v in versions] == [0, 1, 2]
    accountant = PrivacyAccountant(PrivacyConfig.model_validate(PRIVACY))
    for version in versions[1:]:
        privacy = version["privacy"]
        assert privacy["epsilon"] == pytest.approx(accountant.epsilon_after(version["number"]))
        assert privacy["epsilon_rdp"] >= privacy["epsilon_pld"]
        assert (privacy["delta"], privacy["noise_multiplier"], privacy["clip_norm"]) == (
            1e-4,
            2.0,
            0.01,
        )
        assert (privacy["n_actual"], privacy["noise_seeded"]) == (2, False)
    shown = coordinator.job(job["id"])
    assert shown["status"] == "budget_exhausted"
    assert shown["privacy"]["epsilon"] == versions[2]["privacy"]["epsilon"] <= 3.0
    assert shown["privacy"]["versions_within_budget"] == 2
    metrics = coordinator.admin.get("/metrics").text
    assert f'fedge_privacy_epsilon{{job="{job["id"]}",method="pld"}}' in metrics


def test_a_dp_job_that_weights_by_examples_is_refused_with_422_naming_the_field(coordinator):
    refused = create_dp_job(
        coordinator, aggregation={"mode": "async", "buffer_size": 2, "weighting": "examples"}
    )

    assert refused.status_code == 422
    assert refused.json()["error"] == "invalid_request"
    assert "aggregation.weighting" in refused.json()["message"]


def test_a_budget_too_small_for_one_version_is_refused_with_422(coordinator):
    refused = create_dp_job(coordinator, privacy={**PRIVACY, "epsilon_max": 0.5})

    assert refused.status_code == 422
    assert "privacy.epsilon_max" in refused.json()["message"]


def test_a_noise_seed_is_refused_by_a_coordinator_in_service(coordinator):
    refused = create_dp_job(coordinator, privacy={**PRIVACY, "noise_seed": 1})

    assert refused.status_code == 422
    assert "privacy.noise_seed" in refused.json()["message"]
