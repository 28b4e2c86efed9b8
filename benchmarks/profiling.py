"""Where a process spends its time, by cost centre, and how many SQL statements it sends.

Two instruments for :mod:`benchmarks.update_path`, neither of which touches the code measured:

- :class:`StackSampler`, a thread that looks at the other threads' Python stacks every
  millisecond or so (``sys._current_frames``) and charges the wall time since its last look to
  the cost centre of each busy thread's innermost recognised frame: a LiteRT ``invoke`` is
  charged to training because ``device_sdk/plan_runner.py`` is the innermost frame the sampler
  recognises, a numpy sum inside ``coordinator/aggregation`` to aggregation, SQLite's C code to
  the database (``sqlalchemy`` frames). Frames of modules no centre names (``contextlib``,
  ``functools``, numpy's own Python) are looked through. A sample is a statistical figure: the
  shares are good to a few per cent over thousands of samples, and the times scale with the
  machine's load (other processes' CPU use stretches every centre alike).
- :class:`StatementCounter`, SQLAlchemy engine events (``before_cursor_execute``, ``commit``,
  ``rollback``) on every :class:`~sqlalchemy.Engine` of the process, grouped by what the caller
  says the process was doing (a *phase*: check-in, upload, sweep …). These counts do not depend
  on the machine's load at all.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from types import FrameType
from typing import Any

from sqlalchemy import Engine, event

# Checked in order against a frame's file name (a path with "/" separators). The first centre
# with a matching fragment wins; a frame matching none is looked through to its caller.
CENTRES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "training",
        (
            "/ai_edge_litert/",
            "/tflite_runtime/",
            "device_sdk/plan_runner.py",
            "device_sdk/trainer.py",
            "simulator/training.py",
        ),
    ),
    ("weights and plan bytes", ("fedge/wire.py", "fedge/codecs", "device_sdk/downloads.py")),
    ("database", ("/sqlalchemy/", "/sqlite3/", "/psycopg", "coordinator/db/", "/alembic/")),
    ("aggregation", ("coordinator/aggregation/", "coordinator/privacy/")),
    ("scheduler (sweep, deadlines)", ("coordinator/services/maintenance.py",)),
    ("coordinator services", ("coordinator/services/",)),
    ("logging and metrics", ("/logging/", "fedge/logs.py", "coordinator/observability.py")),
    (
        "routing and validation",
        (
            "/fastapi/",
            "/starlette/",
            "/pydantic/",
            "/pydantic_core/",
            "/pydantic_settings/",
            "/httpx/",
            "/httpcore/",
            "/anyio/",
            "/uvicorn/",
            "/h11/",
            "/httptools/",
            "/asyncio/",
            "/json/",
            "/email/",
            "/urllib/",
            "/http/",
            "coordinator/api/",
            "coordinator/ratelimit.py",
            "device_sdk/client.py",
            "device_sdk/protocol.py",
            "fedge/protocol.py",
        ),
    ),
    ("coordinator services", ("coordinator/",)),
    ("device session", ("device_sdk/",)),
    ("simulator bookkeeping", ("simulator/",)),
)
OTHER = "other"
# Where a thread waits for work rather than doing it (the innermost frame's file).
IDLE_FILES = ("/selectors.py", "/threading.py", "/queue.py", "/concurrent/futures/thread.py")


def centre_of(frame: FrameType | None) -> str:
    """The cost centre of the innermost frame of ``frame``'s stack that a centre names."""
    while frame is not None:
        filename = frame.f_code.co_filename.replace("\\", "/")
        for centre, fragments in CENTRES:
            if any(fragment in filename for fragment in fragments):
                return centre
        frame = frame.f_back
    return OTHER


def is_idle(frame: FrameType) -> bool:
    """Whether the thread is waiting (in ``select``, a lock, a queue), not working."""
    return frame.f_code.co_filename.replace("\\", "/").endswith(IDLE_FILES)


class StackSampler:
    """Charge wall time to (cost centre, phase) by sampling other threads' stacks.

    ``threads`` limits the sampling to those thread idents (None: every thread but the
    sampler's); ``phase`` names what a stack is doing (None: every sample is phase ``""``);
    ``skip_idle`` leaves out threads waiting for work (a server's event loop in ``select``, its
    thread pool's idle workers). Use as a context manager around the work.
    """

    def __init__(
        self,
        *,
        interval: float = 0.001,
        threads: set[int] | None = None,
        phase: Callable[[FrameType], str] | None = None,
        skip_idle: bool = False,
    ) -> None:
        self.interval = interval
        self.threads = threads
        self.phase = phase
        self.skip_idle = skip_idle
        self.seconds: defaultdict[tuple[str, str], float] = defaultdict(float)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def by_centre(self) -> dict[str, float]:
        """Seconds per cost centre, over every phase."""
        totals: defaultdict[str, float] = defaultdict(float)
        for (centre, _), seconds in self.seconds.items():
            totals[centre] += seconds
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def _run(self) -> None:
        me = threading.get_ident()
        last = time.perf_counter()
        while not self._stop.wait(self.interval):
            now = time.perf_counter()
            weight, last = now - last, now
            for ident, frame in sys._current_frames().items():
                if ident == me or (self.threads is not None and ident not in self.threads):
                    continue
                if self.skip_idle and is_idle(frame):
                    continue
                phase = self.phase(frame) if self.phase is not None else ""
                self.seconds[(centre_of(frame), phase)] += weight
                self.samples += 1


def verb(statement: str) -> str:
    """The statement's first word in capitals (SELECT, INSERT, BEGIN …)."""
    words = statement.split(None, 1)
    return words[0].upper() if words else ""


class StatementCounter:
    """SQL statements, commits and rollbacks of every engine in the process, by phase.

    ``phase()`` is asked at each event what the process is doing. ``attach`` listens on the
    :class:`~sqlalchemy.Engine` class, so engines made later (inside ``create_app``) count too.
    """

    def __init__(self, phase: Callable[[], str]) -> None:
        self.phase = phase
        self.statements: Counter[str] = Counter()
        self.verbs: Counter[tuple[str, str]] = Counter()
        self.texts: Counter[tuple[str, str]] = Counter()
        self.commits: Counter[str] = Counter()
        self.rollbacks: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __enter__(self) -> StatementCounter:
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)
        event.listen(Engine, "rollback", self._rollback)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._statement)
        event.remove(Engine, "commit", self._commit)
        event.remove(Engine, "rollback", self._rollback)

    def _statement(
        self,
        _conn: Any,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        phase = self.phase()
        with self._lock:
            self.statements[phase] += 1
            self.verbs[(phase, verb(statement))] += 1
            self.texts[(phase, " ".join(statement.split())[:120])] += 1

    def _commit(self, _conn: Any) -> None:
        phase = self.phase()
        with self._lock:
            self.commits[phase] += 1

    def _rollback(self, _conn: Any) -> None:
        phase = self.phase()
        with self._lock:
            self.rollbacks[phase] += 1

    def summary(self, top: int = 12) -> dict[str, Any]:
        """Counts per phase, by verb, and the ``top`` most frequent statements of each."""
        phases = sorted(set(self.statements) | set(self.commits) | set(self.rollbacks))
        result: dict[str, Any] = {}
        for phase in phases:
            texts = Counter({text: n for (p, text), n in self.texts.items() if p == phase})
            result[phase] = {
                "statements": self.statements[phase],
                "commits": self.commits[phase],
                "rollbacks": self.rollbacks[phase],
                "by_verb": {v: n for (p, v), n in sorted(self.verbs.items()) if p == phase},
                "top": texts.most_common(top),
            }
        return result
