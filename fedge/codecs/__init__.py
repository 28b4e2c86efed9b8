"""Uplink codecs: stateless, unbiased compression of an update, numpy only (issue 16).

A device takes part only a few times, so nothing is carried between its updates (no error
feedback): each codec is unbiased on its own. Names such as ``rot4`` or ``randk10+rot4`` are
parsed by :func:`parse_codec`; a :class:`Codec` encodes a float32 vector into a
:class:`Payload` under a per-task seed, and a coordinator adds a payload into its float64 sum
with :meth:`Codec.add_decoded` (O(block) memory). :mod:`fedge.wire` puts a payload on the
wire. See docs/compression.md for the codecs' variance bounds and the secure-aggregation map.
"""

from fedge.codecs.codec import Codec, Sparsity, check_seed
from fedge.codecs.errors import CodecError
from fedge.codecs.names import parse_codec
from fedge.codecs.payload import IntegerView, Payload
from fedge.codecs.values import Eden, FixedRange, Float16, Float32, Rotated, ValueCodec

__all__ = [
    "Codec",
    "CodecError",
    "Eden",
    "FixedRange",
    "Float16",
    "Float32",
    "IntegerView",
    "Payload",
    "Rotated",
    "Sparsity",
    "ValueCodec",
    "check_seed",
    "parse_codec",
]
