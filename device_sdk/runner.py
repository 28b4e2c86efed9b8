"""Perform a device session's actions for real: HTTP to the coordinator, LiteRT, sleeping."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Generator
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from device_sdk.client import CoordinatorClient
from device_sdk.errors import DeviceError, TrainingError
from device_sdk.plan_runner import PlanRunner
from device_sdk.protocol import ProtocolError
from device_sdk.session import (
    Abort,
    Action,
    CheckIn,
    Download,
    Failure,
    Interrupted,
    Sleep,
    Train,
    Upload,
)
from device_sdk.trainer import LocalTrainingConfig, train_locally
from fedge.errors import ManifestError
from fedge.manifest import PlanManifest
from fedge.wire import decode_vector


class LocalRunner:
    """Performs actions for one device: its client, its examples, one cached plan runner."""

    def __init__(
        self,
        client: CoordinatorClient,
        *,
        manifest_for: Callable[[str], PlanManifest],
        x: npt.ArrayLike,
        y: npt.ArrayLike,
        rng: np.random.Generator,
        sleep: Callable[[float], None] = time.sleep,
        still_eligible: Callable[[], bool] = lambda: True,
    ) -> None:
        """``manifest_for(plan_sha256)`` supplies the manifest of a plan the server hands out."""
        self.client = client
        self.manifest_for = manifest_for
        self.x, self.y = np.asarray(x), np.asarray(y)
        self.rng = rng
        self.sleep = sleep
        self.still_eligible = still_eligible
        self._runner: tuple[str, PlanRunner] | None = None

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
        try:
            if isinstance(action, CheckIn):
                return self.client.check_in(action.facts)
            if isinstance(action, Download):
                data = self.client.download(action.url)
                if hashlib.sha256(data).hexdigest() != action.sha256:
                    return Failure(0, "corrupt_download", f"{action.what} failed its sha256 check")
                return data
            if isinstance(action, Upload):
                return self.client.upload(
                    action.task,
                    action.update,
                    num_examples=action.num_examples,
                    metrics=action.metrics,
                )
            if isinstance(action, Abort):
                self.client.abort(action.task, action.reason)
                return None
        except ProtocolError as refused:
            return Failure(refused.status, refused.reason, refused.message, refused.retry_after)
        except httpx.TransportError as lost:
            return Failure(0, "transport", str(lost))
        raise TypeError(f"unknown action {action!r}")  # pragma: no cover

    def _train(self, action: Train) -> Any:
        try:
            runner = self._plan_runner(action.task.plan_sha256, action.plan)
            weights = decode_vector(action.weights, expected_length=runner.num_params)
            hp = action.task.hparams
            config = LocalTrainingConfig(
                epochs=hp.local_epochs,
                batch_size=hp.batch_size,
                learning_rate=hp.learning_rate,
                momentum=hp.momentum,
                mu=hp.mu,
            )
            if not self.still_eligible():
                return Interrupted("not_eligible")
            return train_locally(
                runner, base_weights=weights, x=self.x, y=self.y, config=config, rng=self.rng
            )
        except TrainingError as diverged:
            return Failure(0, "diverged", str(diverged))
        except (DeviceError, ManifestError) as broken:
            return Failure(0, "bad_plan", str(broken))

    def _plan_runner(self, sha256: str, plan: bytes) -> PlanRunner:
        if self._runner is None or self._runner[0] != sha256:
            self._runner = (sha256, PlanRunner(plan, self.manifest_for(sha256)))
        return self._runner[1]
