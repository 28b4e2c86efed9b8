"""Poisoning defences at a version's close: zeroing and robust rules, in both modes, counted."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from coordinator.config import AggregationConfig, JobCreate, refuse_hidden_updates
from coordinator.db.models import LeaseStatus, Rejection, Version
from coordinator.observability import DatabaseCollector
from tests.coordinator.services.world import INITIAL_WEIGHTS, World, delta

# A fixed zeroing norm of 1 (q̂ = 1, ×1, +0, η = 0): a delta(v) of 4 weights has norm 2|v|.
FIXED_AT_ONE = {
    "initial_estimate": 1.0,
    "learning_rate": 0.0,
    "multiplier": 1.0,
    "increment": 0.0,
}


def upload_all(world: World, bodies: list[bytes]) -> list[Any]:
    """One new device per body checks in and uploads it; the receipts, in order."""
    receipts = []
    for body in bodies:
        device = world.device()
        receipts.append(world.upload(device, world.task(device), body))
    return receipts


def version(world: World, job_id: int, number: int) -> Version:
    world.session.flush()
    return world.session.get_one(Version, (job_id, number))


def rejected_by_reason(world: World) -> dict[str, float]:
    """``fedge_updates_rejected`` as /metrics shows it, by reason."""
    world.session.flush()
    families = {family.name: family for family in DatabaseCollector(world.sessions).collect()}
    return {
        sample.labels["reason"]: sample.value
        for sample in families["fedge_updates_rejected"].samples
        if sample.name == "fedge_updates_rejected_total"
    }


def test_an_update_above_the_zeroing_norm_is_accepted_but_enters_its_version_as_zeros(
    world: World,
):
    job = world.job("async", buffer_size=3, zeroing=FIXED_AT_ONE)

    receipts = upload_all(world, [delta(0.3), delta(0.3), delta(5.0)])  # norms 0.6, 0.6, 10

    assert [r.status for r in receipts] == ["accepted"] * 3
    assert receipts[-1].global_version == 1
    # The zeroed update keeps its weight in the mean (TFF's zeroing): (0.3 + 0.3 + 0) / 3.
    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS + 0.2, rtol=1e-6)
    made = version(world, job.id, 1)
    assert made.defences == {
        "zeroed": 1,
        "zeroing_norm": 1.0,
        "next_zeroing_estimate": 1.0,
    }
    assert made.num_updates == 3


def test_a_zeroed_update_is_counted_by_its_reason_and_its_lease_stays_completed(world: World):
    world.job("async", buffer_size=2, zeroing=FIXED_AT_ONE)
    device, other = world.device(), world.device()
    task = world.task(device)
    world.upload(device, task, delta(3.0))

    world.upload(other, world.task(other), delta(0.1))

    [rejection] = world.session.scalars(select(Rejection)).all()
    assert (rejection.reason, rejection.lease_id, rejection.device_id) == (
        "zeroed",
        task.lease_id,
        device.id,
    )
    assert world.lease(task).status == LeaseStatus.COMPLETED
    assert rejected_by_reason(world) == {"zeroed": 1.0}


def test_a_version_is_judged_by_the_estimate_the_previous_version_left(world: World):
    zeroing = {"initial_estimate": 1.0, "target_quantile": 0.5, "learning_rate": 1.0}
    job = world.job("async", buffer_size=2, zeroing=zeroing)

    upload_all(world, [delta(1.0), delta(1.5)])  # norms 2 and 3: none below q̂ = 1
    first = version(world, job.id, 1).defences
    upload_all(world, [delta(0.1), delta(0.1)])
    second = version(world, job.id, 2).defences

    assert first is not None and second is not None
    assert first["zeroing_norm"] == 2.0 * 1.0 + 1.0
    assert first["next_zeroing_estimate"] == pytest.approx(np.exp(0.5))  # b̄ = 0: q̂·e^{γη}
    assert second["zeroing_norm"] == pytest.approx(2.0 * np.exp(0.5) + 1.0)


def test_zeroing_in_a_sync_round_zeroes_the_outlier_of_the_round(world: World):
    job = world.job("sync", target=3, over_selection=1.0, zeroing=FIXED_AT_ONE)

    upload_all(world, [delta(0.3), delta(-4.0), delta(0.3)])

    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS + 0.2, rtol=1e-6)
    assert version(world, job.id, 1).defences["zeroed"] == 1


def test_a_sync_round_with_the_median_takes_each_coordinates_middle_report(world: World):
    job = world.job("sync", target=3, over_selection=1.0, weighting="uniform", robust="median")

    upload_all(world, [delta(0.1, 0.2, 0.3, 0.4), delta(100.0), delta(0.3, 0.1, -50.0, 0.0)])

    expected = np.median([[0.1, 0.2, 0.3, 0.4], [100.0] * 4, [0.3, 0.1, -50.0, 0.0]], axis=0)
    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS + expected, rtol=1e-6)
    assert version(world, job.id, 1).defences == {"robust": "median", "trimmed_per_side": 0}


def test_a_fedbuff_buffer_with_the_trimmed_mean_cuts_each_end_of_each_coordinate(world: World):
    job = world.job(
        "async",
        buffer_size=5,
        weighting="uniform",
        robust="trimmed_mean",
        trim_fraction=0.2,
        staleness="constant",
    )

    upload_all(world, [delta(v) for v in (0.1, 0.2, 0.3, 1e4, -1e4)])

    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS + 0.2, rtol=1e-5)
    assert version(world, job.id, 1).defences == {"robust": "trimmed_mean", "trimmed_per_side": 1}


def test_zeroing_and_the_median_compose_zeroing_first(world: World):
    job = world.job(
        "async", buffer_size=3, weighting="uniform", robust="median", zeroing=FIXED_AT_ONE
    )

    upload_all(world, [delta(0.4), delta(5.0), delta(6.0)])  # two zeroed: median of 0.4, 0, 0

    np.testing.assert_allclose(world.weights(job, 1), INITIAL_WEIGHTS, rtol=1e-6)
    assert version(world, job.id, 1).defences["zeroed"] == 2


def test_a_job_without_defences_records_none(world: World):
    job = world.job("async", buffer_size=1)

    upload_all(world, [delta(0.1)])

    assert version(world, job.id, 1).defences is None


# --- refusals -------------------------------------------------------------------------------

DP = {
    "mechanism": "gaussian",
    "noise_multiplier": 1.0,
    "delta": 1e-6,
    "epsilon_max": 10.0,
    "clipping": {"kind": "fixed", "clip_norm": 1.0},
    "participation": {"model": "capped", "population": 100_000, "window": 10},
}


def job_request(*, privacy: dict[str, Any] | None = None, **aggregation: Any) -> dict[str, Any]:
    return {
        "name": "j",
        "plan_id": 1,
        "aggregation": aggregation,
        "privacy": privacy or {},
    }


@pytest.mark.parametrize(
    "aggregation, field",
    [
        ({"weighting": "uniform", "robust": "median"}, "aggregation.robust"),
        ({"weighting": "uniform", "robust": "trimmed_mean"}, "aggregation.robust"),
        ({"weighting": "uniform", "zeroing": {}}, "aggregation.zeroing"),
    ],
)
def test_a_dp_job_with_a_defence_that_voids_its_accounting_is_refused_naming_it(aggregation, field):
    with pytest.raises(ValidationError, match=field):
        JobCreate.model_validate(job_request(privacy=DP, **aggregation))


def test_the_dp_refusal_of_a_robust_rule_says_why():
    with pytest.raises(ValidationError, match="sensitivity bound"):
        JobCreate.model_validate(job_request(privacy=DP, weighting="uniform", robust="median"))


def test_a_robust_rule_with_example_weighting_is_refused():
    with pytest.raises(ValidationError, match=r"weighting: aggregation\.robust = 'median'"):
        JobCreate.model_validate(job_request(robust="median"))


@pytest.mark.parametrize(
    "aggregation",
    [
        {"trim_fraction": 0.5},
        {"trim_fraction": -0.1},
        {"robust": "mean"},
        {"zeroing": {"target_quantile": 1.0}},
        {"zeroing": {"initial_estimate": 0}},
        {"zeroing": {"learning_rate": -1}},
        {"zeroing": {"quantile": 0.9}},
    ],
)
def test_a_defence_setting_out_of_range_is_refused(aggregation):
    with pytest.raises(ValidationError):
        JobCreate.model_validate(job_request(**aggregation))


def test_defences_without_dp_are_accepted_with_tffs_zeroing_defaults():
    request = JobCreate.model_validate(
        job_request(weighting="uniform", robust="trimmed_mean", zeroing={})
    )

    zeroing = request.aggregation.zeroing
    assert zeroing is not None
    assert (zeroing.initial_estimate, zeroing.target_quantile, zeroing.multiplier) == (
        10.0,
        0.98,
        2.0,
    )


def test_secure_aggregation_will_refuse_each_defence_that_needs_individual_updates():
    aggregation = AggregationConfig(weighting="uniform", robust="median", zeroing={})

    with pytest.raises(ValueError, match=r"aggregation\.zeroing: secure aggregation hides"):
        refuse_hidden_updates(aggregation, hidden_by="secure aggregation")
    refuse_hidden_updates(AggregationConfig(), hidden_by="secure aggregation")  # nothing to refuse
    refuse_hidden_updates(aggregation, hidden_by=None)  # nothing hides updates today
