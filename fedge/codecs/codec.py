"""A codec: optional random-k, then a value codec; encode, check, and decode into a sum."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedge.codecs.bits import unpack
from fedge.codecs.errors import CodecError
from fedge.codecs.hadamard import tail_pieces
from fedge.codecs.payload import IntegerView, Payload
from fedge.codecs.sampling import PPM, KeptCoordinates, kept_count
from fedge.codecs.streams import MAX_SEED
from fedge.codecs.values import F64, FixedRange, ValueCodec, _Rotated, decode_rotated
from fedge.errors import WireFormatError

DEFAULT_SPARSE_CHUNK = 4096
MAX_LOG2_SPARSE_CHUNK = 24
Indices = slice | npt.NDArray[np.int64]


@dataclass(frozen=True, kw_only=True)
class Sparsity:
    """Random-k: keep ``ppm`` parts per million of each chunk of ``chunk`` coordinates, scaled."""

    ppm: int
    chunk: int = DEFAULT_SPARSE_CHUNK

    def __post_init__(self) -> None:
        if not (isinstance(self.ppm, int) and 1 <= self.ppm < PPM):
            raise CodecError(f"randk keeps a fraction in (0, 100) %, got {self.ppm / 10_000:g} %")
        chunk = self.chunk
        if not (
            isinstance(chunk, int)
            and chunk.bit_count() == 1
            and chunk <= 1 << MAX_LOG2_SPARSE_CHUNK
        ):
            raise CodecError(
                f"randk chunk must be a power of two up to 2^{MAX_LOG2_SPARSE_CHUNK}, got {chunk}"
            )

    @property
    def name(self) -> str:
        """``randk{percent}``, with ``:chunk=N`` when it is not the default."""
        base = f"randk{self.ppm / 10_000:g}"
        return base if self.chunk == DEFAULT_SPARSE_CHUNK else f"{base}:chunk={self.chunk}"


@dataclass(frozen=True)
class Codec:
    """``values`` after an optional ``sparsity``; stateless, so one instance serves every update.

    Build one with :func:`fedge.codecs.parse_codec`. The randomness a decoder must repeat
    (rotation signs, kept coordinates) comes from the task ``seed``; stochastic rounding draws
    from the ``rng`` the device passes and is never needed again.
    """

    values: ValueCodec
    sparsity: Sparsity | None = None

    @property
    def name(self) -> str:
        """The canonical name, e.g. ``randk10+rot4``."""
        return (
            self.values.name
            if self.sparsity is None
            else f"{self.sparsity.name}+{self.values.name}"
        )

    def __str__(self) -> str:
        return self.name

    def kept(self, length: int) -> int:
        """How many values are sent for a vector of ``length``."""
        if self.sparsity is None:
            return length
        return kept_count(length, chunk=self.sparsity.chunk, ppm=self.sparsity.ppm)

    def body_size(self, length: int) -> int:
        """Bytes of scales and values for a vector of ``length`` (the header is fedge.wire's)."""
        m = self.kept(length)
        return 4 * self.values.num_scales(m) + self.values.value_bytes(m)

    def encode(
        self, vector: npt.NDArray[np.float32], *, seed: int, rng: np.random.Generator
    ) -> Payload:
        """Encode a finite 1-D float32 ``vector`` under the task ``seed``."""
        check_seed(seed)
        if not isinstance(vector, np.ndarray) or vector.ndim != 1 or vector.dtype != np.float32:
            raise CodecError("a codec encodes a 1-D float32 numpy vector")
        if not np.isfinite(vector).all():
            raise CodecError("a vector with NaN or Inf values cannot be encoded")
        values = vector
        if self.sparsity is not None:
            values = vector[self._kept_coordinates(vector.size, seed).all()]
        scales, packed = self.values.encode(np.ascontiguousarray(values), seed=seed, rng=rng)
        return Payload(codec=self, length=vector.size, seed=seed, scales=scales, packed=packed)

    def check(self, payload: Payload) -> None:
        """Refuse a payload whose sizes or scales this codec cannot make (WireFormatError)."""
        m = self.kept(payload.length)
        want = (self.values.num_scales(m), self.values.value_bytes(m))
        got = (payload.scales.size, payload.packed.size)
        if got != want:
            raise WireFormatError(
                f"codec {self.name}: {payload.length} values need {want[0]} scales and "
                f"{want[1]} value bytes, got {got[0]} and {got[1]}"
            )
        self.values.check(payload.scales, payload.packed)

    def pieces(self, payload: Payload) -> Iterator[tuple[Indices, npt.NDArray[np.float64]]]:
        """``(where, values)`` of the decoded update, piece by piece; no coordinate twice."""
        m = self.kept(payload.length)
        pieces = self.values.pieces(payload.scales, payload.packed, m=m, seed=payload.seed)
        if self.sparsity is None:
            for start, values in pieces:
                yield slice(start, start + values.size), values
            return
        kept = self._kept_coordinates(payload.length, payload.seed)
        for start, values in pieces:
            indices, factors = kept.take(start, start + values.size)
            yield indices, values * factors

    def add_decoded(self, payload: Payload, *, into: F64, weight: float = 1.0) -> None:
        """``into += weight · decode(payload)``, with no float copy of the update (O(block) memory).

        ``into`` is the coordinator's float64 sum (1-D, the payload's length, writeable). It
        equals decoding then adding, to float64 rounding.
        """
        if into.dtype != np.float64 or into.shape != (payload.length,):
            raise CodecError(
                f"into must be a float64 vector of {payload.length}, got {into.dtype} {into.shape}"
            )
        for where, values in self.pieces(payload):
            into[where] += weight * values

    def decode(self, payload: Payload) -> npt.NDArray[np.float32]:
        """The decoded update as float32 (zeros where random-k sent nothing)."""
        total = np.zeros(payload.length, np.float64)
        self.add_decoded(payload, into=total)
        return total.astype(np.float32)

    def integers(self, payload: Payload) -> IntegerView:
        """The sent integers and their affine map (rotated codecs; secure aggregation's input)."""
        values = self._rotated("integers")
        m = self.kept(payload.length)
        sizes = np.array(
            [values.chunk] * (m // values.chunk) + tail_pieces(m, values.chunk), np.int64
        )
        lows, steps = values.affine(payload.scales, sizes.size)
        unpacked = unpack(payload.packed, values.bits, 0, m)
        return IntegerView(values=unpacked, bits=values.bits, lows=lows, steps=steps, sizes=sizes)

    def sum_bits(self, count: int) -> int:
        """Bits holding a sum of ``count`` devices' integers without wrap: ``b + ⌈log2 count⌉``."""
        return self._fixed("sums").bits + max(0, count - 1).bit_length()

    def add_integer_sum(
        self,
        total: npt.NDArray[np.integer],
        *,
        count: int,
        length: int,
        seed: int,
        into: F64,
        weight: float = 1.0,
    ) -> None:
        """``into += weight · Σ decoded`` from ``count`` devices' summed integers (``fix{b}`` only).

        ``total`` is that sum, exact or reduced mod ``2^sum_bits(count)`` (the same number, as
        it cannot wrap). All ``count`` devices must have encoded with this codec and ``seed``.
        """
        values = self._fixed("sums")
        m = self.kept(length)
        if total.shape != (m,) or into.shape != (length,) or into.dtype != np.float64:
            raise CodecError(f"a sum of {self.name} integers for {length} values has {m} entries")
        wide = np.asarray(total, dtype=np.int64) % (1 << self.sum_bits(count))
        pieces = decode_rotated(
            lambda a, b: wide[a:b],
            m=m,
            seed=seed,
            chunk=values.chunk,
            dequantize=values.summed_dequantize(count),
        )
        kept = self._kept_coordinates(length, seed) if self.sparsity is not None else None
        for start, decoded in pieces:
            if kept is None:
                into[start : start + decoded.size] += weight * decoded
            else:
                indices, factors = kept.take(start, start + decoded.size)
                into[indices] += weight * factors * decoded

    def _kept_coordinates(self, length: int, seed: int) -> KeptCoordinates:
        assert self.sparsity is not None
        return KeptCoordinates(
            length=length, chunk=self.sparsity.chunk, ppm=self.sparsity.ppm, seed=seed
        )

    def _rotated(self, what: str) -> _Rotated:
        if not isinstance(self.values, _Rotated):
            raise CodecError(f"codec {self.name} sends floats, not integers: it has no {what}")
        return self.values

    def _fixed(self, what: str) -> FixedRange:
        if not isinstance(self.values, FixedRange):
            raise CodecError(
                f"codec {self.name} scales each update on its own, so its integers have no {what}: "
                "use fix{b}:range=R, whose range is shared per task"
            )
        return self.values


def check_seed(seed: int) -> None:
    """Refuse a task seed that is not an integer in ``[0, 2^64)``."""
    if (
        isinstance(seed, bool)
        or not isinstance(seed, int | np.integer)
        or not 0 <= seed <= MAX_SEED
    ):
        raise CodecError(f"a task seed is an integer in [0, 2^64), got {seed!r}")
