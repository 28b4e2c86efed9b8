"""The crash-safe runner: the agent's task record kept in step with the session's actions.

A task left recorded by a crash or a power cut resumes as its record says
(:attr:`~device_sdk.state.TaskRecord.on_resume`): a trained update is uploaded again byte for
byte (the coordinator acknowledges a repeat of an accepted update and counts it once), an
interrupted training is reported aborted, an acknowledged one is forgotten. The device never
trains twice for one lease and never sends a second, different update for it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from importlib import metadata
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from device_sdk.client import CoordinatorClient, attempt
from device_sdk.downloads import BlobDownloader
from device_sdk.eligibility import BATTERY, USER_ACTIVITY, Probe, ProbeError
from device_sdk.example_store import ExampleSource, ExampleStoreError
from device_sdk.runner import Examples, LocalRunner
from device_sdk.runtime import load_interpreter_class
from device_sdk.session import Abort, Action, CheckIn, Download, Failure, Sleep, Train, Upload
from device_sdk.state import AgentState, StateCorruptError, StateError, StateStore, TaskRecord
from device_sdk.trainer import TrainResult
from fedge.protocol import AbortReason, EligibilityFacts, RetryWindow, Task, UploadReceipt
from fedge.wire import decode_vector

if TYPE_CHECKING:
    from device_sdk.agent import AgentConfig

log = logging.getLogger("fedge.device")


class Stopped(Exception):
    """Unwinds the session after the agent was told to stop; :meth:`Agent.run` catches it."""


class DurableRunner(LocalRunner):
    """A LocalRunner that keeps the agent's crash-safe record between the session's actions.

    The record follows the session: a task is recorded when handed out, its update saved
    before the first upload attempt, and the record cleared on the receipt, on an abort, or
    when the session checks in again (it gave the task up). A task resumed for upload is
    *replayed* through the session — its first check-in answered with the recorded task, its
    downloads with nothing, its training with the saved update — so that the session's own
    upload retries serve it, and every attempt sends the saved bytes.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        store: StateStore,
        probe: Probe,
        stopping: threading.Event,
        examples: ExampleSource,
        client: CoordinatorClient,
        http: httpx.Client,
        rng: np.random.Generator,
    ) -> None:
        """Perform for an agent with ``config``, keeping its record in ``store``.

        ``probe`` reads eligibility; once ``stopping`` is set the next action unwinds the
        session (:class:`Stopped`), except an abort, which is still reported.
        """
        super().__init__(
            client,
            manifest_for=config.manifest_for,
            examples=self._examples,
            rng=rng,
            sleep=self._sleep,
            interruption=self._interruption,
        )
        self.config, self.store, self.probe, self.stopping = config, store, probe, stopping
        self.source = examples
        self.downloads = BlobDownloader(
            http,
            self.store.directory / "downloads",
            token=lambda: client.token,
            max_bytes=config.max_download_bytes,
        )
        self.runtime, _ = load_interpreter_class()
        self.sdk_version = _sdk_version()
        self.state = self._load_state()
        self._replay: TaskRecord | None = None  # a trained task being uploaded after a restart
        self._task_started: float | None = None
        self._last_reading = -float("inf")
        self._cannot_train: str | None = None  # why the device may not ask for a task now
        self._idle: tuple[int, str] | None = None  # why the next sleep waits, and how loudly
        self.stopped_tasks = 0  # tasks cut short because the agent was told to stop

    # --- what the session asks of the device ----------------------------------------------

    def facts(self) -> EligibilityFacts:
        """Read the device for a check-in; remember why it may not train, if so."""
        self._last_reading = self.config.clock.now()
        try:
            eligibility = self.probe.snapshot()
            count = self.source.count()
        except (ProbeError, ExampleStoreError) as unreadable:
            self._cannot_train = f"the device cannot be read: {unreadable}"
            return EligibilityFacts(num_examples=0)
        if self.config.max_examples is not None:
            count = min(count, self.config.max_examples)
        self._cannot_train = (
            self._ineligible(eligibility.reasons)
            if not eligibility.eligible
            else "no examples to train on"
            if count < 1
            else None
        )
        return eligibility.to_facts(
            num_examples=count, runtime=self.runtime, sdk_version=self.sdk_version
        )

    def _ineligible(self, reasons: list[str]) -> str:
        """Why the probe says no, which probe said it, and what a person may do about it."""
        config = self.config
        label = config.probe_label or type(self.probe).__name__
        hint = f"; {config.ineligible_hint}" if config.ineligible_hint else ""
        return f"ineligible: {', '.join(reasons)} (probe {label}){hint}"

    def _examples(self) -> Examples:
        x, y = self.source.load()
        limit = self.config.max_examples
        return (x[-limit:], y[-limit:]) if limit is not None else (x, y)

    def _sleep(self, seconds: float) -> None:
        if self.config.sleep is not None:
            self.config.sleep(seconds)
        else:
            self.stopping.wait(seconds)

    def _interruption(self) -> str | None:
        """Why training must stop now, if it must: a stop, the time budget, eligibility."""
        if self.stopping.is_set():
            return "other"
        now = self.config.clock.now()
        if self._task_started is not None and now - self._task_started >= self.config.task_budget_s:
            return "timeout"
        if now - self._last_reading < self.config.eligibility_check_s:
            return None
        self._last_reading = now
        try:
            eligibility = self.probe.snapshot()
        except ProbeError as unreadable:
            log.warning("cannot read the device mid-training: %s", unreadable)
            return None
        # The load average now counts our own training: it must not read as a user.
        if eligibility.eligible_without(USER_ACTIVITY):
            return None
        lost = [reason for reason in eligibility.reasons if reason != USER_ACTIVITY]
        log.info("eligibility lost mid-training: %s", ", ".join(lost))
        return BATTERY if lost[0] == BATTERY else "not_eligible"

    # --- performing actions, recording the task between them -------------------------------

    def perform(self, action: Action) -> Any:
        """Perform ``action`` (see :class:`LocalRunner`), keeping the task record in step."""
        if self.stopping.is_set() and not isinstance(action, Abort):
            raise Stopped
        if isinstance(action, Sleep):
            self._explain(action)
        if isinstance(action, CheckIn):
            return self._check_in(action)
        if isinstance(action, Download):
            return self._download(action)
        if isinstance(action, Train):
            return self._train_task(action)
        if isinstance(action, Upload):
            return self._upload(action)
        result = super().perform(action)
        if isinstance(action, Abort):
            detail = f" ({action.detail})" if action.detail else ""
            log.info("aborted lease %s: %s%s", action.task.lease_id, action.reason, detail)
            if self.stopping.is_set():
                self.stopped_tasks += 1
            self._forget_task()
        return result

    def resume(self) -> None:
        """Carry on from a task a crash left recorded, as its record says."""
        record = self.state.task if self.state is not None else None
        if record is None:
            return
        lease = record.task.lease_id
        reason: AbortReason = "other"
        detail = "the agent restarted mid-task"
        if record.on_resume == "upload":
            try:
                self.store.read_update(record)
            except StateError as lost:
                log.error("lease %s cannot be resumed: %s", lease, lost)
                reason = "error"
                detail = "its saved update was lost"
            else:
                log.info("resuming lease %s: uploading its saved update again", lease)
                self._replay = record
                self._task_started = self.config.clock.now()
                return
        if record.on_resume != "forget":
            log.info("reporting the abort of lease %s: %s", lease, detail)
            answer = attempt(lambda: self.client.abort(record.task, reason, detail))
            if isinstance(answer, Failure):
                log.warning("could not report the abort of lease %s: %s", lease, answer)
        self._forget_task()

    def _check_in(self, action: CheckIn) -> Any:
        if self._replay is not None:  # answer the session with the task being resumed
            return self._replay.task
        self._forget_task()  # the session has finished with the last task, however it ended
        if self._cannot_train is not None:
            low, high = self.config.ineligible_wait_s
            self._idle = (logging.INFO, self._cannot_train)
            return RetryWindow(min=low, max=high, reason=self._cannot_train)
        result = self._ask(action)
        if isinstance(result, Task):
            assert self.state is not None
            self.state = self.state.begin(result)
            self.store.save(self.state)
            self._task_started = self.config.clock.now()
            log.info("task: lease %s of job %d", result.lease_id, result.job_id)
        elif isinstance(result, RetryWindow):
            self._idle = (logging.INFO, f"no task yet ({result.reason})")
        else:
            self._idle = (logging.WARNING, self._unanswered(result))
        return result

    def _ask(self, action: CheckIn) -> Task | RetryWindow | Failure:
        """Register if need be, then check in; a forgotten token registers again, once."""
        if self.state is None and (failed := self._register()) is not None:
            return failed
        result: Task | RetryWindow | Failure = super().perform(action)
        if isinstance(result, Failure) and result.status == 401:
            # Once per check-in: a server that refuses new tokens too meets the backoff.
            log.warning("the server does not know this device (%s): registering again", result)
            if (failed := self._register()) is not None:
                return failed
            result = super().perform(action)
        return result

    def _unanswered(self, failure: Failure) -> str:
        """A failed check-in or registration in words a person can act on."""
        if failure.status == 0:
            return f"coordinator unreachable at {self.config.server_url}: {failure.message}"
        return (
            f"check-in refused by {self.config.server_url}: {failure.status} {failure.reason}"
            f"{': ' + failure.message if failure.message else ''}"
        )

    def _explain(self, action: Sleep) -> None:
        """Log why the device idles, once per idle spell, with the time until it asks again."""
        if self._idle is None:
            log.debug("waiting %s: %s", _duration(action.seconds), action.reason)
            return
        level, why = self._idle
        self._idle = None
        log.log(level, "%s; checking in again in %s", why, _duration(action.seconds))

    def _download(self, action: Download) -> Any:
        if self._replay is not None:
            return b""  # the resumed task's update is saved: it needs neither blob
        if action.what == "plan":
            try:
                cached = self.store.plans.get(action.sha256)
            except StateError:
                cached = None  # not a sha256: the download refuses it
            if cached is not None:
                log.debug("plan %s from the cache", action.sha256[:12])
                return cached
        data = attempt(lambda: self.downloads.fetch(action.url, action.sha256))
        if isinstance(data, Failure) and data.reason == "transport":
            log.warning("download of the %s broke off: %s", action.what, data.message)
        if isinstance(data, bytes) and action.what == "plan":
            try:
                self.store.plans.put(action.sha256, data)
            except StateError as full:
                log.warning("plan not cached: %s", full)
        return data

    def _train_task(self, action: Train) -> Any:
        if self._replay is not None:  # hand the session the update trained before the crash
            update = self.store.read_update(self._replay)
            return TrainResult(
                delta=decode_vector(update),
                num_examples=self._replay.num_examples,
                metrics=self._replay.metrics,
            )
        log.info("training lease %s", action.task.lease_id)
        result = super().perform(action)
        if isinstance(result, TrainResult):
            log.info(
                "trained lease %s on %d examples: loss %.4g",
                action.task.lease_id,
                result.num_examples,
                result.metrics.get("train_loss", float("nan")),
            )
        return result

    def _upload(self, action: Upload) -> Any:
        assert self.state is not None and self.state.task is not None
        if self.state.task.phase == "downloaded":  # first attempt: keep the bytes, then send
            self.state = self.store.save_trained(
                self.state, action.update, num_examples=action.num_examples, metrics=action.metrics
            )
        record = self.state.task
        assert record is not None
        self._replay = None
        # Every attempt sends the bytes saved, which a retry after a restart sends too.
        update = self.store.read_update(record)
        result = super().perform(
            replace(action, update=update, num_examples=record.num_examples, metrics=record.metrics)
        )
        if isinstance(result, UploadReceipt):
            log.info(
                "uploaded lease %s: %s, now at version %d",
                result.lease_id,
                result.status,
                result.global_version,
            )
            self._forget_task()
        else:
            log.warning("upload of lease %s failed: %s", record.task.lease_id, result)
        return result

    # --- the record ------------------------------------------------------------------------

    def _load_state(self) -> AgentState | None:
        try:
            state = self.store.load()
        except StateCorruptError as broken:
            log.error("%s", broken)
            return None
        if state is not None and state.server_url.rstrip("/") != self.config.server_url.rstrip("/"):
            log.warning(
                "%s was registered with %s, not %s: registering again",
                self.store.directory,
                state.server_url,
                self.config.server_url,
            )
            if state.task is not None:
                self.store.clear_task(state)
            return None
        if state is not None:
            self.client.token = state.token
        return state

    def _register(self) -> Failure | None:
        registered = attempt(
            lambda: self.client.register(runtime=self.runtime, sdk_version=self.sdk_version)
        )
        if isinstance(registered, Failure):
            return registered
        device_id, token = registered
        if self.state is not None and self.state.task is not None:
            self.store.clear_task(self.state)  # the old identity's task: not ours any more
        self.state = AgentState(device_id=device_id, token=token, server_url=self.config.server_url)
        self.store.save(self.state)
        log.info("registered with %s as device %s", self.config.server_url, device_id)
        return None

    def _forget_task(self) -> None:
        if self.state is not None and self.state.task is not None:
            self.state = self.store.clear_task(self.state)
        self.downloads.clear()
        self._replay = None
        self._task_started = None


def _duration(seconds: float) -> str:
    """A wait as a person reads it: ``4.2 s``, ``27 min``, ``3.5 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _sdk_version() -> str:
    try:
        return metadata.version("fedge")
    except metadata.PackageNotFoundError:
        return ""
