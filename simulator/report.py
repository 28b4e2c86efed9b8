"""A run's report: ``summary.json``, ``timeseries.csv``, PNG plots and ``report.html``.

``report.html`` is drawn from what the other files hold (:func:`render` takes a run's figures,
its evaluation rows and its plots; :func:`render_folder` reads them back from a run's folder), so
it can be drawn again from a finished run. It is one self-contained file: the plots are inlined
as base64 PNGs (the PNG files stay beside it too), no script, no CDN.

The page is a list of small section functions, :data:`SECTIONS`: each takes the
:class:`ReportData` and returns its HTML, or None when the run has no data for it (a population
without tiers, a run without DP), so that section is left out, not an error. A branch that adds
figures to ``summary.json`` adds one function here and its place in the tuple.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

import fedge
from coordinator.aggregation.evaluation import worst_share_mean
from simulator.fleet import FleetStats
from simulator.personalization import summarize as personalization_summary
from simulator.run import Outcome

FAIRNESS_BINS = 20
"""Bins of the per-device accuracy histogram in ``summary.json`` (equal widths over 0–100 %)."""


def summary(outcome: Outcome, *, written_at: datetime | None = None) -> dict[str, Any]:
    """The figures of a run, as written to ``summary.json``.

    ``written_at`` is when the report is written (now, by default): the report's date.
    """
    stats = outcome.fleet.stats
    rows = outcome.rows
    config = outcome.config
    final = rows[-1]
    history = outcome.history
    server_accepted = sum(int(v["accepted"]) for v in history["versions"] if v["version"] > 0)
    leases = history.get("leases", {})
    staleness = np.asarray(stats.staleness, dtype=np.float64)
    reached = next(
        (r["virtual_hours"] for r in rows if r["accuracy"] >= config.target_accuracy), None
    )
    fairness = outcome.fairness
    contributions = outcome.population.tasks
    return {
        "interrupted": outcome.interrupted,
        "final_accuracy": final["accuracy"],
        "final_loss": final["loss"],
        "target_accuracy": config.target_accuracy,
        "hours_to_target": reached,
        "wall_seconds": round(outcome.wall_seconds, 2),
        "virtual_hours": round(outcome.virtual_seconds / 3600.0, 4),
        "versions": final["version"],
        "devices": config.devices,
        "mode": config.mode,
        "model": config.model,
        "dataset": config.dataset,
        "data_mode": outcome.data_mode,
        "seed": config.seed,
        "dropout": config.population.dropout,
        "crash_after_upload_chance": config.population.crash_chance,
        "devices_registered": int(np.count_nonzero(outcome.population.token)),
        "check_ins": stats.check_ins,
        "tasks": stats.tasks,
        "trainings": stats.trained,
        "updates_accepted": stats.accepted,
        "updates_accepted_by_server": int(leases.get("completed", 0)),
        "updates_in_versions": server_accepted,
        "updates_rejected": sum(stats.rejected.values()),
        "updates_rejected_by_reason": dict(stats.rejected),
        "updates_lost": stats.updates_lost,
        "tasks_dropped_by_phase": dict(stats.dropped),
        "tasks_aborted_by_reason": dict(stats.aborted),
        "crashed_after_upload": stats.crashed_after_upload,
        "heartbeats": stats.heartbeats,
        "trainings_cut": stats.cut,
        "leases_by_status": leases,
        "request_failures": dict(stats.failures),
        "staleness": _distribution(staleness),
        "bytes_up": int(stats.bytes_up),
        "bytes_down": int(stats.bytes_down),
        "codecs": config.job_config(1).compression.codecs,
        "bytes_up_by_codec": dict(stats.bytes_up_by_codec),
        "uploads_by_codec": dict(stats.uploads_by_codec),
        "bytes_up_per_upload": (
            round(stats.bytes_up / sum(stats.uploads_by_codec.values()), 1)
            if stats.uploads_by_codec
            else None
        ),
        "accuracy_per_device": {
            "devices": len(fairness),
            "mean": float(np.mean(fairness)) if fairness else math.nan,
            "worst10_mean": worst_share_mean(fairness),
            "p10": float(np.percentile(fairness, 10)) if fairness else math.nan,
        },
        "worst10_accuracy": worst_share_mean(fairness),
        "participation": {
            "devices_that_trained": int(np.count_nonzero(contributions)),
            "tasks_per_device_max": int(contributions.max()) if contributions.size else 0,
            # accepted updates per device, over the devices eligible at some moment of the run
            "contributions": _eligible_participation(outcome),
            "check_ins_by_hour": stats.check_ins_by_hour,
            "tasks_by_hour": stats.tasks_by_hour,
        },
        # flat copies for report.html's table, which shows no nested figures
        "participation_gini": _eligible_participation(outcome).get("gini"),
        "participation_max_over_mean": _eligible_participation(outcome).get("max_over_mean"),
        **_wasted_work(stats, server_accepted),
        "peak_rss_mb": round(outcome.peak_rss_mb, 1),
        "population_bytes_per_device": round(outcome.population.bytes_per_device, 1),
        "job_status": history.get("status"),
        "privacy": privacy_summary(history),
        "evaluations": stats.evaluations,
        "evaluations_reported": stats.evaluations_reported,
        "updates_poisoned": stats.poisoned,
        # each evaluated version: federated mean and worst-10 % beside the central oracle; and
        # the registry's stage moves over time (a staged rollout's widenings and rollbacks)
        "registry": outcome.registry,
        "rolled_back": rolled_back(outcome.registry),
        "attack": attack_summary(outcome),
        "personalization": (
            None
            if outcome.personalization is None or config.personalization is None
            else personalization_summary(outcome.personalization, config.personalization)
        ),
        # what the run was: the report's header
        "fedge_version": fedge_version(),
        "git_commit": git_commit(),
        "written_at": (written_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        "config": config.model_dump(mode="json", exclude={"admin_token"}),
        "job_config": config.job_config(1).model_dump(mode="json", exclude={"plan_id"}),
        "rounds_by_status": history.get("rounds", {}),
        "tiers": tier_figures(outcome),
        "accuracy_per_device_histogram": _histogram(fairness),
        "audit": outcome.audit,
    }


def attack_summary(outcome: Outcome) -> dict[str, Any] | None:
    """A poisoned run's attack, main-task accuracy, backdoor success and updates zeroed."""
    adversary = outcome.adversary
    if adversary is None:
        return None
    final, attack = outcome.rows[-1], adversary.config
    zeroed = sum(
        int((v.get("defences") or {}).get("zeroed", 0)) for v in outcome.history["versions"]
    )
    return {
        "kind": attack.kind,
        "fraction": attack.fraction,
        "malicious_devices": len(adversary.malicious),
        "main_task_accuracy": final["accuracy"],
        "backdoor_success": final.get("backdoor_success"),
        "updates_zeroed": zeroed,
    }


