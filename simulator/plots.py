"""PNG plots of a run (matplotlib, headless), drawn from its figures and time series.

:func:`draw` takes what ``summary.json`` and ``timeseries.csv`` hold (a run's figures and its
evaluation rows), so a report can be drawn again from a run's folder. Each plot whose data the
run does not have (no ``bytes_up`` column, a population without tiers, no DP) is left out, not
drawn empty; :func:`draw` returns the ones it drew, by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

Row = Mapping[str, Any]


def draw(
    figures: Mapping[str, Any],
    rows: Sequence[Row],
    out: Path,
    *,
    private_versions: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Path]:
    """Draw a run's plots into ``out``; return their paths by name, in the report's order.

    ``private_versions`` are a DP run's versions with their privacy metadata (ε by PLD and RDP).
    """
    label = str(figures.get("mode", "run"))
    images = {"accuracy": accuracy_over_time([(label, rows)], out / "accuracy.png")}
    if rows and all(_number(row.get("bytes_up")) is not None for row in rows):
        images["accuracy_bytes"] = accuracy_over_bytes([(label, rows)], out / "accuracy_bytes.png")
    tiers = figures.get("tiers") or []
    if len(tiers) > 1:
        images["tiers"] = tier_participation(tiers, out / "tiers.png")
    staleness = figures.get("staleness", {}).get("histogram")
    if staleness:
        images["staleness"] = staleness_histogram(staleness, out / "staleness.png")
    if rows and all(_number(row.get("busy_devices")) is not None for row in rows):
        images["dropout"] = dropout_over_time(rows, figures, out / "dropout.png")
    histogram = figures.get("accuracy_per_device_histogram")
    if histogram and sum(histogram["counts"]):
        images["fairness"] = fairness_histogram(histogram, figures, out / "fairness.png")
    participation = figures.get("participation", {})
    if "check_ins_by_hour" in participation:
        images["participation"] = participation_by_hour(
            participation["check_ins_by_hour"],
            participation["tasks_by_hour"],
            out / "participation.png",
        )
    if private_versions:
        images["epsilon"] = epsilon_per_version(private_versions, out / "epsilon.png")
    return images


def accuracy_over_time(runs: Sequence[tuple[str, Sequence[Row]]], path: Path) -> Path:
    """Test accuracy (in %) against virtual time, one line per run."""
    figure, axes = plt.subplots(figsize=(7, 4))
    longest = max((float(r["virtual_hours"]) for _, rows in runs for r in rows), default=0.0)
    in_minutes = longest <= 2
    for label, rows in runs:
        hours = np.array([float(r["virtual_hours"]) for r in rows])
        axes.plot(hours * 60 if in_minutes else hours, _percent(rows), marker=".", label=label)
    axes.set_xlabel("virtual time (min)" if in_minutes else "virtual time (h)")
    return _accuracy_axes(figure, axes, path)


def accuracy_over_bytes(runs: Sequence[tuple[str, Sequence[Row]]], path: Path) -> Path:
    """Test accuracy (in %) against the bytes devices uploaded so far, one line per run."""
    figure, axes = plt.subplots(figsize=(7, 4))
    for label, rows in runs:
        megabytes = [float(r["bytes_up"]) / 1e6 for r in rows]
        axes.plot(megabytes, _percent(rows), marker=".", label=label)
    axes.set_xlabel("uploaded by devices (MB)")
    return _accuracy_axes(figure, axes, path)


def tier_participation(tiers: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Per device tier: its share of the population, of the updates accepted, and accuracy."""
    figure, (shares, accuracy) = plt.subplots(1, 2, figsize=(9, 4))
    names = [str(t["name"]) for t in tiers]
    at = np.arange(len(names))
    devices = sum(int(t["devices"]) for t in tiers) or 1
    accepted = sum(int(t["updates_accepted"]) for t in tiers) or 1
    shares.bar(at - 0.2, [100 * int(t["devices"]) / devices for t in tiers], 0.4, label="devices")
    shares.bar(
        at + 0.2,
        [100 * int(t["updates_accepted"]) / accepted for t in tiers],
        0.4,
        label="updates accepted",
    )
    shares.set_ylabel("share (%)")
    shares.set_title("participation by tier")
    shares.legend()
    means = [_nan_if_none(t.get("accuracy_mean")) for t in tiers]
    worst = [_nan_if_none(t.get("worst10_accuracy")) for t in tiers]
    accuracy.bar(at - 0.2, 100 * np.array(means), 0.4, label="mean")
    accuracy.bar(at + 0.2, 100 * np.array(worst), 0.4, label="worst 10 %")
    accuracy.set_ylabel("final accuracy on the device's data (%)")
    accuracy.set_ylim(0, 100)
    accuracy.set_title("per-device accuracy by tier")
    accuracy.legend()
    for axes in (shares, accuracy):
        axes.set_xticks(at, names)
        axes.grid(alpha=0.3, axis="y")
    return _save(figure, path)


