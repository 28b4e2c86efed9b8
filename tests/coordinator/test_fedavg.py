import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra import numpy as hnp

from coordinator.aggregation import AggregationError, FedAvgRound, ServerSGD
from tests.coordinator.aggregation_cases import cohorts, f32, finite32


def norms_of(cohort):
    return np.array([np.linalg.norm(delta.astype(np.float64)) for delta, _ in cohort])


@settings(max_examples=50)
@given(cohorts(num_params=4), hnp.arrays(np.float32, 4, elements=finite32))
def test_fedavg_round_adds_the_example_weighted_mean_delta(cohort, weights):
    round_ = FedAvgRound()

    new_weights, _, _ = round_.step(weights, ServerSGD().init(4), cohort)

    counts = np.array([n for _, n in cohort], dtype=np.float64)
    mean = sum(n * d.astype(np.float64) for d, n in cohort) / counts.sum()
    np.testing.assert_allclose(new_weights, weights + mean, rtol=1e-6, atol=1e-5)


@settings(max_examples=50)
@given(cohorts(num_params=3))
def test_fedavg_round_measures_count_examples_and_norm_spread(cohort):
    _, _, measurements = FedAvgRound().step(np.zeros(3, np.float32), ServerSGD().init(3), cohort)

    norms = norms_of(cohort)
    assert measurements.count == len(cohort)
    assert measurements.num_examples == sum(n for _, n in cohort)
    assert measurements.update_norm_mean == pytest.approx(norms.mean(), rel=1e-9, abs=1e-9)
    assert measurements.update_norm_variance == pytest.approx(norms.var(), rel=1e-6, abs=1e-6)


def test_fedavg_round_uses_its_server_optimizer():
    round_ = FedAvgRound(server_optimizer=ServerSGD(learning_rate=0.5))
    updates = [(f32(2, 0), 1), (f32(0, 2), 1)]

    new_weights, state, _ = round_.step(f32(0, 0), round_.server_optimizer.init(2), updates)

    np.testing.assert_array_equal(new_weights, f32(0.5, 0.5))
    assert state.step == 1


def test_fedavg_round_streams_updates_in_memory_of_the_model_size():
    # Holding 200 updates of 50k float32 weights would take 200 model sizes (40 MB); streamed,
    # the round keeps a float64 running sum, the update in hand and a few temporaries.
    num_params = 50_000
    model_bytes = 4 * num_params

    def updates():
        for i in range(200):
            yield np.full(num_params, i % 7, dtype=np.float32), 1 + i % 3

    tracemalloc.start()
    try:
        FedAvgRound().step(
            np.zeros(num_params, np.float32), ServerSGD().init(num_params), updates()
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 20 * model_bytes


def test_a_round_without_updates_is_refused():
    with pytest.raises(AggregationError, match="at least one update"):
        FedAvgRound().step(f32(0, 0), ServerSGD().init(2), [])


@pytest.mark.parametrize("num_examples", [0, -3, 2.5, True])
def test_an_update_without_a_positive_integer_example_count_is_refused(num_examples):
    with pytest.raises(AggregationError, match="num_examples"):
        FedAvgRound().step(f32(0, 0), ServerSGD().init(2), [(f32(1, 1), num_examples)])


def test_a_bad_update_in_a_round_is_refused_with_what_is_wrong():
    with pytest.raises(AggregationError, match="delta has 1 non-finite"):
        FedAvgRound().step(f32(0, 0), ServerSGD().init(2), [(f32(1, 1), 3), (f32(np.nan, 1), 3)])


def test_uniform_weighting_counts_every_update_once_whatever_its_examples():
    round_ = FedAvgRound(weighting="uniform")
    deltas = [(np.array([1.0, 0.0], np.float32), 1), (np.array([0.0, 3.0], np.float32), 99)]

    new_weights, _, measured = round_.step(np.zeros(2, np.float32), ServerSGD().init(2), deltas)

    np.testing.assert_allclose(new_weights, [0.5, 1.5])
    assert measured.num_examples == 100


def test_a_custom_average_receives_the_uniform_sum_and_the_count():
    seen = []

    def average(total, count):
        seen.append((total.copy(), count))
        return np.zeros_like(total, dtype=np.float32)

    round_ = FedAvgRound(weighting="uniform")
    deltas = [(np.array([1.0, 2.0], np.float32), 5), (np.array([3.0, 4.0], np.float32), 7)]

    new_weights, _, _ = round_.step(
        np.ones(2, np.float32), ServerSGD().init(2), deltas, average=average
    )

    ((total, count),) = seen
    np.testing.assert_array_equal(total, [4.0, 6.0])
    assert count == 2
    np.testing.assert_array_equal(new_weights, [1.0, 1.0])


def test_a_custom_average_with_example_weights_is_refused():
    with pytest.raises(AggregationError, match="uniform weighting"):
        FedAvgRound().step(
            np.ones(2, np.float32),
            ServerSGD().init(2),
            [(np.ones(2, np.float32), 3)],
            average=lambda total, count: total.astype(np.float32),
        )
