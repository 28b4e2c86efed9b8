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
from sqlalchemy import select, update

from coordinator.aggregation import l2_norm
from coordinator.config import JobCreate
from coordinator.db.blobs import get_blob
from coordinator.db.models import Job, JobStatus, Lease, LeaseStatus, Update, Version
from coordinator.errors import Conflict, InvalidConfig, InvalidUpdate, LeaseClosed
from coordinator.observability import DatabaseCollector
from coordinator.privacy import PrivacyAccountant
from coordinator.services import accounting, jobs, versions
from device_sdk.clipping import clip_to_norm
from fedge.protocol import METRIC_WITHIN_CLIP, Reason
from fedge.wire import decode_vector, encode_vector
from tests.coordinator.services.world import NUM_PARAMS, World, delta, register_tiny_plan


def dp_section(**overrides: Any) -> dict[str, Any]:
    """A privacy section a small job can honour: capped once per version of 100 devices."""
    section: dict[str, Any] = {
        "mechanism": "gaussian",
        "participation": {"model": "capped", "population": 100, "window": 1},
        "noise_multiplier": 2.0,
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


def dp_job(world: World, mode: str = "async", max_versions: int = 10, **fields: Any) -> Job:
    """A DP job of the world's plan (2 updates a version): ``fields`` override its privacy."""
    aggregation = {"buffer_size": 2} if mode == "async" else {"target": 2, "minimum": 2}
    return world.job(
        mode,
        privacy=dp_section(**fields),
        max_versions=max_versions,
        weighting="uniform",
        **aggregation,
    )


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


# --- job creation: calibration and the budget ---------------------------------------------------


def test_a_dp_job_starts_with_an_empty_ledger_and_the_versions_its_budget_allows(world: World):
    # z = 2, δ = 1e-4, one Gaussian release per version: ε(2) = 2.53, ε(3) = 3.21.
    job = dp_job(world, epsilon_max=3.0)

    state = accounting.state_of(job)

    assert (state.ledger.versions, state.versions_within_budget) == (0, 2)
    assert state.clip_norm == 1.0


def test_a_budget_too_small_for_one_version_is_refused_naming_the_field(world: World):
    with pytest.raises(InvalidConfig, match=r"privacy\.epsilon_max"):
        dp_job(world, epsilon_max=0.5)  # one version costs ε = 1.70


def test_a_target_epsilon_is_calibrated_into_the_stored_noise_multiplier(world: World):
    job = dp_job(world, noise_multiplier=None, target_epsilon=3.0, planned_versions=2)

    stored = jobs.job_config(job).privacy
    accountant = PrivacyAccountant(stored)

    assert stored.target_epsilon is None and stored.noise_multiplier is not None
    assert accountant.epsilon_after(2) <= 3.0 < accountant.epsilon_after(2) * 1.02
    assert accountant_view(job)["calibrated_from"] == 3.0


def test_a_reproducible_noise_seed_is_refused_where_the_coordinator_does_not_allow_it(
    world: World,
):
    request = JobCreate.model_validate(
        {**job_request(privacy=dp_section(noise_seed=1)), "plan_id": world.plan.id}
    )

    with pytest.raises(InvalidConfig, match=r"privacy\.noise_seed"):
        jobs.create_job(world.session, request, now=world.now)


def accountant_view(job: Job) -> dict[str, Any]:
    assert job.privacy_state is not None
    return job.privacy_state


# --- noise: on the sum, sized by the updates actually aggregated -------------------------------

BIG = 20_000  # coordinates: the sample std of one version's noise is within ~0.5 % of the truth


def zeros(num_params: int) -> bytes:
    return encode_vector(np.zeros(num_params, np.float32))


def test_the_noise_on_each_average_has_std_zc_over_n_actual_under_30_percent_dropout(
    world: World,
):
    # Every update is zero, so a version's weights move by the noise alone, / n_actual.
    # The sample std of 20,000 normal draws has a relative error of 1/sqrt(2·20,000) = 0.5 %;
    # a 3 % tolerance is 6 of those: a false alarm about once in 10⁹ versions (and the seed
    # makes the run reproducible).
    big = replace(world, plan=register_tiny_plan(world.session, now=world.now, num_params=BIG))
    z, clip = 3.0, 0.5
    job = big.job(
        "sync",
        privacy=dp_section(
            noise_multiplier=z, noise_seed=7, clipping={"kind": "fixed", "clip_norm": clip}
        ),
        max_versions=3,
        weighting="uniform",
        target=10,
        minimum=7,
        over_selection=1.0,
        round_seconds=60.0,
    )
    for number in (1, 2, 3):
        devices = [big.device() for _ in range(10)]
        tasks = [big.task(device) for device in devices]
        for device, task in zip(devices[:7], tasks[:7], strict=True):  # 3 of 10 drop out
            big.upload(device, task, zeros(BIG))
        big.clock.advance(61)
        big.sweep()  # the deadline closes the round with the 7 that reported

        noise = big.weights(job, number) - big.weights(job, number - 1)
        metadata = jobs.get_version(big.session, job.id, number).privacy

        assert float(np.std(noise)) == pytest.approx(z * clip / 7, rel=0.03)
        assert abs(float(np.mean(noise))) < 6 * z * clip / 7 / np.sqrt(BIG)
        assert metadata is not None
        assert (metadata["n_actual"], metadata["noise_stddev"]) == (7, pytest.approx(z * clip))
        assert metadata["noise_seeded"] is True


def test_a_version_records_its_epsilon_assumptions_and_unseeded_noise(world: World):
    job = dp_job(world)
    for _ in range(2):
        device = world.device()
        world.upload(device, world.task(device), delta(0.1))

    metadata = jobs.get_version(world.session, job.id, 1).privacy

    assert metadata is not None
    expected = PrivacyAccountant(jobs.job_config(job).privacy).epsilon_after(1)
    assert metadata["epsilon"] == pytest.approx(expected)
    assert metadata["method"] == "pld"
    assert metadata["epsilon_rdp"] >= metadata["epsilon_pld"]
    assert (metadata["delta"], metadata["noise_multiplier"], metadata["clip_norm"]) == (
        1e-4,
        2.0,
        1.0,
    )
    assert metadata["assumptions"]["participation"] == "capped"
    assert metadata["assumptions"]["versions"] == 1
    assert metadata["noise_seeded"] is False
    assert metadata["clipped_fraction"] is None  # fixed C: the raw count is never released


# --- the ledger commits with its version --------------------------------------------------------


def test_the_ledger_on_the_job_advances_with_each_version(world: World):
    job = dp_job(world)
    for _ in range(4):
        device = world.device()
        world.upload(device, world.task(device), delta(0.1))

    state = accounting.state_of(job)

    assert state.ledger.versions == world.current_version(job) == 2
    assert state.epsilon["epsilon"] == jobs.get_version(world.session, job.id, 2).privacy["epsilon"]


def test_a_version_that_fails_to_commit_leaves_neither_it_nor_its_ledger_entry(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    job = dp_job(world)
    device = world.device()
    world.upload(device, world.task(device), delta(0.1))
    last = world.device()
    task = world.task(last)
    world.session.flush()

    def crash(*_: Any) -> None:  # after the version row and the ledger were written
        raise RuntimeError("the database went away")

    monkeypatch.setattr(versions, "release", crash)
    with pytest.raises(RuntimeError), world.session.begin_nested():
        world.upload(last, task, delta(0.1))

    assert world.current_version(job) == 0
    assert world.session.get(Version, (job.id, 1)) is None
    assert accounting.state_of(job).ledger.versions == 0


# --- the budget gate ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_the_job_stops_exactly_before_the_version_that_would_exceed_epsilon_max(
    world: World, mode: str
):
    job = dp_job(world, mode, epsilon_max=3.0)  # ε(2) = 2.53 ≤ 3 < ε(3) = 3.21
    late = world.device()
    for number in (1, 2):
        devices = [world.device() for _ in range(2)]
        tasks = [world.task(device) for device in devices]
        if number == 2:
            late_task = world.task(late)  # a lease out when the budget runs out
        for device, task in zip(devices, tasks, strict=True):
            world.upload(device, task, delta(0.1))

    published = jobs.get_version(world.session, job.id, 2).privacy
    assert published is not None and published["epsilon"] <= 3.0
    assert PrivacyAccountant(jobs.job_config(job).privacy).epsilon_after(3) > 3.0
    assert job.status == JobStatus.BUDGET_EXHAUSTED
    assert world.current_version(job) == 2
    assert world.lease(late_task).close_reason == "privacy budget exhausted"
    assert world.check_in(world.device()).task is None
    with pytest.raises(LeaseClosed, match="privacy budget exhausted"):
        world.upload(late, late_task, delta(0.1))


def test_a_job_that_reaches_max_versions_within_its_budget_finishes_as_stopped(world: World):
    job = dp_job(world, max_versions=1)
    for _ in range(2):
        device = world.device()
        world.upload(device, world.task(device), delta(0.1))

    assert job.status == JobStatus.STOPPED


def test_prometheus_shows_a_dp_jobs_epsilon_z_c_and_budget(world: World):
    job = dp_job(world, epsilon_max=3.0)
    for _ in range(2):
        device = world.device()
        world.upload(device, world.task(device), delta(0.1))
    world.session.flush()

    families = {family.name: family for family in DatabaseCollector(world.sessions).collect()}

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for name in families
        if name.startswith("fedge_privacy")
        for sample in families[name].samples
    }
    job_label = ("job", str(job.id))
    headline = samples[("fedge_privacy_epsilon", (job_label, ("method", "headline")))]
    assert headline == pytest.approx(jobs.get_version(world.session, job.id, 1).privacy["epsilon"])
    assert samples[("fedge_privacy_noise_multiplier", (job_label,))] == 2.0
    assert samples[("fedge_privacy_clip_norm", (job_label,))] == 1.0
    assert samples[("fedge_privacy_versions_within_budget", (job_label,))] == 2


