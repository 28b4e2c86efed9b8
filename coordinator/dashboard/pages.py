"""The dashboard's HTML pages, rendered from :mod:`coordinator.services.overview`'s records.

String templates with every value escaped; the CSS is inline and the charts are inline SVG
(:mod:`coordinator.dashboard.charts`), so a page is one response that works offline. Each
figure carries ``data-metric="NAME"``: the browser tests (and anyone scraping) find it by name.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from coordinator.dashboard import charts
from coordinator.services.overview import FleetOverview, JobDetail, JobSummary, VersionRow

Cell = str | int | float | None

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#f6f7f9}
header{display:flex;gap:1.5em;align-items:center;padding:.6em 1.5em;background:#14325c;color:#fff}
header a{color:#fff}header form{margin-left:auto}main{padding:1em 1.5em;max-width:1200px}
section{background:#fff;border:1px solid #dde;border-radius:6px;padding:.8em 1.2em;margin:1em 0}
h1{font-size:1.4em}h2{font-size:1.15em;margin:.2em 0 .6em}
dl.figures{display:flex;flex-wrap:wrap;gap:.6em 2.2em;margin:0}dl.figures dt{color:#555}
dl.figures dd{margin:0;font-size:1.5em;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
td,th{padding:.2em .7em;border-bottom:1px solid #eee;text-align:right}
th:first-child,td:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:1em}
svg.chart text{font-size:11px;fill:#333}.error{color:#a40000;font-weight:600}
.note{color:#555}.hook{border-style:dashed}
"""


def login_page(*, message: str | None = None, next_path: str = "/dashboard") -> str:
    """The login form: it posts the admin token, which the server exchanges for a cookie."""
    error = f'<p class="error" id="login-error">{escape(message)}</p>' if message else ""
    form = f"""
<section><h2>Log in</h2>{error}
<form method="post" action="/dashboard/login">
<label for="token">Admin token</label>
<input type="password" id="token" name="token" autocomplete="current-password" required>
<input type="hidden" name="next" value="{escape(next_path)}">
<button type="submit" id="login">Log in</button></form>
<p class="note">The coordinator's admin token (FEDGE_ADMIN_TOKEN). The page keeps a signed
session cookie, never the token itself. Scripts send <code>Authorization: Bearer TOKEN</code>
instead.</p></section>"""
    return _page("Fedge dashboard: log in", form, signed_in=False)


def fleet_page(overview: FleetOverview) -> str:
    """The front page: population, device health and every job."""
    population, health = overview.population, overview.health
    figures = _figures(
        [
            ("registered devices", "registered", population.registered),
            ("seen in the last hour", "seen-last-hour", population.seen_last_hour),
            ("seen in the last day", "seen-last-day", population.seen_last_day),
            ("given a task in the last hour", "leased-last-hour", population.leased_last_hour),
            ("active leases", "active-leases", population.active_leases),
        ]
    )
    population_section = _section(
        "Population",
        figures
        + _charts(
            charts.bar_chart(population.runtimes, title="devices by runtime"),
            charts.bar_chart(population.sdk_versions, title="devices by SDK version"),
        )
        + _counts_table("runtime", population.runtimes, "runtime")
        + _counts_table("SDK version", population.sdk_versions, "sdk-version"),
        "population",
    )
    health_section = _section(
        "Device health",
        _charts(
            charts.bar_chart(health.lease_outcomes, title="leases by outcome"),
            charts.histogram(health.task_seconds, title="task durations (completed)", unit="s"),
        )
        + _counts_table("lease outcome", health.lease_outcomes, "lease-outcome")
        + _counts_table("abort reason", health.abort_reasons, "abort-reason")
        + _counts_table("expiry cause", health.expiry_reasons, "expiry-reason")
        + _counts_table("upload refused", health.upload_rejections, "rejection"),
        "health",
    )
    jobs_section = _section("Jobs", _jobs_table(overview.jobs), "jobs")
    body = f"<h1>Fleet</h1>{_as_of(overview.now)}{population_section}{health_section}{jobs_section}"
    return _page("Fedge dashboard", body)


def job_page(detail: JobDetail) -> str:
    """One job: funnel, buffers or rounds, learning, privacy, bytes, evaluation hook, versions."""
    job = detail.summary
    body = (
        f"<h1>Job {job.id}: {escape(job.name)}</h1>{_as_of(detail.now)}"
        + _section("Summary", _summary(detail), "summary")
        + _section("Rounds and buffers", _rounds(detail), "rounds")
        + _section("Learning", _learning(detail.versions), "learning")
        + (_section("Privacy", _privacy(detail), "privacy") if detail.privacy else "")
        + _section("Bytes", _bytes(detail), "bytes")
        + _evaluation(detail.evaluation)
        + _section("Versions", _versions_table(detail.versions), "versions")
    )
    return _page(f"Fedge dashboard: job {job.id}", body)


