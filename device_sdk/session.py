"""The device's protocol logic, written once and free of I/O (sans-IO).

:func:`device_session` is a generator: it yields *actions* — check in, sleep, download, train,
upload, abort — and receives each action's *result*. :mod:`device_sdk.runner` performs them
with HTTP, LiteRT and real sleeps; the simulator performs the very same actions in virtual
time. Failures come back as results (a :class:`Failure`), never as exceptions thrown into the
generator, so every retry decision lives here, where it can be tested step by step:

- a retry window is honoured with uniform jitter inside it (pace steering);
- transport failures and 5xx back off exponentially with full jitter, capped; ``Retry-After``
  (429, 503) is honoured;
- an upload is retried until its lease deadline (it is idempotent per lease), then given up;
- a refused upload (409 stale, expired lease, 400 invalid) is not retried;
- losing eligibility mid-training aborts the task and reports the abort;
- a lease the server closed mid-training (a refused heartbeat) ends the task quietly.

Heartbeats are sent by the performer between training steps, where the session cannot see;
:class:`Heartbeats` is the policy they ask: when the next beat is due (one interval after the
task was handed out, then one interval after each beat) and what an answer means (403, 404 or
409: the lease is gone, stop; anything else, a lost request included: carry on).
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from device_sdk.clipping import clip_to_norm
from device_sdk.trainer import TrainResult
from fedge.codecs import CodecError
from fedge.protocol import (
    LEASE_GONE,
    METRIC_WITHIN_CLIP,
    AbortReason,
    EligibilityFacts,
    EvaluationReceipt,
    EvaluationReport,
    Reason,
    RetryWindow,
    Task,
    UploadReceipt,
)
from fedge.wire import encode_update, encode_vector

FLOAT32 = "float32"

# --- actions a session yields ---------------------------------------------------------------


@dataclass(frozen=True)
class CheckIn:
    """Ask for a task. Result: a Task, a RetryWindow, or a Failure."""

    facts: EligibilityFacts


@dataclass(frozen=True)
class Sleep:
    """Wait. Result: None."""

    seconds: float
    reason: str


@dataclass(frozen=True)
class Download:
    """Fetch a plan or weights. Result: bytes (sha256-verified by the performer) or a Failure."""

    url: str
    sha256: str
    what: Literal["plan", "weights"]


@dataclass(frozen=True)
class Train:
    """Train the task locally. Result: a TrainResult, an Interrupted, or a Failure."""

    task: Task
    plan: bytes
    weights: bytes


@dataclass(frozen=True)
class Upload:
    """Upload an encoded delta. Result: an UploadReceipt or a Failure."""

    task: Task
    update: bytes
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Abort:
    """Tell the coordinator the task is given up. Result: None or a Failure (ignored).

    ``detail`` says why in words (a plan the runtime cannot load names its cause), for the
    server's operator; ``reason`` stays one of the protocol's :data:`AbortReason` values.
    """

    task: Task
    reason: AbortReason
    detail: str = ""


@dataclass(frozen=True)
class Evaluate:
    """Evaluate the task's version (an evaluation task). Result: an EvalResult or a Failure."""

    task: Task
    plan: bytes
    weights: bytes


@dataclass(frozen=True)
class Report:
    """Send an evaluation's metrics (never data). Result: an EvaluationReceipt or a Failure."""

    task: Task
    report: EvaluationReport


Action = CheckIn | Sleep | Download | Train | Upload | Abort | Evaluate | Report


# --- results that are not protocol messages -------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """An action that failed: ``status`` 0 for transport errors, else the HTTP status."""

    status: int
    reason: str
    message: str = ""
    retry_after: float | None = None

    @property
    def retryable(self) -> bool:
        """Transport errors, 429 and 5xx may succeed later; other 4xx will not."""
        return self.status == 0 or self.status == 429 or self.status >= 500


@dataclass(frozen=True)
class Interrupted:
    """Training stopped early: eligibility lost (battery, user, heat), or the lease closed.

    ``Reason.LEASE_CLOSED`` is the reason when a heartbeat was refused: the server already
    closed the lease, so there is nothing to abort.
    """

    reason: str


