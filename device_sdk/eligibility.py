"""Eligibility probes: whether this device may train now (power, activity, heat, network).

A :class:`Probe` takes a :class:`Readings` of the hardware and judges it with an
:class:`EligibilityPolicy`, giving an :class:`Eligibility` snapshot that says why not.
Implementations: :class:`LinuxProbe` (Linux boards, Raspberry Pi: sysfs and procfs),
:class:`TermuxProbe` (Android through Termux:API) and :class:`FakeProbe` (tests, simulator).
:func:`detect_probe` picks one for the platform it runs on.

Errors::

    DeviceError (device_sdk.errors)
    └── ProbeError                 a probe could not read the device
        └── ProbeUnavailableError  its command is not installed (e.g. Termux:API missing)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from device_sdk.errors import DeviceError
from fedge.protocol import EligibilityFacts

# Why a device is not eligible. "battery" and "user_activity" are also abort reasons the
# coordinator knows (device_sdk.session), so an interrupted task reports them unchanged.
BATTERY = "battery"
USER_ACTIVITY = "user_activity"
THERMAL = "thermal"
METERED = "metered"
MEMORY = "memory"


class ProbeError(DeviceError):
    """A probe could not read the device's state."""


class ProbeUnavailableError(ProbeError):
    """The probe's command is not installed here."""


@dataclass(frozen=True)
class Readings:
    """What a probe measured; ``None`` where the device cannot tell."""

    charging: bool
    battery_percent: float | None = None  # None: no battery (a board on mains)
    load_average: float | None = None  # 1-minute load average, all cores together
    cpu_count: int = 1
    temperature_c: float | None = None  # the hottest sensor
    free_memory_mb: float | None = None
    unmetered: bool = True


@dataclass(frozen=True)
class Eligibility:
    """One judged snapshot of the device; ``reasons`` says why it is not eligible."""

    charging: bool
    battery_percent: float | None
    idle: bool
    temperature_c: float | None
    unmetered: bool
    free_memory_mb: float | None
    eligible: bool
    reasons: list[str] = field(default_factory=list)

    def eligible_without(self, *ignored: str) -> bool:
        """Eligible once the ``ignored`` reasons are set aside.

        Mid-training, ``eligible_without(USER_ACTIVITY)``: the load average then counts the
        agent's own training, which must not read as someone using the device.
        """
        return not set(self.reasons) - set(ignored)

    def to_facts(
        self, *, num_examples: int, runtime: str = "", sdk_version: str = ""
    ) -> EligibilityFacts:
        """The facts reported at check-in; unknown free memory is reported as 0 MB.

        Reporting 0 rather than the protocol's default of 1024 means a population that asks
        for memory is never told a device has memory it cannot vouch for.
        """
        return EligibilityFacts(
            num_examples=num_examples,
            charging=self.charging,
            idle=self.idle,
            unmetered=self.unmetered,
            free_memory_mb=self.free_memory_mb if self.free_memory_mb is not None else 0.0,
            runtime=runtime,
            sdk_version=sdk_version,
        )


@dataclass(frozen=True, kw_only=True)
class EligibilityPolicy:
    """When a device may train.

    Defaults follow the usual cross-device rule — idle, on power or well charged, cool,
    unmetered (Bonawitz et al., "Towards Federated Learning at Scale", 2019); a phone fleet
    that must never drain a battery sets ``require_charging=True``. Unknown readings (no
    thermal zone, no load average) do not block training: many boards lack a sensor.

    Attributes:
        min_battery_percent: battery needed when not charging.
        require_charging: train only on external power.
        max_load_per_cpu: 1-minute load average divided by the core count above which the
            device counts as busy (someone is using it).
        throttle_temperature_c: at or above this the device counts as hot; a Raspberry Pi
            throttles at 80 °C, so the default leaves a margin for training's own heat.
        allow_metered: train on a metered connection.
        min_free_memory_mb: memory needed, when the probe can measure it.

    """

    min_battery_percent: float = 50.0
    require_charging: bool = False
    max_load_per_cpu: float = 0.5
    throttle_temperature_c: float = 70.0
    allow_metered: bool = False
    min_free_memory_mb: float = 0.0

    def evaluate(self, readings: Readings) -> Eligibility:
        """Judge ``readings``; reasons come in a fixed order: battery, activity, heat, network."""
        reasons: list[str] = []
        if not readings.charging and (
            self.require_charging
            or readings.battery_percent is None
            or readings.battery_percent < self.min_battery_percent
        ):
            reasons.append(BATTERY)
        idle = (
            readings.load_average is None
            or readings.load_average / max(readings.cpu_count, 1) <= self.max_load_per_cpu
        )
        if not idle:
            reasons.append(USER_ACTIVITY)
        temperature = readings.temperature_c
        if temperature is not None and temperature >= self.throttle_temperature_c:
            reasons.append(THERMAL)
        if not readings.unmetered and not self.allow_metered:
            reasons.append(METERED)
        memory = readings.free_memory_mb
        if memory is not None and memory < self.min_free_memory_mb:
            reasons.append(MEMORY)
        return Eligibility(
            charging=readings.charging,
            battery_percent=readings.battery_percent,
            idle=idle,
            temperature_c=temperature,
            unmetered=readings.unmetered,
            free_memory_mb=memory,
            eligible=not reasons,
            reasons=reasons,
        )


