"""The on-device example store: the host app writes labelled examples, the agent reads them.

Two backings share one reading interface, :class:`ExampleSource`:

- :class:`ExampleStore`: one SQLite table (stdlib ``sqlite3``) in WAL mode, so the agent reads
  while the host app writes; features are little-endian float32 blobs, labels integers.
- :class:`NpzShardStore`: ``.npz`` shards in a directory, each written to a temporary file and
  renamed into place, so a reader never sees half a shard.

A :class:`Retention` policy (maximum age, maximum count: oldest go first) is applied by the
writer on every ``add`` and by ``prune``; readers apply the same selection without deleting, so
the agent never trains on an expired example even if the host app has not written lately.
Time is injected (``now``): nothing here reads the wall clock.

Errors::

    DeviceError (device_sdk.errors)
    └── ExampleStoreError          the store cannot be read (a corrupt row or shard, a
        │                          feature shape other than the store's)
        └── InvalidExamplesError   (also ValueError) examples refused by ``add``: shapes,
                                   dtypes, non-finite features, negative labels
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import secrets
import sqlite3
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from device_sdk.errors import DeviceError
from device_sdk.state import write_atomic

FloatArray = npt.NDArray[np.float32]
LabelArray = npt.NDArray[np.int64]


class ExampleStoreError(DeviceError):
    """The example store cannot be read or does not hold what it is asked for."""


class InvalidExamplesError(ExampleStoreError, ValueError):
    """Examples that ``add`` refuses: wrong shape or dtype, non-finite, negative labels."""


@dataclass(frozen=True, kw_only=True)
class Retention:
    """Keep examples younger than ``max_age_s`` and at most the ``max_count`` newest."""

    max_age_s: float | None = None
    max_count: int | None = None

    def __post_init__(self) -> None:
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError("max_age_s must be positive")
        if self.max_count is not None and self.max_count < 0:
            raise ValueError("max_count may not be negative")

    def oldest_kept(self, now: float) -> float:
        """Creation time below which examples have expired (``-inf`` without a maximum age)."""
        return -math.inf if self.max_age_s is None else now - self.max_age_s


class ExampleSource(Protocol):
    """What the agent reads: the retained examples, oldest first."""

    def count(self) -> int:
        """How many examples ``load`` would return."""
        ...

    def load(self) -> tuple[FloatArray, LabelArray]:
        """Features ``(n, *feature_shape)`` float32 and labels ``(n,)`` int64."""
        ...


def check_examples(
    x: npt.ArrayLike, y: npt.ArrayLike, feature_shape: tuple[int, ...] | None
) -> tuple[FloatArray, LabelArray]:
    """Validate a batch as ``add`` does; return it as float32 features and int64 labels."""
    features, labels = np.asarray(x), np.asarray(y)
    if features.dtype.kind not in "fiu":
        raise InvalidExamplesError(f"x must hold real numbers, got {features.dtype}")
    if labels.dtype.kind not in "iu":
        raise InvalidExamplesError(f"y must hold integer class ids, got {labels.dtype}")
    if features.ndim < 1 or labels.shape != features.shape[:1]:
        raise InvalidExamplesError(
            f"x must be (n, …) and y (n,) with the same n, got {features.shape} and {labels.shape}"
        )
    if feature_shape is not None and features.shape[1:] != feature_shape:
        raise InvalidExamplesError(
            f"this store holds examples of shape {feature_shape}, got {features.shape[1:]}"
        )
    with np.errstate(over="ignore"):  # a float64 beyond float32 becomes inf, refused next
        features32 = features.astype(np.float32)
    if not np.isfinite(features32).all():
        raise InvalidExamplesError("x contains NaN or Inf (or values beyond float32)")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int64).max):
        raise InvalidExamplesError("labels must be class ids in [0, 2^63)")
    return features32, labels.astype(np.int64)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    label INTEGER NOT NULL,
    features BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_by_age ON examples (created_at, id);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_KEPT = """
SELECT label, features FROM (SELECT id, created_at, label, features FROM examples
                             WHERE created_at >= :oldest
                             ORDER BY created_at DESC, id DESC LIMIT :keep)
