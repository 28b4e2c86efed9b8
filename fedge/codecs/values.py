"""The value codecs: how a vector's m values become scales and bytes, and back, piece by piece.

=============  ===  =====================================================================
codec          id   what is sent
=============  ===  =====================================================================
float32        1    the values (identity)
fp16           2    the values as float16, rounded to nearest (biased by ≤ 2⁻¹¹ relative)
rot{b}         3    rotated, then b-bit stochastic rounding on each piece's [min, max]
eden1          4    rotated, then signs with DRIVE/EDEN's unbiased scale ‖y‖²/‖y‖₁ per piece
fix{b}         5    rotated, then b-bit stochastic rounding on a fixed [−R, R] shared per task
=============  ===  =====================================================================

Decoding yields ``(start, values)`` pieces of at most a block (:data:`DECODE_BLOCK` values, or
one rotation piece), in float64, so a coordinator adds an update into its sum without ever
holding a float copy of the whole update.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from fedge.codecs.bits import ALLOWED_BITS, pack, packed_size, unpack
from fedge.codecs.errors import CodecError
from fedge.codecs.hadamard import DECODE_BLOCK, num_pieces, piece_blocks, rotate, unrotate
from fedge.codecs.streams import SignStream
from fedge.errors import NonFiniteValues, WireFormatError

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
Pieces = Iterator[tuple[int, F64]]
DEFAULT_CHUNK = 4096  # rotation piece: 8 bytes of scales per 4,096 values at most
MAX_LOG2_CHUNK = 20


class ValueCodec(ABC):
    """One way of sending m float32 values: per-piece scales (float32) and a run of bytes."""

    codec_id: ClassVar[int]
    family: ClassVar[str]
    scales_per_piece: ClassVar[int] = 0

    @property
    @abstractmethod
    def bits(self) -> int:
        """Bits per value on the wire."""

    @property
    def chunk(self) -> int:
        """Rotation piece size; 0 for a codec that does not rotate."""
        return 0

    @property
    def range(self) -> float:
        """The fixed quantization range R of ``fix{b}``; 0 for every other codec."""
        return 0.0

    @property
    @abstractmethod
    def name(self) -> str:
        """The codec's canonical name (what :func:`fedge.codecs.parse_codec` reads back)."""

    def num_scales(self, m: int) -> int:
        """Float32 scales sent for m values."""
        return 0

    def value_bytes(self, m: int) -> int:
        """Bytes of the packed values for m values."""
        return packed_size(m, self.bits) if self.bits <= 8 else m * self.bits // 8

    @abstractmethod
    def encode(self, values: F32, *, seed: int, rng: np.random.Generator) -> tuple[F32, U8]:
        """``(scales, packed values)`` of a finite float32 vector."""

    @abstractmethod
    def pieces(self, scales: F32, packed: U8, *, m: int, seed: int) -> Pieces:
        """The decoded values, ``(start, float64 piece)`` in order."""

    def check(self, scales: F32, packed: U8) -> None:
        """Refuse scales or values that no encoder makes (:class:`WireFormatError`)."""
        if not np.isfinite(scales).all():
            raise WireFormatError(f"codec {self.name}: a scale is not finite")


# --- floats --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Floats(ValueCodec):
    _dtype: ClassVar[np.dtype[np.floating]]

    @property
    def bits(self) -> int:
        return 8 * self._dtype.itemsize

    @property
    def name(self) -> str:
        return self.family

    def encode(self, values: F32, *, seed: int, rng: np.random.Generator) -> tuple[F32, U8]:
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
            cast = values.astype(self._dtype)
        if not np.isfinite(cast).all():
            raise CodecError(f"codec {self.name}: a value is outside the {self._dtype} range")
        return np.zeros(0, np.float32), cast.view(np.uint8)

    def pieces(self, scales: F32, packed: U8, *, m: int, seed: int) -> Pieces:
        floats = packed.view(self._dtype)
        for start in range(0, m, DECODE_BLOCK):
            yield start, floats[start : start + DECODE_BLOCK].astype(np.float64)

    def check(self, scales: F32, packed: U8) -> None:
        """Refuse non-finite or negative scales."""
        floats = packed.view(self._dtype)
        for start in range(0, floats.size, DECODE_BLOCK):
            if not np.isfinite(floats[start : start + DECODE_BLOCK]).all():
                raise NonFiniteValues(f"codec {self.name}: the update has non-finite values")


