"""FedNova: a round's updates weighed by the local work behind them (Wang et al., NeurIPS 2020)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.aggregation import (
    AggregationError,
    FedAvgM,
    FedAvgRound,
    FedNovaRound,
    ServerSGD,
    local_step_norm,
)
from coordinator.aggregation.fednova import _summed


def heavy_ball_delta(gradient, steps, *, learning_rate, momentum, mu):
    """The plans' local training (models/plan.py) on a linear loss g·w, run directly in numpy."""
    w0 = np.zeros_like(gradient)
    w, v = w0.copy(), np.zeros_like(gradient)
    for _ in range(steps):
        v = momentum * v + gradient + mu * (w - w0)
        w = w - learning_rate * v
    return w - w0


@pytest.mark.parametrize(
    ("momentum", "mu"), [(0.0, 0.0), (0.9, 0.0), (0.0, 1.0), (0.5, 0.3), (0.9, 1.0)]
)
@pytest.mark.parametrize("steps", [1, 7, 40])
def test_the_step_norm_is_how_far_local_steps_carry_a_constant_gradient(steps, momentum, mu):
    gradient = np.array([1.0, -2.0, 0.5])

    delta = heavy_ball_delta(gradient, steps, learning_rate=0.01, momentum=momentum, mu=mu)

    a = local_step_norm(steps, learning_rate=0.01, momentum=momentum, mu=mu)
    np.testing.assert_allclose(delta, -0.01 * a * gradient, rtol=1e-9)


@given(
    steps=st.integers(1, 300),
    learning_rate=st.floats(1e-4, 0.5),
    momentum=st.floats(0.0, 0.95),
    mu=st.floats(0.0, 1.0),
)
def test_the_closed_forms_agree_with_the_recursion(steps, learning_rate, momentum, mu):
    closed = local_step_norm(steps, learning_rate=learning_rate, momentum=0.0, mu=mu)
    assert closed == pytest.approx(
        _summed(steps, learning_rate=learning_rate, momentum=0.0, mu=mu), rel=1e-6
    )
    closed = local_step_norm(steps, learning_rate=learning_rate, momentum=momentum, mu=0.0)
    assert closed == pytest.approx(
        _summed(steps, learning_rate=learning_rate, momentum=momentum, mu=0.0), rel=1e-6
    )


def test_plain_sgd_steps_count_one_each():
    assert local_step_norm(25, learning_rate=0.01) == 25.0


def partial_work_round(rng, *, devices=6, params=5):
    """Devices with different data sizes and different numbers of local steps (partial work)."""
    deltas = [rng.normal(0, 0.1, params).astype(np.float32) for _ in range(devices)]
    examples = [int(n) for n in rng.integers(10, 400, devices)]
    steps = [int(s) for s in rng.integers(1, 200, devices)]
    return deltas, examples, steps


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), momentum=st.sampled_from([0.0, 0.9]))
def test_fednova_adds_tau_effective_times_the_weighted_mean_of_normalised_deltas(seed, momentum):
    rng = np.random.default_rng(seed)
    deltas, examples, steps = partial_work_round(rng)
    norms = [local_step_norm(s, learning_rate=0.01, momentum=momentum) for s in steps]
    weights = rng.normal(0, 1, 5).astype(np.float32)

    new, _, measured = FedNovaRound().step(
        weights, ServerSGD().init(5), zip(deltas, examples, norms, strict=True)
    )

    p = np.array(examples, np.float64) / sum(examples)  # pᵢ = nᵢ / n
    a = np.array(norms)
    d = np.stack([delta.astype(np.float64) for delta in deltas]) / a[:, None]  # Δᵢ / ‖aᵢ‖₁
    expected = weights + (p @ a) * (p @ d)  # τ_eff = Σ pᵢ‖aᵢ‖₁ (Wang et al. 2020, eq. 6)
    np.testing.assert_allclose(new, expected, rtol=1e-6, atol=1e-7)
    assert (measured.count, measured.num_examples) == (6, sum(examples))


def test_with_uniform_weighting_every_update_counts_alike():
    rng = np.random.default_rng(3)
    deltas, examples, steps = partial_work_round(rng, devices=3)

    new, _, _ = FedNovaRound(weighting="uniform").step(
        np.zeros(5, np.float32), ServerSGD().init(5), zip(deltas, examples, steps, strict=True)
    )

    a = np.array(steps, np.float64)
    expected = a.mean() * np.mean([d / s for d, s in zip(deltas, a, strict=True)], axis=0)
    np.testing.assert_allclose(new, expected, rtol=1e-6)


def test_when_every_device_did_the_same_work_fednova_is_fedavg():
    rng = np.random.default_rng(1)
    deltas, examples, _ = partial_work_round(rng)
    weights = np.ones(5, np.float32)

    nova, _, _ = FedNovaRound().step(
        weights, ServerSGD().init(5), ((d, n, 40.0) for d, n in zip(deltas, examples, strict=True))
    )
    avg, _, _ = FedAvgRound().step(weights, ServerSGD().init(5), zip(deltas, examples, strict=True))

    np.testing.assert_allclose(nova, avg, rtol=1e-6)


def test_a_device_that_did_a_tenth_of_the_work_is_scaled_up_not_outvoted():
    # Two devices, equal data, the same direction; one stopped after 10 of 100 steps.
    full, partial = np.full(2, 1.0, np.float32), np.full(2, 0.1, np.float32)

    nova, _, _ = FedNovaRound().step(
        np.zeros(2, np.float32), ServerSGD().init(2), [(full, 50, 100.0), (partial, 50, 10.0)]
    )
    avg, _, _ = FedAvgRound().step(
        np.zeros(2, np.float32), ServerSGD().init(2), [(full, 50), (partial, 50)]
    )

    # The per-step progress is the same, 0.01; τ_eff = 55 steps of it, FedAvg's mean is 0.55 too
    np.testing.assert_allclose(nova, [0.55, 0.55], rtol=1e-6)
    np.testing.assert_allclose(avg, [0.55, 0.55], rtol=1e-6)


def test_fednova_takes_its_server_optimizer_step():
    new, state, _ = FedNovaRound(server_optimizer=FedAvgM(learning_rate=1.0, momentum=0.5)).step(
        np.zeros(2, np.float32), FedAvgM(momentum=0.5).init(2), [(np.ones(2, np.float32), 5, 3.0)]
    )

    np.testing.assert_allclose(new, [1.0, 1.0])
    assert state.num_params == 2


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_a_step_norm_that_is_not_positive_and_finite_is_refused(bad):
    with pytest.raises(AggregationError, match="step norm"):
        FedNovaRound().step(
            np.zeros(2, np.float32), ServerSGD().init(2), [(np.ones(2, np.float32), 5, bad)]
        )


def test_an_empty_round_is_refused():
    with pytest.raises(AggregationError, match="at least one update"):
        FedNovaRound().step(np.zeros(2, np.float32), ServerSGD().init(2), [])


@pytest.mark.parametrize(
    ("steps", "kwargs"),
    [(0, {}), (3, {"learning_rate": 0.0}), (3, {"momentum": 1.0}), (3, {"mu": -1.0})],
)
def test_nonsense_local_work_is_refused(steps, kwargs):
    with pytest.raises(AggregationError):
        local_step_norm(steps, **{"learning_rate": 0.01, **kwargs})
