"""Render an inference-only ``.tflite`` for any weight vector, without TensorFlow or LiteRT.

The exporter writes an inference *template*: the plan's forward pass with its weights frozen as
constants, converted with random probe weights so that each weight tensor's bytes can be found
in the flatbuffer unambiguously. The manifest records where each tensor lies and how the
converter laid it out (as is, transposed, or a conv kernel as a transposed ``[9·C_in, C_out]``
matrix). Writing a version's weights into a copy of the template at those offsets gives a
self-contained model for serving — pure bytes and numpy, so the coordinator can do it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedge.errors import ManifestError

LAYOUTS = ("direct", "transposed", "kernel_transposed")


@dataclass(frozen=True)
class InferencePatch:
    """Where one weight tensor lives in the template, and in what layout."""

    name: str
    byte_offset: int
    layout: str  # one of LAYOUTS


def arrange(tensor: npt.NDArray[np.float32], layout: str) -> npt.NDArray[np.float32]:
    """The tensor as the converter stored it."""
    if layout == "direct":
        return tensor
    if layout == "transposed":
        return np.ascontiguousarray(tensor.T)
    if layout == "kernel_transposed":
        return np.ascontiguousarray(tensor.reshape(-1, tensor.shape[-1]).T)
    raise ManifestError(f"unknown inference layout {layout!r}")


def render(
    template: bytes,
    patches: tuple[InferencePatch, ...],
    shapes: dict[str, tuple[int, ...]],
    offsets: dict[str, int],
    weights: npt.NDArray[np.float32],
) -> bytes:
    """``template`` with every weight tensor replaced by its slice of ``weights``."""
    out = bytearray(template)
    for patch in patches:
        shape = shapes[patch.name]
        size = int(np.prod(shape, dtype=np.int64))
        start = offsets[patch.name]
        tensor = weights[start : start + size].reshape(shape)
        data = arrange(tensor, patch.layout).astype("<f4").tobytes()
        end = patch.byte_offset + len(data)
        if patch.byte_offset < 0 or end > len(out):
            raise ManifestError(f"inference patch {patch.name!r} lies outside the template")
        out[patch.byte_offset : end] = data
    return bytes(out)