@dataclass(frozen=True, kw_only=True)
class Float32(_Floats):
    """float32, unchanged: 32 bits a coordinate, no error."""

    codec_id: ClassVar[int] = 1
    family: ClassVar[str] = "float32"
    _dtype: ClassVar[np.dtype[np.floating]] = np.dtype("<f4")


@dataclass(frozen=True, kw_only=True)
class Float16(_Floats):
    """float16, rounded to nearest: 16 bits, |error| ≤ 2⁻¹¹|x| + 2⁻²⁵ (deterministic)."""

    codec_id: ClassVar[int] = 2
    family: ClassVar[str] = "fp16"
    _dtype: ClassVar[np.dtype[np.floating]] = np.dtype("<f2")


# --- rotated codecs ------------------------------------------------------------------------

Dequantize = Callable[[int, int, npt.NDArray[np.integer]], F64]
Read = Callable[[int, int], npt.NDArray[np.integer]]


def check_chunk(chunk: int) -> None:
    """Refuse a rotation piece that is not a power of two in ``[2, 2^20]``."""
    if not (
        isinstance(chunk, int) and 2 <= chunk <= 1 << MAX_LOG2_CHUNK and chunk.bit_count() == 1
    ):
        raise CodecError(f"chunk must be a power of two from 2 to 2^{MAX_LOG2_CHUNK}, got {chunk}")


def check_bits(family: str, bits: int, allowed: tuple[int, ...] = ALLOWED_BITS) -> None:
    """Refuse a bit width the codec does not have."""
    if bits not in allowed:
        names = ", ".join(str(b) for b in allowed)
        raise CodecError(f"codec {family} takes b in {{{names}}}, got b={bits}")


@dataclass(frozen=True, kw_only=True)
class _Rotated(ValueCodec):
    chunk_size: int = DEFAULT_CHUNK

    @property
    def chunk(self) -> int:
        return self.chunk_size

    def num_scales(self, m: int) -> int:
        return self.scales_per_piece * num_pieces(m, self.chunk_size)

    def _chunk_suffix(self) -> str:
        return "" if self.chunk_size == DEFAULT_CHUNK else f"chunk={self.chunk_size}"

    @abstractmethod
    def _quantize(self, block: F32, rng: np.random.Generator) -> tuple[F32, U8]:
        """``(scales of shape (rows, scales_per_piece), values)`` of a rotated block."""

    @abstractmethod
    def _dequantize(self, scales: F32) -> Dequantize:
        """``f(first piece, rows, values) → rotated float64 block``."""

    @abstractmethod
    def affine(self, scales: F32, pieces: int) -> tuple[F64, F64]:
        """``(lows, steps)`` per piece: a rotated value is ``low + step·q`` of its integer q."""

    def encode(self, values: F32, *, seed: int, rng: np.random.Generator) -> tuple[F32, U8]:
        scales, quantized = [], []
        for block in rotate(values, seed=seed, chunk=self.chunk_size):
            block_scales, block_values = self._quantize(block, rng)
            scales.append(block_scales.reshape(-1))
            quantized.append(block_values.reshape(-1))
        return np.concatenate(scales).astype(np.float32), pack(np.concatenate(quantized), self.bits)

    def pieces(self, scales: F32, packed: U8, *, m: int, seed: int) -> Pieces:
        dequantize = self._dequantize(scales.reshape(-1, max(1, self.scales_per_piece)))
        return decode_rotated(
            self.reader(packed), m=m, seed=seed, chunk=self.chunk_size, dequantize=dequantize
        )

    def reader(self, packed: U8) -> Read:
        """``read(start, stop)``: the integers of values ``start:stop``, unpacked."""
        return lambda start, stop: unpack(packed, self.bits, start, stop)


def decode_rotated(read: Read, *, m: int, seed: int, chunk: int, dequantize: Dequantize) -> Pieces:
    """Read, dequantize and un-rotate a rotated vector block by block (O(block) memory)."""
    signs = SignStream(seed)
    position = 0
    for first, rows, n in piece_blocks(m, chunk):
        values = read(position, position + rows * n).reshape(rows, n)
        rotated = dequantize(first, rows, values)
        yield position, unrotate(rotated, signs.take(rows, n)).reshape(-1)
        position += rows * n


