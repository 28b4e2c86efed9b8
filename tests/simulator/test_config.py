"""Simulation config: TOML, dotted overrides, the job each mode creates."""

import pytest

from simulator.config import SimulationConfig, load, parse_assignment


def test_flags_override_the_config_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('devices = 500\nmode = "sync"\n[population]\ndropout = 0.2\n')

    config = load(path, {"devices": 2000, "population.dropout": 0.6})

    assert (config.devices, config.mode, config.population.dropout) == (2000, "sync", 0.6)


def test_set_reads_json_values_and_falls_back_to_strings():
    assert parse_assignment("population.never_return=0") == ("population.never_return", 0)
    assert parse_assignment("model=mnist_cnn") == ("model", "mnist_cnn")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_assignment("devices")


def test_an_unknown_field_is_an_error_not_ignored(tmp_path):
    with pytest.raises(ValueError, match="devcies"):
        load(None, {"devcies": 10})


def test_invalid_toml_says_which_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("devices = = 3")

    with pytest.raises(ValueError, match=r"bad\.toml"):
        load(path, {})


def test_sync_mode_makes_a_round_job_with_the_cohort_as_target():
    job = SimulationConfig(mode="sync", cohort=100, rounds=10).job_config(plan_id=3)

    assert (job.plan_id, job.aggregation.mode, job.aggregation.target) == (3, "sync", 100)
    assert job.max_versions == 10


def test_the_job_table_is_layered_over_the_defaults():
    config = SimulationConfig(job={"aggregation": {"concurrency": 50}, "task": {"mu": 0.01}})

    job = config.job_config(plan_id=1)

    assert job.aggregation.concurrency == 50
    assert job.aggregation.buffer_size == 10  # the simulator's default kept
    assert job.task.mu == 0.01


def test_the_job_sent_is_the_simulators_defaults_plus_the_job_table_and_nothing_else():
    config = SimulationConfig(job={"task": {"mu": 0.01}})

    body = config.job_config(plan_id=1).model_dump(mode="json", exclude_unset=True)

    assert body == {
        "name": "simulation seed 0",
        "plan_id": 1,
        "aggregation": {
            "mode": "async",
            "concurrency": 10,
            "buffer_size": 10,
            "max_staleness": 20,
            "staleness": "polynomial",
        },
        "population": {"min_examples": 1},
        "task": {"local_epochs": 2, "lease_seconds": 900.0, "heartbeat_seconds": 60.0, "mu": 0.01},
    }


def test_a_misspelt_aggregation_field_fails_at_load_naming_the_field(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("devices = 50\n[job.aggregation]\nbufer_size = 20\n")

    with pytest.raises(ValueError, match=r"job\.aggregation\.bufer_size: Extra inputs"):
        load(path, {})


def test_a_job_value_the_coordinator_would_refuse_fails_at_load(tmp_path):
    with pytest.raises(ValueError, match=r"job\.task\.lease_seconds"):
        load(None, {"job.task.lease_seconds": -1})


def test_a_sync_job_table_is_checked_against_the_sync_defaults():
    # minimum 30 > the cohort of 20: the coordinator refuses it, so loading does.
    with pytest.raises(ValueError, match="exceeds target"):
        SimulationConfig(mode="sync", cohort=20, job={"aggregation": {"minimum": 30}})


def test_a_cohort_without_sync_mode_is_refused():
    with pytest.raises(ValueError, match="--cohort"):
        SimulationConfig(cohort=10)


def test_every_shipped_experiment_config_is_valid_down_to_its_job():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[2] / "experiments").rglob("*.toml"))

    assert len(configs) >= 11
    for path in configs:
        assert load(path, {}).job_config(plan_id=1).plan_id == 1  # loading checks the job


def test_dropout_zero_means_no_crash_after_upload_either():
    assert load(None, {"population.dropout": 0}).population.crash_chance == 0.0


def test_crash_after_upload_is_one_percent_with_dropout_unless_set():
    assert load(None, {}).population.crash_chance == 0.01
    set_explicitly = {"population.dropout": 0, "population.crash_after_upload": 0.2}
    assert load(None, set_explicitly).population.crash_chance == 0.2


def test_dp_epsilon_makes_a_capped_dp_job_with_uniform_weights_and_the_runs_seed():
    config = SimulationConfig.model_validate({"devices": 1000, "dp_epsilon": 5.0, "seed": 4})

    job = config.job_config(plan_id=1)

    assert job.aggregation.weighting == "uniform"
    privacy = job.privacy
    assert (privacy.target_epsilon, privacy.epsilon_max, privacy.noise_seed) == (5.0, 5.0, 4)
    assert privacy.participation is not None and privacy.participation.model == "capped"
    assert privacy.participation.window == 50  # 1000 devices / (2 · buffer of 10)
    assert privacy.delta is not None and privacy.delta < 1 / 1000


def test_a_dp_run_against_a_live_server_asks_for_no_noise_seed():
    config = SimulationConfig.model_validate(
        {"devices": 100, "dp_epsilon": 5.0, "server": "http://coordinator:8000"}
    )

    assert config.job_config(plan_id=1).privacy.noise_seed is None


def test_codec_sets_the_jobs_allowed_codecs_and_seeds_its_leases_from_the_run():
    config = SimulationConfig.model_validate({"codec": "float32, rot4", "seed": 7})

    compression = config.job_config(plan_id=1).compression

    assert (compression.codecs, compression.seed) == (["float32", "rot4"], 7)


def test_an_unknown_codec_fails_at_load_naming_the_field():
    with pytest.raises(ValueError, match=r"codec 'zip9': unknown codec"):
        SimulationConfig.model_validate({"codec": "zip9"})


def test_without_codec_the_job_sends_float32():
    assert SimulationConfig().job_config(plan_id=1).compression.codecs == ["float32"]
