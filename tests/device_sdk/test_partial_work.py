"""A task's time budget on a device: train until it is spent, then hand back what there is."""

import hashlib

import numpy as np

from device_sdk.runner import LocalRunner
from device_sdk.session import Train
from device_sdk.trainer import TrainResult
from fedge.clock import ManualClock
from fedge.manifest import HyperParameters
from fedge.protocol import Task


class Ticking:
    """A clock that moves ``step`` seconds every time it is read: training takes time."""

    def __init__(self, step: float) -> None:
        self.clock, self.step = ManualClock(0.0), step

    def __call__(self) -> float:
        self.clock.advance(self.step)
        return self.clock.now()


def task_for(plan: bytes, weights: bytes, *, budget: float | None) -> Task:
    return Task(
        lease_id="lease-1",
        job_id=1,
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        plan_url="/v1/plans/x",
        global_version=0,
        weights_url="/v1/jobs/1/versions/0/weights",
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        hparams=HyperParameters(
            local_epochs=50, batch_size=10, learning_rate=0.1, momentum=0.0, mu=0.0
        ),
        deadline=1e12,
        time_budget_seconds=budget,
    )


def trained(plans_dir, *, budget: float | None) -> TrainResult:
    plan = (plans_dir / "synthetic_logreg.tflite").read_bytes()
    weights = (plans_dir / "synthetic_logreg.weights").read_bytes()
    rng = np.random.default_rng(0)
    runner = LocalRunner(
        None,  # training makes no request
        x=rng.normal(0, 1, (40, 60)).astype(np.float32),
        y=rng.integers(0, 10, 40),
        rng=np.random.default_rng(1),
        monotonic=Ticking(1.0),  # each read a second later
    )
    result = runner.perform(Train(task_for(plan, weights, budget=budget), plan, weights))
    assert isinstance(result, TrainResult), result
    return result


def test_a_device_stops_when_its_tasks_time_budget_is_spent_and_keeps_what_it_trained(plans_dir):
    result = trained(plans_dir, budget=10.0)

    assert result.metrics["partial"] == 1.0
    assert 1 <= result.metrics["steps"] < 50 * 4  # far fewer than the 200 steps asked for
    assert result.delta.any()


def test_a_task_without_a_budget_trains_every_epoch(plans_dir):
    result = trained(plans_dir, budget=None)

    assert (result.metrics["steps"], result.metrics["partial"]) == (200.0, 0.0)