def stochastic_round(scaled: F64, top: int, rng: np.random.Generator) -> U8:
    """``floor(t + u)``, u ~ U[0, 1): an unbiased integer in ``[0, top]`` for t in ``[0, top]``."""
    rounded = np.floor(scaled + rng.random(scaled.shape))
    return np.clip(rounded, 0, top).astype(np.uint8)


def step_covering(low: F64, high: F64, top: int) -> F32:
    """The float32 step s with ``low + s·top ≥ high`` (rounded up), so no value leaves the grid."""
    step = ((high - low) / top).astype(np.float32)
    short = step.astype(np.float64) * top < high - low
    step[short] = np.nextafter(step[short], np.float32(np.inf))
    return step


@dataclass(frozen=True, kw_only=True)
class Rotated(_Rotated):
    """Rotation, then b-bit stochastic quantization on each piece's [min, max] (Suresh et al. 2017).

    Per piece of n rotated values: ``q = floor((y − min)/s + u)``, ``s = (max − min)/(2^b − 1)``,
    sent as b-bit integers with (min, s) as two float32 scales. ``E‖x̂ − x‖² = Σ s² f(1 − f)``
    over the fractional parts f, at most ``Σ_pieces n·s²/4``.
    """

    codec_id: ClassVar[int] = 3
    family: ClassVar[str] = "rot"
    scales_per_piece: ClassVar[int] = 2
    width: int = 4

    def __post_init__(self) -> None:
        check_bits(self.family, self.width)
        check_chunk(self.chunk_size)

    @property
    def bits(self) -> int:
        """Bits per value on the wire."""
        return self.width

    @property
    def name(self) -> str:
        """The canonical name."""
        suffix = self._chunk_suffix()
        return f"rot{self.width}" + (f":{suffix}" if suffix else "")

    def _quantize(self, block: F32, rng: np.random.Generator) -> tuple[F32, U8]:
        top = (1 << self.width) - 1
        low = block.min(axis=1, initial=np.inf).astype(np.float64)
        high = block.max(axis=1, initial=-np.inf).astype(np.float64)
        step = step_covering(low, high, top)
        divisor = np.where(step > 0, step, 1).astype(np.float64)[:, None]
        quantized = stochastic_round((block - low[:, None]) / divisor, top, rng)
        return np.stack([low.astype(np.float32), step], axis=1), quantized

    def _dequantize(self, scales: F32) -> Dequantize:
        low, step = scales[:, 0].astype(np.float64), scales[:, 1].astype(np.float64)

        def dequantize(first: int, rows: int, values: npt.NDArray[np.integer]) -> F64:
            cut = slice(first, first + rows)
            return low[cut, None] + step[cut, None] * values

        return dequantize

    def affine(self, scales: F32, pieces: int) -> tuple[F64, F64]:
        """``(lows, steps)`` per piece."""
        pairs = scales.reshape(-1, 2).astype(np.float64)
        return pairs[:, 0], pairs[:, 1]

    def check(self, scales: F32, packed: U8) -> None:
        """Refuse non-finite or negative scales."""
        super().check(scales, packed)
        if (scales.reshape(-1, 2)[:, 1] < 0).any():
            raise WireFormatError(f"codec {self.name}: a quantization step is negative")


EDEN_MIN_PIECE = 1024  # smaller pieces take unbiased stochastic bits instead (see Eden)