def staleness_histogram(counts: Sequence[int], path: Path) -> Path:
    """How many versions behind accepted updates were (``counts[s]`` updates at staleness s)."""
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.bar(np.arange(len(counts)), counts)
    axes.set_xlabel("staleness (versions behind)")
    axes.set_ylabel("accepted updates")
    axes.grid(alpha=0.3, axis="y")
    return _save(figure, path)


def dropout_over_time(rows: Sequence[Row], figures: Mapping[str, Any], path: Path) -> Path:
    """Devices busy with a task at each evaluation, and tasks dropped since the one before.

    The legend names where dropped tasks stopped (download, training, upload), from the run's
    totals by phase.
    """
    figure, axes = plt.subplots(figsize=(7, 4))
    hours = np.array([float(r["virtual_hours"]) for r in rows])
    in_minutes = hours.max(initial=0.0) <= 2
    when = hours * 60 if in_minutes else hours
    axes.plot(when, [float(r["busy_devices"]) for r in rows], marker=".", label="devices busy")
    # each evaluation interval's drops as a bar over that interval (a repeated time: none)
    dropped = np.diff([float(r["dropped"]) for r in rows])
    starts, widths = when[:-1], np.diff(when)
    kept = widths > 0
    phases = figures.get("tasks_dropped_by_phase", {})
    where = ", ".join(f"{phase} {count}" for phase, count in phases.items()) or "none"
    axes.bar(
        starts[kept],
        dropped[kept],
        width=widths[kept],
        align="edge",
        alpha=0.4,
        color="tab:red",
        edgecolor="tab:red",
        label=f"tasks dropped in the interval ({where})",
    )
    axes.set_xlabel("virtual time (min)" if in_minutes else "virtual time (h)")
    axes.set_ylabel("devices / tasks")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def fairness_histogram(
    histogram: Mapping[str, Sequence[float]], figures: Mapping[str, Any], path: Path
) -> Path:
    """Final accuracy on each sampled device's own held-out data, the worst 10 % marked."""
    figure, axes = plt.subplots(figsize=(7, 4))
    edges = 100 * np.asarray(histogram["edges"], dtype=np.float64)
    axes.bar(edges[:-1], histogram["counts"], width=np.diff(edges), align="edge", alpha=0.8)
    per_device = figures.get("accuracy_per_device", {})
    for key, style, name in (("mean", "-", "mean"), ("worst10_mean", "--", "worst-10 % mean")):
        value = _number(per_device.get(key))
        if value is not None and np.isfinite(value):
            axes.axvline(
                100 * value, color="k", linestyle=style, label=f"{name} {100 * value:.1f} %"
            )
    axes.set_xlabel("final accuracy on the device's held-out data (%)")
    axes.set_ylabel("devices")
    axes.set_xlim(0, 100)
    axes.grid(alpha=0.3, axis="y")
    if axes.get_legend_handles_labels()[1]:  # a mean to mark
        axes.legend()
    return _save(figure, path)


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
    return _save(figure, path)


def epsilon_per_version(versions: Sequence[Mapping[str, Any]], path: Path) -> Path:
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
    return _save(figure, path)


def _accuracy_axes(figure: Figure, axes: Axes, path: Path) -> Path:
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def _percent(rows: Sequence[Row]) -> list[float]:
    return [100 * float(r["accuracy"]) for r in rows]


def _number(value: Any) -> float | None:
    """``value`` as a float (a CSV cell is a string), or None when it is absent or blank."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _nan_if_none(value: Any) -> float:
    number = _number(value)
    return float("nan") if number is None else number


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
