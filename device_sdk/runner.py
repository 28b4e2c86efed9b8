"""Perform a device session's actions for real: HTTP to the coordinator, LiteRT, sleeping.

Besides :class:`LocalRunner`, :func:`train_task` (the one way a device trains a task, shared
with the durable runner and the simulator's workers) and :func:`describe_plan`, which reads a
plan's manifest off its own signatures when no manifest came with it. Requests go through
:func:`device_sdk.client.attempt`; heartbeats follow :class:`device_sdk.session.Heartbeats`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import numpy.typing as npt

from device_sdk.client import CoordinatorClient, attempt
from device_sdk.errors import DeviceError, TrainingError
from device_sdk.evaluation import evaluate_task, training_split
from device_sdk.plan_runner import PlanRunner
from device_sdk.runtime import load_interpreter_class
from device_sdk.session import (
    Abort,
    Action,
    CheckIn,
    Download,
    Evaluate,
    Failure,
    Heartbeats,
    Interrupted,
    Report,
    Sleep,
    Train,
    Upload,
)
from device_sdk.trainer import TimeBudget, TrainingBudget, TrainResult, train_locally
from fedge.errors import ManifestError, WireFormatError
from fedge.logs import native_chatter_dropped
from fedge.manifest import HyperParameters, PlanManifest, TensorSpec, WeightSlice
from fedge.protocol import Reason, Task
from fedge.wire import decode_vector

Examples = tuple[npt.NDArray[Any], npt.NDArray[Any]]


class LocalRunner:
    """Performs actions for one device: its client, its examples, one cached plan runner."""

    def __init__(
        self,
        client: CoordinatorClient,
        *,
        manifest_for: Callable[[str], PlanManifest] | None = None,
        x: npt.ArrayLike | None = None,
        y: npt.ArrayLike | None = None,
        examples: Callable[[], Examples] | None = None,
        rng: np.random.Generator,
        sleep: Callable[[float], None] = time.sleep,
        still_eligible: Callable[[], bool] = lambda: True,
        interruption: Callable[[], str | None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Perform actions with ``client`` and the device's examples.

        ``manifest_for(plan_sha256)`` supplies the manifest of a plan the server hands out;
        without it the manifest is read off the plan (:func:`describe_plan`). The examples are
        ``x`` and ``y``, or ``examples()`` read afresh for every task. ``interruption()`` is
        asked before training and between its steps; a reason (``"battery"``, ``"timeout"``…)
        stops the training as :class:`Interrupted`. Without it, ``still_eligible()`` is asked.
        A task that asks for heartbeats gets one every ``heartbeat_seconds`` (by
        ``monotonic()``, from the check-in that handed it out), sent between training steps; a
        closed lease stops the training as ``Interrupted(Reason.LEASE_CLOSED)``.
        """
        if examples is None:
            if x is None or y is None:
                raise TypeError("pass x and y, or examples")
            fixed = (np.asarray(x), np.asarray(y))

            def examples() -> Examples:
                return fixed

        if interruption is None:

            def interruption() -> str | None:
                return None if still_eligible() else "not_eligible"

        self.client = client
        self.manifest_for = manifest_for
        self.examples = examples
        self.rng = rng
        self.sleep = sleep
        self.interruption = interruption
        self.monotonic = monotonic
        self._task_at = -math.inf  # when the last check-in answered: a task's heartbeat clock
        self._runner: tuple[str, _WatchedPlanRunner] | None = None

    def run(self, session: Generator[Action, Any, Any]) -> Any:
        """Drive ``session`` to its end; return what it returns."""
        result: Any = None
        try:
            while True:
                action = session.send(result)
                result = self.perform(action)
        except StopIteration as done:
            return done.value

    def perform(self, action: Action) -> Any:
        """Do one action and return its result; protocol and transport errors become Failures."""
        if isinstance(action, Sleep):
            self.sleep(action.seconds)
            return None
        if isinstance(action, Train):
            return self._train(action)
        if isinstance(action, CheckIn):
            answer = attempt(lambda: self.client.check_in(action.facts))
            if not isinstance(answer, Failure):
                self._task_at = self.monotonic()
            return answer
        if isinstance(action, Download):
            data = attempt(lambda: self.client.download(action.url))
            if isinstance(data, bytes) and hashlib.sha256(data).hexdigest() != action.sha256:
                return Failure(0, "corrupt_download", f"{action.what} failed its sha256 check")
            return data
        if isinstance(action, Upload):
            return attempt(
                lambda: self.client.upload(
                    action.task,
                    action.update,
                    num_examples=action.num_examples,
                    metrics=action.metrics,
                )
            )
        if isinstance(action, Abort):
            aborted = attempt(lambda: self.client.abort(action.task, action.reason, action.detail))
            return aborted if isinstance(aborted, Failure) else None
        if isinstance(action, Evaluate):
            return self._evaluate(action)
        if isinstance(action, Report):
            return attempt(lambda: self.client.report_evaluation(action.task, action.report))
        raise TypeError(f"unknown action {action!r}")  # pragma: no cover

    def _train(self, action: Train) -> Any:
        try:
            runner = self._plan_runner(action.task.plan_sha256, action.plan)
        except (DeviceError, ManifestError) as broken:
            return Failure(0, "bad_plan", str(broken))
        watch = self._heartbeats(action.task, since=self._task_at)
        if (reason := watch()) is not None:
            return Interrupted(reason)
        x, y = self.examples()
        runner.watch = watch
        seconds = action.task.time_budget_seconds
        budget = None if seconds is None else TimeBudget.starting_now(seconds, clock=self.monotonic)
        try:
            return train_task(
                runner,
                weights=action.weights,
                x=x,
                y=y,
                task=action.task,
                rng=self.rng,
                budget=budget,
            )
        except _Stop as stopped:
            return Interrupted(stopped.reason)
        finally:
            runner.watch = None

    def _evaluate(self, action: Evaluate) -> Any:
        try:
            runner = self._plan_runner(action.task.plan_sha256, action.plan)
        except (DeviceError, ManifestError) as broken:
            return Failure(0, "bad_plan", str(broken))
        x, y = self.examples()
        return evaluate_task(runner, weights=action.weights, x=x, y=y, task=action.task)

    def _heartbeats(self, task: Task, *, since: float) -> Callable[[], str | None]:
        """The between-steps check: ``interruption()``, plus the lease's heartbeats if asked.

        When a beat is due and what its answer means is the session's
        :class:`~device_sdk.session.Heartbeats`; ``since`` is when the task was handed out.
        """
        beats = Heartbeats.for_task(task, handed_out=since)
        if beats.interval is None:
            return self.interruption

        def watch() -> str | None:
            if (reason := self.interruption()) is not None:
                return reason
            if not beats.is_due(now := self.monotonic()):
                return None
            beats.sent(now)
            if not Heartbeats.lease_alive(attempt(lambda: self.client.heartbeat(task))):
                return Reason.LEASE_CLOSED
            return None

        return watch

    def _plan_runner(self, sha256: str, plan: bytes) -> _WatchedPlanRunner:
        if self._runner is None or self._runner[0] != sha256:
            self._runner = None  # let the old interpreter go before loading the next
            manifest = self.manifest_for(sha256) if self.manifest_for else describe_plan(plan)
            self._runner = (sha256, _WatchedPlanRunner(plan, manifest))
        return self._runner[1]


