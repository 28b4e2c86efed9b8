"""An encoded update as numbers (before its header is packed, after it is parsed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from fedge.codecs.codec import Codec


@dataclass(frozen=True, eq=False)
class Payload:
    """One update under ``codec``: the model's ``length``, the task ``seed``, scales and values.

    ``scales`` are float32 (per rotation piece; empty for float and fixed-range codecs),
    ``packed`` the values' bytes (floats, or b-bit integers packed ``8 // b`` to a byte).
    Decoded from the wire they are read-only views of the received bytes.
    """

    codec: Codec
    length: int
    seed: int
    scales: npt.NDArray[np.float32]
    packed: npt.NDArray[np.uint8]

    def add_to(self, into: npt.NDArray[np.float64], *, weight: float = 1.0) -> None:
        """``into += weight · decoded``, piece by piece (see :meth:`Codec.add_decoded`)."""
        self.codec.add_decoded(self, into=into, weight=weight)

    def decode(self) -> npt.NDArray[np.float32]:
        """The decoded update as a float32 vector of ``length``."""
        return self.codec.decode(self)


@dataclass(frozen=True, eq=False)
class IntegerView:
    """The integers a rotated codec sent, and the affine map back to rotated floats.

    ``values[i]`` is in ``[0, 2^bits)``; the rotation piece p of ``sizes[p]`` values decodes as
    ``lows[p] + steps[p] · values`` before the inverse rotation (and the random-k scatter, if
    any). For ``fix{b}`` lows and steps are the same for every device of a task, which is what
    lets secure aggregation sum these integers (see docs/compression.md).
    """

    values: npt.NDArray[np.uint8]
    bits: int
    lows: npt.NDArray[np.float64]
    steps: npt.NDArray[np.float64]
    sizes: npt.NDArray[np.int64]

    def rotated(self) -> npt.NDArray[np.float64]:
        """The dequantized values in the rotated domain, ``low + step·q`` for each."""
        return np.repeat(self.lows, self.sizes) + np.repeat(self.steps, self.sizes) * self.values
