"""Gaussian noise on the float64 sum of clipped updates, then the average over n_actual.

DP-FedAvg (McMahan et al., ICLR 2018): the coordinator adds N(0, (z·C)²) per coordinate to the
*sum* of the clipped updates and divides by the number of updates actually in that sum. Noise
is never sized to the number selected or expected: 30 % dropout leaves the sum's noise at z·C
and the average's at z·C / n_actual (Flower's DP wrappers size it to the sampled count and
warn; ours cannot, since :func:`private_average` takes only the number summed).

In service the generator is seeded with 128 bits from ``secrets`` (os.urandom), fresh for
every version and never stored; a reproducible seed exists for the simulator only, and the
record says it was used so version metadata can mark it. The sampler is numpy's floating-point
Gaussian: its known floating-point side channels (Mironov, CCS 2012; Jin et al., S&P 2022) are
out of scope here, as they are in TFF and Opacus.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

SumArray = npt.NDArray[np.float64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class NoiseSource:
    """A generator for one version's noise, and whether it came from a reproducible seed."""

    generator: np.random.Generator
    seeded: bool

    @classmethod
    def from_entropy(cls) -> NoiseSource:
        """The service's source: 128 bits from the OS's CSPRNG, unknown to anyone after use."""
        seed = np.random.SeedSequence(secrets.randbits(128))
        return cls(np.random.Generator(np.random.PCG64DXSM(seed)), seeded=False)

    @classmethod
    def reproducible(cls, seed: int) -> NoiseSource:
        """A seeded source for simulations; ``seeded=True`` so the version's metadata says so."""
        return cls(np.random.Generator(np.random.PCG64DXSM(seed)), seeded=True)


@dataclass(frozen=True)
class NoiseRecord:
    """What was added to one version, for its metadata."""

    noise_multiplier: float  # z_Δ: the sum's noise is z_Δ · C
    clip_norm: float
    stddev: float
    n_actual: int
    seeded: bool

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready fields."""
        return asdict(self)


def add_gaussian_noise(total: SumArray, *, stddev: float, source: NoiseSource) -> SumArray:
    """``total`` + N(0, stddev²) per coordinate, in float64; ``total`` itself is not changed."""
    if not isinstance(total, np.ndarray) or total.dtype != np.float64 or total.ndim != 1:
        raise ValueError("the sum must be a 1-D float64 numpy array")
    if not (math.isfinite(stddev) and stddev > 0):
        raise ValueError(f"stddev must be finite and > 0, got {stddev}")
    noised: SumArray = total + source.generator.normal(0.0, stddev, size=total.shape)
    return noised


def private_average(
    total: SumArray,
    *,
    n_actual: int,
    clip_norm: float,
    noise_multiplier: float,
    source: NoiseSource,
) -> tuple[FloatArray, NoiseRecord]:
    """(Σ clipped Δᵢ + N(0, (z·C)²)) / n_actual as float32, and what was added.

    ``total`` is the float64 sum of the ``n_actual`` clipped updates that were actually
    aggregated, each with weight 1 (example-count weights would break the sensitivity bound C).
    ``noise_multiplier`` is z_Δ (``PrivacyConfig.sum_noise_multiplier``).
    """
    if isinstance(n_actual, bool) or n_actual < 1:
        raise ValueError(f"n_actual must be an integer >= 1 (updates summed), got {n_actual}")
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ValueError(f"clip_norm must be finite and > 0, got {clip_norm}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ValueError(f"noise_multiplier must be finite and > 0, got {noise_multiplier}")
    stddev = noise_multiplier * clip_norm
    noised = add_gaussian_noise(total, stddev=stddev, source=source)
    average = (noised / n_actual).astype(np.float32)
    record = NoiseRecord(
        noise_multiplier=noise_multiplier,
        clip_norm=clip_norm,
        stddev=stddev,
        n_actual=n_actual,
        seeded=source.seeded,
    )
    return average, record
