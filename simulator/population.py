"""The device population: hardware tiers, networks, availability windows and dropout.

A population of N devices is a handful of numpy arrays (struct of arrays), so an idle device
costs a few dozen bytes and a million of them fit in memory; the simulator builds a Python object
only for a device that is busy right now.

Where the defaults come from (each is a parameter of
:class:`simulator.config.PopulationConfig`):

- **Hardware tiers.** Three tiers (high 25 %, mid 50 %, low 25 %) whose training time per example
  is 1×, 2.5× and 6× a reference device's. FedScale's device profiles (Lai et al., ICML 2022,
  measured with AI Benchmark) span more than an order of magnitude of compute speed between
  phones; the tiers reproduce that spread coarsely, with log-normal jitter (σ 0.25) inside a tier.
  Memory 8, 4 and 2 GB as on phones of those classes.
- **Network.** Bandwidth is log-normal with a median of 20 Mbps down and 5 Mbps up on the
  unmetered (Wi-Fi) networks devices train on, σ 0.8 (FedScale's MobiPerf traces span 1 to
  100+ Mbps); round-trip latency log-normal with a median of 60 ms.
- **Availability.** Devices are eligible (charging, idle, unmetered) only inside one window a
  day: for half of them at night, from a start near 22:00 (σ 3 h) lasting a log-normal median
  6 h; for the other half at a random hour, for a median 3 h. With these defaults the share of
  eligible devices swings about 4.4× between the quietest hour (~9 %,
  mid-afternoon) and the peak (~39 %, after midnight): the ~4× diurnal swing in participating
  devices that Bonawitz et al. ("Towards Federated Learning at Scale", SysML 2019) report.
  ``tests/simulator/test_population.py`` pins it.
- **Dropout by phase.** ``dropout`` is the chance that a task is cut short by a device that
  vanishes (no abort reported); it strikes during download, training or upload with shares 0.2,
  0.6 and 0.2. Bonawitz et al. saw 6-10 % of devices drop out in production; the simulator is
  meant to be run far beyond that. A dropped device comes back at its next window, unless it is
  one of the ``never_return`` share that is gone for good. ``crash_after_upload`` is the chance a
  device dies after sending its update and before reading the answer: 1 % unless set, and none
  at ``dropout = 0``, which means no dropout at all. Devices still abort (reported, not silent)
  when their eligibility window closes mid-task; ``diurnal = false`` keeps them always eligible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from simulator.config import PopulationConfig

DAY = 86_400.0


class Availability(Protocol):
    """Replayed eligibility (FedScale behaviour traces) that replaces the daily windows."""

    def available(self, device: int, t: float) -> bool:
        """Whether ``device`` is eligible at ``t``."""
        ...

    def window_end(self, device: int, t: float) -> float:
        """When the window that contains ``t`` closes."""
        ...

    def next_window(self, device: int, t: float) -> float:
        """The earliest time ≥ ``t`` at which ``device`` is eligible."""
        ...


@dataclass(frozen=True)
class Fate:
    """How one task of one device ends: dropped in a phase at a fraction of it, or not."""

    drop_phase: str | None
    drop_fraction: float
    crash_after_upload: bool


class Population:
    """N devices as arrays; runtime state (wake time, token) lives beside the static traits."""

    def __init__(
        self,
        *,
        tier: npt.NDArray[np.uint8],
        ms_per_example: npt.NDArray[np.float32],
        down_kbps: npt.NDArray[np.float32],
        up_kbps: npt.NDArray[np.float32],
        rtt_s: npt.NDArray[np.float32],
        window_start: npt.NDArray[np.float32],
        window_length: npt.NDArray[np.float32],
        num_examples: npt.NDArray[np.int32],
        memory_mb: npt.NDArray[np.float32],
        config: PopulationConfig,
    ) -> None:
        self.size = int(tier.size)
        self.tier = tier
        self.ms_per_example = ms_per_example
        self.down_kbps = down_kbps
        self.up_kbps = up_kbps
        self.rtt_s = rtt_s
        self.window_start = window_start  # seconds after midnight
        self.window_length = window_length  # seconds; DAY means always eligible
        self.num_examples = num_examples
        self.memory_mb = memory_mb
        self.config = config
        # Runtime state.
        self.token = np.zeros(self.size, dtype="S43")  # empty until the device registers
        self.gone = np.zeros(self.size, dtype=bool)
        self.tasks = np.zeros(self.size, dtype=np.uint16)
        self.contributions = np.zeros(self.size, dtype=np.uint16)  # updates the server accepted
        self.sessions = np.zeros(self.size, dtype=np.uint32)
        self.plan_cached = np.full(self.size, -1, dtype=np.int16)
        # Replayed availability (FedScale behaviour traces) replaces the daily windows.
        self.trace: Availability | None = None

    @property
    def bytes_per_device(self) -> float:
        """Memory of all the per-device arrays, divided by the number of devices."""
        arrays = [value for value in vars(self).values() if isinstance(value, np.ndarray)]
        return sum(a.nbytes for a in arrays) / max(self.size, 1)

    def available(self, device: int, t: float) -> bool:
        """Whether ``device`` is eligible (charging, idle, unmetered) at time ``t``."""
        if self.trace is not None:
            return self.trace.available(device, t)
        length = float(self.window_length[device])
        if length >= DAY:
            return True
        return (t - float(self.window_start[device])) % DAY < length

    def window_end(self, device: int, t: float) -> float:
        """When the eligibility window that contains ``t`` closes (inf for always-on devices).

        Only meaningful while the device is available; otherwise it is a time before ``t``.
        """
        if self.trace is not None:
            return self.trace.window_end(device, t)
        length = float(self.window_length[device])
        if length >= DAY:
            return math.inf
        into = (t - float(self.window_start[device])) % DAY
        return t - into + length

    def next_window(self, device: int, t: float) -> float:
        """The earliest time ≥ ``t`` at which ``device`` is eligible."""
        if self.trace is not None:
            return self.trace.next_window(device, t)
        if self.available(device, t):
            return t
        into = (t - float(self.window_start[device])) % DAY
        return t + (DAY - into)

    def fate(self, rng: np.random.Generator) -> Fate:
        """Draw how a task that starts now ends."""
        cfg = self.config
        phase = None
        if rng.random() < cfg.dropout:
            names = list(cfg.dropout_phases)
            shares = np.array([cfg.dropout_phases[n] for n in names], dtype=np.float64)
            phase = names[int(rng.choice(len(names), p=shares / shares.sum()))]
        return Fate(
            drop_phase=phase,
            drop_fraction=float(rng.random()),
            crash_after_upload=bool(rng.random() < cfg.crash_chance),
        )

    def eligible_fraction(self, hours: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Share of devices eligible at each hour of the day (the diurnal curve)."""
        result = []
        for hour in np.asarray(hours, dtype=np.float64).ravel():
            into = (hour * 3600.0 - self.window_start.astype(np.float64)) % DAY
            result.append(float(np.mean(into < self.window_length)))
        return np.asarray(result)


