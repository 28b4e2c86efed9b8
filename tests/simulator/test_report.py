"""report.html: what an ML engineer reads after a run, drawn from the run's own output files."""

import base64
import csv
import html
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simulator import report
from simulator.plots import draw
from simulator.report import ReportData, render, render_folder, write
from tests.simulator.test_simulate import small_run

WRITTEN_AT = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, plans_dir):
    """A small real run (60 devices, 30 % dropout, half a virtual hour) and its report files."""
    base = tmp_path_factory.mktemp("report")
    outcome = small_run(base, plans_dir, "run", hours=0.5, eval_every_minutes=10)
    write(outcome, outcome.config.out, written_at=WRITTEN_AT)
    return outcome.config.out


@pytest.fixture(scope="module")
def saved(run_folder):
    return json.loads((run_folder / "summary.json").read_text())


@pytest.fixture(scope="module")
def page(run_folder):
    return (run_folder / "report.html").read_text()


def cards(page: str) -> dict[str, str]:
    """The headline block's figures, label -> value, as the reader sees them."""
    found = re.findall(
        r"<div class='label'>(.*?)</div><div class='value'>(.*?)</div>", section(page, "headline")
    )
    return {html.unescape(label): html.unescape(value) for label, value in found}


def section(page: str, name: str) -> str:
    start = page.index(f"<section id='{name}'>")
    return page[start : page.index("</section>", start)]


def test_the_headline_shows_the_summary_figures_rounded_with_units(page, saved):
    headline = cards(page)

    assert headline["final accuracy"] == f"{100 * saved['final_accuracy']:.1f} %"
    assert headline["worst-10 % devices"] == f"{100 * saved['worst10_accuracy']:.1f} %"
    assert headline["versions"] == f"{saved['versions']:,}"
    assert headline["updates accepted"] == f"{saved['updates_accepted']:,}"
    assert headline["lost to dropout"] == f"{sum(saved['tasks_dropped_by_phase'].values()):,}"
    assert headline["refused"] == f"{saved['updates_rejected']:,}"
    assert headline["participation Gini"] == f"{saved['participation_gini']:.2f}"
    assert headline["uploaded"] == f"{saved['bytes_up'] / 1e6:.1f} MB"
    to_target = headline[f"time to {100 * saved['target_accuracy']:.1f} %"]
    if saved["hours_to_target"] is None:
        assert to_target == "not reached"
    else:  # a half-hour run reaches it, if at all, within the hour: minutes
        assert to_target == f"{round(saved['hours_to_target'] * 60)} min"


def test_the_header_names_the_version_commit_date_seed_and_times_it_ran_with(page, saved):
    head = page[page.index("<header>") : page.index("</header>")]
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()

    assert saved["fedge_version"] == report.fedge_version()
    assert f"<b>Fedge</b> {saved['fedge_version']}" in head
    assert saved["git_commit"].startswith(commit)
    assert html.escape(saved["git_commit"]) in head
    assert saved["written_at"] == "2025-03-14T09:26:53+00:00" and saved["written_at"] in head
    assert f"<b>seed</b> {saved['seed']}" in head
    assert "<b>virtual time</b> 30 min" in head
    assert f"<b>wall time</b> {report.seconds(saved['wall_seconds'])}" in head


def test_the_header_holds_the_resolved_config_as_a_table_not_json(page, saved):
    head = page[page.index("<header>") : page.index("</header>")]

    assert "<td>devices</td><td class='n'>60</td>" in head
    assert "<td>dropout</td><td class='n'>0.3</td>" in head  # population.dropout
    # the job as the coordinator got it, defaults included, keys dotted
    aggregation = saved["job_config"]["aggregation"]
    assert aggregation["buffer_size"] == 4  # the run's job table
    assert aggregation["max_staleness"] == 20  # a default the table left alone
    for key in ("buffer_size", "max_staleness"):
        assert f"<td>aggregation.{key}</td><td class='n'>{aggregation[key]}</td>" in head
    assert "{" not in re.sub(r"<style>.*?</style>", "", head)  # no JSON dump
    # the tiers of the population, one row each in a nested table
    for tier in saved["config"]["population"]["tiers"]:
        assert f"<td>{tier['name']}</td>" in head
    assert "admin_token" not in saved["config"]


