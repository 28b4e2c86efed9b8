import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coordinator.aggregation import (
    AggregationError,
    FedAdam,
    FedAvgM,
    FedYogi,
    ServerOptimizer,
    ServerSGD,
    server_optimizer_from_config,
)

OPTIMIZERS = [
    ServerSGD(),
    ServerSGD(learning_rate=0.5),
    FedAvgM(),
    FedAdam(learning_rate=0.1),
    FedYogi(learning_rate=0.1),
]
each_optimizer = pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=repr)


def f32(*values):
    return np.array(values, dtype=np.float32)


# --- the contract every server optimizer keeps -------------------------------------------------


@each_optimizer
def test_each_optimizer_satisfies_the_protocol(optimizer):
    assert isinstance(optimizer, ServerOptimizer)


@each_optimizer
@settings(max_examples=25)
@given(
    hnp.arrays(np.float32, 4, elements=st.floats(-10, 10, width=32)),
    hnp.arrays(np.float32, 4, elements=st.floats(-1, 1, width=32)),
)
def test_a_step_returns_float32_weights_and_counts_the_step(optimizer, weights, delta):
    state = optimizer.init(4)

    new_weights, new_state = optimizer.apply(weights, delta, state)

    assert new_weights.dtype == np.float32
    assert new_weights.shape == (4,)
    assert (state.step, new_state.step) == (0, 1)
    assert all(slot.dtype == np.float32 for slot in new_state.slots.values())


@each_optimizer
def test_a_step_leaves_the_previous_state_untouched(optimizer):
    state = optimizer.init(3)
    before = {name: slot.copy() for name, slot in state.slots.items()}

    optimizer.apply(f32(1, 2, 3), f32(0.5, -0.5, 1), state)

    for name, slot in state.slots.items():
        np.testing.assert_array_equal(slot, before[name])
        assert not slot.flags.writeable


@each_optimizer
def test_a_zero_delta_from_a_fresh_state_keeps_the_weights(optimizer):
    weights = f32(1, -2, 3)

    new_weights, _ = optimizer.apply(weights, f32(0, 0, 0), optimizer.init(3))

    np.testing.assert_array_equal(new_weights, weights)


@each_optimizer
@pytest.mark.parametrize(
    ("weights", "delta", "message"),
    [
        (f32(1, 2, 3), f32(1, 2), r"delta has shape \(2,\), expected \(3,\)"),
        (f32(1, 2), f32(1, 2, 3), r"weights has shape \(2,\), expected \(3,\)"),
        (f32(1, 2, 3), f32(1, np.nan, 3), "delta has 1 non-finite"),
        (f32(np.inf, 2, 3), f32(1, 2, 3), "weights has 1 non-finite"),
        (np.zeros(3), f32(1, 2, 3), "weights must be float32, got float64"),
    ],
)
def test_bad_inputs_are_refused_with_what_is_wrong(optimizer, weights, delta, message):
    with pytest.raises(AggregationError, match=message):
        optimizer.apply(weights, delta, optimizer.init(3))


def test_a_state_made_by_another_optimizer_is_refused():
    adam_state = FedAdam(learning_rate=0.1).init(2)

    with pytest.raises(AggregationError, match=r"slots \['m', 'v'\], expected \['momentum'\]"):
        FedAvgM().apply(f32(0, 0), f32(1, 1), adam_state)


def test_a_step_that_overflows_float32_is_refused():
    big = np.finfo(np.float32).max

    with pytest.raises(AggregationError, match="non-finite weights"):
        ServerSGD().apply(f32(big), f32(big), ServerSGD().init(1))


# --- each optimizer's update rule --------------------------------------------------------------


@settings(max_examples=50)
@given(
    hnp.arrays(np.float32, 5, elements=st.floats(-100, 100, width=32)),
    hnp.arrays(np.float32, 5, elements=st.floats(-100, 100, width=32)),
)
def test_server_sgd_with_unit_rate_adds_the_mean_delta(weights, delta):
    new_weights, _ = ServerSGD().apply(weights, delta, ServerSGD().init(5))

    np.testing.assert_array_equal(new_weights, weights + delta)


