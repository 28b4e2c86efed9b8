"""Eligibility: the policy's judgement, and the Linux, Termux and fake probes that feed it."""

import json
import os
import stat
import sys

import pytest

from device_sdk.eligibility import (
    EligibilityPolicy,
    FakeProbe,
    LinuxProbe,
    ProbeError,
    ProbeUnavailableError,
    Readings,
    TermuxProbe,
    detect_probe,
)
from fedge.protocol import EligibilityFacts

GOOD = Readings(
    charging=True,
    battery_percent=90.0,
    load_average=0.2,
    cpu_count=4,
    temperature_c=45.0,
    free_memory_mb=900.0,
    unmetered=True,
)


def judge(policy=None, **changes):
    probe = FakeProbe(GOOD, policy=policy)
    probe.update(**changes)
    return probe.snapshot()


# --- the policy ------------------------------------------------------------------------------


def test_an_idle_cool_charging_device_on_wifi_is_eligible():
    snapshot = judge()

    assert snapshot.eligible
    assert snapshot.reasons == []
    assert snapshot.idle


def test_battery_below_threshold_is_not_eligible_unless_charging():
    policy = EligibilityPolicy(min_battery_percent=50)

    assert judge(policy, charging=False, battery_percent=30).reasons == ["battery"]
    assert judge(policy, charging=False, battery_percent=50).eligible
    assert judge(policy, charging=True, battery_percent=30).eligible


def test_requiring_charging_refuses_even_a_full_battery():
    policy = EligibilityPolicy(require_charging=True)

    assert judge(policy, charging=False, battery_percent=100).reasons == ["battery"]
    assert judge(policy, charging=True, battery_percent=100).eligible


def test_not_charging_with_an_unknown_battery_level_is_not_eligible():
    assert judge(charging=False, battery_percent=None).reasons == ["battery"]


def test_load_average_is_judged_per_core():
    policy = EligibilityPolicy(max_load_per_cpu=0.5)

    assert judge(policy, load_average=1.9, cpu_count=4).idle
    busy = judge(policy, load_average=2.1, cpu_count=4)

    assert not busy.idle
    assert busy.reasons == ["user_activity"]


def test_at_the_throttle_temperature_the_device_is_too_hot():
    policy = EligibilityPolicy(throttle_temperature_c=70)

    assert judge(policy, temperature_c=69.9).eligible
    assert judge(policy, temperature_c=70.0).reasons == ["thermal"]


def test_a_metered_network_is_refused_unless_allowed():
    assert judge(unmetered=False).reasons == ["metered"]
    assert judge(EligibilityPolicy(allow_metered=True), unmetered=False).eligible


def test_too_little_free_memory_is_not_eligible():
    policy = EligibilityPolicy(min_free_memory_mb=512)

    assert judge(policy, free_memory_mb=256).reasons == ["memory"]


def test_unknown_readings_do_not_block_training():
    snapshot = judge(
        EligibilityPolicy(min_free_memory_mb=512),
        load_average=None,
        temperature_c=None,
        free_memory_mb=None,
    )

    assert snapshot.eligible


def test_every_reason_is_reported_in_a_fixed_order():
    snapshot = judge(
        EligibilityPolicy(min_free_memory_mb=512),
        charging=False,
        battery_percent=5,
        load_average=8.0,
        temperature_c=90,
        unmetered=False,
        free_memory_mb=10,
    )

    assert not snapshot.eligible
    assert snapshot.reasons == ["battery", "user_activity", "thermal", "metered", "memory"]


def test_mid_training_the_agents_own_load_can_be_set_aside():
    snapshot = judge(load_average=8.0)

    assert not snapshot.eligible
    assert snapshot.eligible_without("user_activity")
    assert not judge(load_average=8.0, temperature_c=90).eligible_without("user_activity")


def test_a_snapshot_becomes_the_facts_reported_at_check_in():
    snapshot = judge(charging=False, load_average=9.0, unmetered=False)

    facts = snapshot.to_facts(num_examples=120, runtime="litert", sdk_version="0.1.0")

    assert facts == EligibilityFacts(
        num_examples=120,
        charging=False,
        idle=False,
        unmetered=False,
        free_memory_mb=900.0,
        runtime="litert",
        sdk_version="0.1.0",
    )


