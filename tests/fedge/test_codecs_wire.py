"""Specification of wire format version 2 (compressed updates) and its golden files."""

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from fedge.errors import WireFormatError
from fedge.wire import (
    decode_update,
    decode_vector,
    encode_update,
    encode_vector,
    payload_bytes,
    update_size,
)
from tests.fedge.codec_cases import ALL, codec

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_CODECS = [
    "float32",
    "fp16",
    "rot1",
    "rot2",
    "rot4",
    "rot8",
    "eden1:chunk=1024",
    "fix8:range=0.25",
    "randk10",
    "randk10+rot4",
    "randk50+fix4:range=0.25,chunk=8",
]
SEED = 20261202


def golden_input(name: str) -> np.ndarray:
    """37 coordinates (1,061 for eden1, whose EDEN scale needs a piece of 1,024), seeded."""
    length = 1061 if name.startswith("eden") else 37
    return (np.random.default_rng(37).normal(size=length) * 0.1).astype(np.float32)


def golden_bytes(name: str) -> bytes:
    return encode_update(golden_input(name), name, seed=SEED, rng=np.random.default_rng(7))


def golden_file(name: str) -> Path:
    return GOLDEN / (name.replace(":", "_").replace("=", "").replace(",", "_") + ".fdgw")


def write_golden() -> None:
    """Rewrite the golden files and their decoded values (only on a deliberate format change)."""
    decoded = {}
    for name in GOLDEN_CODECS:
        data = golden_bytes(name)
        golden_file(name).write_bytes(data)
        decoded[name] = decode_update(data).decode().tolist()
    (GOLDEN / "decoded.json").write_text(json.dumps(decoded, indent=0) + "\n")


def tamper(data: bytes, offset: int, fmt: str, value: object) -> bytes:
    """``data`` with one header field rewritten and the checksum made valid again."""
    body = bytearray(data[:-4])
    struct.pack_into(fmt, body, offset, value)
    return bytes(body) + struct.pack("<I", zlib.crc32(body))


# --- golden files --------------------------------------------------------------------------


