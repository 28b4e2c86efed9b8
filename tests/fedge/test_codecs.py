"""Specification of the uplink codecs' math: round trips, unbiasedness, variance, composition."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedge.codecs import CodecError, parse_codec
from fedge.codecs.hadamard import fwht, num_pieces, rotate, tail_pieces
from fedge.codecs.values import decode_rotated
from tests.fedge.codec_cases import ALL, UNBIASED, codec, kept_indices, variance_bound

finite = st.floats(-1e3, 1e3, width=32)


def vector(length: int, seed: int = 0) -> np.ndarray:
    """A delta-like vector: Gaussian, with a few large coordinates so ranges are uneven."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.01, length)
    x[: max(1, length // 10)] *= 10
    return x.astype(np.float32)


def encode(name: str, x: np.ndarray, seed: int):
    return codec(name).encode(x, seed=seed, rng=np.random.default_rng(seed + 10**9))


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=25, deadline=None)
@given(
    x=hnp.arrays(np.float32, st.integers(0, 300), elements=finite), seed=st.integers(0, 2**64 - 1)
)
def test_a_decoded_update_is_a_float32_vector_of_the_input_length(name, x, seed):
    payload = encode(name, x, seed % 2**63)

    decoded = payload.decode()

    assert decoded.dtype == np.float32 and decoded.shape == x.shape
    assert payload.packed.size + 4 * payload.scales.size == codec(name).body_size(x.size)


@given(x=hnp.arrays(np.float32, st.integers(0, 300), elements=finite))
def test_float32_decodes_exactly(x):
    # exact values (a −0.0 comes back as 0.0: decoding adds into a sum of zeros)
    assert np.array_equal(encode("float32", x, 1).decode(), x)


def test_fp16_errs_by_at_most_half_an_fp16_step():
    x = vector(1000) * np.float32(100)

    error = np.abs(encode("fp16", x, 1).decode() - x)

    assert (error <= 2.0**-11 * np.abs(x) + 2.0**-25).all()


def test_fp16_refuses_a_value_beyond_its_range():
    with pytest.raises(CodecError, match="range"):
        encode("fp16", np.array([1e6], np.float32), 1)


@pytest.mark.parametrize(
    "bad", [np.zeros(3), np.zeros((2, 2), np.float32), np.array([np.nan], np.float32)]
)
def test_only_a_finite_1d_float32_vector_is_encoded(bad):
    with pytest.raises(CodecError):
        codec("rot4").encode(bad, seed=1, rng=np.random.default_rng(0))


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_a_seed_outside_64_bits_is_refused(seed):
    with pytest.raises(CodecError, match="seed"):
        codec("rot4").encode(vector(8), seed=seed, rng=np.random.default_rng(0))


# --- unbiasedness and variance -------------------------------------------------------------

DRAWS = 1500


@pytest.mark.parametrize("name", UNBIASED)
def test_the_mean_of_many_encodings_with_fresh_seeds_is_the_input(name):
    # Unbiased encodings with per-encoding variance V_n give E‖mean − x‖² = Σ V_n / N² ≤ B/N,
    # B the mean of the codec's stated bounds. ‖mean − x‖² is a sum over ≥ 37 coordinates of
    # nearly Gaussian terms, so it exceeds 3× its expectation with probability < 1e-6; a bias
    # would add ‖bias‖² to it whatever N. The draws are seeded, so the test is deterministic.
    length = 1061 if name.startswith("eden") else 37
    x = vector(length)
    c = codec(name)
    total, bounds = np.zeros(length), 0.0
    for seed in range(DRAWS):
        payload = encode(name, x, seed)
        total += payload.decode()
        bounds += variance_bound(c, x, payload)

    error = float(np.sum((total / DRAWS - x) ** 2))

    assert error <= 3 * bounds / DRAWS**2 + 1e-12


@pytest.mark.parametrize("name", UNBIASED)
def test_the_mean_squared_error_is_within_the_codecs_bound(name):
    length = 1061 if name.startswith("eden") else 200
    x = vector(length, seed=3)
    c = codec(name)
    errors, bounds = 0.0, 0.0
    for seed in range(400):
        payload = encode(name, x, seed)
        errors += float(np.sum((payload.decode().astype(np.float64) - x) ** 2))
        bounds += variance_bound(c, x, payload)

    # a 10 % margin for the sampling error of 400 draws (random-k's bound is exact, not loose)
    assert errors <= 1.1 * bounds + 1e-12


def test_eden_keeps_the_projection_on_the_input_exactly():
    x = vector(4096, seed=5)

    decoded = encode("eden1", x, 9).decode().astype(np.float64)

    assert decoded @ x == pytest.approx(float(x.astype(np.float64) @ x), rel=1e-5)


def test_eden_s_scale_errs_far_less_than_a_stochastic_bit_on_the_same_rotation():
    x = vector(4096, seed=6)
    stochastic = encode("rot1", x, 1).decode() - x
    eden = encode("eden1", x, 1).decode() - x

    # measured: ≈ 0.57‖x‖² against ≈ 3‖x‖² (docs/compression.md)
    assert np.sum(eden.astype(np.float64) ** 2) < 0.3 * np.sum(stochastic.astype(np.float64) ** 2)


# --- decode into a sum ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["float32", "rot4", "eden1", "fix8:range=1", "randk10+rot8", "randk25"]
)
def test_adding_into_a_sum_equals_decoding_then_adding(name):
    length = 70_001  # more than one decode block, several random-k chunks, a ragged tail
    x = vector(length, seed=2)
    payload = encode(name, x, 4)
    start = np.random.default_rng(1).normal(size=length)
    total = start.copy()

    payload.add_to(total, weight=0.25)

    decoded = payload.decode().astype(np.float64)  # rounded to float32: allow that rounding
    expected = start + 0.25 * decoded
    np.testing.assert_allclose(total, expected, rtol=1e-6, atol=1e-7 * np.abs(decoded).max())


