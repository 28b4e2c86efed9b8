"""A run's report: ``summary.json``, ``timeseries.csv``, PNG plots and ``report.html``."""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from simulator.run import Outcome, worst_share_mean


def summary(outcome: Outcome) -> dict[str, Any]:
    """The figures of a run, as written to ``summary.json``."""
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
        "peak_rss_mb": round(outcome.peak_rss_mb, 1),
        "population_bytes_per_device": round(outcome.population.bytes_per_device, 1),
        "job_status": history.get("status"),
        "privacy": privacy_summary(history),
        "attack": attack_summary(outcome),
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


def _eligible_participation(outcome: Outcome) -> dict[str, Any]:
    population = outcome.population
    return participation(population.contributions[population.sessions > 0])


def write(outcome: Outcome, out: Path, *, plots: bool = True) -> dict[str, Any]:
    """Write every report file under ``out``; return the summary."""
    figures = summary(outcome)
    (out / "summary.json").write_text(json.dumps(figures, indent=2, default=_plain) + "\n")
    with (out / "timeseries.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(outcome.rows[0]))
        writer.writeheader()
        writer.writerows(outcome.rows)
    if plots:
        from simulator.plots import draw

        images = draw(outcome, out)
        _html(figures, images, out)
    return figures


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


def _html(figures: dict[str, Any], images: list[Path], out: Path) -> None:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(json.dumps(v, default=_plain))}</td></tr>"
        for k, v in figures.items()
        if not isinstance(v, dict | list)
    )
    pictures = "".join(f'<figure><img src="{p.name}" alt="{p.stem}"></figure>' for p in images)
    (out / "report.html").write_text(
        "<!doctype html><meta charset='utf-8'><title>Fedge simulation</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "td,th{text-align:left;padding:2px 8px}img{max-width:100%}</style>"
        f"<h1>Fedge simulation: {figures['devices']} devices, {figures['mode']}"
        f"{' (interrupted: a partial run)' if figures['interrupted'] else ''}</h1>"
        f"<table>{rows}</table>{audit_section(figures.get('audit'))}{pictures}"
        "<p>Full figures: <a href='summary.json'>summary.json</a>, time series: "
        "<a href='timeseries.csv'>timeseries.csv</a>.</p>\n"
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
