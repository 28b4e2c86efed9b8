"""The simulated fleet: the device SDK's session for each busy device, performed in virtual time.

Every device runs :func:`device_sdk.session.device_session` — the code a real device runs — and
the fleet performs the actions it yields:

- ``CheckIn``, ``Download``, ``Upload`` and ``Abort`` are real requests to the real coordinator
  (its ASGI app in this process, or a live server), made at the virtual moment the device would
  make them; an upload reaches the server when its transfer ends, so arrival order comes from the
  devices' speeds and the protocol, never from knowing in advance who will finish;
- ``Train`` runs real LiteRT training on the device's examples (on a worker), while its duration
  comes from the device model;
- ``Evaluate`` (an evaluation task) runs the plan's ``evaluate`` signature on the device's
  held-out split on the same workers, charged a forward pass per example (a third of a training
  step's time); ``Report`` posts its metrics to the real coordinator;
- ``Sleep`` advances virtual time; after a retry window the device is parked (its session is
  closed and restarted on waking, which is where a sleeping session would resume anyway).

Dropout is data: each task draws a :class:`~simulator.population.Fate` when it starts, and a
device that drops simply stops — no abort, no upload — and its lease expires on the server.
Losing the eligibility window mid-training is different: the session sees ``Interrupted`` and
reports the abort, as a real device does. A task that asks for heartbeats gets them when the
session's :class:`~device_sdk.session.Heartbeats` policy says they are due — the policy the
device runner follows — sent at those virtual moments; a refused one (the round reached its
target, the lease expired) stops the training there. Every request goes through
:func:`device_sdk.client.attempt`, which maps refusals and lost connections to the session's
``Failure`` as it does on a device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device_sdk.client import CoordinatorClient, attempt
from device_sdk.evaluation import held_out_count
from device_sdk.session import (
    Abort,
    Action,
    Backoff,
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
    device_session,
)
from device_sdk.trainer import TrainResult
from fedge.protocol import (
    EligibilityFacts,
    EvaluationReceipt,
    Reason,
    RetryWindow,
    Task,
    UploadReceipt,
)
from simulator.events import Event, EventKind, EventQueue
from simulator.population import Fate, Population
from simulator.training import Trainers, TrainTask

RUNTIME = "ai_edge_litert"
SDK_VERSION = "fedge-sim"
# An evaluation costs a forward pass per example: about a third of a training step (forward,
# backward, update), so it is charged a third of the device's time per training example.
EVALUATION_COST = 1.0 / 3.0
# A poisoned update (``poisoned_version``): the honest delta flipped and scaled, a classic
# model-poisoning attack (sign flipping; Fang et al., USENIX Security 2020).
POISON_SCALE = -10.0


@dataclass
class Busy:
    """A device between waking and parking: its session and the task it holds."""

    device: int
    session: Generator[Action, Any, Any]
    rng: np.random.Generator
    last: Any = None
    task: Task | None = None
    fate: Fate | None = None
    step: int = 0  # actions performed: an event scheduled for an earlier one is void
    task_at: float = 0.0  # when the task was handed out: its heartbeats count from there
    beats: Heartbeats | None = None  # the task's heartbeat policy, from its training on


@dataclass(frozen=True, slots=True)
class Pending:
    """What a busy device's event carries: the device, a value for it, and when it was due.

    ``step`` is the device's action count when the event was scheduled; once the device has
    moved on (or dropped, or parked) the event is void.
    """

    busy: Busy
    value: Any
    step: int


@dataclass
class FleetStats:
    """What the fleet saw, for the report."""

    check_ins: int = 0
    tasks: int = 0
    trained: int = 0  # local trainings actually run (real LiteRT compute)
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    aborted: Counter[str] = field(default_factory=Counter)
    crashed_after_upload: int = 0
    heartbeats: int = 0
    cut: int = 0  # trainings stopped by a refused heartbeat (round closed, lease expired)
    failures: Counter[str] = field(default_factory=Counter)
    bytes_up: float = 0.0
    bytes_down: float = 0.0
    bytes_up_by_codec: Counter[str] = field(default_factory=Counter)
    uploads_by_codec: Counter[str] = field(default_factory=Counter)
    staleness: list[int] = field(default_factory=list)
    check_ins_by_hour: list[int] = field(default_factory=lambda: [0] * 24)
    tasks_by_hour: list[int] = field(default_factory=lambda: [0] * 24)
    evaluations: int = 0  # evaluation tasks run (real LiteRT evaluate, on held-out examples)
    evaluations_reported: int = 0  # their metrics accepted by the coordinator
    poisoned: int = 0  # updates replaced by poisoned ones (``poisoned_version``)

    @property
    def updates_lost(self) -> int:
        """Trained updates that never reached the server (dropped during upload)."""
        return self.dropped["upload"]


class Fleet:
    """Performs the sessions of a population against one coordinator, in virtual time."""

    def __init__(
        self,
        population: Population,
        *,
        client: CoordinatorClient,
        trainers: Trainers,
        blobs: Path,
        now: Callable[[], float],
        seed: int,
        start: float,
        first_check_in_spread: float = 600.0,
        poisoned_version: int | None = None,
    ) -> None:
        """Perform ``population``'s sessions; ``poisoned_version`` makes one version bad.

        Every update trained from the version before ``poisoned_version`` is poisoned (flipped
        and scaled, :data:`POISON_SCALE`), so that version is deliberately bad.
        """
        self.population = population
        self.client = client
        self.trainers = trainers
        self.blobs = blobs
        self.now = now
        self.seed = seed
        self.start = start
        self.poisoned_version = poisoned_version
        self.queue = EventQueue(population.size)
        self.busy: dict[int, Busy] = {}
        self.stats = FleetStats()
        self._cdn: dict[str, int] = {}  # sha256 -> size of blobs already fetched once
        self._plan_ids: dict[str, int] = {}
        self._leases: set[str] = set()
        rng = np.random.default_rng([seed, 3])
        offsets = rng.uniform(0.0, first_check_in_spread, population.size)
        for device in range(population.size):
            first = population.next_window(device, start + float(offsets[device]))
            if math.isfinite(first):
                self.queue.park(device, first)

    # --- the loop ---------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Process one device's event (the clock already reads ``event.when``)."""
        kind = event.kind
        if kind is EventKind.WAKE:
            self._wake(event.device, event.when)
            return
        pending: Pending = event.payload
        busy = pending.busy
        if self.busy.get(event.device) is not busy or pending.step != busy.step:
            return  # the device dropped, parked or moved on since this was scheduled
        if kind is EventKind.RESUME:
            self._advance(busy, pending.value)
        elif kind is EventKind.TRAINED:
            self.stats.trained += 1
            self._advance(busy, self._poisoned(busy, self.trainers.result(pending.value)))
        elif kind is EventKind.EVALUATED:
            self.stats.evaluations += 1
            self._advance(busy, self.trainers.result(pending.value))
        elif kind is EventKind.ARRIVE:
            self._arrive(busy, pending.value)
        elif kind is EventKind.DROP:
            self._drop(busy, pending.value)
        elif kind is EventKind.BEAT:
            self._beat(busy, pending.value)
        else:
            raise ValueError(f"{kind} is not a device's event")

    def _wake(self, device: int, when: float) -> None:
        population = self.population
        if population.gone[device] or self.queue.wake_at[device] != when:
            return
        if not population.available(device, when):
            back = population.next_window(device, when)
            if math.isfinite(back):
                self.queue.park(device, back)
            return
        population.sessions[device] += 1
        rng = np.random.default_rng([self.seed, 5, device, int(population.sessions[device])])
        facts = EligibilityFacts(
            num_examples=int(population.num_examples[device]),
            free_memory_mb=float(population.memory_mb[device]),
            # The device's measured link (the agent measures its own transfers): kbit/s → B/s.
            uplink_bytes_per_second=float(population.up_kbps[device]) * 125.0,
            downlink_bytes_per_second=float(population.down_kbps[device]) * 125.0,
            runtime=RUNTIME,
            sdk_version=SDK_VERSION,
        )
        tiers = population.config.tiers
        tier = int(population.tier[device])
        session = device_session(
            lambda: facts,
            rng=rng,
            now=self.now,
            backoff=Backoff(base=2.0, cap=600.0),
            tier=tiers[tier].name if tier < len(tiers) else "",
        )
        busy = Busy(device, session, rng)
        self.busy[device] = busy
        self._advance(busy, None)

    def _advance(self, busy: Busy, result: Any) -> None:
        busy.step += 1
        busy.last = result
        try:
            action = busy.session.send(result)
        except StopIteration:  # pragma: no cover - sessions without max_tasks never end
            self._park(busy, math.inf)
            return
        self._perform(busy, action)

    def _later(self, busy: Busy, seconds: float, kind: EventKind, value: Any = None) -> None:
        if seconds < 0:
            raise ValueError(f"device {busy.device}: an event {seconds} s in the past")
        pending = Pending(busy, value, busy.step)
        self.queue.push(Event(self.now() + seconds, kind, busy.device, pending))

    # --- actions ----------------------------------------------------------------------------

    def _perform(self, busy: Busy, action: Action) -> None:
        device, now = busy.device, self.now()
        rtt = float(self.population.rtt_s[device])
        if isinstance(action, CheckIn):
            if not self.population.available(device, now):
                self._park(busy, self.population.next_window(device, now))
                return
            answer = self._call(device, lambda: self.client.check_in(action.facts))
            self.stats.check_ins += 1
            self.stats.check_ins_by_hour[int(((now - self.start) % 86400) // 3600)] += 1
            if isinstance(answer, Task):
                busy.task, busy.fate = answer, self.population.fate(busy.rng)
                busy.task_at = now
                if answer.lease_id not in self._leases:  # not a lease handed back on return
                    self._leases.add(answer.lease_id)
                    self.stats.tasks += 1
                    self.population.tasks[device] += 1
                    self.stats.tasks_by_hour[int(((now - self.start) % 86400) // 3600)] += 1
            self._later(busy, rtt, EventKind.RESUME, answer)
        elif isinstance(action, Sleep):
            if isinstance(busy.last, RetryWindow):
                self._park(busy, now + action.seconds)
            else:
                self._later(busy, action.seconds, EventKind.RESUME)
        elif isinstance(action, Download):
            self._download(busy, action, rtt)
        elif isinstance(action, Train):
            self._train(busy, action)
        elif isinstance(action, Upload):
            seconds = rtt + len(action.update) * 8 / 1000 / float(self.population.up_kbps[device])
            fate = busy.fate
            if fate is not None and fate.drop_phase == "upload":
                self.stats.bytes_up += fate.drop_fraction * len(action.update)
                self._later(busy, fate.drop_fraction * seconds, EventKind.DROP, "upload")
            else:
                self._later(busy, seconds, EventKind.ARRIVE, action)
        elif isinstance(action, Evaluate):
            self._evaluate(busy, action)
        elif isinstance(action, Report):
            receipt = self._call(
                device, lambda: self.client.report_evaluation(action.task, action.report)
            )
            if isinstance(receipt, EvaluationReceipt) and receipt.status == "accepted":
                self.stats.evaluations_reported += 1
            self._later(busy, rtt, EventKind.RESUME, receipt)
        elif isinstance(action, Abort):
            self.stats.aborted[action.reason] += 1
            self._call(device, lambda: self.client.abort(action.task, action.reason, action.detail))
            self._later(busy, rtt, EventKind.RESUME)

    def _download(self, busy: Busy, action: Download, rtt: float) -> None:
        device = busy.device
        size = self._cdn.get(action.sha256)
        if size is None:
            data = self._call(device, lambda: self.client.download(action.url))
            if isinstance(data, Failure):
                self._later(busy, rtt, EventKind.RESUME, data)
                return
            if hashlib.sha256(data).hexdigest() != action.sha256:
                failure = Failure(0, "corrupt_download", f"{action.what} failed its sha256 check")
                self._later(busy, rtt, EventKind.RESUME, failure)
                return
            (self.blobs / action.sha256).write_bytes(data)
            size = self._cdn[action.sha256] = len(data)
        plan_id = self._plan_ids.setdefault(action.sha256, len(self._plan_ids))
        cached = action.what == "plan" and self.population.plan_cached[device] == plan_id
        seconds = (
            0.0 if cached else rtt + size * 8 / 1000 / float(self.population.down_kbps[device])
        )
        fate = busy.fate
        if fate is not None and fate.drop_phase == "download" and action.what == "weights":
            self.stats.bytes_down += fate.drop_fraction * size
            self._later(busy, fate.drop_fraction * seconds, EventKind.DROP, "download")
            return
        if not cached:
            self.stats.bytes_down += size
        if action.what == "plan":
            self.population.plan_cached[device] = plan_id
        # The bytes were verified when first fetched and sit in the blob folder, where the
        # trainers read them by sha256; the session only passes them on to Train, so it gets an
        # empty stand-in instead of a copy per device.
        self._later(busy, seconds, EventKind.RESUME, b"")

    def _train(self, busy: Busy, action: Train) -> None:
        device, now = busy.device, self.now()
        task = action.task
        examples = int(self.population.num_examples[device])
        budget, seconds = self._budget(device, task, examples)
        # The window may have closed while the plan and weights were downloading.
        closes = self.population.window_end(device, now)
        if not self.population.available(device, now):
            closes = now
        fate = busy.fate
        beats = busy.beats = Heartbeats.for_task(task, handed_out=busy.task_at)
        # Due already if the downloads took an interval or more.
        if beats.is_due(now) and not self._heartbeat(busy, beats):
            rtt = float(self.population.rtt_s[device])
            self._later(busy, rtt, EventKind.RESUME, Interrupted(Reason.LEASE_CLOSED))
            return
        if fate is not None and fate.drop_phase == "training":
            working = fate.drop_fraction * seconds
            self._later(busy, working, EventKind.DROP, "training")
        elif now + seconds > closes:  # charger unplugged or the user came back: abort, report it
            working = closes - now
            self._later(busy, working, EventKind.RESUME, Interrupted("user_activity"))
        else:
            working = seconds
            # LocalTrainers train when the result is read, so a training cut short costs nothing.
            count = int(self.population.tasks[device])
            handle = self.trainers.submit(
                TrainTask(
                    device=device,
                    task=task,
                    seed=(self.seed, 9, device, count),
                    max_examples=budget,
                )
            )
            self._later(busy, seconds, EventKind.TRAINED, handle)
        if beats.due < now + working:
            self._later(busy, beats.due - now, EventKind.BEAT, now + working)

    def _evaluate(self, busy: Busy, action: Evaluate) -> None:
        """An evaluation task: real LiteRT ``evaluate`` on a worker, charged a forward pass."""
        device, now = busy.device, self.now()
        task = action.task
        examples = int(self.population.num_examples[device])
        held = held_out_count(examples, task.held_out_fraction) if task.held_out_fraction else 0
        seconds = (
            (held or examples)
            * float(self.population.ms_per_example[device])
            * EVALUATION_COST
            / 1000
        )
        closes = self.population.window_end(device, now)
        if not self.population.available(device, now):
            closes = now
        fate = busy.fate
        if fate is not None and fate.drop_phase == "training":
            self._later(busy, fate.drop_fraction * seconds, EventKind.DROP, "evaluation")
        elif now + seconds > closes:  # the window closed: nothing to report (the lease lapses)
            interrupted = Failure(0, "interrupted", "eligibility lost during evaluation")
            self._later(busy, max(0.0, closes - now), EventKind.RESUME, interrupted)
        else:
            count = int(self.population.tasks[device])
            handle = self.trainers.submit(
                TrainTask(device=device, task=task, seed=(self.seed, 11, device, count))
            )
            self._later(busy, seconds, EventKind.EVALUATED, handle)

    def _poisoned(self, busy: Busy, result: Any) -> Any:
        """``result``, poisoned if it was trained from the version before ``poisoned_version``."""
        target = self.poisoned_version
        task = busy.task
        if target is None or task is None or task.global_version != target - 1:
            return result
        if not isinstance(result, TrainResult):
            return result
        self.stats.poisoned += 1
        return dataclasses.replace(result, delta=result.delta * POISON_SCALE)

    def _budget(self, device: int, task: Task, examples: int) -> tuple[int | None, float]:
        """The examples ``task``'s time budget lets ``device`` train, and the seconds it trains."""
        ms = float(self.population.ms_per_example[device])
        budget = budgeted_examples(
            examples,
            epochs=task.hparams.local_epochs,
            batch_size=task.hparams.batch_size,
            ms_per_example=ms,
            budget_seconds=task.time_budget_seconds,
        )
        trained = examples * task.hparams.local_epochs if budget is None else budget
        return budget, trained * ms / 1000

    def _beat(self, busy: Busy, working_until: float) -> None:
        """A heartbeat mid-training: carry on, or stop if the server closed the lease."""
        beats = busy.beats
        assert beats is not None and beats.interval is not None
        if not self._heartbeat(busy, beats):
            self._advance(busy, Interrupted(Reason.LEASE_CLOSED))
            return
        if beats.due < working_until:  # same step: training stays due
            self._later(busy, beats.interval, EventKind.BEAT, working_until)

    def _heartbeat(self, busy: Busy, beats: Heartbeats) -> bool:
        """Send one heartbeat for the task at hand, as ``beats`` has it; False: lease closed."""
        task = busy.task
        assert task is not None
        self.stats.heartbeats += 1
        beats.sent(self.now())
        answer = self._call(busy.device, lambda: self.client.heartbeat(task))
        if not Heartbeats.lease_alive(answer):
            self.stats.cut += 1
            return False
        return True

    def _arrive(self, busy: Busy, upload: Upload) -> None:
        device = busy.device
        self.stats.bytes_up += len(upload.update)
        self.stats.bytes_up_by_codec[upload.task.codec] += len(upload.update)
        self.stats.uploads_by_codec[upload.task.codec] += 1
        receipt = self._call(
            device,
            lambda: self.client.upload(
                upload.task, upload.update, num_examples=upload.num_examples, metrics=upload.metrics
            ),
        )
        if isinstance(receipt, UploadReceipt):
            if receipt.status == "accepted":
                self.stats.accepted += 1
                self.population.contributions[device] += 1
                self.stats.staleness.append(receipt.staleness)
        elif isinstance(receipt, Failure) and not receipt.retryable:
            self.stats.rejected[receipt.reason] += 1
        fate = busy.fate
        if fate is not None and fate.crash_after_upload:
            self.stats.crashed_after_upload += 1
            self._drop(busy, "after_upload")
            return
        self._later(busy, float(self.population.rtt_s[device]) / 2, EventKind.RESUME, receipt)

    # --- leaving ----------------------------------------------------------------------------

    def _park(self, busy: Busy, until: float) -> None:
        busy.session.close()
        del self.busy[busy.device]
        if math.isfinite(until):
            self.queue.park(busy.device, until)

    def _drop(self, busy: Busy, phase: str) -> None:
        device = busy.device
        self.stats.dropped[phase] += 1
        if busy.rng.random() < self.population.config.never_return:
            self.population.gone[device] = True
            self._park(busy, math.inf)
            return
        # Back after an outage of about an hour, at its next eligibility window.
        back = self.now() + float(busy.rng.exponential(3600.0))
        self._park(busy, self.population.next_window(device, back))

    def _call(self, device: int, request: Callable[[], Any]) -> Any:
        """Make one request as ``device``; refusals and lost connections become Failures."""
        token = self.population.token[device]
        if not token:
            self.client.token = None
            registered = attempt(
                lambda: self.client.register(runtime=RUNTIME, sdk_version=SDK_VERSION)
            )
            if isinstance(registered, Failure):
                return Failure(0, "transport", f"registration failed: {registered.message}")
            self.population.token[device] = token = registered[1].encode()
        self.client.token = token.decode()
        answer = attempt(request)
        if isinstance(answer, Failure):
            self.stats.failures[answer.reason] += 1
        return answer


def budgeted_examples(
    examples: int,
    *,
    epochs: int,
    batch_size: int,
    ms_per_example: float,
    budget_seconds: float | None,
) -> int | None:
    """Examples a device trains within ``budget_seconds`` at its speed; None: every epoch fits.

    Charged in virtual time: a step starts while the budget lasts (so the last one ends just
    past it) and at least one step is taken, as ``device_sdk.trainer`` does on a device; the
    count is whole batches, an epoch's last one short. The trainer, given this count as its
    :class:`~device_sdk.trainer.ExampleBudget`, takes exactly those steps.
    """
    if budget_seconds is None or examples * epochs * ms_per_example / 1000 <= budget_seconds:
        return None
    full_epochs, rest = divmod(budget_seconds * 1000 / ms_per_example, examples)
    steps = int(full_epochs) * math.ceil(examples / batch_size) + math.ceil(rest / batch_size)
    return _examples_in_steps(max(steps, 1), examples, batch_size)


def _examples_in_steps(steps: int, examples: int, batch: int) -> int:
    """Examples trained in ``steps`` steps of ``batch``, epochs of ``examples`` (last short)."""
    per_epoch = math.ceil(examples / batch)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * examples + min(rest * batch, examples)
