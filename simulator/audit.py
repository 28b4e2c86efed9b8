"""The privacy audit of a run: membership inference and an empirical ε from canary devices.

Two attacks on the final model, so a user sees what DP's guarantee does (issue 15):

- **Membership inference by loss threshold** (Yeom et al., CSF 2018): an example whose loss
  under the final model is low was more likely trained on. Members are the examples of devices
  whose updates entered a version; non-members those of ``held_out_devices`` devices kept out
  of the population. The attack's AUC is the rank statistic of −loss (Mann–Whitney), with a
  bootstrap interval, per example and per device (the device's mean loss: DP here is
  device-level, so the device is the unit the guarantee speaks of).
- **Canaries** (Andrew et al., ICLR 2024, "One-shot empirical privacy estimation for federated
  learning"): ``canaries`` devices send C·u, u a fixed random unit direction, instead of their
  trained delta; ``held_out_canaries`` more directions are drawn and never sent. The cosines of
  the final model delta (final − initial weights) with each direction are fitted by one
  Gaussian per group, and the ε at δ of telling those two Gaussians apart is the estimate. It
  is a lower bound only in the paper's sense (an estimate of what this attack achieves, not a
  proof), to read beside the accountant's upper bound.

The canary wrapper follows :class:`simulator.attacks.Adversary`: the device runs its own
session and its own training; only the delta handed to the session is replaced, so the device
still clips to the task's C, and the coordinator re-checks it and counts it like any other.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from device_sdk.session import Failure
from device_sdk.trainer import TrainResult
from simulator.config import AuditConfig
from simulator.estimators import canary_epsilon, cosines, losses, membership

Examples = tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AuditPlan:
    """Who is held out and who is a canary in one run; picklable for the workers."""

    config: AuditConfig
    held_out: frozenset[int]
    canaries: tuple[int, ...]
    """Canary devices, in the order of their directions (direction i is device canaries[i]'s)."""
    seed: int

    @classmethod
    def draw(
        cls, config: AuditConfig, *, devices: int, seed: int, exclude: frozenset[int] = frozenset()
    ) -> AuditPlan | None:
        """The run's held-out and canary devices, none of ``exclude`` (malicious); None: off."""
        if not config.enabled:
            return None
        pool = np.setdiff1d(np.arange(devices), np.fromiter(exclude, dtype=np.int64))
        size = min(pool.size, config.held_out_devices + config.canaries)
        chosen = np.random.default_rng([seed, 31]).choice(pool, size=size, replace=False)
        held = chosen[: config.held_out_devices]
        canaries = chosen[config.held_out_devices :]
        return cls(config, frozenset(int(d) for d in held), tuple(int(d) for d in canaries), seed)

    def is_canary(self, device: int) -> bool:
        """Whether ``device`` sends a canary."""
        return device in self._index

    @functools.cached_property
    def _index(self) -> dict[int, int]:
        return {device: i for i, device in enumerate(self.canaries)}

    def direction(self, index: int, size: int) -> npt.NDArray[np.float64]:
        """Canary direction ``index`` of a model with ``size`` weights: uniform on the sphere.

        Inserted canaries are indices 0 … canaries − 1, held-out ones follow. A normalised
        standard Gaussian vector is uniform on the unit sphere (Muller 1959).
        """
        vector = np.random.default_rng([self.seed, 37, index]).standard_normal(size)
        direction: npt.NDArray[np.float64] = vector / np.linalg.norm(vector)
        return direction

    def directions(self) -> range:
        """Indices of every direction: the inserted ones, then the held-out ones."""
        return range(len(self.canaries) + self.config.held_out_canaries)

    def train(
        self,
        device: int,
        examples: Examples,
        train: Callable[[npt.NDArray[np.float32], npt.NDArray[np.int32]], TrainResult | Failure],
        *,
        clip_norm: float | None,
    ) -> TrainResult | Failure:
        """``train`` on ``device``'s examples; a canary device's delta becomes C·u (float64)."""
        result = train(*examples)
        index = self._index.get(device)
        if index is None or isinstance(result, Failure):
            return result
        norm = clip_norm if clip_norm is not None else self.config.canary_norm
        canary = self.direction(index, result.delta.size) * norm
        return replace(result, delta=canary.astype(np.float32))


def run_audit(
    plan: AuditPlan,
    *,
    infer: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
    examples: Callable[[int], Examples],
    initial: npt.ArrayLike,
    final: npt.ArrayLike,
    contributions: npt.NDArray[np.integer[Any]],
    privacy: dict[str, Any] | None,
    exclude: frozenset[int] = frozenset(),
    data_mode: str = "disjoint",
) -> dict[str, Any]:
    """Both attacks on a finished run; ``infer`` holds the final weights already.

    Members are the devices with an accepted update, neither canaries nor in ``exclude``
    (malicious); non-members the held-out devices. ``privacy`` is the run's last version's
    privacy metadata (None without DP): its δ is the estimate's and its PLD ε the upper bound.
    """
    config = plan.config
    rng = np.random.default_rng([plan.seed, 41])

    def device_losses(device: int) -> FloatArray:
        x, y = examples(device)
        if len(y) == 0:
            return np.zeros(0)
        batches = [
            losses(infer(x[start : start + 256]), y[start : start + 256])
            for start in range(0, len(y), 256)
        ]
        return np.concatenate(batches)

    skip = set(plan.canaries) | set(exclude) | set(plan.held_out)
    members = [d for d in np.flatnonzero(contributions > 0).tolist() if d not in skip]
    attack: dict[str, Any] | None = None
    if members and plan.held_out:
        attack = membership(
            [device_losses(d) for d in members],
            [device_losses(d) for d in sorted(plan.held_out)],
            rng=rng,
            resamples=config.bootstrap,
        )
    delta_model = np.asarray(final, dtype=np.float64) - np.asarray(initial, dtype=np.float64)
    size = delta_model.size
    entered = [i for i, d in enumerate(plan.canaries) if contributions[d] > 0]
    held = range(len(plan.canaries), len(plan.directions()))
    cos_in = [float(cosines(delta_model, plan.direction(i, size)[None, :])[0]) for i in entered]
    cos_out = [float(cosines(delta_model, plan.direction(i, size)[None, :])[0]) for i in held]
    delta = float(privacy["delta"]) if privacy else config.delta
    canaries: dict[str, Any] = {
        "devices": len(plan.canaries),
        "entered": len(entered),
        "contributions_per_entered": (
            float(np.mean([contributions[plan.canaries[i]] for i in entered])) if entered else 0
        ),
        "held_out_std_times_sqrt_p": float(np.std(cos_out) * math.sqrt(size)),
    }
    if len(entered) >= 2:
        canaries.update(
            canary_epsilon(
                cos_in, cos_out, delta=delta, rng=rng, resamples=min(config.bootstrap, 200)
            )
        )
    upper = None if privacy is None else (privacy.get("epsilon_pld") or privacy.get("epsilon"))
    method = None
    if privacy is not None:
        method = "pld" if privacy.get("epsilon_pld") is not None else privacy.get("method")
    return {
        "membership": attack,
        "canaries": canaries,
        "epsilon_lower": canaries.get("epsilon_lower"),
        "epsilon_upper": upper,
        "epsilon_upper_method": method,
        "delta": delta,
        "assumptions": {
            "threat_model": "the final model and the initial weights (not the versions between)",
            "members": "devices with at least one accepted update, not canaries or malicious",
            "non_members": f"{len(plan.held_out)} devices drawn from the run's seed and kept "
            "out of the population (they never check in)",
            "data_mode": data_mode,
            "canaries": "C·u per update, u uniform on the unit sphere; inserted = canary "
            "devices with an accepted update; held out = directions never sent",
            "epsilon_lower": "Andrew et al. 2024: ε at δ of two Gaussians fitted to the "
            "cosines; an estimate of this attack's power, not a proven bound",
            "interval": f"percentile bootstrap, {config.bootstrap} resamples (AUC; "
            f"{min(config.bootstrap, 200)} for ε_lower), each group resampled on its own "
            "(per example: examples treated as independent, so that interval is too narrow)",
        },
    }
