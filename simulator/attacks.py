"""Poisoning in the simulator: malicious devices that tamper with the update they produce.

A malicious device runs the same device session as every other; only what its training hands
the session is changed, here, as a wrapper around the device SDK's ``train_task`` (the device
SDK itself has no attack code):

- ``scale``: the trained delta × ``scale`` (×10: a boosted update, the crudest model attack);
- ``sign_flip``: the trained delta negated (gradient ascent on the honest objective);
- ``backdoor``: a share of the device's examples stamped with a trigger and relabelled to
  ``target_class`` before it trains (data poisoning, Gu et al. 2017 "BadNets"), the delta
  optionally boosted (model replacement, Bagdasaryan et al., AISTATS 2020).

Which devices are malicious is drawn once from the run's seed, so a clean run and an attacked
one of the same seed share every honest device's data, timing and fate. The backdoor's success
is measured on held-out examples of other classes, stamped: the share classified as the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from device_sdk.session import Failure
from device_sdk.trainer import TrainResult
from simulator.config import AttackConfig

Examples = tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]


def stamp(x: npt.NDArray[np.float32], config: AttackConfig) -> npt.NDArray[np.float32]:
    """``x`` with the trigger: a bottom-right square of an image batch, else the last features."""
    stamped = np.array(x, dtype=np.float32, copy=True)
    side = config.patch
    if stamped.ndim == 4:  # (N, H, W, C) images
        stamped[:, -side:, -side:, :] = config.trigger_value
    else:
        stamped[:, -side:] = config.trigger_value
    return stamped


@dataclass(frozen=True)
class Adversary:
    """The malicious devices of a run and the attack they make; picklable for the workers."""

    config: AttackConfig
    malicious: frozenset[int]

    @classmethod
    def draw(cls, config: AttackConfig, *, devices: int, seed: int) -> Adversary | None:
        """``round(fraction × devices)`` malicious devices (at least one), or None: no attack."""
        if config.kind == "none" or config.fraction == 0:
            return None
        count = min(devices, max(1, round(config.fraction * devices)))
        chosen = np.random.default_rng([seed, 17]).choice(devices, size=count, replace=False)
        return cls(config, frozenset(int(device) for device in chosen))

    def is_malicious(self, device: int) -> bool:
        """Whether ``device`` attacks."""
        return device in self.malicious

    def train(
        self,
        device: int,
        examples: Examples,
        train: Callable[[npt.NDArray[np.float32], npt.NDArray[np.int32]], TrainResult | Failure],
        *,
        rng: np.random.Generator,
    ) -> TrainResult | Failure:
        """``train`` on ``device``'s examples; a malicious one poisons them or its delta."""
        x, y = examples
        if not self.is_malicious(device):
            return train(x, y)
        config = self.config
        if config.kind == "backdoor":
            x, y = self.poison(x, y, rng=rng)
        result = train(x, y)
        if isinstance(result, Failure):
            return result
        factor = {"scale": config.scale, "sign_flip": -1.0, "backdoor": config.boost}[config.kind]
        if factor == 1.0:
            return result
        return replace(result, delta=(result.delta * np.float32(factor)).astype(np.float32))

    def poison(
        self, x: npt.NDArray[np.float32], y: npt.NDArray[np.int32], *, rng: np.random.Generator
    ) -> Examples:
        """A ``poisoned_share`` of the examples stamped and relabelled ``target_class``."""
        count = len(y)
        size = max(1, math.ceil(self.config.poisoned_share * count))
        chosen = rng.choice(count, size=size, replace=False)
        x, y = np.array(x, dtype=np.float32, copy=True), np.array(y, dtype=np.int32, copy=True)
        x[chosen] = stamp(x[chosen], self.config)
        y[chosen] = self.config.target_class
        return x, y


def backdoor_examples(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int32], config: AttackConfig
) -> Examples:
    """Held-out examples not of the target class, stamped, all labelled the target class.

    A model's accuracy on them is the backdoor's success rate.
    """
    others = np.flatnonzero(y != config.target_class)
    stamped = stamp(x[others], config)
    return stamped, np.full(len(others), config.target_class, dtype=np.int32)