ORDER BY created_at, id
"""


class ExampleStore:
    """Examples in one SQLite file; the host app calls ``add``, the agent ``load``/``count``.

    ``feature_shape`` is fixed by the first writer (or the first ``add``) and recorded in the
    file; opening it with a different shape raises :class:`ExampleStoreError`. WAL mode lets a
    reader run beside the writer; ``synchronous=NORMAL`` may lose the last batch on a power cut
    but never corrupts the file (SQLite, "Write-Ahead Logging"), a fair trade for examples.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        now: Callable[[], float],
        retention: Retention | None = None,
        feature_shape: tuple[int, ...] | None = None,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.retention = retention or Retention()
        self._now = now
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so one add is one transaction.
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        if feature_shape is not None:  # kept only by the first to record one
            self._db.execute(
                "INSERT OR IGNORE INTO store_meta VALUES ('feature_shape', ?)",
                (json.dumps(list(feature_shape)),),
            )
        self.feature_shape = self._stored_shape()
        if feature_shape is not None and self.feature_shape != tuple(feature_shape):
            self.close()
            raise ExampleStoreError(
                f"{self.path} holds examples of shape {self.feature_shape}, not {feature_shape}"
            )

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> ExampleStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def add(self, x: npt.ArrayLike, y: npt.ArrayLike) -> int:
        """Store a batch (one transaction), then apply retention; returns how many were added."""
        created_at = self._now()
        with self._transaction():
            # The shape is read under the write lock: another writer may have fixed it.
            self.feature_shape = self._stored_shape()
            features, labels = check_examples(x, y, self.feature_shape)
            if self.feature_shape is None:
                self.feature_shape = features.shape[1:]
                self._db.execute(
                    "INSERT INTO store_meta VALUES ('feature_shape', ?)",
                    (json.dumps(list(self.feature_shape)),),
                )
            self._db.executemany(
                "INSERT INTO examples (created_at, label, features) VALUES (?, ?, ?)",
                (
                    (created_at, int(label), row.astype("<f4").tobytes())
                    for row, label in zip(features, labels, strict=True)
                ),
            )
            self._prune(created_at)
        return len(labels)

    def prune(self, now: float | None = None) -> int:
        """Delete what retention no longer keeps; returns how many went."""
        with self._transaction():
            return self._prune(self._now() if now is None else now)

    def count(self) -> int:
        """How many examples ``load`` would return now."""
        oldest, keep = self._selection()
        query = "SELECT COUNT(*) FROM examples WHERE created_at >= ?"
        total = int(self._db.execute(query, (oldest,)).fetchone()[0])
        return total if keep < 0 else min(total, keep)

    def load(self) -> tuple[FloatArray, LabelArray]:
        """The retained examples, oldest first (one consistent snapshot)."""
        oldest, keep = self._selection()
        rows = self._db.execute(_KEPT, {"oldest": oldest, "keep": keep}).fetchall()
        shape = self.feature_shape or self._stored_shape() or ()
        width = 4 * math.prod(shape)
        if any(len(blob) != width for _, blob in rows):
            raise ExampleStoreError(f"{self.path} has a row that is not {width} bytes: corrupt")
        features = np.frombuffer(b"".join(blob for _, blob in rows), dtype="<f4")
        labels = np.array([label for label, _ in rows], dtype=np.int64)
        return features.astype(np.float32).reshape((len(rows), *shape)), labels

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock at once: two writers queue (busy timeout) instead of
        # failing when a read transaction tries to upgrade.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _selection(self) -> tuple[float, int]:
        keep = self.retention.max_count
        return self.retention.oldest_kept(self._now()), -1 if keep is None else keep

    def _prune(self, now: float) -> int:
        removed = self._db.execute(
            "DELETE FROM examples WHERE created_at < ?", (self.retention.oldest_kept(now),)
        ).rowcount
        if self.retention.max_count is not None:
            # Everything after the newest max_count rows (LIMIT -1: SQLite's "no limit").
            removed += self._db.execute(
                "DELETE FROM examples WHERE id IN (SELECT id FROM examples"
                " ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?)",
                (self.retention.max_count,),
            ).rowcount
        return removed

    def _stored_shape(self) -> tuple[int, ...] | None:
        query = "SELECT value FROM store_meta WHERE key = 'feature_shape'"
        row = self._db.execute(query).fetchone()
        return None if row is None else tuple(json.loads(row[0]))


