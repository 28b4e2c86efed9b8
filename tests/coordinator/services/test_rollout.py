"""Staged rollout acting on evaluation reports: a canary widens step by step, or is rolled back."""

from __future__ import annotations

from typing import Any

from coordinator.config import JobCreate
from coordinator.db.models import Job, Stage
from coordinator.services import evaluation, jobs, registry, rollout
from fedge.protocol import EvaluationReport
from tests.coordinator.services.world import World, delta

STEPS = [0.5, 1.0]


def rolled_out_job(world: World) -> Job:
    request = JobCreate.model_validate(
        {
            "name": "rolled out",
            "plan_id": world.plan.id,
            "aggregation": {"mode": "async", "buffer_size": 1},
            "evaluation": {"fraction": 1.0, "min_reports": 2, "max_reports": 20},
            "promotion": {"auto": True, "min_mean_accuracy": 0.6, "rollout_steps": STEPS},
        }
    )
    return jobs.create_job(world.session, request, now=world.now)


def evaluate(world: World, job: Job, version: int, accuracy: float, *, times: int = 2) -> Any:
    """``times`` fresh devices evaluate ``version`` a second apart; the gates act on each."""
    for _ in range(times):
        world.clock.advance(1.0)
        device = world.device()
        task = world.task(device)
        assert (task.kind, task.global_version) == ("evaluate", version)
        body = EvaluationReport(
            global_version=version, loss=0.5, accuracy=accuracy, num_examples=20
        )
        evaluation.report(world.session, device, task.lease_id, body, now=world.now)
        decision = rollout.apply_gates(world.session, job, version, now=world.now)
    return decision


def train_next_version(world: World) -> None:
    """A device trains one version on (evaluating what it is asked to first); buffer size 1."""
    trainer = world.device()
    task = world.task(trainer)
    while task.kind == "evaluate":
        body = EvaluationReport(
            global_version=task.global_version, loss=0.5, accuracy=0.8, num_examples=20
        )
        evaluation.report(world.session, trainer, task.lease_id, body, now=world.now)
        task = world.task(trainer)
    world.upload(trainer, task, delta(0.1))


def stage_of(world: World, job: Job, version: int) -> Stage:
    return registry.entry(world.session, job.id, version).stage


def test_a_passing_version_is_a_canary_at_each_step_in_turn_then_live(world: World):
    job = rolled_out_job(world)

    evaluate(world, job, 0, 0.8)
    first = rollout.state(world.session, job)
    evaluate(world, job, 0, 0.8)
    second = rollout.state(world.session, job)
    evaluate(world, job, 0, 0.8)

    assert first is not None and (first.version, first.step, first.fraction) == (0, 0, 0.5)
    assert second is not None and (second.step, second.fraction) == (1, 1.0)
    assert registry.live_version(world.session, job.id) == 0
    reasons = [m.reason for m in registry.history(world.session, job.id)]
    assert reasons[0].startswith("canary at 50%") and reasons[1].startswith("widened to 100%")
    assert reasons[2].startswith("rollout complete")


def test_each_step_is_judged_on_its_own_reports_not_the_ones_before(world: World):
    job = rolled_out_job(world)
    evaluate(world, job, 0, 0.8)  # canary at 50 %

    decision = evaluate(world, job, 0, 0.8, times=1)

    assert decision is not None and decision.reasons == ("1 of 2 evaluation reports",)
    state = rollout.state(world.session, job)
    assert state is not None and state.step == 0


def test_a_canary_that_fails_its_step_is_rolled_back_and_the_live_version_stays(world: World):
    job = rolled_out_job(world)
    for _ in range(3):
        evaluate(world, job, 0, 0.8)  # version 0: canary, widened, live
    train_next_version(world)  # version 1, a candidate
    evaluate(world, job, 1, 0.8)  # passes as a candidate: canary at 50 %

    evaluate(world, job, 1, 0.2)  # its first step's own reports fail

    assert stage_of(world, job, 1) == Stage.RETIRED
    assert registry.live_version(world.session, job.id) == 0
    last = registry.history(world.session, job.id)[-1]
    assert (last.version, last.from_stage, last.actor) == (1, Stage.CANARY, "gate")
    assert "mean accuracy 0.2000 is below 0.6" in last.reason


def test_a_candidate_holds_while_another_version_is_out_as_a_canary(world: World):
    job = rolled_out_job(world)
    evaluate(world, job, 0, 0.8)  # version 0 is a canary
    train_next_version(world)  # version 1

    decision = evaluate(world, job, 1, 0.9)

    assert decision is not None and decision.reasons == ("version 0's rollout is in progress",)
    assert stage_of(world, job, 1) == Stage.CANDIDATE


def test_check_in_names_the_canary_to_devices_in_its_share_and_the_live_one_to_the_rest(
    world: World,
):
    job = rolled_out_job(world)
    for _ in range(3):
        evaluate(world, job, 0, 0.8)  # version 0 live
    train_next_version(world)
    evaluate(world, job, 1, 0.8)  # version 1: canary at 50 %
    fleet = [world.device() for _ in range(40)]

    served = {d.id: rollout.inference_for(world.session, d.id) for d in fleet}

    canaries = {d for d, m in served.items() if m is not None and m.stage == "canary"}
    assert canaries == {d.id for d in fleet if rollout.in_canary(job.id, 1, d.id, 0.5)}
    assert 0 < len(canaries) < len(fleet)
    for device, model in served.items():
        assert model is not None
        assert model.version == (1 if device in canaries else 0)
        assert model.model_url == f"/v1/jobs/{job.id}/versions/{model.version}/model.tflite"
        assert (
            model.weights_sha256
            == jobs.get_version(world.session, job.id, model.version).weights_sha256
        )


def test_without_a_deployed_version_a_device_is_served_no_model(world: World):
    rolled_out_job(world)

    assert rollout.inference_for(world.session, world.device().id) is None
