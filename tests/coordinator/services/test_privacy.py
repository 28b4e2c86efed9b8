"""Differential privacy wired into jobs, uploads and versions (issue 15, docs/privacy.md).

Service specifications in the rolled-back transaction of ``conftest.py``: what a DP job
refuses at creation, what a device must send, what each version adds and records, and where
the budget stops the job.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import update

from coordinator.config import JobCreate
from coordinator.db.models import Job, Lease, LeaseStatus, Update
from coordinator.errors import Conflict, InvalidUpdate
from device_sdk.clipping import clip_to_norm
from fedge.protocol import Reason
from fedge.wire import encode_vector
from tests.coordinator.services.world import NUM_PARAMS, World, delta


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


# --- the clip norm: given to the device, re-checked on upload ---------------------------------


def dp_job(world: World, mode: str = "async", **fields: Any) -> Job:
    """A DP job of the world's plan: ``fields`` override the privacy section."""
    aggregation = {"buffer_size": 2} if mode == "async" else {"target": 2, "minimum": 2}
    return world.job(mode, privacy=dp_section(**fields), weighting="uniform", **aggregation)


def test_a_dp_job_gives_each_task_its_clip_norm(world: World):
    dp_job(world, clipping={"kind": "fixed", "clip_norm": 0.75})

    task = world.task(world.device())

    assert task.clip_norm == 0.75


def test_a_job_without_privacy_gives_no_clip_norm(world: World):
    world.job("async")

    assert world.task(world.device()).clip_norm is None


def test_an_update_longer_than_the_clip_norm_is_rejected_whatever_the_norm_policy(world: World):
    dp_job(world)
    device = world.device()
    task = world.task(device)

    with pytest.raises(InvalidUpdate) as refused:
        world.upload(device, task, delta(1.0))  # norm 2 > C = 1

    assert refused.value.reason == Reason.NORM_TOO_LARGE


def test_an_update_at_the_clip_norm_within_float32_rounding_is_accepted(world: World):
    dp_job(world)
    device = world.device()
    task = world.task(device)
    clipped, _ = clip_to_norm(np.full(NUM_PARAMS, 3.0, np.float32), task.clip_norm or 0.0)

    receipt = world.upload(device, task, encode_vector(clipped))

    assert (receipt.status, receipt.clipped) == ("accepted", False)


def test_a_device_whose_update_waits_for_the_next_version_gets_no_second_task(world: World):
    dp_job(world)
    device = world.device()
    world.upload(device, world.task(device), delta(0.1))

    answer = world.check_in(device)

    assert answer.task is None
    assert answer.retry is not None and "privacy window" in answer.retry.reason


def test_a_capped_device_contributes_once_per_window_of_versions(world: World):
    job = dp_job(world, participation={"model": "capped", "population": 100, "window": 2})
    devices = [world.device() for _ in range(6)]
    for device in devices[:2]:  # version 1
        world.upload(device, world.task(device), delta(0.1))
    assert world.current_version(job) == 1

    refused = world.check_in(devices[0])  # version 2 is inside its window
    for device in devices[2:4]:  # version 2
        world.upload(device, world.task(device), delta(0.1))
    again = world.check_in(devices[0])  # version 3 opens a new window

    assert refused.task is None and refused.retry is not None
    assert "2 versions" in refused.retry.reason
    assert again.task is not None


def test_a_second_upload_into_the_same_version_is_refused_under_the_lock(world: World):
    dp_job(world, participation={"model": "capped", "population": 100, "window": 1})
    device = world.device()
    first, second = world.task(device), None
    # Two leases on one device, as two racing check-ins on two workers could issue them.
    world.upload(device, first, delta(0.1))
    world.session.execute(
        update(Update).where(Update.lease_id == first.lease_id).values(version=None)
    )
    second_lease = Lease(
        id="second",
        job_id=first.job_id,
        device_id=device.id,
        base_version=0,
        status=LeaseStatus.ACTIVE,
        issued_at=world.now,
        deadline_at=world.now + 600,
    )
    world.session.add(second_lease)
    second = replace(first, lease_id="second")

    with pytest.raises(Conflict, match="privacy window"):
        world.upload(device, second, delta(0.1))