class _Stop(Exception):
    """Stops ``train_locally`` between steps; caught in ``LocalRunner._train``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _WatchedPlanRunner(PlanRunner):
    """A plan runner that asks ``watch`` before every training step whether to stop.

    This is how training stops between batches without a hook in ``train_locally``.
    """

    watch: Callable[[], str | None] | None = None

    def train_step(self, x: npt.ArrayLike, y: npt.ArrayLike) -> float:
        """One step, unless ``watch`` names a reason to stop (raised as ``_Stop``)."""
        if self.watch is not None and (reason := self.watch()) is not None:
            raise _Stop(reason)
        return super().train_step(x, y)


def train_task(
    runner: PlanRunner,
    *,
    weights: bytes,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    task: Task,
    rng: np.random.Generator,
    budget: TrainingBudget | None = None,
) -> TrainResult | Failure:
    """Train ``task`` from its encoded base ``weights``: the result a session's Train expects.

    Divergence and a plan or weights that do not fit become Failures, never exceptions; the
    agent, the scripted runner and the simulator's workers all train through here. ``budget``
    is the task's time budget on the performer's clock (a device's, or the simulator's in
    examples); None trains every epoch. A task that holds examples out
    for evaluation (``held_out_fraction``) trains on the rest.
    """
    x, y = training_split(x, y, task.held_out_fraction)
    try:
        base = decode_vector(weights, expected_length=runner.num_params)
        return train_locally(
            runner,
            base_weights=base,
            x=x,
            y=y,
            hparams=task.hparams,
            rng=rng,
            budget=budget,
        )
    except TrainingError as diverged:
        return Failure(0, "diverged", str(diverged))
    except (DeviceError, ManifestError, WireFormatError) as broken:
        return Failure(0, "bad_plan", str(broken))


def describe_plan(plan: bytes) -> PlanManifest:
    """A manifest read off a plan's own signatures: input shape, classes, weight count.

    The device protocol hands out a plan's bytes, not its manifest; what a device needs to
    drive the plan is in its signatures (``train``'s ``x``, ``infer``'s probabilities,
    ``set_weights``'s vector). The layout is one slice and the hyper-parameters are
    placeholders: a task always carries its own.
    """
    _, interpreter_class = load_interpreter_class()
    try:
        with native_chatter_dropped():  # LiteRT's "Created ... XNNPACK delegate" line
            interpreter = interpreter_class(model_content=plan)
            x = interpreter.get_signature_runner("train").get_input_details()["x"]
            probabilities = interpreter.get_signature_runner("infer").get_output_details()
            runner = interpreter.get_signature_runner("set_weights")
            weights = runner.get_input_details()["weights"]
        feature_shape = tuple(int(d) for d in x["shape_signature"][1:])
        num_classes = int(probabilities["probabilities"]["shape_signature"][-1])
        num_params = int(weights["shape_signature"][0])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise ManifestError(f"the plan does not expose Fedge's signatures: {exc!r}") from exc
    sha256 = hashlib.sha256(plan).hexdigest()
    return PlanManifest(
        name=f"plan-{sha256[:12]}",
        version="",
        plan_file="",
        plan_sha256=sha256,
        plan_bytes=len(plan),
        inputs={
            "x": TensorSpec(shape=(None, *feature_shape), dtype="float32"),
            "y": TensorSpec(shape=(None,), dtype="int32"),
        },
        num_classes=num_classes,
        num_params=num_params,
        weights_layout=(WeightSlice("weights", (num_params,), 0, num_params),),
        optimizer="",
        hparams=HyperParameters(learning_rate=0.01),
        initial_weights_file="",
        initial_weights_sha256="",
        created_by="described on the device from the plan's signatures",
    )