def test_server_sgd_scales_the_delta_by_the_learning_rate():
    new_weights, _ = ServerSGD(learning_rate=0.5).apply(f32(1, 1), f32(2, -4), ServerSGD().init(2))

    np.testing.assert_array_equal(new_weights, f32(2, -1))


def test_fedavgm_accumulates_momentum():
    # Hsu et al. 2019: m ← βm + Δ, x ← x + ηm. A constant Δ gives m = Δ, 1.9Δ, 2.71Δ.
    optimizer = FedAvgM(learning_rate=1.0, momentum=0.9)
    weights, state, delta = f32(0, 0), optimizer.init(2), f32(1, -2)
    moved = []

    for _ in range(3):
        weights, state = optimizer.apply(weights, delta, state)
        moved.append(weights.copy())

    np.testing.assert_allclose(state.slots["momentum"], 2.71 * delta, rtol=1e-6)
    np.testing.assert_allclose(moved, [1.0 * delta, 2.9 * delta, 5.61 * delta], rtol=1e-6)


def test_fedavgm_without_momentum_is_server_sgd():
    weights, delta = f32(1, 2), f32(0.5, 0.25)
    optimizer = FedAvgM(learning_rate=0.3, momentum=0.0)

    momentum_weights, _ = optimizer.apply(weights, delta, optimizer.init(2))
    sgd_weights, _ = ServerSGD(learning_rate=0.3).apply(weights, delta, ServerSGD().init(2))

    np.testing.assert_array_equal(momentum_weights, sgd_weights)


def test_adaptive_optimizers_start_with_zero_m_and_v_at_tau_squared():
    state = FedYogi(learning_rate=0.1, tau=1e-2).init(3)

    np.testing.assert_array_equal(state.slots["m"], np.zeros(3))
    np.testing.assert_allclose(state.slots["v"], np.full(3, 1e-4), rtol=1e-6)


def test_fedadam_first_step_by_hand():
    # m = 0.1·0.5 = 0.05; v = 0.99·τ² + 0.01·0.25 = 0.00250099; √v = 0.0500099;
    # x = 1 + 0.1·0.05 / (0.0500099 + 0.001) = 1.0980202
    new_weights, _ = FedAdam(learning_rate=0.1).apply(
        f32(1), f32(0.5), FedAdam(learning_rate=0.1).init(1)
    )

    assert new_weights[0] == pytest.approx(1.0980202, rel=1e-6)


def test_fedyogi_first_step_by_hand():
    # v = τ² − 0.01·0.25·sign(τ² − 0.25) = 0.002501; x = 1 + 0.1·0.05 / (√0.002501 + 0.001)
    new_weights, _ = FedYogi(learning_rate=0.1).apply(
        f32(1), f32(0.5), FedYogi(learning_rate=0.1).init(1)
    )

    assert new_weights[0] == pytest.approx(1.0980200, rel=1e-6)


DELTAS = [[0.5, -0.25, 0.0], [0.1, 0.3, -1.0], [-0.2, 0.05, 2.0], [0.0, 0.01, -0.5]]


def reddi_et_al(second_moment, *, x, eta, beta1, beta2, tau):
    """Algorithm 2 of Reddi et al. (2021), one coordinate at a time, in Python floats."""
    m, v = [0.0] * len(x), [tau**2] * len(x)
    trajectory = []
    for delta in DELTAS:
        for i, d in enumerate(delta):
            m[i] = beta1 * m[i] + (1 - beta1) * d
            v[i] = second_moment(v[i], d * d, beta2)
            x[i] = x[i] + eta * m[i] / (math.sqrt(v[i]) + tau)
        trajectory.append((list(x), list(m), list(v)))
    return trajectory


def run(optimizer, x, deltas):
    """The (weights, state) after each of ``deltas``, starting from weights ``x``."""
    weights, state = np.array(x, np.float32), optimizer.init(len(x))
    for delta in deltas:
        weights, state = optimizer.apply(weights, np.array(delta, np.float32), state)
        yield weights, state


def adam_v(v, d2, beta2):
    return beta2 * v + (1 - beta2) * d2


def yogi_v(v, d2, beta2):
    return v - (1 - beta2) * d2 * math.copysign(1.0, v - d2) * (v != d2)