def _summary(detail: JobDetail) -> str:
    job = detail.summary
    return _figures(
        [
            ("status", "status", job.status),
            ("mode", "mode", job.mode),
            ("current version", "current-version", job.current_version),
            ("versions", "versions-count", detail.versions_total),
            ("accepted updates", "accepted-updates", job.accepted_updates),
            ("refused uploads", "rejected-uploads", job.rejected_uploads),
        ]
    )


def _rounds(detail: JobDetail) -> str:
    wasted = detail.wasted
    leases = detail.leases
    dropped = wasted.aborted + wasted.expired + wasted.rejected
    funnel = _figures(
        [
            ("selected (leases issued)", "selected", detail.selected),
            ("completed", "completed", leases.get("completed", 0)),
            ("dropped", "dropped", dropped),
            ("still active", "active", leases.get("active", 0)),
            ("waiting for a version", "waiting", wasted.waiting),
            ("buffer size K", "buffer-size", detail.buffer_size),
            ("wasted work", "wasted-fraction", _percent(wasted.wasted_fraction)),
        ]
    )
    dropouts = _counts_table(
        "dropped as",
        {"aborted": wasted.aborted, "expired": wasted.expired, "rejected": wasted.rejected},
        "dropped",
    )
    staleness = {f"{s} behind": n for s, n in sorted(detail.staleness.items())}
    fills = [(v.number, v.fill_seconds) for v in detail.versions if v.fill_seconds is not None]
    parts = [
        funnel,
        _charts(
            charts.columns(staleness, title="accepted updates by staleness"),
            charts.line_chart(
                {"fill time (s)": [(float(n), s) for n, s in fills]},
                title="time to fill each version",
                x_label="version",
            ),
        ),
        dropouts,
        _counts_table(
            "staleness", {str(s): n for s, n in sorted(detail.staleness.items())}, "staleness"
        ),
        _counts_table("upload refused", detail.rejections, "rejection"),
    ]
    if detail.rounds:
        parts.append(
            _table(
                [
                    "round",
                    "base version",
                    "status",
                    "selected",
                    "target",
                    "minimum",
                    "reported",
                    "fill s",
                ],
                [
                    [
                        r.number,
                        r.base_version,
                        r.status,
                        r.to_select,
                        r.target,
                        r.minimum,
                        r.reported,
                        r.fill_seconds,
                    ]
                    for r in detail.rounds
                ],
                "rounds",
            )
        )
    return "".join(parts)


def _learning(versions: Sequence[VersionRow]) -> str:
    quantiles = {
        name: [
            (float(v.number), v.update_norm_quantiles[name])
            for v in versions
            if name in v.update_norm_quantiles
        ]
        for name in ("p10", "p50", "p90")
    }
    evaluation = {
        "accuracy": [
            (float(v.number), v.eval_accuracy) for v in versions if v.eval_accuracy is not None
        ],
        "loss": [(float(v.number), v.eval_loss) for v in versions if v.eval_loss is not None],
    }
    clipped = sum(v.clipped for v in versions)
    return _figures([("updates clipped", "clipped", clipped)]) + _charts(
        charts.line_chart(quantiles, title="update norm quantiles", x_label="version"),
        charts.line_chart(
            {"mean staleness": [(float(v.number), v.mean_staleness) for v in versions]},
            title="mean staleness per version",
            x_label="version",
        ),
        charts.line_chart(evaluation, title="device-reported evaluation", x_label="base version"),
    )


def _privacy(detail: JobDetail) -> str:
    standing = detail.privacy
    if standing is None:  # pragma: no cover - the caller checks
        return ""
    figures = _figures(
        [
            ("ε", "epsilon", standing.epsilon),
            ("δ", "delta", standing.delta),
            ("ε budget", "epsilon-max", standing.epsilon_max),
            ("noise multiplier z", "noise-multiplier", standing.noise_multiplier),
            ("clip norm C", "clip-norm", standing.clip_norm),
            ("versions within budget", "versions-within-budget", standing.versions_within_budget),
        ]
    )
    spent = [(float(v.number), v.epsilon) for v in detail.versions if v.epsilon is not None]
    return figures + _charts(
        charts.line_chart({"ε": spent}, title="ε per version", x_label="version")
    )


