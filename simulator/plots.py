"""PNG plots of a run (matplotlib, headless): accuracy over time, staleness, participation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib as mpl

mpl.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from simulator.run import Outcome


def draw(outcome: Outcome, out: Path) -> list[Path]:
    """Draw a run's plots into ``out``; return their paths (ε per version for a DP run)."""
    images = [
        accuracy_over_time([(outcome.config.mode, outcome.rows)], out / "accuracy.png"),
        staleness_histogram(outcome.fleet.stats.staleness, out / "staleness.png"),
        participation_by_hour(
            outcome.fleet.stats.check_ins_by_hour,
            outcome.fleet.stats.tasks_by_hour,
            out / "participation.png",
        ),
    ]
    private = [v for v in outcome.history["versions"] if v.get("privacy")]
    if private:
        images.append(epsilon_per_version(private, out / "epsilon.png"))
    return images


def epsilon_per_version(versions: Sequence[dict[str, Any]], path: Path) -> Path:
    """A DP run's ε after each version, by PLD and by RDP, under the budget."""
    figure, axes = plt.subplots(figsize=(7, 4))
    numbers = [v["version"] for v in versions]
    pld = [v["privacy"]["epsilon_pld"] for v in versions]
    if all(value is not None for value in pld):
        axes.plot(numbers, pld, label="ε (PLD)")
    axes.plot(numbers, [v["privacy"]["epsilon_rdp"] for v in versions], "--", label="ε (RDP)")
    axes.set_xlabel("version")
    axes.set_ylabel(f"ε at δ = {versions[-1]['privacy']['delta']:.0e}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def accuracy_over_time(runs: Sequence[tuple[str, Sequence[dict[str, float]]]], path: Path) -> Path:
    """Test accuracy against virtual hours, one line per run."""
    figure, axes = plt.subplots(figsize=(7, 4))
    for label, rows in runs:
        axes.plot([r["virtual_hours"] for r in rows], [r["accuracy"] for r in rows], label=label)
    axes.set_xlabel("virtual hours")
    axes.set_ylabel("test accuracy")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def staleness_histogram(staleness: Sequence[int], path: Path) -> Path:
    """How many versions behind accepted updates were."""
    figure, axes = plt.subplots(figsize=(7, 4))
    values = np.asarray(staleness, dtype=np.int64)
    if values.size:
        axes.bar(np.arange(values.max() + 1), np.bincount(values))
    axes.set_xlabel("staleness (versions behind)")
    axes.set_ylabel("accepted updates")
    axes.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def participation_by_hour(check_ins: Sequence[int], tasks: Sequence[int], path: Path) -> Path:
    """Check-ins and tasks started per hour of the (virtual) day."""
    figure, axes = plt.subplots(figsize=(7, 4))
    hours = np.arange(24)
    axes.bar(hours - 0.2, check_ins, width=0.4, label="check-ins")
    axes.bar(hours + 0.2, tasks, width=0.4, label="tasks started")
    axes.set_xlabel("hour of the day")
    axes.set_ylabel("count")
    axes.set_xticks(hours[::2])
    axes.legend()
    axes.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
