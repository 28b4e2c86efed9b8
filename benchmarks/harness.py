"""What every benchmark shares: the checkout's own CLI and plans, a served coordinator, a job
published to it, process-tree memory, interleaved timing, the figures table with its ratio
against a peer or a floor, and the one JSON summary a run ends with.

Benchmarks run as modules from the repository root (``python -m benchmarks.NAME``), so the
checkout is on ``sys.path`` without any script editing it, and a child process started with
``cwd=ROOT`` imports the same checkout. This module imports only the standard library at import
time: the Flower side (``benchmarks.flower.flower_mnist``) runs in ``.venv-flower`` and uses it
too. Anything heavier is imported where it is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from coordinator.admin_client import AdminClient
    from coordinator.served import ServedCoordinator

ROOT = Path(__file__).resolve().parents[1]
KIB_PER_MIB = 1024
T = TypeVar("T")

# --- the checkout's own tools -------------------------------------------------------------------


def fedge_command(*args: str) -> list[str]:
    """``fedge ARGS`` from this checkout in this interpreter (not whatever ``fedge`` is on PATH)."""
    return [sys.executable, "-m", "fedge.cli", *args]


def export_plan(model: str, out: Path, *, reuse: bool = False) -> Path:
    """Export a zoo model with ``fedge models export`` in a child process; its ``.tflite``.

    A child keeps TensorFlow out of the benchmark's own process (and its memory figures).
    With ``reuse``, an export already in ``out`` is kept.
    """
    plan = out / f"{model}.tflite"
    if not (reuse and plan.is_file()):
        subprocess.run(
            fedge_command("models", "export", model, "--out", str(out)),
            check=True,
            cwd=ROOT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=subprocess.DEVNULL,
        )
    return plan


def serve_coordinator(
    db_url: str,
    *,
    admin_token: str,
    log_path: Path,
    workers: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> ServedCoordinator:
    """A ``fedge coordinator serve`` of this checkout, not yet started (``with`` starts it)."""
    from coordinator.served import ServedCoordinator

    return ServedCoordinator(
        db_url,
        workers=workers,
        admin_token=admin_token,
        log_path=log_path,
        extra_env=extra_env,
        cwd=ROOT,
        poll_seconds=0.1,
    )


def publish_job(admin: AdminClient, plan: Path, job: Mapping[str, Any]) -> tuple[int, str]:
    """Publish ``plan`` and create ``job`` on it (``plan_id`` filled in); (job id, plan sha256)."""
    published = admin.publish_plan(plan)
    created = admin.create_job({**job, "plan_id": int(published["id"])})
    return int(created["id"]), str(published["plan_sha256"])


# --- memory of a process tree, from /proc -------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, found through the parent ids in ``/proc/PID/stat``."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                # The command name is in parentheses and may hold spaces: split after it.
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _field_kib(path: str, name: str) -> int:
    with open(path) as lines:
        for line in lines:
            if line.startswith(name):
                return int(line.split()[1])
    return 0  # a zombie, or a kernel thread


def tree_memory_mb(root: int, *, pss: bool = True) -> tuple[float, float, int]:
    """Summed RSS and PSS (MB) of ``root``'s process tree, and how many processes it holds.

    Summed RSS counts shared pages once per process; PSS shares them out, so its sum is what
    the tree really holds. Processes that end mid-way are skipped; ``pss=False`` skips the
    costlier ``smaps_rollup`` read (PSS is then 0).
    """
    rss = pss_kib = count = 0
    for pid in process_tree(root):
        try:
            rss += _field_kib(f"/proc/{pid}/status", "VmRSS:")
            if pss:
                pss_kib += _field_kib(f"/proc/{pid}/smaps_rollup", "Pss:")
        except OSError:
            continue
        count += 1
    return rss / KIB_PER_MIB, pss_kib / KIB_PER_MIB, count


class PeakMemory:
    """Samples a process tree's memory on a daemon thread while in a ``with`` block.

    ``first_rss_mb`` is the sample taken on entry (before the work: near idle); the peaks are
    over every sample, the one taken on exit included.
    """

    def __init__(self, root: int, *, interval: float = 0.2, pss: bool = True) -> None:
        self.root, self.interval, self.pss = root, interval, pss
        self.first_rss_mb = self.peak_rss_mb = self.peak_pss_mb = 0.0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    def __enter__(self) -> PeakMemory:
        self.sample()
        self.first_rss_mb = self.peak_rss_mb
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        """Add the tree up once and keep the peaks."""
        rss, pss, count = tree_memory_mb(self.root, pss=self.pss)
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        self.peak_pss_mb = max(self.peak_pss_mb, pss)
        self.peak_processes = max(self.peak_processes, count)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


# --- timing -------------------------------------------------------------------------------------


def samples_ms(step: Callable[[], object], count: int) -> list[float]:
    """Milliseconds of ``count`` consecutive calls of ``step``."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        step()
        times.append(1e3 * (time.perf_counter() - started))
    return times


def interleave(trials: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Run every trial once a round, for ``rounds`` rounds; each trial's results in order.

    Interleaving makes load from other processes on a shared machine fall on every candidate
    alike, so their ratios hold even when the milliseconds do not.
    """
    results: dict[str, list[T]] = {name: [] for name in trials}
    for _ in range(rounds):
        for name, trial in trials.items():
            results[name].append(trial())
    return results


def medians(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The median of each figure over runs that all report the same figures."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def load_average() -> float:
    """The 1-minute load average: how busy the (shared) machine was."""
    return os.getloadavg()[0]


# --- the figures table --------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def cell(value: float | None, digits: int = 2) -> str:
    """A number as a table shows it (thousands grouped), or ``-`` when it was not measured."""
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(
    columns: Sequence[tuple[str, int]],
    rows: Iterable[Sequence[str]],
    *,
    notes: Sequence[str] = (),
) -> None:
    """Print a table: (title, width) per column, the first left-aligned, the others right."""
    (first, first_width), rest = columns[0], columns[1:]
    header = f"{first:<{first_width}}" + "".join(f"{title:>{width}}" for title, width in rest)
    print(header)
    print("-" * len(header))
    for row in rows:
        line = f"{row[0]:<{first_width}}"
        line += "".join(f"{text:>{width}}" for text, (_, width) in zip(row[1:], rest, strict=True))
        print(line)
    for note in notes:
        print(note)


# --- the JSON summary ---------------------------------------------------------------------------


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    """``--json PATH``: also write the summary there (the last stdout line holds it anyway)."""
    parser.add_argument("--json", type=Path, help="also write the JSON summary to this file")


def emit(summary: Mapping[str, Any], path: Path | None = None) -> None:
    """Print the run's summary as ONE compact JSON line, and write it to ``path`` if given.

    The machine's core count and load average at the end are added, so a figure read later
    says how busy the machine was when it was taken.
    """
    full = {**summary, "cores": os.cpu_count(), "load_average_end": load_average()}
    print(json.dumps(full, separators=(",", ":")), flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(full, indent=2) + "\n")
