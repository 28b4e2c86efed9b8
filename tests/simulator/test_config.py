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
    body = SimulationConfig(mode="sync", cohort=100, rounds=10).job_config(plan_id=3)

    assert body["aggregation"]["mode"] == "sync"
    assert body["aggregation"]["target"] == 100
    assert body["max_versions"] == 10


def test_the_job_table_is_layered_over_the_defaults():
    config = SimulationConfig(job={"aggregation": {"concurrency": 50}, "task": {"mu": 0.01}})

    body = config.job_config(plan_id=1)

    assert body["aggregation"]["concurrency"] == 50
    assert body["aggregation"]["buffer_size"] == 10  # default kept
    assert body["task"]["mu"] == 0.01


def test_a_cohort_without_sync_mode_is_refused():
    with pytest.raises(ValueError, match="--cohort"):
        SimulationConfig(cohort=10)


def test_every_shipped_experiment_config_is_valid_down_to_its_job():
    from pathlib import Path

    from coordinator.config import JobCreate

    configs = sorted((Path(__file__).parents[2] / "experiments").rglob("*.toml"))

    assert len(configs) >= 11
    for path in configs:
        config = load(path, {})
        JobCreate.model_validate(config.job_config(plan_id=1))