@pytest.mark.parametrize(
    ("optimizer", "second_moment"),
    [
        (FedAdam(learning_rate=0.1, beta1=0.9, beta2=0.99, tau=1e-3), adam_v),
        (FedAdam(learning_rate=0.03, beta1=0.5, beta2=0.9, tau=1e-2), adam_v),
        (FedYogi(learning_rate=0.1, beta1=0.9, beta2=0.99, tau=1e-3), yogi_v),
        (FedYogi(learning_rate=0.03, beta1=0.5, beta2=0.9, tau=1e-2), yogi_v),
    ],
    ids=["fedadam", "fedadam-other-hparams", "fedyogi", "fedyogi-other-hparams"],
)
def test_fedadam_and_fedyogi_follow_reddi_et_al_update_rule(optimizer, second_moment):
    x0 = [1.0, -2.0, 0.5]
    expected = reddi_et_al(
        second_moment,
        x=list(x0),
        eta=optimizer.learning_rate,
        beta1=optimizer.beta1,
        beta2=optimizer.beta2,
        tau=optimizer.tau,
    )

    actual = list(run(optimizer, x0, DELTAS))

    for (weights, state), (x, m, v) in zip(actual, expected, strict=True):
        np.testing.assert_allclose(weights, x, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state.slots["m"], m, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(state.slots["v"], v, rtol=1e-5, atol=1e-9)


def test_yogi_shrinks_v_additively_where_adam_shrinks_it_multiplicatively():
    # After a large delta, a small one: Adam's v drops by (1−β₂)·(v − Δ²); Yogi's by only
    # (1−β₂)·Δ² (Zaheer et al., 2018), so Yogi forgets a past spike more slowly.
    adam, yogi = FedAdam(learning_rate=0.1), FedYogi(learning_rate=0.1)
    adam_states = [state for _, state in run(adam, [0.0], [[10.0], [0.1]])]
    yogi_states = [state for _, state in run(yogi, [0.0], [[10.0], [0.1]])]

    adam_drop = adam_states[0].slots["v"][0] - adam_states[1].slots["v"][0]
    yogi_drop = yogi_states[0].slots["v"][0] - yogi_states[1].slots["v"][0]

    assert yogi_drop == pytest.approx(0.01 * 0.1**2, rel=1e-3)  # v ≈ 1 is float32
    assert adam_drop > 10 * yogi_drop


# --- hyper-parameters and configuration --------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ServerSGD(learning_rate=0.0), "learning_rate"),
        (lambda: FedAvgM(momentum=1.0), "momentum must be in"),
        (lambda: FedAdam(learning_rate=-1.0), "learning_rate"),
        (lambda: FedAdam(learning_rate=0.1, beta1=1.5), "beta1"),
        (lambda: FedYogi(learning_rate=0.1, beta2=-0.1), "beta2"),
        (lambda: FedYogi(learning_rate=0.1, tau=0.0), "tau"),
        (lambda: FedYogi(learning_rate=math.nan), "learning_rate"),
    ],
)
def test_bad_hyper_parameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_hyper_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        FedAdam(0.1)  # type: ignore[misc]


def test_config_builds_each_optimizer_by_name():
    assert server_optimizer_from_config("fedavg") == ServerSGD()
    assert server_optimizer_from_config("sgd", learning_rate=0.5) == ServerSGD(learning_rate=0.5)
    assert server_optimizer_from_config("FedAvgM", momentum=0.5) == FedAvgM(momentum=0.5)
    assert server_optimizer_from_config("fedadam", learning_rate=0.01) == FedAdam(
        learning_rate=0.01
    )
    assert server_optimizer_from_config("fedyogi", learning_rate=0.01, tau=1e-2) == FedYogi(
        learning_rate=0.01, tau=1e-2
    )


def test_config_names_the_choices_for_an_unknown_optimizer():
    with pytest.raises(ValueError, match=r"unknown server optimizer 'adagrad'.*fedadam"):
        server_optimizer_from_config("adagrad")


def test_config_says_which_required_parameter_is_missing():
    with pytest.raises(ValueError, match="'fedadam' needs learning_rate"):
        server_optimizer_from_config("fedadam")


def test_config_refuses_a_parameter_the_optimizer_does_not_take():
    with pytest.raises(ValueError, match=r"got unknown \['beta1'\]"):
        server_optimizer_from_config("fedavgm", beta1=0.9)
