"""Personalizing the final model on the fairness sample: figures with and without the rule."""

import json

import numpy as np
import pytest

from coordinator.aggregation.evaluation import worst_share_mean
from device_sdk import PlanRunner
from fedge.wire import decode_vector
from simulator.config import PartitionConfig, PersonalizationConfig, SimulationConfig, load
from simulator.device_data import DeviceData
from simulator.personalization import DeviceScores, personalize_devices, summarize
from simulator.report import write
from simulator.run import simulate


def scores(rows):
    return [
        DeviceScores(device=i, baseline=b, with_rule=r, fine_tuned=f, kept=r != b)
        for i, (b, r, f) in enumerate(rows)
    ]


def test_the_summary_counts_a_device_as_hurt_only_when_it_ends_below_the_global_model():
    rows = [(0.5, 0.7, 0.7), (0.8, 0.8, 0.6), (0.9, 0.9, 0.9), (0.2, 0.6, 0.6)]

    figures = summarize(scores(rows), PersonalizationConfig())

    baseline, rule, always = (np.array(column) for column in zip(*rows, strict=True))
    assert figures["devices"] == 4
    assert figures["keep_if_better"]["hurt_share"] == 0.0
    assert figures["fine_tune_always"]["hurt_share"] == np.mean(always < baseline)
    assert figures["keep_if_better"]["helped_share"] == np.mean(rule > baseline)
    assert figures["keep_if_better"]["kept_share"] == 0.5
    assert figures["fine_tune_always"]["worst10_gain"] == pytest.approx(
        worst_share_mean(always) - worst_share_mean(baseline)
    )
    assert figures["keep_if_better"]["mean_gain"] == pytest.approx(np.mean(rule - baseline))


def test_a_sample_without_devices_summarizes_to_a_count_of_zero():
    assert summarize([], PersonalizationConfig())["devices"] == 0


@pytest.fixture(scope="module")
def skewed_devices(plans_dir):
    data = DeviceData(
        "mnist", 40, PartitionConfig(alpha=0.1, sizes="equal", mean_examples=60), seed=0
    )
    runner = PlanRunner.from_files(plans_dir / "mnist_mlp.tflite")
    initial = decode_vector((plans_dir / "mnist_mlp.weights").read_bytes())
    config = PersonalizationConfig(steps=10, learning_rate=0.1)
    devices = np.arange(20)
    return runner, data, initial, devices, config


def test_each_device_ends_with_the_global_or_its_fine_tuned_model_as_the_rule_chose(
    skewed_devices,
):
    runner, data, initial, devices, config = skewed_devices

    result = personalize_devices(runner, data, initial, devices, config, seed=0)

    assert [s.device for s in result] == list(devices)
    for device in result:
        assert device.with_rule == (device.fine_tuned if device.kept else device.baseline)
    # An untrained model on one- or two-label devices: a fine-tune of its head helps most.
    assert np.mean([s.kept for s in result]) > 0.5


def test_personalizing_the_same_sample_with_the_same_seed_gives_the_same_scores(skewed_devices):
    runner, data, initial, devices, config = skewed_devices

    first = personalize_devices(runner, data, initial, devices, config, seed=3)
    second = personalize_devices(runner, data, initial, devices, config, seed=3)

    assert first == second


def test_a_personalization_table_is_checked_when_the_config_loads():
    with pytest.raises(ValueError, match="steps"):
        load(None, {"personalization.steps": 0})
    assert load(None, {"personalization.scope": "all"}).personalization.scope == "all"
    assert load(None, {}).personalization is None


def test_a_run_that_personalizes_reports_both_sides_in_summary_and_report(tmp_path, plans_dir):
    config = SimulationConfig.model_validate(
        {
            "devices": 30,
            "hours": 1.0,
            "rounds": 2,
            "model": "mnist_mlp",
            "backend": "local",
            "plans_dir": plans_dir,
            "out": tmp_path / "run",
            "progress": False,
            "fairness_devices": 10,
            "population": {"diurnal": False, "dropout": 0.0},
            "partition": {"alpha": 0.1, "mean_examples": 40},
            "job": {"aggregation": {"concurrency": 5, "buffer_size": 5}},
            "personalization": {"steps": 5},
        }
    )

    outcome = simulate(config)
    write(outcome, config.out)

    figures = json.loads((config.out / "summary.json").read_text())["personalization"]
    assert figures["devices"] == len(outcome.personalization) > 0
    for side in ("keep_if_better", "fine_tune_always"):
        assert {"mean", "worst10", "worst10_gain", "hurt_share"} <= figures[side].keys()
    assert figures["baseline"]["mean"] == pytest.approx(
        np.mean([s.baseline for s in outcome.personalization])
    )
    assert "Personalization on" in (config.out / "report.html").read_text()
