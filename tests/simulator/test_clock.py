"""The run's clocks: virtual time jumps to each event, wall time waits for it."""

import pytest

from fedge.clock import ManualClock, SystemClock
from simulator import clock as sim_clock
from simulator.clock import START, VirtualClock, WallClock


def test_virtual_time_starts_at_a_midnight_so_run_hours_are_hours_of_the_day():
    assert VirtualClock().now() == START
    assert START % 86_400 == 0


def test_virtual_time_jumps_to_the_next_event():
    clock = VirtualClock(100.0)

    clock.advance_to(250.5)

    assert clock.now() == 250.5


def test_virtual_time_never_goes_back_for_an_event_already_past():
    clock = VirtualClock(100.0)
    clock.advance_to(300.0)

    clock.advance_to(200.0)

    assert clock.now() == 300.0


def test_the_clocks_are_the_ones_the_coordinator_and_devices_take():
    assert isinstance(VirtualClock(), ManualClock)
    assert isinstance(WallClock(), SystemClock)


def test_wall_time_sleeps_until_the_event_and_not_for_one_already_past(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(sim_clock.time, "time", lambda: 1000.0)
    monkeypatch.setattr(sim_clock.time, "sleep", slept.append)
    clock = WallClock()

    clock.advance_to(1002.5)
    clock.advance_to(999.0)

    assert slept == [pytest.approx(2.5)]
