"""A device's held-out split and its evaluation of a task's version: metrics, never data.

The split is by index: the last ``ceil(f · n)`` examples are held out (at least one, and at
least one left to train on), so training tasks and evaluation tasks of a job agree on it
without the device storing anything.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from device_sdk.errors import DeviceError
from device_sdk.plan_runner import EvalResult, PlanRunner
from device_sdk.session import Failure
from device_sdk.trainer import evaluate
from fedge.errors import ManifestError, WireFormatError
from fedge.protocol import Task
from fedge.wire import decode_vector

Examples = tuple[npt.NDArray[Any], npt.NDArray[Any]]


def held_out_count(num_examples: int, fraction: float | None) -> int:
    """How many of ``num_examples`` a task holding out ``fraction`` sets aside (0 for None)."""
    if fraction is None or num_examples < 2:
        return 0
    return min(max(1, math.ceil(fraction * num_examples)), num_examples - 1)


def training_split(x: npt.ArrayLike, y: npt.ArrayLike, fraction: float | None) -> Examples:
    """The examples a task trains on: all but the held-out ones."""
    xs, ys = np.asarray(x), np.asarray(y)
    held = held_out_count(len(xs), fraction)
    return (xs[: len(xs) - held], ys[: len(ys) - held]) if held else (xs, ys)


def evaluation_split(x: npt.ArrayLike, y: npt.ArrayLike, fraction: float | None) -> Examples:
    """The examples an evaluation task runs on: the held-out ones, or all for None."""
    xs, ys = np.asarray(x), np.asarray(y)
    if fraction is None:
        return xs, ys
    held = held_out_count(len(xs), fraction)
    return xs[len(xs) - held :], ys[len(ys) - held :]


def evaluate_task(
    runner: PlanRunner, *, weights: bytes, x: npt.ArrayLike, y: npt.ArrayLike, task: Task
) -> EvalResult | Failure:
    """Run the plan's ``evaluate`` signature on the task's version: the session's Evaluate result.

    A device with nothing to evaluate (no held-out example), a plan or weights that do not fit
    become Failures, never exceptions.
    """
    xs, ys = evaluation_split(x, y, task.held_out_fraction)
    if len(xs) == 0:
        return Failure(0, "no_examples", "no held-out examples to evaluate on")
    try:
        runner.set_weights(decode_vector(weights, expected_length=runner.num_params))
        return evaluate(runner, xs, ys)
    except (DeviceError, ManifestError, WireFormatError) as broken:
        return Failure(0, "bad_plan", str(broken))
