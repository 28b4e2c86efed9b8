"""Differential privacy wired into jobs, uploads and versions (issue 15, docs/privacy.md).

Service specifications in the rolled-back transaction of ``conftest.py``: what a DP job
refuses at creation, what a device must send, what each version adds and records, and where
the budget stops the job.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from coordinator.config import JobCreate


def dp_section(**overrides: Any) -> dict[str, Any]:
    """A privacy section a small job can honour: capped once per version of 100 devices."""
    section: dict[str, Any] = {
        "mechanism": "gaussian",
        "participation": {"model": "capped", "population": 100, "window": 1},
        "noise_multiplier": 1.0,
        "delta": 1e-4,
        "epsilon_max": 10.0,
        "clipping": {"kind": "fixed", "clip_norm": 1.0},
    }
    section.update(overrides)
    return section


def job_request(
    mode: str = "async", *, privacy: dict[str, Any] | None = None, **aggregation: Any
) -> dict[str, Any]:
    """A job request of plan 1 with uniform weighting and ``privacy`` (a DP section)."""
    return {
        "name": "dp job",
        "plan_id": 1,
        "aggregation": {"mode": mode, "weighting": "uniform", "buffer_size": 2, **aggregation},
        "privacy": dp_section() if privacy is None else privacy,
    }


def refusal(request: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        JobCreate.model_validate(request)
    return str(caught.value)


# --- job config --------------------------------------------------------------------------------


def test_a_job_without_a_privacy_section_is_not_private():
    config = JobCreate.model_validate({"name": "plain", "plan_id": 1})

    assert config.privacy.mechanism == "off"
    assert config.aggregation.weighting == "examples"


def test_a_dp_job_that_weights_by_examples_is_refused_with_the_reason():
    message = refusal(job_request(weighting="examples"))

    assert "aggregation.weighting" in message
    assert "uniform" in message


def test_a_dp_job_with_its_own_norm_bound_or_server_clipping_is_refused():
    assert "aggregation.max_update_norm" in refusal(job_request(max_update_norm=2.0))
    assert "aggregation.norm_policy" in refusal(job_request(norm_policy="clip"))


def test_a_window_the_population_cannot_fill_is_refused_naming_the_field():
    capped = {"model": "capped", "population": 10, "window": 6}

    message = refusal(job_request(privacy=dp_section(participation=capped), buffer_size=2))

    assert "privacy.participation.window" in message


def test_a_sync_dp_job_is_checked_against_its_round_target():
    capped = {"model": "capped", "population": 10, "window": 2}

    message = refusal(job_request("sync", privacy=dp_section(participation=capped), target=6))

    assert "privacy.participation.window" in message


def test_sampled_participation_is_refused_until_the_coordinator_enforces_it():
    sampled = {"model": "sampled", "population": 100, "sampling_rate": 0.1}

    message = refusal(job_request(privacy=dp_section(participation=sampled)))

    assert "privacy.participation.model" in message
