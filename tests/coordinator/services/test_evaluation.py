"""Federated evaluation at check-in and report, and the registry's gates acting on it."""

from __future__ import annotations

import math
from typing import Any

import pytest

from coordinator.db.models import Stage
from coordinator.errors import BadRequest, Conflict, Forbidden, LeaseClosed, WrongBaseVersion
from coordinator.services import evaluation, registry
from fedge.protocol import EvaluationReport, Task
from tests.coordinator.services.world import World, delta

EVERY_DEVICE = {"fraction": 1.0, "min_reports": 2, "max_reports": 3}


def evaluating_job(world: World, promotion: dict[str, Any] | None = None, **wanted: Any):
    from coordinator.config import JobCreate
    from coordinator.services import jobs

    request = JobCreate.model_validate(
        {
            "name": "evaluated",
            "plan_id": world.plan.id,
            "aggregation": {"mode": "async", "buffer_size": 1},
            "evaluation": {**EVERY_DEVICE, **wanted},
            "promotion": promotion or {},
        }
    )
    return jobs.create_job(world.session, request, now=world.now)


def report(world: World, device, task: Task, accuracy: float = 0.8, **changes: Any):
    body = EvaluationReport(
        **{
            "global_version": task.global_version,
            "loss": 0.5,
            "accuracy": accuracy,
            "num_examples": 20,
            **changes,
        }
    )
    return evaluation.report(world.session, device, task.lease_id, body, now=world.now)


def test_a_job_with_evaluation_hands_a_chosen_device_an_evaluation_task_of_its_version(
    world: World,
):
    job = evaluating_job(world)

    task = world.task(device := world.device())

    assert task.kind == "evaluate" and task.global_version == job.current_version == 0
    assert task.held_out_fraction == 0.2
    assert world.task(device).lease_id == task.lease_id  # a retried check-in: the same task


def test_a_device_evaluates_a_version_once_then_trains_and_its_training_holds_out_too(
    world: World,
):
    evaluating_job(world)
    device = world.device()
    report(world, device, world.task(device))

    task = world.task(device)

    assert task.kind == "train" and task.held_out_fraction == 0.2


def test_no_more_evaluation_tasks_of_a_version_than_max_reports(world: World):
    evaluating_job(world)

    kinds = [world.task(world.device()).kind for _ in range(4)]

    assert kinds == ["evaluate", "evaluate", "evaluate", "train"]


def test_non_trainers_skip_the_devices_whose_update_made_the_version(world: World):
    job = evaluating_job(world, on="non_trainers", fraction=1.0)
    trainer = world.device()
    report(world, trainer, world.task(trainer))  # v0 evaluated, then it trains v1
    training = world.task(trainer)
    world.upload(trainer, training, delta(0.1))
    assert world.current_version(job) == 1

    again = world.task(trainer)

    assert again.kind == "train"  # it trained version 1: it does not evaluate it
    assert world.task(world.device()).kind == "evaluate"


def test_reports_are_summarized_per_version_with_their_tiers(world: World):
    job = evaluating_job(world)
    for accuracy, tier in ((0.9, "high"), (0.5, "low"), (0.7, "high")):
        device = world.device()
        report(world, device, world.task(device), accuracy, tier=tier)

    seen = evaluation.version_evaluation(world.session, job.id, 0)

    assert seen.summary is not None and seen.summary.reports == 3
    assert seen.summary.mean_accuracy == pytest.approx(0.7)
    assert seen.summary.by_tier["high"].mean_accuracy == pytest.approx(0.8)
    assert seen.stage == Stage.CANDIDATE


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"loss": math.nan}, "finite"),
        ({"accuracy": math.inf}, "finite"),
        ({"loss": -1.0}, "negative"),
        ({"accuracy": 1.5}, r"\[0, 1\]"),
        ({"num_examples": 0}, "at least one example"),
    ],
)
def test_metrics_no_evaluation_could_produce_are_refused(world: World, changes, message):
    evaluating_job(world)
    device = world.device()

    with pytest.raises(BadRequest, match=message):
        report(world, device, world.task(device), **changes)


def test_a_report_of_another_version_another_device_or_after_the_deadline_is_refused(
    world: World,
):
    evaluating_job(world)
    device, other = world.device(), world.device()
    task = world.task(device)

    with pytest.raises(WrongBaseVersion):
        report(world, device, task, global_version=5)
    with pytest.raises(Forbidden):
        report(world, other, task)
    world.clock.advance(601.0)
    with pytest.raises(LeaseClosed):
        report(world, device, task)


def test_a_retried_report_is_acknowledged_and_counted_once(world: World):
    job = evaluating_job(world)
    device = world.device()
    task = world.task(device)

    first, again = report(world, device, task)[1], report(world, device, task, 0.1)[1]

    assert (first.status, again.status) == ("accepted", "already_accepted")
    summary = evaluation.summary_of(world.session, job.id, 0)
    assert summary is not None and summary.reports == 1 and summary.mean_accuracy == 0.8


def test_auto_gates_make_a_version_live_once_min_reports_pass_then_roll_a_bad_one_back(
    world: World,
):
    job = evaluating_job(world, promotion={"auto": True, "min_mean_accuracy": 0.6})
    for _ in range(2):
        device = world.device()
        report(world, device, world.task(device), 0.8)
        registry.apply_gates(world.session, job, 0, now=world.now)
    assert registry.live_version(world.session, job.id) == 0

    trainer = world.device()
    report(world, trainer, world.task(trainer), 0.8)  # the third evaluation of version 0
    world.upload(trainer, world.task(trainer), delta(0.1))  # version 1
    registry.promote(world.session, job.id, 1, to=Stage.LIVE, now=world.now)
    for _ in range(2):
        device = world.device()
        task = world.task(device)
        assert task.global_version == 1
        report(world, device, task, 0.3)
        registry.apply_gates(world.session, job, 1, now=world.now)

    assert registry.live_version(world.session, job.id) == 0  # rolled back
    moves = [(m.version, m.to_stage, m.actor) for m in registry.history(world.session, job.id)]
    assert moves[-2:] == [(1, Stage.RETIRED, "gate"), (0, Stage.LIVE, "gate")]


def test_admin_promotion_steps_forward_and_refuses_going_back(world: World):
    job = evaluating_job(world)

    registry.promote(world.session, job.id, 0, now=world.now)
    assert registry.entry(world.session, job.id, 0).stage == Stage.CANARY
    registry.promote(world.session, job.id, 0, now=world.now)
    assert registry.live_version(world.session, job.id) == 0
    with pytest.raises(Conflict, match="cannot be promoted"):
        registry.promote(world.session, job.id, 0, to=Stage.CANARY, now=world.now)


def test_lineage_names_parent_plan_config_digest_and_bytes(world: World):
    job = evaluating_job(world)
    trainer = world.device()
    report(world, trainer, world.task(trainer))
    world.upload(trainer, world.task(trainer), delta(0.1))

    first, second = registry.entries(world.session, job.id)

    assert (first.lineage.parent, second.lineage.parent) == (None, 0)
    assert second.lineage.plan_sha256 == world.plan.plan_sha256
    assert first.lineage.config_sha256 == second.lineage.config_sha256
    assert second.lineage.bytes > 0 and second.lineage.epsilon is None


def test_rolling_back_with_nothing_deployed_is_a_conflict(world: World):
    job = evaluating_job(world)

    with pytest.raises(Conflict, match="no canary or live"):
        registry.rollback(world.session, job.id, now=world.now)