class Probe(Protocol):
    """Something that can tell whether the device may train now."""

    def snapshot(self) -> Eligibility:
        """Read the device and judge it."""
        ...


class FakeProbe:
    """A probe whose readings a test or the simulator sets: ``probe.update(charging=False)``."""

    def __init__(
        self, readings: Readings | None = None, *, policy: EligibilityPolicy | None = None
    ) -> None:
        self.readings = readings or Readings(charging=True)
        self.policy = policy or EligibilityPolicy()

    def update(self, **changes: Any) -> None:
        """Change some readings; the others stay."""
        self.readings = replace(self.readings, **changes)

    def snapshot(self) -> Eligibility:
        """The current readings, judged."""
        return self.policy.evaluate(self.readings)


class _MeasuringProbe:
    policy: EligibilityPolicy

    def readings(self) -> Readings:
        """Measure without judging."""
        raise NotImplementedError

    def snapshot(self) -> Eligibility:
        """Measure and judge."""
        return self.policy.evaluate(self.readings())


class LinuxProbe(_MeasuringProbe):
    """Reads a Linux device's sysfs and procfs under ``root`` (tests pass a fake tree).

    Power from ``sys/class/power_supply/*`` (a Mains/USB supply online, or a battery Charging
    or Full, means charging); a device with no battery runs on external power by definition,
    as a Raspberry Pi does. Activity from ``proc/loadavg``, heat from the hottest
    ``sys/class/thermal/thermal_zone*/temp`` (millidegrees), memory from ``MemAvailable`` in
    ``proc/meminfo``. Whether the network is metered is configuration: Linux cannot tell.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "/",
        *,
        policy: EligibilityPolicy | None = None,
        metered: bool = False,
        cpu_count: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.policy = policy or EligibilityPolicy()
        self.metered = metered
        self.cpu_count = cpu_count or os.cpu_count() or 1

    def readings(self) -> Readings:
        """Measure without judging."""
        charging, battery = _power(self.root / "sys/class/power_supply")
        return Readings(
            charging=charging,
            battery_percent=battery,
            load_average=_load_average(self.root),
            cpu_count=self.cpu_count,
            temperature_c=_hottest_zone(self.root / "sys/class/thermal"),
            free_memory_mb=_free_memory_mb(self.root),
            unmetered=not self.metered,
        )


class TermuxProbe(_MeasuringProbe):
    """Android through Termux: power and battery temperature from ``termux-battery-status``.

    The command needs the Termux:API app; without it the command is known to hang rather than
    fail, hence the timeout. Load and memory come from procfs where Android lets us read it.
    The temperature is the battery's, which runs cooler than a SoC, so the default policy here
    throttles at 40 °C (chargers following JEITA already cut their current at 45 °C).
    """

    def __init__(
        self,
        *,
        policy: EligibilityPolicy | None = None,
        metered: bool = False,
        command: str = "termux-battery-status",
        timeout: float = 10.0,
        root: str | os.PathLike[str] = "/",
        cpu_count: int | None = None,
    ) -> None:
        self.policy = policy or EligibilityPolicy(throttle_temperature_c=40.0)
        self.metered = metered
        self.command = command
        self.timeout = timeout
        self.root = Path(root)
        self.cpu_count = cpu_count or os.cpu_count() or 1

    def battery_status(self) -> dict[str, Any]:
        """The command's JSON object (percentage, plugged, status, temperature, …)."""
        try:
            done = subprocess.run(
                [self.command], capture_output=True, text=True, timeout=self.timeout, check=True
            )
        except FileNotFoundError as missing:
            raise ProbeUnavailableError(
                f"{self.command} not found: install the Termux:API app and `pkg install termux-api`"
            ) from missing
        except subprocess.TimeoutExpired as slow:
            raise ProbeError(f"{self.command} did not answer in {self.timeout:g} s") from slow
        except subprocess.CalledProcessError as failed:
            raise ProbeError(f"{self.command} failed: {failed.stderr.strip()[:200]}") from failed
        except OSError as failed:  # not executable, or the system refused to start it
            raise ProbeError(f"{self.command} cannot run: {failed}") from failed
        try:
            status = json.loads(done.stdout)
        except ValueError as garbled:
            raise ProbeError(f"{self.command} printed no JSON: {done.stdout[:200]!r}") from garbled
        if not isinstance(status, dict):
            raise ProbeError(f"{self.command} printed {type(status).__name__}, not an object")
        return status

    def readings(self) -> Readings:
        """Measure without judging."""
        status = self.battery_status()
        plugged = str(status.get("plugged", "UNPLUGGED")).upper()
        state = str(status.get("status", "")).upper()
        return Readings(
            charging=plugged not in ("", "UNPLUGGED") or state in ("CHARGING", "FULL"),
            battery_percent=_number(status.get("percentage")),
            load_average=_load_average(self.root),
            cpu_count=self.cpu_count,
            temperature_c=_number(status.get("temperature")),
            free_memory_mb=_free_memory_mb(self.root),
            unmetered=not self.metered,
        )