def rolled_back(registry: dict[str, Any] | None) -> list[int]:
    """Versions the gates retired from canary or live (automatic rollbacks)."""
    if not registry:
        return []
    return [
        int(m["version"])
        for m in registry["moves"]
        if m["actor"] == "gate" and m["to"] == "retired" and m["from"] in ("canary", "live")
    ]


def rollout_section(figures: dict[str, Any]) -> str:
    """The report's section on federated evaluation and the rollout's stages (a hook: plain)."""
    registry = figures.get("registry")
    if not registry or not (registry["versions"] or registry["moves"]):
        return ""
    evaluated = "".join(
        f"<tr><td>{v['version']}</td><td>{v['stage']}</td><td>{v['reports']}</td>"
        f"<td>{v['federated_mean_accuracy']:.3f}</td><td>{v['federated_worst10_accuracy']:.3f}"
        f"</td><td>{v['central_accuracy']:.3f}</td></tr>"
        for v in registry["versions"]
    )
    moves = "".join(
        f"<tr><td>{m['hours']:.2f}</td><td>{m['version']}</td><td>{m['from']} → {m['to']}</td>"
        f"<td>{html.escape(m['actor'])}</td><td>{html.escape(m['reason'])}</td></tr>"
        for m in registry["moves"]
    )
    return (
        "<h2>Federated evaluation and rollout</h2><table><tr><th>version</th><th>stage</th>"
        "<th>reports</th><th>federated mean</th><th>federated worst-10 %</th>"
        f"<th>central (oracle)</th></tr>{evaluated}</table>"
        "<h3>Stages over time</h3><table><tr><th>hours</th><th>version</th><th>move</th>"
        f"<th>by</th><th>why</th></tr>{moves}</table>"
    )


def _wasted_work(stats: FleetStats, in_versions: int) -> dict[str, float]:
    """Shares of the tasks handed out whose update never entered a version, and why.

    ``tasks_wasted_share``: every such task (the issue's "wasted device work"). Of the tasks,
    ``tasks_lost_to_dropout_share`` vanished with their device mid-task (download, training,
    upload; a crash after an accepted upload loses nothing), and
    ``tasks_wasted_by_coordinator_share`` are those the coordinator's choices threw away:
    refused reports, trainings cut by a closed lease, aborts, accepted updates left out of
    every version.
    """
    tasks = stats.tasks
    if tasks == 0:
        return {}
    vanished = sum(n for phase, n in stats.dropped.items() if phase != "after_upload")
    thrown = (
        sum(stats.rejected.values())
        + stats.cut
        + sum(stats.aborted.values())
        + max(stats.accepted - in_versions, 0)
    )
    return {
        "tasks_wasted_share": round(max(tasks - in_versions, 0) / tasks, 4),
        "tasks_lost_to_dropout_share": round(vanished / tasks, 4),
        "tasks_wasted_by_coordinator_share": round(thrown / tasks, 4),
    }