def test_the_report_is_one_self_contained_file(page):
    sources = re.findall(r"<img src='([^']*)'", page)

    assert len(sources) >= 6
    for source in sources:
        prefix = "data:image/png;base64,"
        assert source.startswith(prefix)
        assert base64.b64decode(source[len(prefix) :]).startswith(b"\x89PNG")
    assert "<script" not in page
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page


def test_it_plots_accuracy_against_time_and_bytes_tiers_staleness_dropout_and_fairness(
    run_folder, page
):
    for name in ("accuracy", "accuracy_bytes", "tiers", "staleness", "dropout", "fairness"):
        assert (run_folder / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert f"alt='{name}'" in page


def test_the_tier_table_adds_up_to_the_run(page, saved):
    tiers = saved["tiers"]

    assert [t["name"] for t in tiers] == [t["name"] for t in saved["config"]["population"]["tiers"]]
    assert sum(t["devices"] for t in tiers) == saved["devices"]
    assert sum(t["updates_accepted"] for t in tiers) == saved["updates_accepted"]
    assert sum(t["accuracy_devices"] for t in tiers) == saved["accuracy_per_device"]["devices"]
    assert (
        sum(saved["accuracy_per_device_histogram"]["counts"])
        == (saved["accuracy_per_device"]["devices"])
    )
    table = section(page, "tiers")
    for tier in tiers:
        assert f"<td>{tier['name']}</td>" in table
        assert report.percent(tier["accuracy_mean"]) in table


def test_lease_outcomes_and_rejections_are_tables_of_the_summary_counts(page, saved):
    leases = section(page, "leases")
    total = sum(saved["leases_by_status"].values())

    for status, count in saved["leases_by_status"].items():
        assert (
            f"<td>{status}</td><td class='n'>{count:,}</td>"
            f"<td class='n'>{100 * count / total:.1f} %</td>"
        ) in leases
    refused = section(page, "rejections")
    if saved["updates_rejected_by_reason"]:
        for reason in saved["updates_rejected_by_reason"]:
            assert f"<td>{reason}</td>" in refused
    else:
        assert "refused no upload" in refused


def test_dropout_is_shown_by_phase(page, saved):
    dropout = section(page, "dropout")

    assert saved["tasks_dropped_by_phase"]  # 30 % dropout drops some
    for phase, count in saved["tasks_dropped_by_phase"].items():
        assert f"<td>{phase}</td><td class='n'>{count:,}</td>" in dropout


def test_the_report_renders_again_from_the_run_folder_alone(run_folder, page):
    assert render_folder(run_folder) == page


def test_a_section_whose_data_is_absent_is_left_out_not_an_error(run_folder, saved, tmp_path):
    for image in run_folder.glob("*.png"):
        shutil.copy(image, tmp_path)
    figures = dict(saved)
    for key in ("tiers", "accuracy_per_device", "config", "fedge_version", "git_commit"):
        figures.pop(key)
    for key in ("bytes_up_by_codec", "uploads_by_codec"):  # a summary from before codecs
        figures.pop(key, None)
    figures["privacy"] = None
    with (run_folder / "timeseries.csv").open(newline="") as handle:
        rows = [{k: v for k, v in row.items() if k != "bytes_up"} for row in csv.DictReader(handle)]
    (tmp_path / "accuracy_bytes.png").unlink()
    (tmp_path / "tiers.png").unlink()

    images = draw(figures, rows, tmp_path)
    page = render(figures, rows, images)

    assert "accuracy_bytes" not in images and not (tmp_path / "accuracy_bytes.png").exists()
    assert "tiers" not in images
    for absent in ("tiers", "fairness", "privacy", "codecs", "federated_evaluation"):
        assert f"<section id='{absent}'>" not in page
    assert "Configuration it ran" not in page
    assert cards(page)["final accuracy"] == f"{100 * saved['final_accuracy']:.1f} %"
    assert "alt='accuracy'" in page


def test_a_population_of_one_tier_has_no_tier_section(saved, run_folder):
    figures = {**saved, "tiers": saved["tiers"][:1]}

    page = render(figures, [], {})

    assert "<section id='tiers'>" not in page


def test_figures_other_branches_add_render_when_summary_has_them(saved):
    figures = {
        **saved,
        "bytes_up_by_codec": {"float32": saved["bytes_up"]},
        "uploads_by_codec": {"float32": saved["updates_accepted"]},
        "registry": {
            "live": 3,
            "versions": [
                {
                    "version": 3,
                    "stage": "live",
                    "reports": 12,
                    "federated_mean_accuracy": 0.81,
                    "federated_worst10_accuracy": 0.52,
                    "central_accuracy": 0.83,
                }
            ],
            "moves": [
                {
                    "hours": 0.5,
                    "version": 3,
                    "from": "canary",
                    "to": "live",
                    "actor": "gate",
                    "reason": "rollout complete",
                }
            ],
        },
    }

    page = render(figures, [], {})

    codecs = section(page, "codecs")
    assert "<td>float32</td>" in codecs and report.size(saved["bytes_up"]) in codecs
    evaluation = section(page, "federated_evaluation")
    assert "<td>3</td><td>live</td><td>12</td><td>0.810</td><td>0.520</td>" in evaluation
    assert "canary → live" in evaluation


def test_another_section_is_one_function_in_the_list(saved):
    def promotions(data: ReportData) -> str | None:
        return f"<section id='promotions'>{data.figures['versions']} versions</section>"

    page = render(saved, [], {}, sections=(*report.SECTIONS, promotions))

    assert f"<section id='promotions'>{saved['versions']} versions</section>" in page


@pytest.mark.parametrize(
    ("fraction", "shown"), [(0.9083, "90.8 %"), (1.0, "100.0 %"), (None, "—"), (float("nan"), "—")]
)
def test_accuracy_is_a_percentage_with_one_decimal(fraction, shown):
    assert report.percent(fraction) == shown


@pytest.mark.parametrize(
    ("virtual_hours", "shown"),
    [(0.5, "30 min"), (0.01, "36 s"), (1.0, "1 h"), (26.25, "26 h 15 min"), (None, "—")],
)
def test_virtual_times_read_in_hours_and_minutes(virtual_hours, shown):
    assert report.hours(virtual_hours) == shown


@pytest.mark.parametrize(
    ("wall_seconds", "shown"), [(12.34, "12.3 s"), (75.6, "1 min 16 s"), (7384.0, "2 h 3 min")]
)
def test_wall_times_read_in_seconds_minutes_or_hours(wall_seconds, shown):
    assert report.seconds(wall_seconds) == shown


@pytest.mark.parametrize(
    ("count", "shown"),
    [(950, "950 B"), (1_500, "1.5 KB"), (154_319_523, "154.3 MB"), (2_000_000_000, "2.0 GB")],
)
def test_bytes_read_in_decimal_units(count, shown):
    assert report.size(count) == shown


def test_a_checkout_s_commit_is_named_and_none_outside_one(tmp_path):
    inside = tmp_path / "repository"
    (inside / "site-packages").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(inside)], check=True)
    for args in (["add", "-A"], ["commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(
            ["git", "-C", str(inside), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True,
        )
    head = subprocess.run(
        ["git", "-C", str(inside), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    assert report.git_commit(inside) == head
    assert report.git_commit(inside / "site-packages") is None  # a wheel in someone's repo
    assert report.git_commit(tmp_path) is None  # no repository at all


def test_the_report_reads_a_run_folder_written_before_these_figures(run_folder, tmp_path):
    older = json.loads((run_folder / "summary.json").read_text())
    for key in ("config", "job_config", "tiers", "accuracy_per_device_histogram"):
        older.pop(key)
    for key in ("fedge_version", "git_commit", "written_at", "rounds_by_status"):
        older.pop(key)
    (tmp_path / "summary.json").write_text(json.dumps(older))
    shutil.copy(run_folder / "timeseries.csv", tmp_path)

    page = render_folder(tmp_path)

    assert cards(page)["versions"] == f"{older['versions']:,}"
    assert "<img" not in page  # no plots in that folder: none shown, none broken
    assert Path(tmp_path / "report.html").exists() is False  # rendering writes nothing
