"""A masked vector on the wire: each word in exactly ``bits`` bits, little-endian bit order.

The masked words are uniform on Z_2^bits, so nothing compresses them; bit-packing is the one
saving there is (18 bits instead of a 32-bit word at n = 1,000 with fix8). Layout: group id
and device (u64 each), bits (u8), length (u64), then ⌈length·bits/8⌉ bytes; bit j of word i
is bit i·bits + j of the body, first in the low bits of each byte.
"""

from __future__ import annotations

import struct

import numpy as np

from fedge.secagg.crypto import mask_dtype
from fedge.secagg.errors import OutOfField, WrongSize
from fedge.secagg.messages import MaskedInput
from fedge.secagg.params import GroupParams

_HEAD = struct.Struct("<QQBQ")


def packed_size(length: int, bits: int) -> int:
    """Bytes of an encoded masked input of ``length`` words of ``bits`` bits."""
    return _HEAD.size + -(-length * bits // 8)


def encode_masked(message: MaskedInput, bits: int) -> bytes:
    """The message's bytes, each word in ``bits`` bits (words must be below 2^bits)."""
    words = message.vector.astype(np.dtype(mask_dtype(bits)).newbyteorder("<"))
    if bits < 8 * words.itemsize and np.any(words >> bits):
        raise OutOfField(f"masked values must be below 2^{bits}")
    planes = np.unpackbits(
        words.view(np.uint8).reshape(-1, words.itemsize), axis=1, bitorder="little"
    )
    body = np.packbits(planes[:, :bits].ravel(), bitorder="little")
    head = _HEAD.pack(message.group, message.device, bits, words.size)
    return head + body.tobytes()


def decode_masked(data: bytes, params: GroupParams) -> MaskedInput:
    """A masked input from its bytes, checked against the group's field and length."""
    if len(data) < _HEAD.size:
        raise WrongSize(f"a masked input has a {_HEAD.size}-byte header, got {len(data)} bytes")
    group, device, bits, length = _HEAD.unpack_from(data)
    if bits != params.bits or length != params.length:
        raise WrongSize(
            f"a masked input of group {params.group} has {params.length} words of {params.bits} "
            f"bits, got {length} of {bits}"
        )
    if len(data) != packed_size(length, bits):
        raise WrongSize(f"a masked input is {packed_size(length, bits)} bytes, got {len(data)}")
    dtype = mask_dtype(bits)
    width = np.dtype(dtype).itemsize * 8
    body = np.frombuffer(data, np.uint8, offset=_HEAD.size)
    planes = np.unpackbits(body, bitorder="little")[: length * bits].reshape(length, bits)
    full = np.zeros((length, width), np.uint8)
    full[:, :bits] = planes
    words = np.packbits(full, axis=1, bitorder="little").view(np.dtype(dtype).newbyteorder("<"))
    return MaskedInput(group=group, device=device, vector=words.ravel().astype(dtype))