def _bytes(detail: JobDetail) -> str:
    latest = detail.versions[-1].model_bytes if detail.versions else 0
    figures = _figures(
        [
            ("uplink bytes accepted", "uplink-bytes", detail.uplink_bytes),
            ("model bytes (one download)", "model-bytes", latest),
        ]
    )
    per_version = [
        (float(v.number), float(v.uplink_bytes)) for v in detail.versions if v.number > 0
    ]
    return figures + _charts(
        charts.line_chart(
            {"uplink bytes": per_version}, title="uplink bytes per version", x_label="version"
        )
    )


def _evaluation(evaluation: Mapping[str, Any] | None) -> str:
    """Federated evaluation and the model registry: the live version, the newest evaluation."""
    if not evaluation:
        return "<!-- no federated evaluation or live version yet -->"
    rows = [
        [name, value if isinstance(value, int | float | str) else str(value)]
        for name, value in evaluation.items()
    ]
    return _section(
        "Evaluation and registry",
        _table(["figure", "value"], rows, "evaluation"),
        "evaluation",
        css="hook",
    )


def _jobs_table(jobs: Sequence[JobSummary]) -> str:
    if not jobs:
        return '<p class="note">No job yet: <code>fedge admin create-job</code>.</p>'
    rows = [
        [
            f'<a href="/dashboard/jobs/{job.id}" id="job-{job.id}">{job.id}</a>',
            escape(job.name),
            job.mode,
            job.status,
            job.current_version,
            job.accepted_updates,
            job.rejected_uploads,
            job.epsilon,
        ]
        for job in jobs
    ]
    headers = ["job", "name", "mode", "status", "version", "accepted", "refused", "ε"]
    return _table(headers, rows, "jobs", raw_first=True)


def _versions_table(versions: Sequence[VersionRow]) -> str:
    headers = [
        "version", "created (UTC)", "accepted", "examples", "mean staleness", "norm mean",
        "norm p50", "norm p90", "clipped", "uplink bytes", "fill s", "aggregation s",
        "eval accuracy", "ε",
    ]  # fmt: skip
    rows = [
        [
            v.number,
            _iso(v.created_at),
            v.accepted,
            v.examples,
            v.mean_staleness,
            v.update_norm_mean,
            v.update_norm_quantiles.get("p50"),
            v.update_norm_quantiles.get("p90"),
            v.clipped,
            v.uplink_bytes,
            v.fill_seconds,
            v.aggregation_seconds,
            v.eval_accuracy,
            v.epsilon,
        ]
        for v in reversed(versions)
    ]
    return _table(headers, rows, "version")


def _figures(items: Iterable[tuple[str, str, Cell]]) -> str:
    cells = "".join(
        f'<div><dt>{escape(label)}</dt><dd data-metric="{name}">{_cell(value)}</dd></div>'
        for label, name, value in items
    )
    return f'<dl class="figures">{cells}</dl>'


def _counts_table(label: str, counts: Mapping[str, int], metric: str) -> str:
    if not counts:
        return ""
    rows: list[list[Cell]] = [
        [key, count] for key, count in sorted(counts.items(), key=lambda kv: -kv[1])
    ]
    return _table([label, "count"], rows, metric)


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[Cell]], metric: str, *, raw_first: bool = False
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        key = "" if raw_first else f' data-key="{escape(str(row[0]))}"'
        cells = [f"<td{key}>{row[0] if raw_first else _cell(row[0])}</td>"]
        cells += [f"<td>{_cell(value)}</td>" for value in row[1:]]
        body.append(f"<tr>{''.join(cells)}</tr>")
    rows_html = "".join(body)
    return (
        f'<table data-metric="{metric}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows_html}</tbody></table>"
    )


def _cell(value: Cell) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(value)


def _percent(fraction: float | None) -> str | None:
    return None if fraction is None else f"{fraction:.1%}"


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


def _as_of(now: float) -> str:
    return f'<p class="note">As of {_iso(now)}; reload for fresh figures.</p>'


def _charts(*svgs: str) -> str:
    return f'<div class="charts">{"".join(svgs)}</div>'


def _section(title: str, body: str, name: str, *, css: str = "") -> str:
    return f'<section id="{name}" class="{css}"><h2>{escape(title)}</h2>{body}</section>'


def _page(title: str, body: str, *, signed_in: bool = True) -> str:
    logout = (
        '<form method="post" action="/dashboard/logout"><button id="logout">Log out</button></form>'
        if signed_in
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_STYLE}</style></head>
<body><header><strong>Fedge</strong><a href="/dashboard">Fleet</a>{logout}</header>
<main>{body}</main></body></html>"""