def test_adding_into_a_sum_of_another_length_or_dtype_is_refused():
    payload = encode("rot4", vector(10), 1)

    with pytest.raises(CodecError, match="float64 vector of 10"):
        payload.add_to(np.zeros(11))
    with pytest.raises(CodecError, match="float64 vector of 10"):
        payload.add_to(np.zeros(10, np.float32))


# --- composition ---------------------------------------------------------------------------


def test_random_k_then_a_value_codec_sends_the_kept_values_through_that_codec():
    x = vector(9000, seed=7)
    composed = codec("randk10+rot4")
    kept = kept_indices(composed, x.size, seed=5)

    both = composed.encode(x, seed=5, rng=np.random.default_rng(0))
    alone = codec("rot4").encode(x[kept], seed=5, rng=np.random.default_rng(0))

    assert both.packed.tobytes() == alone.packed.tobytes()
    assert both.scales.tobytes() == alone.scales.tobytes()
    decoded = both.decode()
    assert np.count_nonzero(decoded[np.setdiff1d(np.arange(x.size), kept)]) == 0
    # 9000 = 2 chunks of 4096 keeping 410 each (×4096/410), then 808 keeping 81 (×808/81)
    factors = np.where(kept < 8192, 4096 / 410, 808 / 81)
    np.testing.assert_allclose(decoded[kept], factors * alone.decode(), rtol=1e-5, atol=1e-9)


def test_random_k_keeps_the_same_coordinates_for_the_same_seed_and_others_for_another():
    c = codec("randk10")

    assert (kept_indices(c, 5000, 1) == kept_indices(c, 5000, 1)).all()
    assert not np.array_equal(kept_indices(c, 5000, 1), kept_indices(c, 5000, 2))
    assert kept_indices(c, 5000, 1).size == c.kept(5000) == 410 + 91


def test_canonical_names_read_back_to_the_same_codec():
    for name in [*ALL, "randk0.5+eden1", "fix2:range=0.05,chunk=256"]:
        parsed = parse_codec(name)

        assert parse_codec(parsed.name) == parsed


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rot3", "b in"),
        ("eden2", "one bit"),
        ("fix8", "range"),
        ("fix8:range=-1", "range"),
        ("fix8:range=abc", "number"),
        ("randk0", "fraction"),
        ("randk100", "fraction"),
        ("rot4:chunk=1000", "power of two"),
        ("eden1:chunk=512", "at least 1024"),
        ("rot4:depth=2", "unknown parameter 'depth'"),
        ("rot4+randk10", "first of two stages"),
        ("randk10+rot4+fp16", "at most one"),
        ("zstd", "unknown codec 'zstd'"),
        ("", "non-empty"),
    ],
)
def test_a_bad_codec_name_is_a_codec_error_that_says_why(name, message):
    with pytest.raises(CodecError, match=message):
        parse_codec(name)