def detect_probe(
    *,
    policy: EligibilityPolicy | None = None,
    metered: bool = False,
    environ: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> LinuxProbe | TermuxProbe:
    """Termux when running inside it (``TERMUX_VERSION`` set) or its battery command exists."""
    env = os.environ if environ is None else environ
    if "TERMUX_VERSION" in env or which("termux-battery-status") is not None:
        return TermuxProbe(policy=policy, metered=metered)
    return LinuxProbe(policy=policy, metered=metered)


# --- readers: a missing or unreadable file is an unknown reading, never a crash -------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _power(supplies: Path) -> tuple[bool, float | None]:
    external_online = False
    charging_battery = False
    capacities: list[float] = []
    try:
        entries = sorted(supplies.iterdir())
    except OSError:  # no power_supply class at all: a board without one
        entries = []
    for entry in entries:
        kind = _read(entry / "type")
        if kind == "Battery":
            # Peripheral batteries (a wireless mouse's) have scope "Device": not ours.
            if _read(entry / "scope") == "Device":
                continue
            capacity = _number(_read(entry / "capacity"))
            if capacity is not None:
                capacities.append(capacity)
            charging_battery |= _read(entry / "status") in ("Charging", "Full")
        elif kind is not None and kind != "UPS":
            # Mains, USB and its USB_* variants, Wireless: a charger when online.
            external_online |= _read(entry / "online") == "1"
    if not capacities:
        return True, None
    return external_online or charging_battery, sum(capacities) / len(capacities)


def _load_average(root: Path) -> float | None:
    text = _read(root / "proc/loadavg")
    return _number(text.split()[0]) if text else None


def _hottest_zone(thermal: Path) -> float | None:
    temperatures = [
        value / 1000.0
        for zone in (sorted(thermal.glob("thermal_zone*")) if thermal.is_dir() else [])
        if (value := _number(_read(zone / "temp"))) is not None
    ]
    return max(temperatures, default=None)


def _free_memory_mb(root: Path) -> float | None:
    text = _read(root / "proc/meminfo")
    for line in (text or "").splitlines():
        name, _, rest = line.partition(":")
        if name == "MemAvailable":
            kilobytes = _number(rest.split()[0]) if rest.split() else None
            return kilobytes / 1024.0 if kilobytes is not None else None
    return None
