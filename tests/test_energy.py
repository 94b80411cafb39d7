from __future__ import annotations

import pytest

from joulebench.energy import EnergyMonitor, Reading

from .conftest import FakeMeter


def test_windows_nest_and_subtract_cumulative_counters():
    meter = FakeMeter([
        Reading(0.0, 0.0, 0.0, 0.0),
        Reading(1.0, 1.0, 0.5, 0.25),
        Reading(3.0, 2.0, 1.5, 0.5),
        Reading(4.0, 4.0, 2.0, 1.0),
    ])
    with EnergyMonitor(meter) as monitor:
        monitor.begin_window("outer")
        monitor.begin_window("inner")
        inner = monitor.end_window("inner")
        outer = monitor.end_window("outer")
    assert meter.started and meter.stopped
    assert (inner.duration_s, inner.cpu_kwh, inner.gpu_kwh, inner.ram_kwh) == (2.0, 1.0, 1.0, 0.25)
    assert inner.total_kwh == pytest.approx(2.25) and inner.emissions_kg == pytest.approx(1.125)
    assert outer.total_kwh == pytest.approx(7.0) and outer.duration_s == 4.0
    assert outer.sources == {"cpu": "fake", "gpu": "none", "ram": "fake"}


def test_window_misuse_is_refused():
    monitor = EnergyMonitor(FakeMeter([Reading(0, 0, 0, 0)] * 3))
    monitor.begin_window("a")
    with pytest.raises(ValueError, match="already open"):
        monitor.begin_window("a")
    with pytest.raises(ValueError, match="never begun"):
        monitor.end_window("b")


def test_context_window_reports_on_exit():
    monitor = EnergyMonitor(FakeMeter([Reading(0, 0, 0, 0), Reading(2, 1, 0, 1)]))
    with monitor.window("w") as out:
        pass
    assert out["energy"].total_kwh == 2
