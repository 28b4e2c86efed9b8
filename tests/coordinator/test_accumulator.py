import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coordinator.aggregation import AggregationError, WeightedSum

SUM = WeightedSum()
finite32 = st.floats(-100, 100, width=32)


@st.composite
def weighted_updates(draw, max_count=8):
    num_params = draw(st.integers(1, 6))
    count = draw(st.integers(1, max_count))
    return [
        (draw(hnp.arrays(np.float32, num_params, elements=finite32)), draw(st.integers(1, 500)))
        for _ in range(count)
    ]


def accumulate(updates):
    state = SUM.start(updates[0][0].size)
    for delta, weight in updates:
        state = SUM.add(state, delta, weight=weight)
    return state


@settings(max_examples=50)
@given(weighted_updates())
def test_mean_is_the_example_weighted_average(updates):
    deltas = np.stack([d.astype(np.float64) for d, _ in updates])
    counts = np.array([n for _, n in updates], dtype=np.float64)

    mean = SUM.mean(accumulate(updates))

    expected = (counts[:, None] * deltas).sum(axis=0) / counts.sum()
    np.testing.assert_allclose(mean, expected, rtol=1e-6, atol=1e-6)


@settings(max_examples=50)
@given(weighted_updates(max_count=4), st.integers(0, 3))
def test_weight_two_n_equals_the_update_added_twice_with_n(updates, index):
    index %= len(updates)
    delta, n = updates[index]
    doubled = [*updates[:index], (delta, 2 * n), *updates[index + 1 :]]
    twice = [*updates, (delta, n)]

    once_state, twice_state = accumulate(doubled), accumulate(twice)

    np.testing.assert_allclose(SUM.mean(once_state), SUM.mean(twice_state), rtol=1e-6, atol=1e-6)
    assert once_state.weight == twice_state.weight


@settings(max_examples=50)
@given(weighted_updates(), st.randoms(use_true_random=False))
def test_accumulation_order_does_not_matter(updates, random):
    shuffled = list(updates)
    random.shuffle(shuffled)

    mean, shuffled_mean = SUM.mean(accumulate(updates)), SUM.mean(accumulate(shuffled))

    np.testing.assert_allclose(mean, shuffled_mean, rtol=1e-6, atol=1e-6)


def test_state_does_not_grow_with_the_number_of_updates():
    state = SUM.start(1_000)
    delta = np.ones(1_000, np.float32)

    for _ in range(500):
        state = SUM.add(state, delta, weight=3)

    assert state.total.shape == (1_000,)
    assert state.total.nbytes == 8 * 1_000
    assert (state.count, state.weight) == (500, 1_500.0)


def test_sum_is_kept_in_float64_and_the_mean_returned_in_float32():
    state = SUM.add(SUM.start(2), np.array([1.0, 2.0], np.float32), weight=1)

    assert state.total.dtype == np.float64
    assert SUM.mean(state).dtype == np.float32


def test_add_leaves_the_previous_state_untouched_and_read_only():
    before = SUM.start(3)

    after = SUM.add(before, np.ones(3, np.float32), weight=2)

    np.testing.assert_array_equal(before.total, np.zeros(3))
    np.testing.assert_array_equal(after.total, np.full(3, 2.0))
    with pytest.raises(ValueError, match="read-only"):
        after.total[0] = 5.0


def test_an_empty_sum_has_no_mean():
    with pytest.raises(AggregationError, match="no updates"):
        SUM.mean(SUM.start(4))


@pytest.mark.parametrize(
    ("delta", "message"),
    [
        (np.array([1.0, np.nan, 0.0], np.float32), "1 non-finite"),
        (np.array([np.inf, -np.inf, 0.0], np.float32), "2 non-finite"),
        (np.zeros(4, np.float32), r"shape \(4,\), expected \(3,\)"),
        (np.zeros((3, 1), np.float32), r"shape \(3, 1\)"),
        (np.zeros(3, np.float64), "float32, got float64"),
        ([0.0, 0.0, 0.0], "numpy array, got list"),
    ],
)
def test_a_bad_delta_is_refused_with_what_is_wrong(delta, message):
    with pytest.raises(AggregationError, match=message):
        SUM.add(SUM.start(3), delta, weight=1)


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf")])
def test_a_weight_that_is_not_finite_and_positive_is_refused(weight):
    with pytest.raises(AggregationError, match="weight must be finite and > 0"):
        SUM.add(SUM.start(3), np.zeros(3, np.float32), weight=weight)


def test_an_empty_model_is_refused():
    with pytest.raises(ValueError, match="num_params"):
        SUM.start(0)


# --- encoded deltas (fedge.codecs payloads) -----------------------------------------------------


def encoded(delta, codec, seed=7):
    from fedge.wire import decode_update, encode_update

    body = encode_update(delta, codec, seed=seed, rng=np.random.default_rng(3))
    return decode_update(body, expected_length=delta.size)


@pytest.mark.parametrize("codec", ["float32", "fp16", "rot4", "eden1", "randk10+rot2"])
def test_adding_a_payload_equals_adding_its_decoded_delta(codec):
    rng = np.random.default_rng(0)
    first = rng.normal(size=5_000).astype(np.float32)
    payload = encoded(rng.normal(size=5_000).astype(np.float32), codec)
    start = SUM.add(SUM.start(5_000), first, weight=2.0)

    folded = SUM.add(start, payload, weight=3.0)
    expected = SUM.add(start, payload.decode(), weight=3.0)

    np.testing.assert_allclose(folded.total, expected.total, rtol=1e-6, atol=1e-6)
    assert (folded.weight, folded.count) == (5.0, 2)


def test_adding_a_payload_leaves_the_state_it_was_given_untouched():
    start = SUM.start(64)
    payload = encoded(np.ones(64, np.float32), "rot4")

    SUM.add(start, payload, weight=1.0)

    assert (start.count, float(np.abs(start.total).sum())) == (0, 0.0)


def test_a_payload_of_another_length_than_the_model_is_refused():
    payload = encoded(np.ones(63, np.float32), "rot4")

    with pytest.raises(AggregationError, match="63 values, expected 64"):
        SUM.add(SUM.start(64), payload, weight=1.0)


def test_a_payload_whose_weighted_sum_overflows_is_refused_and_not_added():
    from coordinator.aggregation import NonFiniteError

    payload = encoded(np.full(8, 60_000.0, np.float32), "fp16")

    with pytest.raises(NonFiniteError):
        SUM.add(SUM.start(8), payload, weight=1e305)
