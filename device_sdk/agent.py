"""The long-running device agent: register once, check in when told, train when eligible, upload.

:class:`Agent` composes pieces that are each tested on their own:

- :func:`~device_sdk.session.device_session` decides the protocol: retry windows, backoff with
  jitter, ``Retry-After``, when to give a task up;
- a :class:`~device_sdk.durable.DurableRunner` performs its actions, and records the task in
  the agent's :class:`~device_sdk.state.StateStore` between them::

      check in ─ task ─▶ record it ─▶ download (plan cache; resumable) ─▶ train (eligibility
      and time budget asked between steps) ─▶ keep the update's bytes, record it trained ─▶
      upload those bytes until acknowledged ─▶ clear ─▶ check in again

- an eligibility :class:`~device_sdk.eligibility.Probe` gates check-ins (an ineligible device
  does not ask; it waits) and training (losing eligibility aborts the task and reports it);
- examples are read afresh for each task from an example store
  (:func:`~device_sdk.example_store.open_examples`).

On start, a task left recorded by a crash or a power cut resumes as its record says (see
:mod:`device_sdk.durable`): the device never trains twice for one lease and never sends a
second, different update for it.

A host app builds an :class:`AgentConfig` and calls :func:`run`, or runs :meth:`Agent.run` in
a thread and calls :meth:`Agent.stop`; ``fedge device run`` is :mod:`device_sdk.cli`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np

from device_sdk.client import CoordinatorClient
from device_sdk.durable import DurableRunner, Stopped
from device_sdk.eligibility import EligibilityPolicy, Probe, detect_probe
from device_sdk.example_store import ExampleSource, ExampleStore, open_examples
from device_sdk.session import Backoff, SessionStats, device_session
from device_sdk.state import StateStore
from fedge.clock import Clock, SystemClock
from fedge.manifest import PlanManifest

__all__ = [
    "DEFAULT_STATE_DIR",
    "Agent",
    "AgentConfig",
    "open_examples",
    "run",
    "server_url_problem",
]

log = logging.getLogger("fedge.device")

DEFAULT_STATE_DIR = "~/.local/state/fedge"


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """What one agent needs: its server, its state directory, its examples, its probe.

    Attributes:
        server_url: the coordinator; a state directory registered with another is reset.
        state_dir: token, task record, saved update, plan cache (0700; files 0600).
        data: an example store, or a path :func:`open_examples` opens.
        probe: whether the device may train; by default :func:`detect_probe` with ``policy``.
        policy: the eligibility rules of the default probe.
        metered: the default probe reports the connection as metered.
        task_budget_s: a task still training this long after it was handed out is aborted
            ("timeout").
        max_tasks: end after this many tasks (tests, one-shot runs); None runs until stopped.
        max_examples: train on at most the newest this many examples (bounds memory).
        clock: the one source of time; tests pass a ManualClock.
        sleep: how to wait; by default a wait that :meth:`Agent.stop` cuts short.
        seed: of the jitter and the shuffling; None draws one from the OS.
        eligibility_check_s: least time between two eligibility readings while training.
        ineligible_wait_s: an ineligible device checks again after a delay drawn from this
            window, without asking the server.
        backoff: the session's backoff after failures.
        http_timeout_s: of each request.
        max_download_bytes: a plan or weights larger than this is refused.
        plan_cache_bytes: plans kept by sha256 across tasks and restarts.
        transport: an httpx transport (tests).
        manifest_for: a plan's manifest by its sha256; by default read off the plan.
        probe_label: how the log names the probe when the device is ineligible (``fedge
            device run`` passes its ``--probe`` choice); by default the probe's class.
        ineligible_hint: what the log tells a person whose device is ineligible (``fedge
            device run``: use ``--probe none`` on a test box).

    Raises:
        ValueError: a value that cannot work, named (a server URL without ``http://`` or
            ``https://``, a budget that is not positive...).

    """

    server_url: str
    state_dir: str | os.PathLike[str]
    data: ExampleSource | str | os.PathLike[str]
    probe: Probe | None = None
    policy: EligibilityPolicy | None = None
    metered: bool = False
    task_budget_s: float = 900.0
    max_tasks: int | None = None
    max_examples: int | None = None
    clock: Clock = field(default_factory=SystemClock)
    sleep: Callable[[float], None] | None = None
    seed: int | None = None
    eligibility_check_s: float = 5.0
    ineligible_wait_s: tuple[float, float] = (60.0, 300.0)
    backoff: Backoff = field(default_factory=Backoff)
    http_timeout_s: float = 30.0
    max_download_bytes: int = 256 * 2**20
    plan_cache_bytes: int = 64 * 2**20
    transport: httpx.BaseTransport | None = None
    manifest_for: Callable[[str], PlanManifest] | None = None
    probe_label: str | None = None
    ineligible_hint: str = ""

    def __post_init__(self) -> None:
        if (problem := server_url_problem(self.server_url)) is not None:
            raise ValueError(problem)
        for name in ("task_budget_s", "max_download_bytes", "http_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError("max_examples must be at least 1")
        low, high = self.ineligible_wait_s
        if not 0 <= low <= high:
            raise ValueError("ineligible_wait_s must be a window (low, high) with 0 <= low <= high")


def server_url_problem(url: str) -> str | None:
    """What is wrong with a coordinator URL, or None: it needs a scheme and a host.

    ``coordinator:8000`` would otherwise be read as scheme ``coordinator`` and fail at the
    first request with an error that does not say why.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"the server URL {url!r} needs http:// or https:// and a host, e.g. http://{url}"
    return None


class Agent:
    """One device's agent; :meth:`run` blocks until ``max_tasks`` tasks ended or :meth:`stop`."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.store = StateStore(config.state_dir, plan_cache_bytes=config.plan_cache_bytes)
        self.probe: Probe = config.probe or detect_probe(
            policy=config.policy, metered=config.metered
        )
        self.stats = SessionStats()
        self.stopping = threading.Event()
        self.stopped_tasks = 0  # tasks cut short by stop(): not failures

    def run(self) -> SessionStats:
        """Resume what a crash left, then work until ``max_tasks`` tasks ended or stopped."""
        config = self.config
        rng = np.random.default_rng(config.seed)
        with contextlib.ExitStack() as opened:
            examples = config.data
            if isinstance(examples, str | os.PathLike):
                # Opened in the thread that reads it: sqlite3 connections stay in theirs.
                examples = open_examples(
                    examples, now=config.clock.now, max_examples=config.max_examples
                )
                if isinstance(examples, ExampleStore):
                    opened.callback(examples.close)
            self._work(examples, rng)
        return self.stats

    def _work(self, examples: ExampleSource, rng: np.random.Generator) -> None:
        config = self.config
        with (
            CoordinatorClient(
                config.server_url, timeout=config.http_timeout_s, transport=config.transport
            ) as client,
            httpx.Client(
                base_url=config.server_url,
                timeout=config.http_timeout_s,
                transport=config.transport,
            ) as http,
        ):
            runner = DurableRunner(
                config,
                store=self.store,
                probe=self.probe,
                stopping=self.stopping,
                examples=examples,
                client=client,
                http=http,
                rng=rng,
            )
            runner.resume()
            session = device_session(
                runner.facts,
                rng=rng,
                now=config.clock.now,
                stats=self.stats,
                max_tasks=config.max_tasks,
                backoff=config.backoff,
            )
            try:
                runner.run(session)
            except Stopped:
                session.close()
                log.info("stopped")
            finally:
                self.stopped_tasks = runner.stopped_tasks

    def every_task_failed(self) -> bool:
        """Whether it ran tasks and none was uploaded (tasks a stop cut short are not counted).

        ``fedge device run`` exits with status 1 then: a device that fails every plan it is
        given (a runtime that cannot load it, training that diverges) should not look healthy.
        """
        ran = self.stats.tasks - self.stopped_tasks
        return ran > 0 and self.stats.uploads_accepted == 0

    def stop(self) -> None:
        """End :meth:`run` soon, from any thread or a signal handler.

        A training in progress is aborted and reported; a pending upload stays recorded and is
        sent on the next start.
        """
        self.stopping.set()


def run(config: AgentConfig) -> SessionStats:
    """Run an agent for ``config`` until it ends (see :class:`Agent`)."""
    return Agent(config).run()


if __name__ == "__main__":  # pragma: no cover - ``python -m device_sdk.agent device run …``
    from device_sdk.cli import main

    sys.exit(main())
