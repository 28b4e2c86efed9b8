"""Partial work in synchronous rounds: the time budget on the task, FedNova's weighting."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from coordinator.config import JobCreate
from tests.coordinator.services.world import INITIAL_WEIGHTS, World, delta

# Ten epochs of ten batches of ten: a full task is 100 steps of plain SGD (a = steps).
TASK = {
    "local_epochs": 10,
    "batch_size": 10,
    "momentum": 0.0,
    "mu": 0.0,
    "time_budget_seconds": 30.0,
}


def round_of(world: World, normalization: str, reports: list[tuple[float, dict]]):
    """A round of ``len(reports)`` devices, each uploading a delta of one value and metrics."""
    job = world.job(
        "sync",
        target=len(reports),
        over_selection=1.0,
        normalization=normalization,
        task=TASK,
    )
    devices = [world.device() for _ in reports]
    tasks = [world.task(device) for device in devices]
    for device, task, (value, metrics) in zip(devices, tasks, reports, strict=True):
        world.upload(device, task, delta(value), num_examples=100, metrics=metrics)
    assert world.current_version(job) == 1
    return world.weights(job, 1) - INITIAL_WEIGHTS, tasks


def test_a_task_carries_the_jobs_time_budget(world: World):
    _, tasks = round_of(world, "none", [(0.1, {"steps": 100.0})])

    assert tasks[0].time_budget_seconds == 30.0


def test_fednova_weighs_a_partial_update_by_its_local_steps(world: World):
    # one device did all 100 steps, one stopped after 10 on its time budget
    moved, _ = round_of(world, "fednova", [(1.0, {"steps": 100.0}), (0.5, {"steps": 10.0})])

    a = np.array([100.0, 10.0])
    deltas = np.array([1.0, 0.5])
    expected = a.mean() * np.mean(deltas / a)  # τ_eff · Σ pᵢ Δᵢ/aᵢ, equal pᵢ
    np.testing.assert_allclose(moved, expected, rtol=1e-6)


def test_without_normalization_partial_updates_enter_the_weighted_mean_as_fedprox_has_it(
    world: World,
):
    moved, _ = round_of(world, "none", [(1.0, {"steps": 100.0}), (0.5, {"steps": 10.0})])

    np.testing.assert_allclose(moved, 0.75, rtol=1e-6)


@pytest.mark.parametrize(
    ("metrics", "counted"),
    [
        ({}, 100),  # an older device: the full task
        ({"steps": "many"}, 100),
        ({"steps": 1e9}, 100),  # no more than the task asked for
        ({"steps": 0.0}, 1),  # at least one step
    ],
)
def test_a_missing_or_implausible_step_count_is_read_within_the_task(
    world: World, metrics, counted
):
    moved, _ = round_of(world, "fednova", [(1.0, {"steps": 100.0}), (0.5, metrics)])

    a = np.array([100.0, counted])
    expected = a.mean() * np.mean(np.array([1.0, 0.5]) / a)
    np.testing.assert_allclose(moved, expected, rtol=1e-6)


def test_fednova_is_refused_for_an_asynchronous_job_by_name():
    with pytest.raises(ValidationError, match="normalization 'fednova'"):
        JobCreate.model_validate(
            {
                "name": "j",
                "plan_id": 1,
                "aggregation": {"mode": "async", "normalization": "fednova"},
            }
        )
