"""Local training: E epochs of mini-batch steps over a device's examples, returning the delta."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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


def train_locally(
    runner: PlanRunner,
    *,
    base_weights: FloatArray,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    hparams: HyperParameters,
    rng: np.random.Generator,
) -> TrainResult:
    """Train from ``base_weights`` for ``hparams.local_epochs`` epochs, shuffling with ``rng``.

    ``hparams`` are the task's (:class:`fedge.manifest.HyperParameters`, the one definition:
    the plan's defaults, or the server's per task).

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
    steps, epoch_loss = 0, 0.0
    for _ in range(hparams.local_epochs):
        order = rng.permutation(num_examples)
        loss_sum = 0.0
        for start in range(0, num_examples, hparams.batch_size):
            batch = order[start : start + hparams.batch_size]
            loss = runner.train_step(xs[batch], ys[batch])
            if not np.isfinite(loss):
                raise TrainingError(f"loss became {loss} at step {steps}: training diverged")
            loss_sum += loss * len(batch)
            steps += 1
        epoch_loss = loss_sum / num_examples
    trained = runner.get_weights()
    if not np.isfinite(trained).all():
        raise TrainingError("weights became non-finite: training diverged")
    return TrainResult(
        delta=trained - base_weights,
        num_examples=num_examples,
        metrics={
            "train_loss": epoch_loss,
            "steps": float(steps),
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
