"""A whole simulation: the real coordinator in-process, real LiteRT training, virtual time."""

import json

import pytest

from simulator.config import SimulationConfig
from simulator.report import write
from simulator.run import simulate


def small_run(tmp_path, plans_dir, name, **overrides):
    fields = {
        "devices": 60,
        "hours": 1.0,
        "model": "mnist_mlp",
        "dataset": "mnist",
        "backend": "local",
        "plans_dir": plans_dir,
        "out": tmp_path / name,
        "progress": False,
        "eval_every_minutes": 15,
        "fairness_devices": 20,
        "population": {"diurnal": False, "dropout": 0.3, "reference_ms_per_example": 20.0},
        "partition": {"mean_examples": 40},
        "job": {"aggregation": {"concurrency": 8, "buffer_size": 4}, "task": {"local_epochs": 1}},
    }
    fields.update(overrides)
    return simulate(SimulationConfig.model_validate(fields))


@pytest.fixture(scope="module")
def outcome(tmp_path_factory, plans_dir):
    return small_run(tmp_path_factory.mktemp("sim"), plans_dir, "a")


def test_devices_train_the_real_plan_into_new_versions_that_learn(outcome):
    rows = outcome.rows

    assert rows[-1]["version"] > 3
    assert rows[-1]["accuracy"] > rows[0]["accuracy"] + 0.2


def test_every_accepted_update_is_counted_once_on_both_sides(outcome):
    stats = outcome.fleet.stats
    leases = outcome.history["leases"]

    assert stats.accepted > 0
    assert leases["completed"] == stats.accepted
    in_versions = sum(v["accepted"] for v in outcome.history["versions"] if v["version"] > 0)
    assert in_versions <= stats.accepted < in_versions + 4  # at most K-1 wait in the buffer


def test_dropped_devices_leave_expired_leases_not_stalled_slots(outcome):
    stats = outcome.fleet.stats
    leases = outcome.history["leases"]

    assert sum(stats.dropped.values()) > 0
    # A device that vanished never reports; the lease deadline is what frees its slot.
    assert leases.get("expired", 0) > 0
    assert stats.tasks == sum(leases.values())


def test_a_sync_round_that_reaches_its_target_cuts_the_devices_still_training(tmp_path, plans_dir):
    outcome = small_run(
        tmp_path,
        plans_dir,
        "sync",
        mode="sync",
        cohort=4,
        job={"aggregation": {"over_selection": 2.5}, "task": {"heartbeat_seconds": 5}},
    )
    stats = outcome.fleet.stats

    assert stats.heartbeats > 0
    # Over-selected devices still training when their round closed learnt it at their next
    # heartbeat and stopped: no training for nothing, no refused upload.
    assert stats.cut > 0
    assert stats.rejected.get("lease_closed", 0) < stats.cut


def test_the_report_has_the_summary_fields_scripts_rely_on(outcome, tmp_path):
    figures = write(outcome, tmp_path, plots=True)

    saved = json.loads((tmp_path / "summary.json").read_text())
    for key in (
        "final_accuracy",
        "wall_seconds",
        "virtual_hours",
        "versions",
        "updates_accepted",
        "updates_rejected",
        "updates_lost",
        "bytes_up",
        "bytes_down",
        "peak_rss_mb",
        "worst10_accuracy",
    ):
        assert key in saved
    assert saved["final_accuracy"] == figures["final_accuracy"]
    assert saved["virtual_hours"] == pytest.approx(1.0)
    assert (tmp_path / "timeseries.csv").read_text().startswith("virtual_hours,version")
    for image in ("accuracy.png", "staleness.png", "participation.png"):
        assert (tmp_path / image).read_bytes().startswith(b"\x89PNG")
    assert "accuracy.png" in (tmp_path / "report.html").read_text()


def test_the_same_seed_gives_the_same_run(outcome, tmp_path, plans_dir):
    again = small_run(tmp_path, plans_dir, "b")

    assert again.rows == outcome.rows
    assert again.fleet.stats.staleness == outcome.fleet.stats.staleness
    assert again.fairness == outcome.fairness


def test_a_plan_that_does_not_fit_the_dataset_is_refused_before_running(tmp_path, plans_dir):
    with pytest.raises(ValueError, match="inputs of shape"):
        small_run(tmp_path, plans_dir, "c", model="synthetic_logreg")


@pytest.mark.slow
def test_the_ray_backend_on_a_local_cluster_gives_the_same_run(outcome, tmp_path, plans_dir):
    pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")

    on_ray = small_run(tmp_path, plans_dir, "ray", backend="ray", workers=2)

    assert on_ray.rows == outcome.rows


def test_the_process_pool_gives_the_same_run(outcome, tmp_path, plans_dir):
    pooled = small_run(tmp_path, plans_dir, "pool", backend="process", workers=2)

    assert pooled.rows == outcome.rows


def test_a_window_that_closes_during_download_interrupts_training_at_once(tmp_path, plans_dir):
    # Short daily windows and slow networks: many downloads outlast the device's window.
    run = small_run(
        tmp_path,
        plans_dir,
        "closing",
        hours=3.0,
        population={
            "diurnal": True,
            "night_share": 0.0,
            "day_hours_median": 0.05,
            "down_mbps_median": 0.2,
            "dropout": 0.0,
        },
    )

    assert run.fleet.stats.aborted["user_activity"] > 0
    assert run.rows[-1]["virtual_hours"] == pytest.approx(3.0)


def test_a_dp_run_reports_its_final_epsilon_and_noise_multiplier(tmp_path, plans_dir):
    dp = small_run(tmp_path, plans_dir, "dp", dp_epsilon=5.0, rounds=3, hours=0.5)

    figures = write(dp, dp.config.out)

    privacy = figures["privacy"]
    assert privacy["versions"] == dp.rows[-1]["version"] > 0
    assert 0 < privacy["epsilon"] <= 5.0
    assert privacy["epsilon_rdp"] >= privacy["epsilon_pld"] > 0
    assert privacy["noise_multiplier"] > 0 and privacy["noise_seeded"] is True
    assert privacy["delta"] < 1 / 60
    assert privacy["calibrated_from"] == 5.0
    assert json.loads((dp.config.out / "summary.json").read_text())["privacy"] == privacy
    assert (dp.config.out / "epsilon.png").exists()