# --- adaptive clipping ---------------------------------------------------------------------------

ADAPTIVE = {
    "kind": "adaptive",
    "initial_clip_norm": 0.5,
    "target_quantile": 0.5,
    "learning_rate": 0.2,
    "clip_count_stddev": 2.0,  # 2σ_b = 4 > z = 1: the count takes a small share of z
}


def adaptive_job(world: World) -> Job:
    """An adaptive DP job of 10 updates a version (z = 1, seeded), at most 3 versions."""
    return world.job(
        "async",
        privacy=dp_section(noise_multiplier=1.0, clipping=ADAPTIVE, noise_seed=3),
        max_versions=3,
        weighting="uniform",
        buffer_size=10,
    )


def one_version(world: World, value: float, within: float) -> None:
    """Ten devices upload ``delta(value)`` clipped to their task's C, saying ``within``."""
    for _ in range(10):
        device = world.device()
        task = world.task(device)
        clipped, _ = clip_to_norm(np.full(NUM_PARAMS, value, np.float32), task.clip_norm or 0.0)
        world.upload(device, task, encode_vector(clipped), metrics={METRIC_WITHIN_CLIP: within})


def test_c_grows_when_every_update_was_longer_than_it_and_tasks_carry_the_new_c(world: World):
    job = adaptive_job(world)

    one_version(world, 1.0, within=0.0)  # norm 2 > C = 0.5 for all ten

    metadata = jobs.get_version(world.session, job.id, 1).privacy
    assert metadata is not None
    assert metadata["clip_norm"] == 0.5
    assert metadata["next_clip_norm"] > 0.5
    assert metadata["clipped_fraction"] == pytest.approx(1.0, abs=0.8)  # noised, σ_b/n = 0.2
    assert metadata["sum_noise_multiplier"] == pytest.approx((1 - 1 / 16) ** -0.5)
    assert world.task(world.device()).clip_norm == metadata["next_clip_norm"]


