"""Replay device traces in FedScale's format (Lai et al., "FedScale", ICML 2022).

FedScale ships two dictionaries keyed by client id, as pickles:

- *device capacity*: ``{client: {"computation": ms, "communication": kbps}}`` — the time to
  process one sample, and the network bandwidth;
- *behaviour*: ``{client: {"duration": s, "active": [t0, ...], "inactive": [t0', ...],
  "finish_time": s}}`` — the device is available from each ``active[i]`` to ``inactive[i]``
  (seconds), and the pattern repeats every ``finish_time`` seconds.

Both are accepted as pickle (FedScale's files; unpickling runs code, so load only files you
trust) or as JSON of the same shape. Population device ``d`` replays trace client number
``d mod len(traces)`` (in sorted key order), so a population larger than the trace reuses it.
FedScale charges a training step three times the per-sample ``computation`` (forward and
backward); the simulator does the same: ``ms_per_example = 3 × computation``.
"""

from __future__ import annotations

import bisect
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from simulator.config import TraceConfig
from simulator.population import Population

TRAINING_FACTOR = 3.0  # forward + backward, as FedScale charges a training sample


class TraceError(ValueError):
    """A trace file that cannot be read or does not have FedScale's shape."""


def read_trace(path: Path) -> dict[Any, dict[str, Any]]:
    """Load a FedScale trace dictionary from a pickle or JSON file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else pickle.loads(raw)
    except (json.JSONDecodeError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise TraceError(f"{path} is not a FedScale trace (pickle or JSON): {exc}") from None
    if not isinstance(data, dict) or not data:
        raise TraceError(f"{path} must hold a non-empty dict of client id -> record")
    return data


class TraceAvailability:
    """Availability intervals per device, periodic, packed in flat arrays (CSR layout)."""

    def __init__(self, records: list[dict[str, Any]], num_devices: int) -> None:
        starts: list[float] = []
        ends: list[float] = []
        offsets = [0]
        periods = []
        for k, record in enumerate(records):
            try:
                active = [float(t) for t in record["active"]]
                inactive = [float(t) for t in record["inactive"]]
                period = float(record["finish_time"])
            except (KeyError, TypeError, ValueError) as exc:
                raise TraceError(f"behaviour record {k} lacks active/inactive/finish_time") from exc
            if len(active) != len(inactive) or period <= 0:
                raise TraceError(f"behaviour record {k}: active and inactive differ in length")
            pairs = sorted((a, min(b, period)) for a, b in zip(active, inactive, strict=True))
            starts += [a for a, _ in pairs]
            ends += [b for _, b in pairs]
            offsets.append(len(starts))
            periods.append(period)
        self.starts = np.asarray(starts, dtype=np.float64)
        self.ends = np.asarray(ends, dtype=np.float64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.periods = np.asarray(periods, dtype=np.float64)
        self.num_traces = len(records)
        self.num_devices = num_devices

    def _intervals(
        self, device: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]:
        k = device % self.num_traces
        lo, hi = self.offsets[k], self.offsets[k + 1]
        return self.starts[lo:hi], self.ends[lo:hi], float(self.periods[k])

    def available(self, device: int, t: float) -> bool:
        """Whether ``t`` falls inside one of the device's active intervals."""
        starts, ends, period = self._intervals(device)
        phase = t % period
        i = bisect.bisect_right(starts.tolist(), phase) - 1
        return i >= 0 and phase <= ends[i]

    def window_end(self, device: int, t: float) -> float:
        """End of the interval containing ``t`` (``t`` itself if none does)."""
        starts, ends, period = self._intervals(device)
        phase = t % period
        i = bisect.bisect_right(starts.tolist(), phase) - 1
        if i >= 0 and phase <= ends[i]:
            return t - phase + float(ends[i])
        return t

    def next_window(self, device: int, t: float) -> float:
        """The earliest time ≥ ``t`` inside an active interval (inf if the device never is)."""
        starts, _, period = self._intervals(device)
        if starts.size == 0:
            return math.inf
        if self.available(device, t):
            return t
        phase = t % period
        later = starts[starts > phase]
        if later.size:
            return t - phase + float(later[0])
        return t - phase + period + float(starts[0])


def apply_traces(population: Population, traces: TraceConfig, *, rng: np.random.Generator) -> None:
    """Overwrite ``population``'s speeds, bandwidths and availability from trace files."""
    del rng  # replay is deterministic; kept for symmetry with the synthetic model
    if traces.device_capacity is not None:
        capacity = read_trace(traces.device_capacity)
        keys = sorted(capacity)
        try:
            compute = np.array([float(capacity[k]["computation"]) for k in keys])
            kbps = np.array([float(capacity[k]["communication"]) for k in keys])
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceError(
                f"{traces.device_capacity}: each record needs computation and communication"
            ) from exc
        pick = np.arange(population.size) % len(keys)
        population.ms_per_example[:] = (TRAINING_FACTOR * compute[pick]).astype(np.float32)
        population.down_kbps[:] = kbps[pick].astype(np.float32)
        population.up_kbps[:] = kbps[pick].astype(np.float32)
    if traces.behaviour is not None:
        behaviour = read_trace(traces.behaviour)
        records = [behaviour[k] for k in sorted(behaviour)]
        population.trace = TraceAvailability(records, population.size)
