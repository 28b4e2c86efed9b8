"""FedScale-format traces: capacities and availability replayed onto a population."""

import json
import pickle

import numpy as np
import pytest

from simulator.config import PopulationConfig, TraceConfig
from simulator.population import synthesize
from simulator.traces import TraceError, apply_traces


def population(n):
    return synthesize(
        n,
        PopulationConfig(),
        num_examples=np.full(n, 10, dtype=np.int32),
        rng=np.random.default_rng(0),
    )


@pytest.fixture
def traces(tmp_path):
    capacity = {
        1: {"computation": 20.0, "communication": 4000.0},
        2: {"computation": 50.0, "communication": 800.0},
    }
    behaviour = {
        1: {"duration": 100, "active": [0, 500], "inactive": [100, 700], "finish_time": 1000},
        2: {"duration": 100, "active": [300], "inactive": [400], "finish_time": 1000},
    }
    (tmp_path / "capacity.pkl").write_bytes(pickle.dumps(capacity))
    (tmp_path / "behaviour.json").write_text(json.dumps(behaviour))
    return TraceConfig(
        device_capacity=tmp_path / "capacity.pkl", behaviour=tmp_path / "behaviour.json"
    )


def test_capacities_set_speed_and_bandwidth_cycling_over_the_trace(traces):
    fleet = population(4)

    apply_traces(fleet, traces, rng=np.random.default_rng(0))

    # FedScale charges training three times the per-sample computation.
    assert fleet.ms_per_example.tolist() == [60.0, 150.0, 60.0, 150.0]
    assert fleet.up_kbps.tolist() == [4000.0, 800.0, 4000.0, 800.0]


def test_availability_follows_the_active_intervals_and_repeats(traces):
    fleet = population(2)
    apply_traces(fleet, traces, rng=np.random.default_rng(0))

    assert fleet.available(0, 50) and not fleet.available(0, 300) and fleet.available(0, 600)
    assert fleet.available(0, 1050)  # the pattern repeats every finish_time
    assert fleet.next_window(0, 300) == 500
    assert fleet.next_window(1, 450) == 1300
    assert fleet.window_end(0, 550) == 700


def test_a_file_that_is_not_a_trace_is_a_clear_error(tmp_path):
    (tmp_path / "bad.pkl").write_bytes(b"not a pickle")

    with pytest.raises(TraceError, match="not a FedScale trace"):
        apply_traces(
            population(1),
            TraceConfig(device_capacity=tmp_path / "bad.pkl"),
            rng=np.random.default_rng(0),
        )