@pytest.mark.parametrize("name", GOLDEN_CODECS)
def test_each_golden_file_decodes_to_its_recorded_values(name):
    expected = json.loads((GOLDEN / "decoded.json").read_text())[name]

    payload = decode_update(golden_file(name).read_bytes(), expected_seed=SEED, expected_codec=name)

    assert payload.codec.name == codec(name).name
    np.testing.assert_allclose(payload.decode(), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", GOLDEN_CODECS)
def test_a_seeded_encoding_reproduces_its_golden_file_bit_for_bit(name):
    assert golden_bytes(name) == golden_file(name).read_bytes()


# --- format 2 ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_an_update_round_trips_through_its_bytes(name):
    x = (np.random.default_rng(1).normal(size=300) * 0.1).astype(np.float32)
    payload = codec(name).encode(x, seed=5, rng=np.random.default_rng(2))

    data = payload_bytes(payload)
    again = decode_update(data, expected_length=300, expected_seed=5, expected_codec=name)

    assert len(data) == update_size(name, 300)
    assert again.codec == payload.codec and again.seed == 5 and again.length == 300
    assert again.decode().tobytes() == payload.decode().tobytes()


def test_compressed_updates_are_smaller_by_their_bits_per_coordinate():
    size = 1_000_000
    float32 = len(encode_vector(np.zeros(size, np.float32)))

    assert update_size("rot4", size) < float32 / 7.9
    assert update_size("eden1", size) < float32 / 31
    assert update_size("randk10+rot4", size) < float32 / 75


def test_format_1_stays_what_encode_vector_writes_and_decode_update_reads_it():
    x = np.arange(5, dtype=np.float32)
    data = encode_vector(x)

    payload = decode_update(data, expected_length=5)

    assert data[4] == 1
    assert payload.codec.name == "float32"
    assert (payload.decode() == x).all()


def test_decode_vector_points_a_format_2_update_to_decode_update():
    with pytest.raises(WireFormatError, match="decode_update"):
        decode_vector(golden_bytes("rot4"))


# --- bad input -----------------------------------------------------------------------------


def test_a_truncated_update_is_refused():
    with pytest.raises(WireFormatError, match="bytes"):
        decode_update(golden_bytes("rot4")[:-3])


def test_an_update_shorter_than_its_header_is_refused():
    with pytest.raises(WireFormatError, match="too short"):
        decode_update(golden_bytes("rot4")[:20])


def test_an_update_for_a_model_of_another_length_is_refused():
    with pytest.raises(WireFormatError, match="expected 38 weights, got 37"):
        decode_update(golden_bytes("rot4"), expected_length=38)


def test_a_header_claiming_another_length_than_its_body_is_refused():
    with pytest.raises(WireFormatError, match="header says 40 elements"):
        decode_update(tamper(golden_bytes("rot4"), 8, "<Q", 40))


def test_an_unknown_codec_id_is_refused_by_number():
    with pytest.raises(WireFormatError, match="unknown codec id 9"):
        decode_update(tamper(golden_bytes("rot4"), 5, "<B", 9))


def test_an_unknown_format_version_is_refused_by_number():
    with pytest.raises(WireFormatError, match="version 3"):
        decode_update(tamper(golden_bytes("rot4"), 4, "<B", 3))


@pytest.mark.parametrize(("name", "bits"), [("rot4", 3), ("eden1:chunk=1024", 2), ("fp16", 8)])
def test_a_bit_width_the_codec_does_not_have_is_refused(name, bits):
    with pytest.raises(WireFormatError, match=f"b={bits}"):
        decode_update(tamper(golden_bytes(name), 6, "<B", bits))


def test_an_update_encoded_under_another_seed_is_refused():
    with pytest.raises(WireFormatError, match="seed mismatch"):
        decode_update(golden_bytes("rot4"), expected_seed=SEED + 1)


def test_an_update_under_a_codec_other_than_the_tasks_is_refused():
    with pytest.raises(WireFormatError, match="the task's codec is rot8"):
        decode_update(golden_bytes("rot4"), expected_codec="rot8")


def test_a_fixed_range_other_than_the_tasks_is_refused():
    data = tamper(golden_bytes("fix8:range=0.25"), 32, "<f", 0.5)

    with pytest.raises(WireFormatError, match="task's codec"):
        decode_update(data, expected_codec="fix8:range=0.25")


@pytest.mark.parametrize("limit", [0.0, -1.0, float("inf"), float("nan")])
def test_a_fixed_range_that_is_not_finite_and_positive_is_refused(limit):
    with pytest.raises(WireFormatError, match="range"):
        decode_update(tamper(golden_bytes("fix8:range=0.25"), 32, "<f", limit))


def test_a_range_on_a_codec_without_one_is_refused():
    with pytest.raises(WireFormatError, match="range"):
        decode_update(tamper(golden_bytes("rot4"), 32, "<f", 1.0))


@pytest.mark.parametrize(("offset", "value"), [(36 + 4, -1.0), (36, float("nan"))])
def test_a_negative_step_or_a_non_finite_scale_is_refused(offset, value):
    # the first piece's (low, step) scales sit right after the 36-byte header
    with pytest.raises(WireFormatError, match=r"scale|step"):
        decode_update(tamper(golden_bytes("rot4"), offset, "<f", value))


def test_non_finite_floats_are_refused():
    data = tamper(golden_bytes("fp16"), 36, "<e", float("inf"))

    with pytest.raises(WireFormatError, match="non-finite"):
        decode_update(data)


def test_a_rotation_piece_out_of_range_is_refused():
    with pytest.raises(WireFormatError, match="rotation piece"):
        decode_update(tamper(golden_bytes("rot4"), 7, "<B", 30))


@pytest.mark.parametrize(("ppm", "log2_chunk"), [(0, 12), (1_000_001, 12), (100_000, 0)])
def test_a_random_k_header_no_encoder_writes_is_refused(ppm, log2_chunk):
    data = tamper(tamper(golden_bytes("randk10"), 24, "<I", ppm), 28, "<B", log2_chunk)

    with pytest.raises(WireFormatError, match=r"random-k|fraction"):
        decode_update(data)


def test_non_zero_reserved_bytes_are_refused():
    with pytest.raises(WireFormatError, match="reserved"):
        decode_update(tamper(golden_bytes("rot4"), 29, "<B", 1))


def test_a_flipped_bit_in_the_body_fails_the_checksum():
    data = bytearray(golden_bytes("rot4"))
    data[40] ^= 0x10

    with pytest.raises(WireFormatError, match="checksum"):
        decode_update(bytes(data))


def test_the_codecs_and_the_wire_import_only_numpy_and_the_standard_library():
    code = (
        "import sys; before = set(sys.modules); import fedge.wire; "
        "print(' '.join({m.split('.')[0] for m in set(sys.modules) - before}))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    loaded = set(run.stdout.split())

    assert run.returncode == 0, run.stderr
    assert loaded - set(sys.stdlib_module_names) - {"numpy", "fedge", "__main__"} == set()


if __name__ == "__main__":
    write_golden()