def privacy_summary(history: dict[str, Any]) -> dict[str, Any] | None:
    """A DP run's final ε (PLD and RDP) at δ, z, C and its assumptions; None without privacy."""
    private = [v["privacy"] for v in history["versions"] if v.get("privacy")]
    if not private:
        return None
    last = private[-1]
    keys = ("epsilon", "method", "epsilon_pld", "epsilon_rdp", "delta", "noise_multiplier")
    return {
        **{key: last[key] for key in keys},
        "noise_seeded": last["noise_seeded"],
        "calibrated_from": last["calibrated_from"],
        "clip_norm": last["next_clip_norm"],
        "versions": len(private),
        "versions_within_budget": last["versions_within_budget"],
        "budget_exhausted": history.get("status") == "budget_exhausted",
        "assumptions": last["assumptions"],
        "epsilon_per_version": [
            {"version": v["version"], "epsilon": v["privacy"]["epsilon"]}
            for v in history["versions"]
            if v.get("privacy")
        ],
    }


def tier_figures(outcome: Outcome) -> list[dict[str, Any]]:
    """Per hardware tier: its devices, who trained, updates accepted, final per-device accuracy.

    The accuracy is that of the final model on the held-out data of the devices sampled for
    fairness (``fairness_devices``), grouped by their tier.
    """
    population = outcome.population
    scores = np.asarray(outcome.fairness, dtype=np.float64)
    scored_tiers = population.tier[np.asarray(outcome.fairness_devices, dtype=np.int64)]
    figures = []
    for index, tier in enumerate(outcome.config.population.tiers):
        members = population.tier == index
        mine = scores[scored_tiers == index] if scores.size == scored_tiers.size else scores[:0]
        figures.append(
            {
                "name": tier.name,
                "compute_factor": tier.compute_factor,
                "devices": int(np.count_nonzero(members)),
                "devices_eligible": int(np.count_nonzero(members & (population.sessions > 0))),
                "devices_that_trained": int(np.count_nonzero(members & (population.tasks > 0))),
                "updates_accepted": int(population.contributions[members].sum()),
                "accuracy_devices": int(mine.size),
                "accuracy_mean": float(mine.mean()) if mine.size else None,
                "worst10_accuracy": worst_share_mean(list(mine)) if mine.size else None,
            }
        )
    return figures


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when all are equal, → 1 when one has all."""
    values = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = values.size, float(values.sum())
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2.0 * np.sum(ranks * values)) / (n * total) - (n + 1) / n)


def participation(counts: np.ndarray) -> dict[str, Any]:
    """How accepted updates spread over devices: Gini, max / mean, and the share with none."""
    if counts.size == 0:
        return {"devices": 0}
    mean = float(counts.mean())
    return {
        "devices": int(counts.size),
        "gini": round(gini(counts), 4),
        "max": int(counts.max()),
        "mean": round(mean, 3),
        "max_over_mean": round(float(counts.max()) / mean, 3) if mean else None,
        "share_with_none": round(float(np.mean(counts == 0)), 4),
    }


def fedge_version() -> str:
    """The installed distribution's version, or the source tree's when run from a checkout."""
    try:
        return metadata.version("fedge")
    except metadata.PackageNotFoundError:
        return fedge.__version__


CHECKOUT = Path(__file__).resolve().parent.parent
"""Where this simulator's files are: a Fedge checkout's root, or site-packages."""


def git_commit(root: Path = CHECKOUT) -> str | None:
    """The commit of the checkout at ``root``, with "+ changes" when its files have edits.

    None when ``root`` is not the top of a git checkout (an installed wheel, even inside
    someone else's repository) or git is missing.
    """
    root = root.resolve()
    try:
        found = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
        if len(found) != 2 or Path(found[0]).resolve() != root:
            return None  # a wheel inside someone else's repository
        dirty = subprocess.run(
            ["git", "-C", str(root), "diff", "--quiet", "HEAD", "--"],
            capture_output=True,
            timeout=10,
            check=False,
        ).returncode
    except (OSError, subprocess.SubprocessError):
        return None
    return found[1] + (" + changes" if dirty else "")


def _eligible_participation(outcome: Outcome) -> dict[str, Any]:
    population = outcome.population
    return participation(population.contributions[population.sessions > 0])


def write(
    outcome: Outcome, out: Path, *, plots: bool = True, written_at: datetime | None = None
) -> dict[str, Any]:
    """Write every report file under ``out``; return the summary."""
    figures = summary(outcome, written_at=written_at)
    (out / "summary.json").write_text(json.dumps(figures, indent=2, default=_plain) + "\n")
    with (out / "timeseries.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(outcome.rows[0]))
        writer.writeheader()
        writer.writerows(outcome.rows)
    if plots:
        from simulator.plots import draw

        private = [v for v in outcome.history["versions"] if v.get("privacy")]
        images = draw(figures, outcome.rows, out, private_versions=private)
        (out / "report.html").write_text(render(figures, outcome.rows, images))
    return figures


# --- report.html -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportData:
    """What a section draws from: the summary, the evaluation rows, and the plots by name."""

    figures: Mapping[str, Any]
    rows: Sequence[Mapping[str, Any]]
    images: Mapping[str, Path] = field(default_factory=dict)


Section = Callable[[ReportData], str | None]


def render(
    figures: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    images: Mapping[str, Path],
    sections: Iterable[Section] | None = None,
) -> str:
    """``report.html``: every section that has data, in order, in one self-contained page."""
    data = ReportData(figures, rows, images)
    body = "".join(part for section in (sections or SECTIONS) if (part := section(data)))
    title = f"Fedge simulation: {_count(figures.get('devices'))} devices, {figures.get('mode')}"
    return (
        "<!doctype html><html lang='en'><meta charset='utf-8'>"
        f"<title>{_text(title)}</title><style>{_STYLE}</style><body>{body}"
        "<p class='files'>Every figure: <a href='summary.json'>summary.json</a>; the time "
        "series: <a href='timeseries.csv'>timeseries.csv</a>.</p></body></html>\n"
    )


def render_folder(out: Path) -> str:
    """``report.html`` again from a run's folder: its summary.json, timeseries.csv and PNGs."""
    figures = json.loads((out / "summary.json").read_text())
    with (out / "timeseries.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    images = {name: out / file for name, file in _IMAGE_FILES.items() if (out / file).exists()}
    return render(figures, rows, images)


_IMAGE_FILES = {
    "accuracy": "accuracy.png",
    "accuracy_bytes": "accuracy_bytes.png",
    "tiers": "tiers.png",
    "staleness": "staleness.png",
    "dropout": "dropout.png",
    "fairness": "fairness.png",
    "participation": "participation.png",
    "epsilon": "epsilon.png",
}


def header(data: ReportData) -> str:
    """What ran: the title, Fedge's version and commit, date, seed, times, and the config."""
    f = data.figures
    partial = " — interrupted, a partial run" if f.get("interrupted") else ""
    facts = {
        "Fedge": f.get("fedge_version"),
        "commit": f.get("git_commit"),
        "written": f.get("written_at"),
        "seed": f.get("seed"),
        "model / dataset": f"{f.get('model')} on {f.get('dataset')} ({f.get('data_mode')})",
        "virtual time": hours(f.get("virtual_hours")),
        "wall time": seconds(f.get("wall_seconds")),
        "peak memory": _unit(f.get("peak_rss_mb"), "MB", ".0f"),
    }
    line = " · ".join(
        f"<span><b>{_text(k)}</b> {_text(v)}</span>" for k, v in facts.items() if v is not None
    )
    parts = [
        f"<h1>Fedge simulation: {_count(f.get('devices'))} devices, {_text(f.get('mode'))}"
        f"{_text(partial)}</h1><p class='facts'>{line}</p>"
    ]
    config = f.get("config")
    if isinstance(config, Mapping):
        parts.append(
            "<details><summary>Configuration it ran (resolved)</summary>"
            f"{_config_tables(config, f.get('job_config'))}</details>"
        )
    return "<header>" + "".join(parts) + "</header>"


def headline(data: ReportData) -> str:
    """The figures an ML engineer looks at first."""
    f = data.figures
    target = f.get("target_accuracy")
    reached = f.get("hours_to_target")
    dropped = _total(f.get("tasks_dropped_by_phase"))
    cards = [
        ("final accuracy", percent(f.get("final_accuracy")), f"loss {_fixed(f.get('final_loss'))}"),
        (
            f"time to {percent(target)}",
            hours(reached) if reached is not None else "not reached",
            "virtual time until an evaluation first reached it",
        ),
        ("versions", _count(f.get("versions")), f"job {f.get('job_status') or '—'}"),
        (
            "updates accepted",
            _count(f.get("updates_accepted")),
            f"{_count(f.get('tasks'))} tasks leased",
        ),
        (
            "lost to dropout",
            _count(dropped),
            f"tasks; {_count(f.get('updates_lost'))} trained updates lost in upload",
        ),
        ("refused", _count(f.get("updates_rejected")), "uploads the coordinator refused"),
        (
            "worst-10 % devices",
            percent(f.get("worst10_accuracy")),
            "mean accuracy of the worst-off tenth",
        ),
        (
            "participation Gini",
            _fixed(f.get("participation_gini"), ".2f"),
            "accepted updates per eligible device (0 = even)",
        ),
        ("uploaded", size(f.get("bytes_up")), f"downloaded {size(f.get('bytes_down'))}"),
    ]
    items = "".join(
        f"<div class='card'><div class='label'>{_text(label)}</div>"
        f"<div class='value'>{_text(value)}</div><div class='note'>{_text(note)}</div></div>"
        for label, value, note in cards
    )
    return f"<section id='headline'><h2>Headline</h2><div class='cards'>{items}</div></section>"


def learning(data: ReportData) -> str | None:
    """Accuracy against virtual time and against bytes uploaded."""
    pictures = _figures(data, ("accuracy", "accuracy_bytes"))
    if not pictures:
        return None
    return f"<section id='learning'><h2>Learning</h2>{pictures}</section>"


def tiers(data: ReportData) -> str | None:
    """Per hardware tier: participation and final per-device accuracy."""
    figures = data.figures.get("tiers") or []
    if len(figures) < 2:
        return None
    rows = [
        [
            t["name"],
            f"×{t['compute_factor']:g}",
            _count(t["devices"]),
            _count(t["devices_that_trained"]),
            _count(t["updates_accepted"]),
            _share(t["updates_accepted"], _total(t["updates_accepted"] for t in figures)),
            percent(t.get("accuracy_mean")),
            percent(t.get("worst10_accuracy")),
            _count(t.get("accuracy_devices")),
        ]
        for t in figures
    ]
    table = _table(
        [
            "tier",
            "time per example",
            "devices",
            "trained",
            "updates accepted",
            "share of updates",
            "accuracy (mean)",
            "worst 10 %",
            "devices scored",
        ],
        rows,
    )
    return f"<section id='tiers'><h2>Device tiers</h2>{table}{_figures(data, ('tiers',))}</section>"


def staleness(data: ReportData) -> str | None:
    """How many versions behind the accepted updates were."""
    spread = data.figures.get("staleness") or {}
    if not spread.get("count"):
        return None
    line = (
        f"{_count(spread['count'])} accepted updates: mean {spread['mean']:.2f} versions behind, "
        f"median {spread['p50']:g}, 90th percentile {spread['p90']:g}, most {spread['max']}."
    )
    return (
        f"<section id='staleness'><h2>Staleness</h2><p>{_text(line)}</p>"
        f"{_figures(data, ('staleness',))}</section>"
    )


def dropout(data: ReportData) -> str | None:
    """Where dropped tasks stopped, and devices busy / dropped over time."""
    phases = data.figures.get("tasks_dropped_by_phase")
    if phases is None:
        return None
    total = _total(phases)
    rows = [
        [phase, _count(count), _share(count, total)]
        for phase, count in sorted(phases.items(), key=lambda item: -item[1])
    ]
    rate = data.figures.get("dropout")
    intro = (
        f"The population drops {percent(rate)} of its tasks silently; "
        f"{_count(total)} tasks stopped mid-way."
        if rate is not None
        else f"{_count(total)} tasks stopped mid-way."
    )
    table = _table(["phase", "tasks dropped", "share"], rows) if rows else ""
    return (
        f"<section id='dropout'><h2>Dropout</h2><p>{_text(intro)}</p>{table}"
        f"{_figures(data, ('dropout',))}</section>"
    )


def fairness(data: ReportData) -> str | None:
    """Final accuracy on each sampled device's own held-out data."""
    per_device = data.figures.get("accuracy_per_device") or {}
    if not per_device.get("devices"):
        return None
    line = (
        f"The final model on the held-out data of {_count(per_device['devices'])} sampled "
        f"devices: mean {percent(per_device.get('mean'))}, 10th percentile "
        f"{percent(per_device.get('p10'))}, worst 10 % of devices "
        f"{percent(per_device.get('worst10_mean'))}."
    )
    return (
        f"<section id='fairness'><h2>Fairness</h2><p>{_text(line)}</p>"
        f"{_figures(data, ('fairness',))}</section>"
    )


def leases(data: ReportData) -> str | None:
    """Lease outcomes (completed, expired, aborted by reason, rejected) and sync rounds."""
    statuses = data.figures.get("leases_by_status")
    if not statuses:
        return None
    total = _total(statuses)
    order = ("completed", "expired", "aborted", "rejected", "active")
    ranked = sorted(statuses, key=lambda s: (order.index(s) if s in order else len(order), s))
    rows = [
        [status, _count(statuses[status]), _share(statuses[status], total)] for status in ranked
    ]
    for reason, count in sorted((data.figures.get("tasks_aborted_by_reason") or {}).items()):
        rows.append([f"aborted: {reason}", _count(count), _share(count, total)])
    parts = [_table(["lease outcome", "leases", "share"], rows)]
    rounds = data.figures.get("rounds_by_status") or {}
    if rounds:
        parts.append(
            _table(["round", "rounds"], [[s, _count(n)] for s, n in sorted(rounds.items())])
        )
    return f"<section id='leases'><h2>Leases</h2>{''.join(parts)}</section>"


def rejections(data: ReportData) -> str | None:
    """Uploads the coordinator refused, by its reason, and requests that failed."""
    refused = data.figures.get("updates_rejected_by_reason")
    failures = data.figures.get("request_failures") or {}
    if refused is None:
        return None
    if not refused and not failures:
        return (
            "<section id='rejections'><h2>Refused uploads</h2>"
            "<p>The coordinator refused no upload.</p></section>"
        )
    total = _total(refused)
    parts = []
    if refused:
        rows = [[r, _count(n), _share(n, total)] for r, n in sorted(refused.items())]
        parts.append(_table(["reason", "uploads refused", "share"], rows))
    if failures:
        parts.append(
            _table(
                ["request failure", "count"], [[k, _count(n)] for k, n in sorted(failures.items())]
            )
        )
    return f"<section id='rejections'><h2>Refused uploads</h2>{''.join(parts)}</section>"


def participation_section(data: ReportData) -> str | None:
    """How accepted updates spread over the devices, and check-ins by hour of the day."""
    spread = data.figures.get("participation") or {}
    contributions = spread.get("contributions") or {}
    if not contributions.get("devices"):
        return None
    line = (
        f"{_count(spread.get('devices_that_trained'))} devices trained; over the "
        f"{_count(contributions['devices'])} that were eligible, accepted updates per device: "
        f"mean {contributions['mean']:g}, most {contributions['max']} "
        f"({_fixed(contributions.get('max_over_mean'), '.1f')}× the mean), Gini "
        f"{contributions['gini']:.2f}, {percent(contributions['share_with_none'])} with none."
    )
    return (
        f"<section id='participation'><h2>Participation</h2><p>{_text(line)}</p>"
        f"{_figures(data, ('participation',))}</section>"
    )


def privacy(data: ReportData) -> str | None:
    """A DP run's ε per version against its budget, δ, z, C and the accounting's assumptions."""
    dp = data.figures.get("privacy")
    if not dp:
        return None
    rows = [
        ["ε", f"{dp['epsilon']:.3g} ({dp['method']})"],
        ["ε by PLD / RDP", f"{_fixed(dp.get('epsilon_pld'), '.3g')} / {dp['epsilon_rdp']:.3g}"],
        ["δ", f"{dp['delta']:.1e}"],
        ["noise multiplier z", f"{dp['noise_multiplier']:.3g}"],
        ["clip norm C", f"{dp['clip_norm']:.3g}"],
        ["versions (within budget)", f"{dp['versions']} ({dp['versions_within_budget']})"],
        ["budget exhausted", "yes" if dp["budget_exhausted"] else "no"],
        ["noise seeded", "yes (a repeatable simulation)" if dp["noise_seeded"] else "no"],
    ]
    assumptions = dp.get("assumptions")
    notes = f"<h3>What this ε assumes</h3>{_value_html(assumptions)}" if assumptions else ""
    return (
        f"<section id='privacy'><h2>Privacy</h2>{_table(['', ''], rows)}{notes}"
        f"{_figures(data, ('epsilon',))}</section>"
    )


def bytes_by_codec(data: ReportData) -> str | None:
    """Bytes devices uploaded per update codec (when the run records them)."""
    by_codec = data.figures.get("bytes_up_by_codec")
    if not by_codec:
        return None
    uploads = data.figures.get("uploads_by_codec") or {}
    rows = [
        [
            codec,
            size(count),
            _count(uploads.get(codec)),
            size(count / uploads[codec]) if uploads.get(codec) else "—",
        ]
        for codec, count in sorted(by_codec.items())
    ]
    table = _table(["codec", "uploaded", "uploads", "per upload"], rows)
    return f"<section id='codecs'><h2>Uploads by codec</h2>{table}</section>"


def federated_evaluation(data: ReportData) -> str | None:
    """Federated evaluation per version beside the central oracle, and the registry's moves."""
    body = rollout_section(dict(data.figures))
    return f"<section id='federated_evaluation'>{body}</section>" if body else None


def personalization(data: ReportData) -> str | None:
    """Per-device accuracy before and after personalizing (``--personalize``)."""
    body = _personalization_html(data.figures.get("personalization"))
    return f"<section id='personalization'>{body}</section>" if body else None


def privacy_audit(data: ReportData) -> str | None:
    """The privacy audit: membership-inference AUC and the canaries' empirical ε (``--audit``)."""
    body = audit_section(data.figures.get("audit"))
    return f"<section id='audit'>{body}</section>" if body else None


SECTIONS: tuple[Section, ...] = (
    header,
    headline,
    learning,
    tiers,
    staleness,
    dropout,
    fairness,
    leases,
    rejections,
    participation_section,
    privacy,
    bytes_by_codec,
    federated_evaluation,
    personalization,
    privacy_audit,
)
"""The report's sections, in page order."""


# --- figures with units -------------------------------------------------------------------------


def percent(fraction: Any) -> str:
    """0.9083 -> "90.8 %"; "—" for a figure the run does not have."""
    value = _finite(fraction)
    return "—" if value is None else f"{100 * value:.1f} %"


def hours(value: Any) -> str:
    """Virtual hours as a reader says them: 0.5 -> "30 min", 26.25 -> "26 h 15 min"."""
    number = _finite(value)
    if number is None:
        return "—"
    minutes = round(number * 60)
    if number * 60 < 1:
        return f"{number * 3600:.0f} s"
    if minutes < 60:
        return f"{minutes} min"
    whole, rest = divmod(minutes, 60)
    return f"{whole} h" + (f" {rest} min" if rest else "")


def seconds(value: Any) -> str:
    """Wall seconds: 12.34 -> "12.3 s", 75.6 -> "1 min 16 s", 7384 -> "2 h 3 min"."""
    number = _finite(value)
    if number is None:
        return "—"
    if number < 60:
        return f"{number:.1f} s"
    if number < 3600:
        whole, rest = divmod(round(number), 60)
        return f"{whole} min {rest} s"
    return hours(number / 3600)


def size(count: Any) -> str:
    """Bytes in decimal units: 950 -> "950 B", 154_319_523 -> "154.3 MB"."""
    number = _finite(count)
    if number is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(number) >= scale:
            return f"{number / scale:.1f} {unit}"
    return f"{number:.0f} B"


# --- HTML pieces -------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:64em;margin:1em auto;padding:0 1em;"
    "color:#222}h1{font-size:1.5em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;"
    "margin-top:1.6em}.facts span{white-space:nowrap}.cards{display:grid;"
    "grid-template-columns:repeat(auto-fill,minmax(12em,1fr));gap:.6em}.card{border:1px solid "
    "#ddd;border-radius:6px;padding:.5em .8em}.card .label{color:#555;font-size:.85em}"
    ".card .value{font-size:1.6em;font-weight:600}.card .note{color:#777;font-size:.8em}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{text-align:left;padding:2px 10px;"
    "border-bottom:1px solid #eee;vertical-align:top}td.n{text-align:right;"
    "font-variant-numeric:tabular-nums}figure{margin:1em 0}img{max-width:100%}"
    "figcaption{color:#777;font-size:.8em}details{margin:.8em 0}summary{cursor:pointer}"
    "h3{font-size:1em;margin:.8em 0 .2em}.files{color:#777;margin-top:2em}"
)


def _figures(data: ReportData, names: Sequence[str]) -> str:
    """The named plots that were drawn, inlined as base64 PNGs."""
    parts = []
    for name in names:
        path = data.images.get(name)
        if path is None or not path.exists():
            continue
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(
            f"<figure><img src='data:image/png;base64,{encoded}' alt='{_text(name)}'>"
            f"<figcaption><a href='{_text(path.name)}'>{_text(path.name)}</a></figcaption>"
            "</figure>"
        )
    return "".join(parts)


def _table(heads: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_text(h)}</th>" for h in heads) if any(heads) else ""
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


class _Markup(str):
    """A table cell that is HTML already (a nested table), not text to escape."""


def _cell(value: Any) -> str:
    if isinstance(value, _Markup):
        return f"<td>{value}</td>"
    if _numeric(value):
        return f"<td class='n'>{_text(value)}</td>"
    return f"<td>{_text(value)}</td>"


def _config_tables(config: Mapping[str, Any], job: Any) -> str:
    """The resolved config as readable tables: the run's fields, then each nested table."""
    groups: dict[str, list[list[str]]] = {"run": []}
    for key, value in config.items():
        if key == "job":
            continue  # the resolved job follows, defaults included
        if isinstance(value, Mapping):
            groups[key] = _flat_rows(value)
        else:
            groups["run"].append([key, _value_text(value)])
    if isinstance(job, Mapping):
        groups["job (as the coordinator received it)"] = _flat_rows(job)
    return "".join(
        f"<h3>{_text(name)}</h3>{_table(['', ''], rows)}" for name, rows in groups.items() if rows
    )


def _flat_rows(tree: Mapping[str, Any], prefix: str = "") -> list[list[str]]:
    """Nested tables as dotted keys; a list of records (the tiers) as a table in its cell."""
    rows: list[list[str]] = []
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            rows.extend(_flat_rows(value, f"{prefix}{key}."))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            rows.append([f"{prefix}{key}", _Markup(_value_html(value))])
        else:
            rows.append([f"{prefix}{key}", _value_text(value)])
    return rows


def _value_text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        if value and all(isinstance(item, Mapping) for item in value):
            return "; ".join(
                ", ".join(f"{k} {_value_text(v)}" for k, v in item.items()) for item in value
            )
        return ", ".join(_value_text(item) for item in value) or "—"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_value_text(v)}" for k, v in value.items()) or "—"
    return str(value)