class NpzShardStore:
    """Examples as ``.npz`` shards in a directory, one shard per ``add``.

    A shard's name carries its creation time and size (``shard-<µs>-<n>-<random>.npz``), so
    retention and ``count`` need no file opened. The writer deletes whole shards; a reader
    takes the newest ``max_count`` examples, slicing the oldest shard it needs. One writer
    process is assumed: ``prune`` also removes temporary files a power cut left behind.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        now: Callable[[], float],
        retention: Retention | None = None,
        feature_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.retention = retention or Retention()
        self.feature_shape = feature_shape
        self._now = now

    def add(self, x: npt.ArrayLike, y: npt.ArrayLike) -> int:
        """Write a batch as one shard, atomically, then apply retention; returns its size."""
        features, labels = check_examples(x, y, self.feature_shape or self._shape_on_disk())
        if not len(labels):
            return 0
        created_at = self._now()
        buffer = io.BytesIO()
        np.savez(buffer, x=features, y=labels)
        name = f"shard-{round(created_at * 1e6):017d}-{len(labels):08d}-{secrets.token_hex(4)}"
        # 0o666 less the umask, as any file: the agent may run as another user than the app.
        write_atomic(self.directory / f"{name}.npz", buffer.getvalue(), mode=0o666)
        self.feature_shape = features.shape[1:]
        self.prune(created_at)
        return len(labels)

    def prune(self, now: float | None = None) -> int:
        """Delete shards retention no longer needs (and stray temp files); returns examples."""
        kept = {path for path, _ in self._kept(self._now() if now is None else now)}
        removed = 0
        for path, _, size in self._shards():
            if path not in kept:
                path.unlink(missing_ok=True)
                removed += size
        for stray in self.directory.glob(".*.tmp"):
            stray.unlink(missing_ok=True)
        return removed

    def count(self) -> int:
        """How many examples ``load`` would return now."""
        return sum(take for _, take in self._kept(self._now()))

    def load(self) -> tuple[FloatArray, LabelArray]:
        """The retained examples, oldest first."""
        xs: list[FloatArray] = []
        ys: list[LabelArray] = []
        for path, take in reversed(self._kept(self._now())):
            shard = _read_shard(path)
            if shard is not None:  # else pruned by the writer since we listed it
                xs.append(shard[0][-take:])
                ys.append(shard[1][-take:])
        if not xs:
            shape = self.feature_shape or self._shape_on_disk() or ()
            return np.empty((0, *shape), np.float32), np.empty((0,), np.int64)
        return np.concatenate(xs), np.concatenate(ys)

    def _shards(self) -> list[tuple[Path, float, int]]:
        """(path, created_at, size), newest first."""
        shards = []
        for path in self.directory.glob("shard-*.npz"):
            parts = path.stem.split("-")
            if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit():  # else not ours
                shards.append((path, int(parts[1]) / 1e6, int(parts[2])))
        return sorted(shards, key=lambda shard: (shard[1], shard[0].name), reverse=True)

    def _kept(self, now: float) -> list[tuple[Path, int]]:
        """(path, how many of its newest examples to take), newest shard first."""
        oldest, left = self.retention.oldest_kept(now), self.retention.max_count
        kept = []
        for path, created_at, size in self._shards():
            if created_at < oldest or left == 0:
                continue
            take = size if left is None else min(size, left)
            if take:
                kept.append((path, take))
            left = None if left is None else left - take
        return kept

    def _shape_on_disk(self) -> tuple[int, ...] | None:
        for path, _, _ in self._shards():
            if (shard := _read_shard(path)) is not None:
                return tuple(shard[0].shape[1:])
        return None


def _read_shard(path: Path) -> tuple[FloatArray, LabelArray] | None:
    try:
        with np.load(path) as shard:
            return shard["x"].astype(np.float32), shard["y"].astype(np.int64)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as broken:
        raise ExampleStoreError(f"shard {path} cannot be read: {broken}") from broken


def open_examples(
    path: str | os.PathLike[str], *, now: Callable[[], float], max_examples: int | None = None
) -> ExampleSource:
    """The example store at ``path``, readers' view: retention selects, never deletes.

    ``path`` is a SQLite :class:`ExampleStore` file, a directory holding one as
    ``examples.db``, or a directory of :class:`NpzShardStore` shards (an empty directory too:
    the host app has not written yet).
    """
    where = Path(path).expanduser()
    retention = Retention(max_count=max_examples)
    if where.is_file():
        return ExampleStore(where, now=now, retention=retention)
    if (where / "examples.db").is_file():
        return ExampleStore(where / "examples.db", now=now, retention=retention)
    if where.is_dir():
        return NpzShardStore(where, now=now, retention=retention)
    raise ExampleStoreError(
        f"{where} is neither an example store file nor a directory of example shards"
    )