# --- the rotation --------------------------------------------------------------------------


def sylvester(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


def test_the_fast_transform_is_the_normalised_hadamard_matrix():
    x = np.random.default_rng(0).normal(size=(3, 16))

    np.testing.assert_allclose(fwht(x), x @ sylvester(16).T, atol=1e-12)


def test_the_tail_is_cut_into_powers_of_two_that_cover_it():
    assert tail_pieces(37, 4096) == [32, 4, 1]
    assert tail_pieces(8192, 4096) == []
    assert num_pieces(2 * 4096 + 37, 4096) == 5


@given(
    length=st.integers(1, 600), chunk=st.sampled_from([2, 8, 64, 256]), seed=st.integers(0, 2**32)
)
def test_the_chunked_rotation_preserves_the_norm_and_is_inverted(length, chunk, seed):
    x = vector(length, seed=length)
    rotated = np.concatenate([block.reshape(-1) for block in rotate(x, seed=seed, chunk=chunk)])
    flat = rotated.astype(np.float64)

    def identity(first: int, rows: int, values: np.ndarray) -> np.ndarray:
        return values.astype(np.float64)

    pieces = decode_rotated(
        lambda a, b: flat[a:b].reshape(-1), m=length, seed=seed, chunk=chunk, dequantize=identity
    )
    restored = np.concatenate([values for _, values in pieces])

    assert rotated.size == length
    assert np.linalg.norm(flat) == pytest.approx(np.linalg.norm(x.astype(np.float64)), rel=1e-5)
    np.testing.assert_allclose(restored, x, rtol=1e-5, atol=1e-7)


# --- integers for secure aggregation -------------------------------------------------------


def test_the_integer_view_maps_back_to_the_rotated_values_the_decoder_uses():
    x = vector(300, seed=8)
    c = codec("rot4:chunk=64")
    payload = encode("rot4:chunk=64", x, 3)

    view = c.integers(payload)

    assert view.values.max() < 16 and view.values.size == 300
    assert view.sizes.tolist() == [64, 64, 64, 64, 32, 8, 4]
    decoded = decode_rotated(
        lambda a, b: view.rotated()[a:b],
        m=300,
        seed=3,
        chunk=64,
        dequantize=lambda first, rows, values: values,
    )
    restored = np.concatenate([v for _, v in decoded])
    np.testing.assert_allclose(restored, payload.decode(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["fix8:range=0.5", "randk20+fix4:range=0.5,chunk=16"])
def test_the_sum_of_devices_integers_mod_2_to_the_sum_bits_decodes_to_the_sum_of_updates(name):
    c = codec(name)
    devices = [vector(500, seed=s) for s in range(5)]
    payloads = [c.encode(x, seed=77, rng=np.random.default_rng(i)) for i, x in enumerate(devices)]
    modulus = 1 << c.sum_bits(len(payloads))  # 2^(b + ⌈log2 5⌉)
    summed = sum(c.integers(p).values.astype(np.int64) for p in payloads) % modulus
    one_by_one = np.zeros(500)
    for payload in payloads:
        payload.add_to(one_by_one)
    from_integers = np.zeros(500)

    c.add_integer_sum(summed, count=5, length=500, seed=77, into=from_integers)

    assert c.sum_bits(5) == c.values.bits + 3
    np.testing.assert_allclose(from_integers, one_by_one, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["rot4", "eden1"])
def test_integers_scaled_per_update_have_no_sum(name):
    with pytest.raises(CodecError, match="fix"):
        codec(name).sum_bits(3)


def test_a_float_codec_has_no_integers():
    with pytest.raises(CodecError, match="floats"):
        codec("fp16").integers(encode("fp16", vector(4), 1))