def _value_html(value: Any) -> str:
    """Figures as a table: a mapping flattened to dotted keys, a list of records by column."""
    if isinstance(value, Mapping):
        return _table(["", ""], _flat_rows(value))
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        columns = list(dict.fromkeys(key for record in value for key in record))
        return _table(columns, [[_value_text(r.get(c)) for c in columns] for r in value])
    return f"<p>{_text(_value_text(value))}</p>"


def _text(value: Any) -> str:
    return html.escape("—" if value is None else str(value), quote=True)


def _numeric(cell: Any) -> bool:
    text = str(cell)
    return bool(text) and (text[0].isdigit() or text[0] in "×−-") and not text.startswith("-:")


def _count(value: Any) -> str:
    number = _finite(value)
    return "—" if number is None else f"{round(number):,}"


def _fixed(value: Any, spec: str = ".3f") -> str:
    number = _finite(value)
    return "—" if number is None else format(number, spec)


def _unit(value: Any, unit: str, spec: str) -> str | None:
    number = _finite(value)
    return None if number is None else f"{format(number, spec)} {unit}"


def _share(part: Any, whole: Any) -> str:
    total = _finite(whole)
    return percent(float(part) / total) if total else "—"


def _total(counts: Any) -> int:
    if isinstance(counts, Mapping):
        counts = counts.values()
    return int(sum(counts or ()))


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _histogram(scores: Sequence[float]) -> dict[str, list[float] | list[int]]:
    edges = np.linspace(0.0, 1.0, FAIRNESS_BINS + 1)
    counts, _ = np.histogram(np.asarray(scores, dtype=np.float64), bins=edges)
    return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}


