"""A masked vector on the wire takes exactly bits per word and reads back only into its group."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.secagg import GroupParams, MaskedInput, OutOfField, WrongSize
from fedge.secagg.packing import decode_masked, encode_masked, packed_size

PARAMS = GroupParams(3, (1, 2, 3), degree=2, threshold=2, bits=18, length=5, graph_seed=bytes(16))


@settings(max_examples=60)
@given(st.integers(1, 64), st.integers(1, 300), st.integers(0, 2**32))
def test_a_masked_vector_reads_back_word_for_word_in_length_times_bits_bits(bits, length, seed):
    params = dataclasses.replace(PARAMS, bits=bits, length=length)
    dtype = np.uint32 if bits <= 32 else np.uint64
    words = (
        np.random.default_rng(seed).integers(0, 1 << bits, length, dtype=np.uint64).astype(dtype)
    )
    message = MaskedInput(3, 2, words)

    data = encode_masked(message, bits)
    back = decode_masked(data, params)

    assert len(data) == packed_size(length, bits) == 25 + -(-length * bits // 8)
    assert (back.group, back.device) == (3, 2)
    assert back.vector.dtype == dtype
    assert np.array_equal(back.vector, words)


def test_words_past_the_field_are_not_encoded():
    with pytest.raises(OutOfField, match="below 2\\^18"):
        encode_masked(MaskedInput(3, 2, np.full(5, 1 << 18, np.uint32)), 18)


@pytest.mark.parametrize(
    ("bits", "length", "trim", "match"),
    [(17, 5, 0, "5 words of 18 bits"), (18, 6, 0, "5 words of 18 bits"), (18, 5, 1, "bytes, got")],
)
def test_a_masked_input_of_another_field_length_or_size_is_refused(bits, length, trim, match):
    data = encode_masked(MaskedInput(3, 2, np.zeros(length, np.uint32)), bits)

    with pytest.raises(WrongSize, match=match):
        decode_masked(data[: len(data) - trim], PARAMS)


def test_a_truncated_header_is_refused():
    with pytest.raises(WrongSize, match="header"):
        decode_masked(b"\x00" * 10, PARAMS)