def test_unknown_free_memory_is_reported_as_none_available():
    assert judge(free_memory_mb=None).to_facts(num_examples=1).free_memory_mb == 0.0


def test_a_fake_probe_changes_between_snapshots():
    probe = FakeProbe()
    assert probe.snapshot().eligible

    probe.update(temperature_c=95.0)

    assert probe.snapshot().reasons == ["thermal"]


# --- Linux: a fake sysfs/procfs tree --------------------------------------------------------


def write(root, relative, text):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def supply(root, name, **attributes):
    for attribute, value in attributes.items():
        write(root, f"sys/class/power_supply/{name}/{attribute}", f"{value}\n")


def test_a_raspberry_pi_without_power_supplies_counts_as_on_mains(tmp_path):
    readings = LinuxProbe(tmp_path).readings()

    assert readings.charging
    assert readings.battery_percent is None


def test_a_laptop_on_battery_reads_its_capacity(tmp_path):
    supply(tmp_path, "AC", type="Mains", online=0)
    supply(tmp_path, "BAT0", type="Battery", capacity=42, status="Discharging")

    readings = LinuxProbe(tmp_path).readings()

    assert not readings.charging
    assert readings.battery_percent == 42.0


@pytest.mark.parametrize("kind", ["Mains", "USB", "USB_PD", "Wireless"])
def test_an_online_external_supply_means_charging(tmp_path, kind):
    supply(tmp_path, "charger", type=kind, online=1)
    supply(tmp_path, "battery", type="Battery", capacity=20, status="Not charging")

    assert LinuxProbe(tmp_path).readings().charging


@pytest.mark.parametrize("status", ["Charging", "Full"])
def test_a_charging_or_full_battery_means_charging(tmp_path, status):
    supply(tmp_path, "battery", type="Battery", capacity=80, status=status)

    assert LinuxProbe(tmp_path).readings().charging


def test_a_peripheral_battery_is_not_the_devices(tmp_path):
    supply(tmp_path, "hidpp_battery_0", type="Battery", scope="Device", capacity=5)

    readings = LinuxProbe(tmp_path).readings()

    assert readings.charging  # no battery of its own: a board on mains
    assert readings.battery_percent is None


def test_the_hottest_thermal_zone_in_millidegrees_is_the_temperature(tmp_path):
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "48312\n")
    write(tmp_path, "sys/class/thermal/thermal_zone1/temp", "61500\n")
    write(tmp_path, "sys/class/thermal/cooling_device0/cur_state", "0\n")

    assert LinuxProbe(tmp_path).readings().temperature_c == pytest.approx(61.5)


def test_load_average_and_available_memory_come_from_procfs(tmp_path):
    write(tmp_path, "proc/loadavg", "1.52 0.90 0.40 2/310 12345\n")
    write(
        tmp_path,
        "proc/meminfo",
        "MemTotal:        3884528 kB\nMemFree:          201204 kB\nMemAvailable:    1048576 kB\n",
    )

    readings = LinuxProbe(tmp_path, cpu_count=4).readings()

    assert readings.load_average == pytest.approx(1.52)
    assert readings.cpu_count == 4
    assert readings.free_memory_mb == pytest.approx(1024.0)


def test_missing_or_garbled_files_are_unknown_readings_not_errors(tmp_path):
    write(tmp_path, "proc/loadavg", "")
    write(tmp_path, "proc/meminfo", "MemTotal: 1000 kB\n")
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "not a number\n")
    supply(tmp_path, "BAT0", type="Battery", capacity="?", status="Discharging")

    readings = LinuxProbe(tmp_path).readings()

    assert readings.load_average is None
    assert readings.free_memory_mb is None
    assert readings.temperature_c is None
    assert readings.battery_percent is None


