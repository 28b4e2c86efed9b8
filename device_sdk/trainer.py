"""Local training: E epochs of mini-batch steps over a device's examples, returning the delta.

A task may carry a time budget (``Task.time_budget_seconds``): the device then trains until its
epochs are done or the budget is spent, and uploads what it has, with the number of local steps
it took (``metrics["steps"]``). That is the partial work FedProx folds in (Li et al., MLSys 2020,
§3: a straggler's fewer local iterations are a γ-inexact solution, still averaged), and the
step count is what FedNova normalises by (Wang et al., NeurIPS 2020). A
:class:`TrainingBudget` says between steps whether another may start: :class:`TimeBudget` on
the device's clock, :class:`ExampleBudget` in examples (the simulator's, charged in virtual time
from the device's speed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from device_sdk.errors import PlanError, TrainingError
from device_sdk.plan_runner import EvalResult, FloatArray, PlanRunner
from fedge.manifest import HyperParameters


@dataclass(frozen=True)
class TrainResult:
    """What a device uploads after training: the weight delta, its example count, metrics."""

    delta: FloatArray
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


class TrainingBudget(Protocol):
    """Whether local training may take another step, asked before every step but the first."""

    def allows(self, examples_trained: int) -> bool:
        """True while another step fits, ``examples_trained`` examples into the training."""
        ...


@dataclass(frozen=True)
class ExampleBudget:
    """At most ``max_examples`` examples trained (steps are whole batches; None: no limit)."""

    max_examples: int | None

    def allows(self, examples_trained: int) -> bool:
        """True while fewer than ``max_examples`` examples were trained."""
        return self.max_examples is None or examples_trained < self.max_examples


@dataclass(frozen=True)
class TimeBudget:
    """``seconds`` of training on ``clock``, counted from ``started``."""

    seconds: float
    started: float
    clock: Callable[[], float]

    @classmethod
    def starting_now(cls, seconds: float, *, clock: Callable[[], float]) -> TimeBudget:
        """A budget of ``seconds`` from the clock's present reading."""
        return cls(seconds, clock(), clock)

    def allows(self, examples_trained: int) -> bool:
        """True while the budget's seconds have not run out."""
        return self.clock() - self.started < self.seconds


def train_locally(
    runner: PlanRunner,
    *,
    base_weights: FloatArray,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    hparams: HyperParameters,
    rng: np.random.Generator,
    budget: TrainingBudget | None = None,
) -> TrainResult:
    """Train from ``base_weights`` for ``hparams.local_epochs`` epochs, shuffling with ``rng``.

    ``hparams`` are the task's (:class:`fedge.manifest.HyperParameters`, the one definition:
    the plan's defaults, or the server's per task). With a ``budget`` training stops early
    once it is spent (never before the first step): the metrics say how much was done
    (``steps``, ``examples_trained``, ``epochs``) and ``partial`` is 1.0.

    The last batch of an epoch may be smaller than ``batch_size`` (plans take a dynamic batch).
    Raises :class:`TrainingError` if the loss or the weights stop being finite, so that a
    diverged update never leaves the device.
    """
    if hparams.local_epochs < 1 or hparams.batch_size < 1:
        raise PlanError("local_epochs and batch_size must be at least 1")
    xs, ys = np.asarray(x), np.asarray(y)
    num_examples = int(xs.shape[0])
    if num_examples == 0:
        raise PlanError("cannot train on zero examples")
    runner.set_weights(base_weights)
    runner.set_anchor(base_weights)
    runner.set_hparams(
        learning_rate=hparams.learning_rate, momentum=hparams.momentum, mu=hparams.mu
    )

    started = time.perf_counter()
    steps, trained_examples, epoch_loss, stopped = 0, 0, 0.0, False
    for _ in range(hparams.local_epochs):
        order = rng.permutation(num_examples)
        loss_sum, seen = 0.0, 0
        for start in range(0, num_examples, hparams.batch_size):
            if budget is not None and steps > 0 and not budget.allows(trained_examples):
                stopped = True
                break
            batch = order[start : start + hparams.batch_size]
            loss = runner.train_step(xs[batch], ys[batch])
            if not np.isfinite(loss):
                raise TrainingError(f"loss became {loss} at step {steps}: training diverged")
            loss_sum += loss * len(batch)
            seen += len(batch)
            steps += 1
            trained_examples += len(batch)
        if seen:  # the mean over the last epoch's examples, a partial one's included
            epoch_loss = loss_sum / seen
        if stopped:
            break
    trained = runner.get_weights()
    if not np.isfinite(trained).all():
        raise TrainingError("weights became non-finite: training diverged")
    return TrainResult(
        delta=trained - base_weights,
        num_examples=num_examples,
        metrics={
            "train_loss": epoch_loss,
            "steps": float(steps),
            "examples_trained": float(trained_examples),
            "epochs": trained_examples / num_examples,
            "partial": 1.0 if stopped else 0.0,
            "seconds": time.perf_counter() - started,
        },
    )


def evaluate(
    runner: PlanRunner, x: npt.ArrayLike, y: npt.ArrayLike, *, batch_size: int = 256
) -> EvalResult:
    """Loss and accuracy of the runner's current weights over a whole dataset."""
    xs, ys = np.asarray(x), np.asarray(y)
    total = int(xs.shape[0])
    if total == 0:
        raise PlanError("cannot evaluate on zero examples")
    loss_sum, correct = 0.0, 0
    for start in range(0, total, batch_size):
        loss, hits = runner.evaluate_batch(
            xs[start : start + batch_size], ys[start : start + batch_size]
        )
        loss_sum += loss * len(xs[start : start + batch_size])
        correct += hits
    return EvalResult(loss=loss_sum / total, accuracy=correct / total, num_examples=total)