def synthesize(
    num_devices: int,
    config: PopulationConfig,
    *,
    num_examples: npt.NDArray[np.int32],
    rng: np.random.Generator,
) -> Population:
    """Draw a population from ``config``; ``num_examples`` comes from the data partition."""
    if num_devices < 1:
        raise ValueError(f"a population needs at least one device, got {num_devices}")
    shares = np.array([tier.share for tier in config.tiers], dtype=np.float64)
    tier = rng.choice(len(config.tiers), size=num_devices, p=shares / shares.sum()).astype(np.uint8)
    factors = np.array([t.compute_factor for t in config.tiers], dtype=np.float64)[tier]
    jitter = rng.lognormal(0.0, config.compute_jitter, size=num_devices)
    ms = (config.reference_ms_per_example * factors * jitter).astype(np.float32)

    def per_tier(field: str, default: float) -> npt.NDArray[np.float64]:
        """Each device's median of ``field``: its tier's, or the population's default."""
        medians = [getattr(t, field) for t in config.tiers]
        return np.array([default if m is None else m for m in medians], dtype=np.float64)[tier]

    def lognormal(median: float | npt.NDArray[np.float64], sigma: float) -> npt.NDArray[np.float64]:
        return rng.lognormal(np.log(median), sigma, size=num_devices)

    down_median = per_tier("down_mbps", config.down_mbps_median)
    up_median = per_tier("up_mbps", config.up_mbps_median)
    rtt_median = per_tier("rtt_ms", config.rtt_ms_median)
    down = (lognormal(down_median, config.bandwidth_sigma) * 1000).astype(np.float32)
    up = (lognormal(up_median, config.bandwidth_sigma) * 1000).astype(np.float32)
    rtt = (lognormal(rtt_median, 0.5) / 1000).astype(np.float32)
    if config.diurnal:
        night = rng.random(num_devices) < config.night_share
        night_start = rng.normal(
            config.night_start_hour, config.night_start_sigma_hours, num_devices
        )
        day_start = rng.uniform(0.0, 24.0, num_devices)
        start = np.where(night, night_start, day_start) % 24.0 * 3600.0
        median = np.where(night, config.night_hours_median, config.day_hours_median)
        hours = median * rng.lognormal(0.0, config.window_sigma, num_devices)
        length = np.minimum(hours * 3600.0, DAY - 60.0)
    else:
        start = np.zeros(num_devices)
        length = np.full(num_devices, DAY)
    memory = np.array([t.memory_mb for t in config.tiers], dtype=np.float32)[tier]
    return Population(
        tier=tier,
        ms_per_example=ms,
        down_kbps=down,
        up_kbps=up,
        rtt_s=rtt,
        window_start=start.astype(np.float32),
        window_length=length.astype(np.float32),
        num_examples=np.asarray(num_examples, dtype=np.int32),
        memory_mb=memory,
        config=config,
    )