def test_a_hot_raspberry_pi_is_not_eligible(tmp_path):
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "82000\n")
    write(tmp_path, "proc/loadavg", "0.10 0.10 0.10 1/200 999\n")

    snapshot = LinuxProbe(tmp_path, cpu_count=4).snapshot()

    assert snapshot.charging
    assert snapshot.reasons == ["thermal"]


def test_whether_the_network_is_metered_comes_from_configuration(tmp_path):
    assert LinuxProbe(tmp_path, metered=True).snapshot().reasons == ["metered"]
    assert LinuxProbe(tmp_path, metered=False).snapshot().eligible


# --- Termux: a fake termux-battery-status on PATH -------------------------------------------


@pytest.fixture
def termux(tmp_path, monkeypatch):
    """Install a fake ``termux-battery-status`` running the given Python body; return a probe."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def install(body, **probe_options):
        script = bin_dir / "termux-battery-status"
        script.write_text(f"#!{sys.executable}\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return TermuxProbe(root=tmp_path / "no-procfs", **probe_options)

    return install


def battery_json(**status):
    answer = {
        "health": "GOOD",
        "percentage": 85,
        "plugged": "UNPLUGGED",
        "status": "DISCHARGING",
        "temperature": 31.2,
        "current": -350000,
        **status,
    }
    return f"print({json.dumps(json.dumps(answer))})"


def test_a_phone_plugged_into_ac_is_charging(termux):
    probe = termux(battery_json(plugged="PLUGGED_AC", status="CHARGING", percentage=40))

    readings = probe.readings()

    assert readings.charging
    assert readings.battery_percent == 40.0
    assert readings.temperature_c == pytest.approx(31.2)
    assert probe.snapshot().eligible


def test_an_unplugged_phone_with_a_low_battery_is_not_eligible(termux):
    probe = termux(battery_json(percentage=15))

    assert probe.snapshot().reasons == ["battery"]


def test_a_warm_phone_battery_is_too_hot_although_a_soc_would_not_be(termux):
    # A battery runs cooler than a SoC: Termux's default policy throttles lower.
    probe = termux(battery_json(plugged="PLUGGED_USB", temperature=44.0))

    assert probe.snapshot().reasons == ["thermal"]
    assert not judge(temperature_c=44.0).reasons


def test_a_missing_termux_command_is_a_typed_error(tmp_path):
    probe = TermuxProbe(command=str(tmp_path / "termux-battery-status"))

    with pytest.raises(ProbeUnavailableError, match="Termux:API"):
        probe.snapshot()


def test_a_termux_command_that_cannot_run_is_a_probe_error(tmp_path):
    script = tmp_path / "termux-battery-status"
    script.write_text("not executable")

    with pytest.raises(ProbeError, match="cannot run"):
        TermuxProbe(command=str(script)).snapshot()


def test_a_hanging_termux_command_times_out(termux):
    # Without the Termux:API app the real command waits forever.
    probe = termux("import time; time.sleep(30)", timeout=0.3)

    with pytest.raises(ProbeError, match="did not answer"):
        probe.snapshot()


@pytest.mark.parametrize(
    "body",
    ["print('Termux:API is not yet available')", "print('[1, 2]')", "raise SystemExit(3)"],
)
def test_a_termux_command_that_fails_or_prints_no_object_is_a_probe_error(termux, body):
    with pytest.raises(ProbeError):
        termux(body).snapshot()


# --- picking a probe ------------------------------------------------------------------------


def test_detect_picks_termux_inside_termux():
    probe = detect_probe(environ={"TERMUX_VERSION": "0.118.0"}, which=lambda _: None)

    assert isinstance(probe, TermuxProbe)


def test_detect_picks_termux_when_its_battery_command_exists():
    probe = detect_probe(environ={}, which=lambda name: f"/data/bin/{name}")

    assert isinstance(probe, TermuxProbe)


def test_detect_falls_back_to_linux_and_passes_the_configuration_on():
    policy = EligibilityPolicy(require_charging=True)

    probe = detect_probe(policy=policy, metered=True, environ={}, which=lambda _: None)

    assert isinstance(probe, LinuxProbe)
    assert probe.policy is policy
    assert probe.metered