@dataclass(frozen=True, kw_only=True)
class Eden(Rotated):
    """Rotation, then one sign bit per value with DRIVE's unbiased scale (Vargaftik et al. 2021).

    Per piece of n ≥ 1,024 rotated values y: ``ŷ = S·sign(y)``, ``S = ‖y‖²/‖y‖₁``, so
    ``⟨x̂, x⟩ = ‖x‖²`` always and ``‖x̂ − x‖² = n·S² − ‖x‖²`` exactly (≈ (π/2 − 1)‖x‖² once
    the piece is well mixed). DRIVE's scale makes the estimate unbiased over *uniform*
    rotations; over randomized Hadamard ones small pieces are biased (measured: bias² ≈ 10⁻³ of
    the variance at n = 256, 1.2·10⁻⁴ at 512, below detection at 1,024). So the tail's pieces
    under 1,024 values take rot1's stochastic bit on [min, max] instead, which is unbiased.
    Both are ``low + step·q`` with (low, step) = (−S, 2S) or (min, max − min): the decoder is
    rot1's, only the encoder differs.
    """

    codec_id: ClassVar[int] = 4
    family: ClassVar[str] = "eden"
    width: int = 1

    def __post_init__(self) -> None:
        check_bits(self.family, self.width, (1,))
        check_chunk(self.chunk_size)
        if self.chunk_size < EDEN_MIN_PIECE:
            raise CodecError(
                f"codec eden1: chunk must be at least {EDEN_MIN_PIECE}, got {self.chunk_size}"
            )

    @property
    def name(self) -> str:
        """The canonical name."""
        suffix = self._chunk_suffix()
        return "eden1" + (f":{suffix}" if suffix else "")

    def _quantize(self, block: F32, rng: np.random.Generator) -> tuple[F32, U8]:
        if block.shape[1] < EDEN_MIN_PIECE:
            return super()._quantize(block, rng)
        wide = block.astype(np.float64)
        l1 = np.abs(wide).sum(axis=1)
        scale = np.divide((wide * wide).sum(axis=1), l1, out=np.zeros_like(l1), where=l1 > 0)
        scale32 = scale.astype(np.float32)
        return np.stack([-scale32, 2 * scale32], axis=1), (block >= 0).astype(np.uint8)


@dataclass(frozen=True, kw_only=True)
class FixedRange(_Rotated):
    """Rotation, then b-bit stochastic quantization on a fixed range [−R, R] shared per task.

    Every device of a task maps values to integers the same way (``y ≈ −R + s·q``,
    ``s = 2R/(2^b − 1)``), so integers of many devices can be summed — masked, for secure
    aggregation — and the sum decoded once. Rotated values outside [−R, R] are clipped (the only
    bias); none are when R ≥ the L2 clip norm C. ``E‖x̂ − x‖² ≤ m·s²/4`` when nothing is clipped.
    """

    codec_id: ClassVar[int] = 5
    family: ClassVar[str] = "fix"
    width: int = 8
    limit: float = 1.0

    def __post_init__(self) -> None:
        check_bits(self.family, self.width)
        check_chunk(self.chunk_size)
        limit = float(np.float32(self.limit))
        if not (np.isfinite(limit) and limit > 0 and np.isfinite(np.float32(2 * limit))):
            raise CodecError(
                f"codec fix{self.width}: range must be finite and > 0, got {self.limit}"
            )
        object.__setattr__(self, "limit", limit)  # the float32 value the header carries

    @property
    def bits(self) -> int:
        """Bits per value on the wire."""
        return self.width

    @property
    def range(self) -> float:
        """The shared range R."""
        return self.limit

    @property
    def step(self) -> float:
        """The integer grid's step ``2R / (2^b − 1)``."""
        return 2.0 * self.limit / ((1 << self.width) - 1)

    @property
    def name(self) -> str:
        """The canonical name."""
        limit = np.format_float_positional(np.float32(self.limit), trim="-")
        suffix = self._chunk_suffix()
        return f"fix{self.width}:range={limit}" + (f",{suffix}" if suffix else "")

    def _quantize(self, block: F32, rng: np.random.Generator) -> tuple[F32, U8]:
        clipped = np.clip(block.astype(np.float64), -self.limit, self.limit)
        quantized = stochastic_round((clipped + self.limit) / self.step, (1 << self.width) - 1, rng)
        return np.zeros((block.shape[0], 0), np.float32), quantized

    def _dequantize(self, scales: F32) -> Dequantize:
        return self.summed_dequantize(1)

    def affine(self, scales: F32, pieces: int) -> tuple[F64, F64]:
        """``(lows, steps)`` per piece."""
        return np.full(pieces, -self.limit), np.full(pieces, self.step)

    def summed_dequantize(self, count: int) -> Dequantize:
        """Dequantize a sum of ``count`` devices' integers: ``count·(−R) + s·Σq``."""
        low, step = -self.limit * count, self.step

        def dequantize(first: int, rows: int, values: npt.NDArray[np.integer]) -> F64:
            return low + step * values.astype(np.float64)

        return dequantize
