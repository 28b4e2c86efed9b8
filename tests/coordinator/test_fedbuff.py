import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coordinator.aggregation import (
    AggregationError,
    Constant,
    FedAdam,
    FedAvgM,
    FedAvgRound,
    FedBuffBuffer,
    FedYogi,
    Hinge,
    Polynomial,
    ServerSGD,
    StaleUpdateError,
)
from tests.coordinator.aggregation_cases import cohorts, f32, finite32

OPTIMIZERS = [
    ServerSGD(),
    FedAvgM(learning_rate=0.5),
    FedAdam(learning_rate=0.1),
    FedYogi(learning_rate=0.1),
]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)
@settings(max_examples=30)
@given(st.data())
def test_fedbuff_without_staleness_and_k_the_cohort_size_is_fedavg(optimizer, data):
    # Two versions in a row, so the server optimizer's carried state is compared too.
    cohorts_ = [data.draw(cohorts(num_params=3)), data.draw(cohorts(num_params=3))]
    weights = data.draw(hnp.arrays(np.float32, 3, elements=finite32))
    sync_weights, sync_state = weights, optimizer.init(3)
    async_weights, async_state = weights, optimizer.init(3)

    for cohort in cohorts_:
        sync_weights, sync_state, _ = FedAvgRound(server_optimizer=optimizer).step(
            sync_weights, sync_state, cohort
        )
        buffer = FedBuffBuffer(
            buffer_size=len(cohort),
            max_staleness=0,
            staleness=Polynomial(),
            server_optimizer=optimizer,
        )
        state = buffer.init(3)
        for delta, n in cohort:
            state = buffer.accept(state, delta, n, staleness=0)
        assert buffer.is_full(state)
        async_weights, async_state, _, _ = buffer.flush(async_weights, state, async_state)

    np.testing.assert_allclose(async_weights, sync_weights, rtol=1e-6, atol=1e-6)
    for name, slot in sync_state.slots.items():
        np.testing.assert_allclose(async_state.slots[name], slot, rtol=1e-6, atol=1e-6)


def test_fedbuff_shrinks_a_stale_update_by_its_staleness_weight():
    # FedBuff: Δ̄ = Σ nᵢ·s(τᵢ)·Δᵢ / Σ nᵢ with s(τ) = 1/√(1+τ), so s(3) = 1/2.
    buffer = FedBuffBuffer(buffer_size=2, max_staleness=10, staleness=Polynomial())
    state = buffer.init(2)
    state = buffer.accept(state, f32(4, 0), num_examples=10, staleness=0)
    state = buffer.accept(state, f32(0, 4), num_examples=30, staleness=3)

    new_weights, _, _, _ = buffer.flush(f32(0, 0), state, ServerSGD().init(2))

    np.testing.assert_allclose(new_weights, f32(10 * 4 / 40, 30 * 0.5 * 4 / 40), rtol=1e-6)


def test_fedbuff_with_constant_staleness_ignores_age():
    buffer = FedBuffBuffer(buffer_size=1, max_staleness=100, staleness=Constant())
    state = buffer.accept(buffer.init(1), f32(3.0), num_examples=5, staleness=90)

    new_weights, _, _, _ = buffer.flush(f32(1.0), state, ServerSGD().init(1))

    np.testing.assert_array_equal(new_weights, f32(4.0))


def test_fedbuff_flush_measures_count_examples_staleness_and_norms():
    buffer = FedBuffBuffer(buffer_size=3, max_staleness=5, staleness=Hinge())
    state = buffer.init(2)
    for delta, n, staleness in [(f32(3, 4), 10, 0), (f32(0, 1), 20, 2), (f32(6, 8), 5, 5)]:
        state = buffer.accept(state, delta, n, staleness)

    _, _, _, measurements = buffer.flush(f32(0, 0), state, ServerSGD().init(2))

    assert measurements.count == 3
    assert measurements.num_examples == 35
    assert measurements.mean_staleness == pytest.approx(7 / 3)
    assert measurements.update_norm_mean == pytest.approx((5 + 1 + 10) / 3)
    assert measurements.update_norm_variance == pytest.approx(np.var([5.0, 1.0, 10.0]))


def test_fedbuff_buffer_is_full_after_k_updates_and_refuses_more():
    buffer = FedBuffBuffer(buffer_size=2, max_staleness=3)
    state = buffer.init(1)
    state = buffer.accept(state, f32(1.0), 1, 0)
    assert not buffer.is_full(state)
    state = buffer.accept(state, f32(1.0), 1, 0)
    assert buffer.is_full(state)

    with pytest.raises(AggregationError, match="already holds 2 of 2 updates; flush it"):
        buffer.accept(state, f32(1.0), 1, 0)