@dataclass
class Heartbeats:
    """A task's heartbeat policy: when the next beat is due, and whether its answer stops it.

    The first beat is due one interval after the task was handed out: the lease's grace covers
    the downloads, and a short training may need none at all. Each beat makes the next due one
    interval after it. A task that asks for none (``heartbeat_seconds`` None) is never due.
    """

    interval: float | None
    due: float = math.inf

    @classmethod
    def for_task(cls, task: Task, *, handed_out: float) -> Heartbeats:
        """The policy of ``task``, handed out at ``handed_out`` (the performer's clock)."""
        interval = task.heartbeat_seconds
        return cls(interval, math.inf if interval is None else handed_out + interval)

    def is_due(self, now: float) -> bool:
        """Whether a heartbeat should be sent at ``now``."""
        return now >= self.due

    def sent(self, now: float) -> None:
        """A heartbeat goes out at ``now``: the next is due one interval later."""
        if self.interval is not None:
            self.due = now + self.interval

    @staticmethod
    def lease_alive(answer: object) -> bool:
        """Whether training may go on after a heartbeat answered ``answer``.

        Only a refusal that means the lease is gone (:data:`LEASE_GONE`) stops it; a lost
        request does not: the lease survives missed beats, and the upload will tell.
        """
        return not (isinstance(answer, Failure) and answer.status in LEASE_GONE)


# --- the session ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt k waits uniform(0, min(cap, base·2^k)).

    Full jitter spreads a fleet's retries out after an outage (AWS Architecture Blog,
    "Exponential Backoff And Jitter", 2015).
    """

    base: float = 1.0
    cap: float = 300.0

    def delay(self, attempt: int, rng: np.random.Generator) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return float(rng.uniform(0.0, min(self.cap, self.base * 2.0**attempt)))


@dataclass
class SessionStats:
    """What a session did, for logs, tests and the simulator's reports."""

    check_ins: int = 0
    tasks: int = 0
    uploads_accepted: int = 0
    uploads_refused: int = 0
    aborts: int = 0
    failures: int = 0
    receipts: list[UploadReceipt] = field(default_factory=list)
    evaluations_reported: int = 0


def device_session(
    facts: Callable[[], EligibilityFacts],
    *,
    rng: np.random.Generator,
    now: Callable[[], float],
    stats: SessionStats | None = None,
    max_tasks: int | None = None,
    backoff: Backoff | None = None,
    tier: str = "",
) -> Generator[Action, Any, SessionStats]:
    """Run the device protocol until ``max_tasks`` tasks have ended (forever if None).

    ``tier`` names the device's class (e.g. ``"low"``) in its evaluation reports, if known.
    """
    stats = stats if stats is not None else SessionStats()
    backoff = backoff or Backoff()
    failures = 0
    while max_tasks is None or stats.tasks < max_tasks:
        stats.check_ins += 1
        answer = yield CheckIn(facts())
        if isinstance(answer, Failure):
            stats.failures += 1
            yield Sleep(_wait(answer, failures, backoff, rng), f"check-in failed: {answer.reason}")
            failures += 1
            continue
        failures = 0
        if isinstance(answer, RetryWindow):
            yield Sleep(float(rng.uniform(answer.min, answer.max)), answer.reason)
            continue
        task: Task = answer
        stats.tasks += 1
        yield from _run_task(task, rng=rng, now=now, stats=stats, backoff=backoff, tier=tier)
    return stats


def _run_task(
    task: Task,
    *,
    rng: np.random.Generator,
    now: Callable[[], float],
    stats: SessionStats,
    backoff: Backoff,
    tier: str = "",
) -> Generator[Action, Any, None]:
    blobs: dict[str, bytes] = {}
    for what, url, sha in (
        ("plan", task.plan_url, task.plan_sha256),
        ("weights", task.weights_url, task.weights_sha256),
    ):
        attempt = 0
        while True:
            result = yield Download(url, sha, what)  # type: ignore[arg-type]
            if isinstance(result, bytes):
                blobs[what] = result
                break
            stats.failures += 1
            if not result.retryable or now() >= task.deadline:
                if task.kind != "evaluate":  # an evaluation lease holds no slot: it lapses
                    yield Abort(
                        task, "error", f"download of the {what} failed: {_describe(result)}"
                    )
                stats.aborts += 1
                return
            yield Sleep(_wait(result, attempt, backoff, rng), f"download failed: {result.reason}")
            attempt += 1

    if task.kind == "evaluate":
        yield from _evaluate(task, blobs, rng=rng, now=now, stats=stats, backoff=backoff, tier=tier)
        return
    outcome = yield Train(task, blobs["plan"], blobs["weights"])
    if isinstance(outcome, Interrupted) and outcome.reason == Reason.LEASE_CLOSED:
        stats.uploads_refused += 1  # its round closed or it expired: the server let it go
        return
    if isinstance(outcome, Failure):  # a plan the runtime cannot load, a divergence...
        cause: AbortReason = "bad_plan" if outcome.reason == "bad_plan" else "error"
        yield Abort(task, cause, _describe(outcome))
        stats.aborts += 1
        return
    if isinstance(outcome, Interrupted):
        yield Abort(task, _abort_reason(outcome.reason))
        stats.aborts += 1
        return
    trained: TrainResult = outcome
    update = _update(task, trained, rng)
    if update is None:  # not finite: no clip norm can bound it, and the server would refuse it
        yield Abort(task, "error")
        stats.aborts += 1
        return
    attempt = 0
    while True:
        result = yield update
        if isinstance(result, UploadReceipt):
            stats.uploads_accepted += 1
            stats.receipts.append(result)
            return
        stats.failures += 1
        if not result.retryable:  # stale, expired, invalid: retrying cannot help
            stats.uploads_refused += 1
            return
        if now() >= task.deadline:  # the lease is gone; the server has freed the slot
            stats.uploads_refused += 1
            return
        yield Sleep(_wait(result, attempt, backoff, rng), f"upload failed: {result.reason}")
        attempt += 1


