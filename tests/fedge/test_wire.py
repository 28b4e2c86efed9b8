import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedge.errors import WireFormatError
from fedge.wire import decode_vector, encode_vector, encoded_size


@given(hnp.arrays(np.float32, st.integers(0, 300)))
def test_a_float32_vector_round_trips_bit_exactly(vector):
    decoded = decode_vector(encode_vector(vector))

    assert decoded.dtype == np.float32
    assert decoded.tobytes() == vector.tobytes()


def test_encoded_size_counts_header_elements_and_checksum():
    assert len(encode_vector(np.zeros(10, np.float32))) == encoded_size(10) == 16 + 40 + 4


def test_float64_is_refused_rather_than_silently_cast():
    with pytest.raises(WireFormatError, match="float32"):
        encode_vector(np.zeros(3))


def test_a_matrix_is_refused():
    with pytest.raises(WireFormatError, match="1-D"):
        encode_vector(np.zeros((2, 2), np.float32))


def test_bytes_without_the_magic_are_refused():
    data = bytearray(encode_vector(np.ones(4, np.float32)))
    data[:4] = b"JSON"

    with pytest.raises(WireFormatError, match="magic"):
        decode_vector(bytes(data))


def test_a_truncated_vector_is_refused():
    data = encode_vector(np.ones(4, np.float32))

    with pytest.raises(WireFormatError, match="bytes"):
        decode_vector(data[:-5])


def test_a_flipped_bit_fails_the_checksum():
    data = bytearray(encode_vector(np.ones(4, np.float32)))
    data[20] ^= 0x01

    with pytest.raises(WireFormatError, match="checksum"):
        decode_vector(bytes(data))


def test_a_vector_of_the_wrong_length_for_the_model_is_refused():
    with pytest.raises(WireFormatError, match="expected 5 weights, got 4"):
        decode_vector(encode_vector(np.ones(4, np.float32)), expected_length=5)


def test_garbage_shorter_than_a_header_is_refused():
    with pytest.raises(WireFormatError, match="too short"):
        decode_vector(b"\x00" * 7)


def test_non_zero_reserved_header_bytes_are_refused_even_with_a_valid_checksum():
    body = bytearray(encode_vector(np.zeros(3, np.float32))[:-4])
    struct.pack_into("<H", body, 6, 1)
    tampered = bytes(body) + struct.pack("<I", zlib.crc32(body))

    with pytest.raises(WireFormatError, match="reserved"):
        decode_vector(tampered)