def test_flush_empties_the_buffer_and_advances_the_optimizer():
    buffer = FedBuffBuffer(buffer_size=1, max_staleness=0, server_optimizer=FedAvgM())
    state = buffer.accept(buffer.init(2), f32(1, 1), 4, 0)

    _, optimizer_state, emptied, _ = buffer.flush(f32(0, 0), state, FedAvgM().init(2))

    assert (emptied.count, emptied.num_examples, emptied.staleness_total) == (0, 0, 0)
    np.testing.assert_array_equal(emptied.sum.total, np.zeros(2))
    assert optimizer_state.step == 1


def test_a_partial_buffer_may_be_flushed_but_an_empty_one_may_not():
    buffer = FedBuffBuffer(buffer_size=10, max_staleness=0)
    state = buffer.accept(buffer.init(1), f32(2.0), 1, 0)

    new_weights, _, _, _ = buffer.flush(f32(0.0), state, ServerSGD().init(1))

    np.testing.assert_array_equal(new_weights, f32(2.0))
    with pytest.raises(AggregationError, match="buffer is empty"):
        buffer.flush(f32(0.0), buffer.init(1), ServerSGD().init(1))


def test_an_update_staler_than_allowed_is_refused_with_both_numbers():
    buffer = FedBuffBuffer(buffer_size=4, max_staleness=5)

    with pytest.raises(StaleUpdateError, match="7 versions stale; at most 5 are accepted") as info:
        buffer.accept(buffer.init(1), f32(1.0), 1, staleness=7)

    assert (info.value.staleness, info.value.max_staleness) == (7, 5)


def test_an_update_exactly_max_staleness_old_is_accepted():
    buffer = FedBuffBuffer(buffer_size=4, max_staleness=5)

    state = buffer.accept(buffer.init(1), f32(1.0), 1, staleness=5)

    assert state.count == 1


def test_negative_staleness_is_refused():
    buffer = FedBuffBuffer(buffer_size=4, max_staleness=5)

    with pytest.raises(AggregationError, match="staleness must be >= 0"):
        buffer.accept(buffer.init(1), f32(1.0), 1, staleness=-1)


def test_accept_leaves_the_previous_buffer_untouched():
    buffer = FedBuffBuffer(buffer_size=4, max_staleness=5)
    before = buffer.init(2)

    buffer.accept(before, f32(1, 1), 3, 0)

    assert before.count == 0
    np.testing.assert_array_equal(before.sum.total, np.zeros(2))


def test_buffer_state_does_not_grow_with_the_number_of_updates():
    buffer = FedBuffBuffer(buffer_size=1_000, max_staleness=10)
    state = buffer.init(100)

    for i in range(1_000):
        state = buffer.accept(state, np.ones(100, np.float32), 1 + i % 5, i % 11)

    assert state.sum.total.shape == (100,)
    assert state.count == 1_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"buffer_size": 0, "max_staleness": 1}, "buffer_size"),
        ({"buffer_size": 1, "max_staleness": -1}, "max_staleness"),
    ],
)
def test_bad_buffer_configuration_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FedBuffBuffer(**kwargs)


def test_uniform_fedbuff_divides_the_staleness_weighted_sum_by_k_not_by_examples():
    buffer = FedBuffBuffer(
        buffer_size=2, max_staleness=5, staleness=Constant(), weighting="uniform"
    )
    state = buffer.init(2)
    state = buffer.accept(state, np.array([2.0, 0.0], np.float32), num_examples=1, staleness=0)
    state = buffer.accept(state, np.array([0.0, 4.0], np.float32), num_examples=50, staleness=0)

    new_weights, *_ = buffer.flush(np.zeros(2, np.float32), state, ServerSGD().init(2))

    np.testing.assert_allclose(new_weights, [1.0, 2.0])


def test_a_custom_average_receives_the_buffered_sum_and_the_update_count():
    seen = []

    def average(total, count):
        seen.append((total.copy(), count))
        return (total / count).astype(np.float32)

    buffer = FedBuffBuffer(
        buffer_size=2, max_staleness=5, staleness=Constant(), weighting="uniform"
    )
    state = buffer.init(1)
    state = buffer.accept(state, np.array([3.0], np.float32), num_examples=4, staleness=1)
    state = buffer.accept(state, np.array([5.0], np.float32), num_examples=9, staleness=0)

    buffer.flush(np.zeros(1, np.float32), state, ServerSGD().init(1), average=average)

    ((total, count),) = seen
    np.testing.assert_array_equal(total, [8.0])
    assert count == 2