def _distribution(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"count": 0}
    counts = np.bincount(values.astype(np.int64))
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "max": int(values.max()),
        "histogram": [int(c) for c in counts],
    }


def _personalization_html(figures: dict[str, Any] | None) -> str:
    """Per-device accuracy before and after personalizing, with and without the rule."""
    if not figures or not figures.get("devices"):
        return ""
    base = figures["baseline"]
    cells = "".join(
        f"<tr><th>{label}</th><td>{side['mean']:.3f}</td><td>{side['worst10']:.3f}</td>"
        f"<td>{side.get('worst10_gain', 0.0):+.3f}</td><td>{side.get('hurt_share', 0.0):.1%}</td>"
        "</tr>"
        for label, side in (
            ("global model", base),
            ("fine-tune, keep if better", figures["keep_if_better"]),
            ("fine-tune always", figures["fine_tune_always"]),
        )
    )
    return (
        f"<h2>Personalization on {figures['devices']} devices (held-out test accuracy)</h2>"
        "<table><tr><th></th><th>mean</th><th>worst 10 %</th><th>worst-10 % gain</th>"
        f"<th>devices hurt</th></tr>{cells}</table>"
    )


def audit_section(audit: dict[str, Any] | None) -> str:
    """The privacy audit's few lines of report.html: attack AUCs, ε lower vs upper; or ''."""
    if audit is None:
        return ""
    lines = []
    attack = audit.get("membership")
    if attack is not None:
        for unit in ("per_example", "per_device"):
            a = attack[unit]
            lines.append(
                f"membership-inference AUC {unit.replace('_', ' ')}: {a['auc']:.3f} "
                f"[{a['low']:.3f}, {a['high']:.3f}]"
            )
    lower, upper = audit.get("epsilon_lower"), audit.get("epsilon_upper")
    lines.append(
        f"ε at δ = {audit['delta']:g}: empirical lower "
        f"{'n/a' if lower is None else f'{lower:.3f}'} (canaries), accountant "
        f"{'∞ (no DP)' if upper is None else f'{upper:.3f}'}"
    )
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<h2>Privacy audit</h2><ul>{items}</ul>"


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
