"""The agent's crash-safe state directory: registration, the task in flight, saved updates, plans.

Layout (the directory is created 0700, every file 0600)::

    token                  the bearer token, alone, so a state file shown in a bug report
                           leaks nothing
    state.json             device id, server URL, the in-flight task record
    updates/<sha256>.fdgw  the encoded update of a trained task, kept until acknowledged
    plans/<sha256>         the plan cache (:class:`PlanCache`)

Every write goes to a temporary file in the same directory, is fsynced, renamed over the old
file and the directory fsynced (:func:`write_atomic`): a power cut leaves the old file or the
new one, never a torn one. A task moves through phases, each recorded before the next step::

    downloaded ──train──▶ trained ──upload, receipt──▶ uploaded ──▶ cleared
    (resume: abort)       (resume: re-upload the       (resume: forget)
                           same bytes; the server's
                           upload is idempotent per
                           lease)

so after a power cut the agent never trains twice for one lease and never sends a second,
different update for it. A state file that cannot be read raises :class:`StateCorruptError`
(the agent should tell the user and re-register); a corrupt plan cache entry is dropped and
reads as a miss, since the plan can always be downloaded again.

Errors::

    DeviceError (device_sdk.errors)
    └── StateError              the state directory cannot be written or used so
        ├── StateCorruptError   a state, token or update file that does not read back
        ├── TaskInFlightError   a new task begun while another is still recorded
        └── PlanCacheError      (also ValueError) a key that is not a sha256, or bytes not
                                matching it
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from device_sdk.errors import DeviceError
from fedge import protocol
from fedge.protocol import Task

Phase = Literal["downloaded", "trained", "uploaded"]
Resume = Literal["abort", "upload", "forget"]
_RESUME: dict[Phase, Resume] = {"downloaded": "abort", "trained": "upload", "uploaded": "forget"}
_FORMAT = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StateError(DeviceError):
    """The state directory cannot be written, or is asked for something it does not hold."""


class StateCorruptError(StateError):
    """A state, token or update file that does not read back as written."""


class TaskInFlightError(StateError):
    """A task was begun while another is still recorded: resume or clear that one first."""


class PlanCacheError(StateError, ValueError):
    """A plan cache key that is not a sha256, or bytes that do not hash to it."""


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: after a crash it holds the old bytes or the new, whole.

    The temporary file is created with ``mode`` (less the umask) from the start, never widened
    and narrowed later, so a secret is at no moment readable by others.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    # The rename is durable only once the directory entry is (rename(2) on ext4, f2fs).
    directory = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):  # some FUSE and FAT mounts refuse fsync on a dir
            os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True)
class TaskRecord:
    """The task in flight and how far it got; ``update_sha256`` names the saved update."""

    task: Task
    phase: Phase = "downloaded"
    update_sha256: str | None = None
    num_examples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def on_resume(self) -> Resume:
        """What a restarted agent does: abort an interrupted training, re-upload, or forget."""
        return _RESUME[self.phase]


@dataclass(frozen=True)
class AgentState:
    """What the agent keeps across restarts."""

    device_id: str
    token: str
    server_url: str
    task: TaskRecord | None = None

    def begin(self, task: Task) -> AgentState:
        """The state with ``task`` downloaded and about to train; one task at a time."""
        if self.task is not None:
            raise TaskInFlightError(
                f"lease {self.task.task.lease_id} is still recorded ({self.task.phase}); "
                f"resume or clear it before lease {task.lease_id}"
            )
        return replace(self, task=TaskRecord(task))

    def uploaded(self) -> AgentState:
        """The state once the server has acknowledged the trained update."""
        if self.task is None or self.task.phase != "trained":
            raise StateError("only a trained task can be acknowledged")
        return replace(self, task=replace(self.task, phase="uploaded"))


class StateStore:
    """A device's state directory (see the module docstring for its layout and guarantees)."""

    def __init__(
        self, directory: str | os.PathLike[str], *, plan_cache_bytes: int = 64 * 2**20
    ) -> None:
        self.directory = Path(directory)
        # makedirs applies the mode to the leaf only; an existing directory is left as it is
        # (its files are 0600 whatever the directory's mode).
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self.updates = self.directory / "updates"
        self.updates.mkdir(mode=0o700, exist_ok=True)
        self.plans = PlanCache(self.directory / "plans", max_bytes=plan_cache_bytes)
        self.token_path = self.directory / "token"
        self.state_path = self.directory / "state.json"
        self._token_on_disk: str | None = None

    def load(self) -> AgentState | None:
        """The saved state, or None if this device never registered here."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return None  # a crash between the token and the first state: register again
        try:
            token = self.token_path.read_text().strip()
            body = json.loads(raw)
            if body.get("format") != _FORMAT:
                raise ValueError(f"format {body.get('format')!r}, expected {_FORMAT}")
            record = body["task"]
            state = AgentState(
                device_id=str(body["device_id"]),
                token=token,
                server_url=str(body["server_url"]),
                task=None if record is None else _record_from_json(record),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as broken:
            raise StateCorruptError(
                f"{self.directory} holds an unreadable state ({broken}); "
                "remove it to register this device again"
            ) from broken
        if not token:
            raise StateCorruptError(f"{self.token_path} is empty; remove {self.directory}")
        self._token_on_disk = token
        return state

    def save(self, state: AgentState) -> None:
        """Persist ``state`` atomically; the token file is rewritten only when it changes."""
        body = {
            "format": _FORMAT,
            "device_id": state.device_id,
            "server_url": state.server_url,
            "task": None if state.task is None else asdict(state.task),
        }
        with self._writing():
            if state.token != self._token_on_disk:
                write_atomic(self.token_path, state.token.encode())
                self._token_on_disk = state.token
            write_atomic(self.state_path, json.dumps(body, indent=1).encode())

    def save_trained(
        self,
        state: AgentState,
        update: bytes,
        *,
        num_examples: int,
        metrics: dict[str, float] | None = None,
    ) -> AgentState:
        """Keep the encoded ``update`` of the task in flight, then record it trained.

        The update is written before the record that names it: a crash in between leaves a
        task recorded as downloaded (aborted on resume) and an orphan file ``clear_task`` drops.
        """
        if state.task is None or state.task.phase != "downloaded":
            raise StateError("save_trained needs a task recorded as downloaded")
        digest = hashlib.sha256(update).hexdigest()
        with self._writing():
            write_atomic(self.updates / f"{digest}.fdgw", update)
        record = replace(
            state.task,
            phase="trained",
            update_sha256=digest,
            num_examples=num_examples,
            metrics=dict(metrics or {}),
        )
        trained = replace(state, task=record)
        self.save(trained)
        return trained

    def read_update(self, record: TaskRecord) -> bytes:
        """The exact bytes saved for ``record`` (sha256-checked), to upload them again."""
        if record.update_sha256 is None:
            raise StateError(f"lease {record.task.lease_id} has no saved update")
        path = self.updates / f"{record.update_sha256}.fdgw"
        try:
            update = path.read_bytes()
        except OSError as missing:
            raise StateCorruptError(f"the saved update {path} is gone: {missing}") from missing
        if hashlib.sha256(update).hexdigest() != record.update_sha256:
            raise StateCorruptError(f"the saved update {path} does not match its sha256")
        return update

    def clear_task(self, state: AgentState) -> AgentState:
        """Forget the task in flight and delete saved updates (the record goes first)."""
        cleared = replace(state, task=None)
        self.save(cleared)
        with self._writing():
            for leftover in self.updates.iterdir():
                leftover.unlink(missing_ok=True)
        return cleared

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            yield
        except OSError as failed:
            raise StateError(f"cannot write the state in {self.directory}: {failed}") from failed


class PlanCache:
    """Plans by sha256, checked on every read; least recently used go past ``max_bytes``.

    Recency is the file's modification time, set from ``now`` on every hit and write, so it
    survives restarts; the entry just written is never evicted, even if larger than the cap.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 2**20,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._now = now

    def get(self, sha256: str) -> bytes | None:
        """The plan, or None on a miss (a corrupt entry is deleted and counts as a miss)."""
        path = self._path(sha256)
        try:
            plan = path.read_bytes()
        except FileNotFoundError:
            return None
        if hashlib.sha256(plan).hexdigest() != sha256:
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):  # a read-only medium still serves hits
            now = self._now()
            os.utime(path, (now, now))
        return plan

    def put(self, sha256: str, plan: bytes) -> None:
        """Store ``plan`` atomically under its sha256, then evict down to ``max_bytes``."""
        path = self._path(sha256)
        if hashlib.sha256(plan).hexdigest() != sha256:
            raise PlanCacheError(f"these bytes do not hash to {sha256}")
        try:
            write_atomic(path, plan)
            now = self._now()
            os.utime(path, (now, now))
            self._evict(keep=path)
        except OSError as failed:
            raise StateError(f"cannot cache plan {sha256}: {failed}") from failed

    def total_bytes(self) -> int:
        """Bytes held."""
        return sum(size for _, size, _ in self._entries())

    def _path(self, sha256: str) -> Path:
        # The key comes from the server: a sha256 is all it may be, never a path.
        if not _SHA256.fullmatch(sha256):
            raise PlanCacheError(f"not a lowercase hex sha256: {sha256[:80]!r}")
        return self.directory / sha256

    def _entries(self) -> list[tuple[float, int, Path]]:
        entries = []
        for path in self.directory.iterdir():
            if _SHA256.fullmatch(path.name):
                with contextlib.suppress(FileNotFoundError):
                    stat = path.stat()
                    entries.append((stat.st_mtime, stat.st_size, path))
        return sorted(entries, key=lambda entry: (entry[0], entry[2].name))

    def _evict(self, *, keep: Path) -> None:
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def _record_from_json(raw: dict[str, Any]) -> TaskRecord:
    phase, digest = raw["phase"], raw["update_sha256"]
    if phase not in _RESUME:
        raise ValueError(f"unknown phase {phase!r}")
    if digest is not None and not _SHA256.fullmatch(str(digest)):
        raise ValueError(f"update_sha256 {digest!r} is not a sha256")  # it becomes a path
    return TaskRecord(
        task=protocol.parse(Task, raw["task"]),
        phase=phase,
        update_sha256=digest,
        num_examples=int(raw["num_examples"]),
        metrics={str(k): float(v) for k, v in raw["metrics"].items()},
    )