def test_c_shrinks_when_every_update_was_within_it(world: World):
    job = adaptive_job(world)

    one_version(world, 0.01, within=1.0)

    metadata = jobs.get_version(world.session, job.id, 1).privacy
    assert metadata is not None and metadata["next_clip_norm"] < 0.5


def test_an_adaptive_job_refuses_an_upload_that_does_not_say_whether_it_was_clipped(
    world: World,
):
    adaptive_job(world)
    device = world.device()
    task = world.task(device)

    with pytest.raises(InvalidUpdate, match=METRIC_WITHIN_CLIP):
        world.upload(device, task, delta(0.01))


def test_an_update_clipped_to_a_c_that_has_since_shrunk_is_scaled_down_not_refused(
    world: World,
):
    job = adaptive_job(world)
    device = world.device()
    early = world.task(device)  # C = 0.5
    one_version(world, 0.01, within=1.0)  # C shrinks
    shrunk = accounting.state_of(job).clip_norm
    at_old_c, _ = clip_to_norm(np.full(NUM_PARAMS, 1.0, np.float32), 0.5)

    receipt = world.upload(
        device, early, encode_vector(at_old_c), metrics={METRIC_WITHIN_CLIP: 0.0}
    )

    [stored] = world.session.scalars(select(Update).where(Update.lease_id == early.lease_id)).all()
    assert receipt.clipped is True
    assert l2_norm(decode_vector(get_blob(world.session, stored.delta_sha256))) <= shrunk * (
        1 + 1e-6
    )
