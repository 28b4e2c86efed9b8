"""What ``fedge admin`` does and prints: human tables (times in ISO 8601) or, with --json, JSON.

Imported when an admin command runs (``coordinator/cli.py`` registers the arguments); it needs
only :mod:`coordinator.admin_client` (httpx), so it runs without the server extra.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from coordinator.admin_client import AdminClient
from fedge.options import fail

Column = tuple[str, Callable[[dict[str, Any]], object]]


def run(args: argparse.Namespace) -> int:
    """Run ``fedge admin COMMAND``; print what it returned; return the exit status."""
    token = args.token or os.environ.get("FEDGE_ADMIN_TOKEN")
    if not token:
        return fail("fedge", "pass --token or set FEDGE_ADMIN_TOKEN")
    with AdminClient(args.server, token) as admin:
        result, show = _perform(admin, args)
    print(json.dumps(result, indent=2) if args.json or show is None else show(result))
    return 0


def _perform(
    admin: AdminClient, args: argparse.Namespace
) -> tuple[Any, Callable[[Any], str] | None]:
    """Do the command; its JSON result and how to show it to a person (None: as JSON)."""
    command = args.admin_command
    if command == "publish-plan":
        return admin.publish_plan(Path(args.plan)), lambda plan: plans_table([plan])
    if command == "create-job":
        config = json.loads(Path(args.config).read_text()) if args.config else {}
        config.setdefault("name", args.name)
        if args.plan_id is not None:
            config["plan_id"] = args.plan_id
        config.setdefault("aggregation", {}).setdefault("mode", args.mode)
        return admin.create_job(config), lambda job: jobs_table([job])
    if command in ("pause", "resume", "stop"):
        return admin.change_status(args.job, command), lambda job: jobs_table([job])
    if command == "jobs":
        return admin.jobs(), jobs_table
    if command == "plans":
        return admin.plans(), plans_table
    if command == "devices":
        return admin.devices(args.limit), devices_table
    if command == "versions":
        return admin.versions(args.job), versions_table
    if command == "download":
        return _download(admin, args), lambda saved: f"wrote {saved['path']} ({saved['bytes']:,} B)"
    if command == "promote":
        entry = admin.promote(args.job, args.version, to=args.to, reason=args.reason)
        return entry, lambda e: registry_table([e])
    if command == "rollback":
        back = admin.rollback(args.job, reason=args.reason)
        return back, lambda b: f"job {b['job_id']}: live version now {_text(b['live'])}"
    if command == "registry":
        return admin.registry(args.job), lambda r: registry_table(r["versions"])
    return admin.metrics(args.job), None  # nested per-version history: JSON reads best


def _download(admin: AdminClient, args: argparse.Namespace) -> dict[str, Any]:
    """Save a version's inference model (``.tflite``) or, with --weights, its weights."""
    if args.weights:
        data, name = admin.weights_bytes(args.job, args.version), "weights"
    else:
        data, name = admin.inference_model(args.job, args.version), "tflite"
    path = Path(args.out or f"job{args.job}-v{args.version}.{name}")
    path.write_bytes(data)
    return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# --- tables --------------------------------------------------------------------------------


def iso_time(seconds: float | None) -> str:
    """Unix seconds as ISO 8601 in UTC, to the second: ``2026-12-03T06:45:46Z``."""
    if seconds is None:
        return "-"
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """``rows`` as plain text columns under upper-case headers, numbers aligned right."""
    cells = [[_text(cell(row)) for _, cell in columns] for row in rows]
    numeric = [
        all(isinstance(cell(row), int | float) for row in rows) and bool(rows)
        for _, cell in columns
    ]
    widths = [
        max([len(header), *(len(line[i]) for line in cells)])
        for i, (header, _) in enumerate(columns)
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line([header for header, _ in columns]), *(line(row) for row in cells)])


def _text(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def jobs_table(jobs: Sequence[dict[str, Any]]) -> str:
    """Jobs: id, name, plan, mode, status, current version."""
    return table(
        jobs,
        [
            ("ID", lambda j: j["id"]),
            ("NAME", lambda j: j["name"]),
            ("PLAN", lambda j: j["plan_id"]),
            ("MODE", lambda j: j["mode"]),
            ("STATUS", lambda j: j["status"]),
            ("VERSION", lambda j: j["current_version"]),
        ],
    )


def plans_table(plans: Sequence[dict[str, Any]]) -> str:
    """Plans: id, name, parameters, sha256 (its first 12 digits), when registered."""
    return table(
        plans,
        [
            ("ID", lambda p: p["id"]),
            ("NAME", lambda p: p["name"]),
            ("PARAMS", lambda p: p["num_params"]),
            ("SHA256", lambda p: p["plan_sha256"][:12]),
            ("REGISTERED", lambda p: iso_time(p.get("created_at"))),
        ],
    )


def devices_table(listed: dict[str, Any]) -> str:
    """Devices seen most recently: id, registered, last seen, runtime, SDK version."""
    devices = listed["devices"]
    rows = table(
        devices,
        [
            ("ID", lambda d: d["id"]),
            ("REGISTERED", lambda d: iso_time(d["registered_at"])),
            ("LAST SEEN", lambda d: iso_time(d["last_seen_at"])),
            ("RUNTIME", lambda d: d["runtime"] or "-"),
            ("SDK", lambda d: d["sdk_version"] or "-"),
        ],
    )
    return f"{listed['total']:,} devices registered; the {len(devices):,} seen last:\n{rows}"


def versions_table(versions: Sequence[dict[str, Any]]) -> str:
    """Versions: number, when made, updates and examples in it, staleness, update norms."""
    return table(
        versions,
        [
            ("VERSION", lambda v: v["number"]),
            ("CREATED", lambda v: iso_time(v["created_at"])),
            ("UPDATES", lambda v: v["num_updates"]),
            ("EXAMPLES", lambda v: v["num_examples"]),
            ("STALENESS", lambda v: float(v["mean_staleness"])),
            ("NORM MEAN", lambda v: float(v["update_norm_mean"])),
            ("ROUND", lambda v: v.get("round")),
        ],
    )


def registry_table(entries: Sequence[dict[str, Any]]) -> str:
    """Registry entries: version, stage, parent, reports, mean and worst-10 % accuracy, ε."""

    def summary(e: dict[str, Any], key: str) -> object:
        evaluation = e.get("evaluation")
        return None if evaluation is None else evaluation[key]

    return table(
        entries,
        [
            ("VERSION", lambda e: e["lineage"]["version"]),
            ("STAGE", lambda e: e["stage"]),
            ("PARENT", lambda e: e["lineage"]["parent"]),
            ("REPORTS", lambda e: summary(e, "reports")),
            ("MEAN ACC", lambda e: summary(e, "mean_accuracy")),
            ("WORST10 ACC", lambda e: summary(e, "worst10_accuracy")),
            ("EPSILON", lambda e: e["lineage"]["epsilon"]),
            ("CREATED", lambda e: iso_time(e["lineage"]["created_at"])),
        ],
    )
