"""The aggregation math never hands back a non-finite sum, model or optimizer state."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coordinator.aggregation import (
    FedAdam,
    FedAvgM,
    FedAvgRound,
    FedBuffBuffer,
    FedYogi,
    NonFiniteError,
    ServerSGD,
    WeightedSum,
)

FLOAT32_MAX = float(np.finfo(np.float32).max)
OPTIMIZERS = [ServerSGD(), FedAvgM(), FedAdam(learning_rate=0.1), FedYogi(learning_rate=0.1)]

finite_vectors = hnp.arrays(
    np.float32, 3, elements=st.floats(-FLOAT32_MAX, FLOAT32_MAX, width=32, allow_nan=False)
)


def test_a_sum_that_would_overflow_is_refused_and_the_state_kept():
    accumulator = WeightedSum()
    state = accumulator.add(accumulator.start(2), np.full(2, FLOAT32_MAX, np.float32), weight=3e269)

    with pytest.raises(NonFiniteError):
        accumulator.add(state, np.full(2, FLOAT32_MAX, np.float32), weight=3e269)

    assert np.isfinite(state.total).all() and state.count == 1


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)
@settings(max_examples=60, deadline=None)
@given(weights=finite_vectors, delta=finite_vectors)
def test_a_server_step_returns_finite_weights_and_slots_or_refuses(optimizer, weights, delta):
    try:
        new_weights, state = optimizer.apply(weights, delta, optimizer.init(3))
    except NonFiniteError:
        return
    assert np.isfinite(new_weights).all()
    assert all(np.isfinite(slot).all() for slot in state.slots.values())


def test_fedadam_refuses_a_delta_whose_second_moment_overflows_float32():
    optimizer = FedAdam(learning_rate=0.1)

    with pytest.raises(NonFiniteError):
        optimizer.apply(np.zeros(2, np.float32), np.full(2, 1e30, np.float32), optimizer.init(2))


@settings(max_examples=60, deadline=None)
@given(weights=finite_vectors, deltas=st.lists(finite_vectors, min_size=1, max_size=4))
def test_a_round_and_a_buffer_publish_finite_weights_or_refuse(weights, deltas):
    buffer = FedBuffBuffer(buffer_size=len(deltas), max_staleness=0)
    state = buffer.init(3)
    for delta in deltas:
        state = buffer.accept(state, delta, num_examples=7, staleness=0)
    for step in (
        lambda: FedAvgRound().step(weights, ServerSGD().init(3), ((d, 7) for d in deltas))[0],
        lambda: buffer.flush(weights, state, ServerSGD().init(3))[0],
    ):
        try:
            published = step()
        except NonFiniteError:
            continue
        assert np.isfinite(published).all()
