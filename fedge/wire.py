"""The binary format of weight vectors and updates on the wire and on disk, shared by both ends.

Format version 1, raw float32 (what :func:`encode_vector` writes), little-endian::

    offset  size  field
    0       4     magic b"FDGW"
    4       1     format version (1)
    5       1     dtype code (1 = float32)
    6       2     reserved, zero
    8       8     element count n
    16      4n    elements
    16+4n   4     CRC-32 of everything before it

Format version 2, a compressed update (:mod:`fedge.codecs`; :func:`encode_update`)::

    offset  size  field
    0       4     magic b"FDGW"
    4       1     format version (2)
    5       1     codec id (1 float32, 2 fp16, 3 rot, 4 eden, 5 fix)
    6       1     bits per value b
    7       1     log2 of the rotation piece size (0: no rotation)
    8       8     element count n (the model's length, before sparsification)
    16      8     task seed (rotation signs, kept coordinates)
    24      4     random-k: parts per million kept (1,000,000: no sparsification)
    28      1     log2 of the random-k chunk (0: no sparsification)
    29      3     reserved, zero
    32      4     fix{b}'s range R (float32; 0 for other codecs)
    36      4s    s float32 scales (per rotation piece)
    36+4s   v     values (floats, or b-bit integers packed 8/b to a byte, first in the low bits)
    36+4s+v 4     CRC-32 of everything before it

s and v follow from the header (n, the codec, its parameters), so a body of any other length
is refused before anything is decoded. Weights travel as raw float32, never JSON: a
400k-parameter CNN is 1.6 MB here and ~8 MB as JSON text, and a bit-exact round trip is
guaranteed.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import numpy.typing as npt

from fedge.codecs import Codec, CodecError, Payload, parse_codec
from fedge.codecs.codec import MAX_LOG2_SPARSE_CHUNK, Sparsity
from fedge.codecs.sampling import PPM
from fedge.codecs.values import (
    MAX_LOG2_CHUNK,
    Eden,
    FixedRange,
    Float16,
    Float32,
    Rotated,
    ValueCodec,
)
from fedge.errors import WireFormatError

MAGIC = b"FDGW"
FORMAT_VERSION = 1
CODEC_FORMAT_VERSION = 2
_DTYPE_CODES = {1: np.dtype("<f4")}
_HEADER = struct.Struct("<4sBBHQ")
_CODEC_HEADER = struct.Struct("<4sBBBBQQIB3sf")
_TRAILER = struct.Struct("<I")
_VALUE_CODECS: dict[int, type[ValueCodec]] = {
    kind.codec_id: kind for kind in (Float32, Float16, Rotated, Eden, FixedRange)
}
# The one media type of weight vectors on the wire: uploads with any other are refused (415).
MEDIA_TYPE = "application/vnd.fedge.weights"


def encoded_size(num_elements: int) -> int:
    """Bytes taken by an encoded float32 vector of ``num_elements``."""
    return _HEADER.size + 4 * num_elements + _TRAILER.size


def encode_vector(vector: npt.ArrayLike) -> bytes:
    """Encode a 1-D float32 vector; other float dtypes are refused rather than silently cast."""
    array = np.asarray(vector)
    if array.ndim != 1:
        raise WireFormatError(f"expected a 1-D weight vector, got shape {array.shape}")
    if array.dtype != np.float32:
        raise WireFormatError(f"expected float32 weights, got {array.dtype}")
    body = _HEADER.pack(MAGIC, FORMAT_VERSION, 1, 0, array.size) + array.astype("<f4").tobytes()
    return body + _TRAILER.pack(zlib.crc32(body))


def decode_vector(data: bytes, *, expected_length: int | None = None) -> npt.NDArray[np.float32]:
    """Decode bytes made by :func:`encode_vector`, checking magic, length and checksum.

    ``expected_length``, when given, must equal the element count: a vector for another model
    is refused here, before it can reach an aggregate.
    """
    if len(data) < _HEADER.size + _TRAILER.size:
        raise WireFormatError(f"{len(data)} bytes is too short for a Fedge weight vector")
    magic, version, dtype_code, reserved, count = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireFormatError("not a Fedge weight vector (bad magic bytes)")
    if version == CODEC_FORMAT_VERSION:
        raise WireFormatError(
            "wire format version 2 is a compressed update: read it with decode_update"
        )
    if reserved != 0:  # kept for a future format: refused now, so it can mean something later
        raise WireFormatError(f"reserved header bytes must be zero, got {reserved:#06x}")
    if version != FORMAT_VERSION:
        raise WireFormatError(f"unsupported wire format version {version}")
    dtype = _DTYPE_CODES.get(dtype_code)
    if dtype is None:
        raise WireFormatError(f"unsupported dtype code {dtype_code}")
    if len(data) != encoded_size(count):
        raise WireFormatError(
            f"header says {count} elements ({encoded_size(count)} bytes), got {len(data)} bytes"
        )
    (crc,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if zlib.crc32(memoryview(data)[: len(data) - _TRAILER.size]) != crc:
        raise WireFormatError("checksum mismatch: the weight vector was corrupted in transit")
    if expected_length is not None and count != expected_length:
        raise WireFormatError(f"expected {expected_length} weights, got {count}")
    vector = np.frombuffer(data, dtype=dtype, count=count, offset=_HEADER.size)
    return vector.astype(np.float32)  # a native-endian, writable copy


# --- format version 2: compressed updates ------------------------------------------------------


def encode_update(
    vector: npt.NDArray[np.float32], codec: Codec | str, *, seed: int, rng: np.random.Generator
) -> bytes:
    """Encode an update under ``codec`` (a :class:`~fedge.codecs.Codec` or its name) as format 2.

    ``seed`` is the task's (the coordinator regenerates rotations and kept coordinates from
    it); ``rng`` draws the stochastic rounding. A bad codec name raises
    :class:`~fedge.codecs.CodecError`.
    """
    chosen = parse_codec(codec) if isinstance(codec, str) else codec
    return payload_bytes(chosen.encode(vector, seed=seed, rng=rng))


def payload_bytes(payload: Payload) -> bytes:
    """The format-2 bytes of an encoded payload."""
    codec, values = payload.codec, payload.codec.values
    sparsity = codec.sparsity
    header = _CODEC_HEADER.pack(
        MAGIC,
        CODEC_FORMAT_VERSION,
        values.codec_id,
        values.bits,
        _log2(values.chunk),
        payload.length,
        payload.seed,
        PPM if sparsity is None else sparsity.ppm,
        0 if sparsity is None else _log2(sparsity.chunk),
        bytes(3),
        values.range,
    )
    body = header + payload.scales.astype("<f4").tobytes() + payload.packed.tobytes()
    return body + _TRAILER.pack(zlib.crc32(body))


def update_size(codec: Codec | str, num_elements: int) -> int:
    """Bytes taken by an update of ``num_elements`` under ``codec`` in format 2."""
    chosen = parse_codec(codec) if isinstance(codec, str) else codec
    return _CODEC_HEADER.size + chosen.body_size(num_elements) + _TRAILER.size


def decode_update(
    data: bytes,
    *,
    expected_length: int | None = None,
    expected_seed: int | None = None,
    expected_codec: Codec | str | None = None,
) -> Payload:
    """Parse and check an update in format 2 (or a format-1 float32 vector) into a payload.

    Nothing is decoded yet: the payload's scales and values are views of ``data``, and
    ``payload.add_to(total, weight=w)`` adds it into a float64 sum. Refused with
    :class:`WireFormatError` naming the reason: bad magic, unknown version or codec id, a bit
    width or parameter the codec lacks, a length, seed or codec other than expected, a body
    of the wrong size, a bad scale or a checksum mismatch.
    """
    if len(data) >= _HEADER.size and data[4] == FORMAT_VERSION and data[:4] == MAGIC:
        vector = decode_vector(data, expected_length=expected_length)  # format 1: float32, no seed
        floats = Codec(values=Float32())
        empty = np.zeros(0, np.float32)
        payload = Payload(
            codec=floats,
            length=vector.size,
            seed=expected_seed or 0,
            scales=empty,
            packed=vector.view(np.uint8),
        )
        floats.check(payload)
    else:
        payload = _parse(data)
        if expected_length is not None and payload.length != expected_length:
            raise WireFormatError(f"expected {expected_length} weights, got {payload.length}")
        if expected_seed is not None and payload.seed != expected_seed:
            raise WireFormatError(
                f"seed mismatch: the task's seed is {expected_seed}, the update's {payload.seed}"
            )
    if expected_codec is not None:
        want = parse_codec(expected_codec) if isinstance(expected_codec, str) else expected_codec
        if payload.codec != want:
            raise WireFormatError(
                f"the task's codec is {want.name}, the update is encoded with {payload.codec.name}"
            )
    return payload


def _parse(data: bytes) -> Payload:
    if len(data) < _CODEC_HEADER.size + _TRAILER.size:
        raise WireFormatError(f"{len(data)} bytes is too short for a Fedge update")
    fields = _CODEC_HEADER.unpack_from(data)
    magic, version, codec_id, bits, log2_chunk, count, seed, ppm, log2_sparse, reserved, limit = (
        fields
    )
    if magic != MAGIC:
        raise WireFormatError("not a Fedge update (bad magic bytes)")
    if version != CODEC_FORMAT_VERSION:
        raise WireFormatError(f"unsupported wire format version {version}")
    if reserved != bytes(3):
        raise WireFormatError(f"reserved header bytes must be zero, got {reserved.hex()}")
    codec = _codec(codec_id, bits, log2_chunk, ppm, log2_sparse, limit)
    scales = codec.values.num_scales(codec.kept(count))
    size = _CODEC_HEADER.size + codec.body_size(count) + _TRAILER.size
    if len(data) != size:
        raise WireFormatError(
            f"header says {count} elements under {codec.name} ({size} bytes), got {len(data)} bytes"
        )
    (crc,) = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if zlib.crc32(memoryview(data)[: len(data) - _TRAILER.size]) != crc:
        raise WireFormatError("checksum mismatch: the update was corrupted in transit")
    body = np.frombuffer(
        data, np.uint8, len(data) - _CODEC_HEADER.size - _TRAILER.size, _CODEC_HEADER.size
    )
    payload = Payload(
        codec=codec,
        length=count,
        seed=seed,
        scales=body[: 4 * scales].view("<f4").astype(np.float32),
        packed=body[4 * scales :],
    )
    codec.check(payload)
    return payload


def _codec(
    codec_id: int, bits: int, log2_chunk: int, ppm: int, log2_sparse: int, limit: float
) -> Codec:
    """The codec a header names; a header no encoder writes is refused, named."""
    kind = _VALUE_CODECS.get(codec_id)
    if kind is None:
        raise WireFormatError(f"unknown codec id {codec_id}")
    rotated = kind not in (Float32, Float16)
    if not rotated and (log2_chunk, limit) != (0, 0.0):
        raise WireFormatError(f"codec {kind.family} takes no rotation piece or range in its header")
    if rotated and not 1 <= log2_chunk <= MAX_LOG2_CHUNK:
        raise WireFormatError(f"codec {kind.family}: rotation piece 2^{log2_chunk} is out of range")
    if kind is not FixedRange and limit != 0.0:
        raise WireFormatError(f"codec {kind.family} takes no range, got {limit}")
    if (
        not 1 <= ppm <= PPM
        or (ppm == PPM) != (log2_sparse == 0)
        or log2_sparse > MAX_LOG2_SPARSE_CHUNK
    ):
        raise WireFormatError(f"random-k of {ppm} ppm in chunks of 2^{log2_sparse} is not a codec")
    try:
        values: ValueCodec
        if kind in (Float32, Float16):
            values = kind()
            if bits != values.bits:
                raise CodecError(f"codec {kind.family} has {values.bits}-bit values, got b={bits}")
        elif kind is FixedRange:
            if not math.isfinite(limit):
                raise CodecError(f"codec fix{bits}: range must be finite, got {limit}")
            values = FixedRange(width=bits, chunk_size=1 << log2_chunk, limit=limit)
        elif kind is Eden:
            values = Eden(width=bits, chunk_size=1 << log2_chunk)
        else:
            values = Rotated(width=bits, chunk_size=1 << log2_chunk)
        sparsity = None if ppm == PPM else Sparsity(ppm=ppm, chunk=1 << log2_sparse)
    except CodecError as error:
        raise WireFormatError(f"bad codec parameters in the header: {error}") from None
    return Codec(values=values, sparsity=sparsity)


def _log2(size: int) -> int:
    return 0 if size == 0 else size.bit_length() - 1