def _evaluate(
    task: Task,
    blobs: dict[str, bytes],
    *,
    rng: np.random.Generator,
    now: Callable[[], float],
    stats: SessionStats,
    backoff: Backoff,
    tier: str,
) -> Generator[Action, Any, None]:
    """An evaluation task: evaluate the version, report its metrics until the deadline.

    A failed evaluation is not reported (nor aborted: the lease holds no slot and lapses); a
    refused report is not retried, a lost one is, as an upload is.
    """
    measured = yield Evaluate(task, blobs["plan"], blobs["weights"])
    if isinstance(measured, Failure) or not (
        math.isfinite(measured.loss) and math.isfinite(measured.accuracy)
    ):
        stats.failures += 1
        return
    report = EvaluationReport(
        global_version=task.global_version,
        loss=float(measured.loss),
        accuracy=float(measured.accuracy),
        num_examples=int(measured.num_examples),
        tier=tier,
    )
    attempt = 0
    while True:
        result = yield Report(task, report)
        if isinstance(result, EvaluationReceipt):
            stats.evaluations_reported += 1
            return
        stats.failures += 1
        if not result.retryable or now() >= task.deadline:
            return
        yield Sleep(_wait(result, attempt, backoff, rng), f"report failed: {result.reason}")
        attempt += 1


def _update(task: Task, trained: TrainResult, rng: np.random.Generator) -> Upload | None:
    """The upload of ``trained``: clipped to the task's ``clip_norm`` first, if it has one.

    This is the one place a device encodes its delta, so every performer (the runner, the
    durable runner, the simulator's fleet) clips and compresses the same way (DP-FedAvg,
    McMahan et al., ICLR 2018). None for a delta with non-finite values, which cannot be
    clipped or encoded.
    """
    delta, metrics = trained.delta, dict(trained.metrics)
    if task.clip_norm is not None:
        try:
            delta, norm = clip_to_norm(delta, task.clip_norm)
        except ValueError:
            return None
        metrics[METRIC_WITHIN_CLIP] = 1.0 if norm <= task.clip_norm else 0.0
    try:
        body = encode(delta, task, rng)
    except CodecError:
        return None
    return Upload(task, body, trained.num_examples, metrics)


def encode(delta: npt.NDArray[np.float32], task: Task, rng: np.random.Generator) -> bytes:
    """``delta`` in the task's codec under its seed (fedge.wire format 2; rounding from ``rng``).

    float32 goes as a plain format-1 vector, which every coordinator reads.
    """
    if task.codec == FLOAT32:
        return encode_vector(delta)
    return encode_update(delta, task.codec, seed=task.codec_seed, rng=rng)


def _abort_reason(reason: str) -> AbortReason:
    """The protocol's abort reason for an interruption (``other`` for one it has no name for)."""
    for known in typing.get_args(AbortReason):
        if reason == known:
            return typing.cast(AbortReason, known)
    return "other"


def _describe(failure: Failure) -> str:
    """A failure in words for an abort's detail: its reason, then the message that explains it."""
    return f"{failure.reason}: {failure.message}" if failure.message else failure.reason


def _wait(failure: Failure, attempt: int, backoff: Backoff, rng: np.random.Generator) -> float:
    if failure.retry_after is not None:
        return failure.retry_after
    return backoff.delay(attempt, rng)
