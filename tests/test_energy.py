"""The energy arithmetic, proved exactly with injected counter sequences."""

from __future__ import annotations

import math
import types

import pytest

from joulebench.energy import EnergyMonitor, EnergySettings
from joulebench.energy.nvml import NvmlMeter
from joulebench.energy.rapl import RaplMeter, counter_delta, find_zones
from joulebench.stats import joules_per_token, spread, wh_per_1k_queries

from .conftest import FakeMeter, fake_monitor


def test_windows_nest_and_subtract_cumulative_counters():
    meter = FakeMeter([(0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 0.5, 0.25), (3.0, 2.0, 1.5, 0.5), (4.0, 4.0, 2.0, 1.0)])
    with fake_monitor(meter, carbon_kg_per_kwh=0.5, pue=1.2) as monitor:
        monitor.begin_window("outer")
        monitor.begin_window("inner")
        inner = monitor.end_window("inner")
        outer = monitor.end_window("outer")
    assert meter.started and meter.stopped
    assert (inner.duration_s, inner.cpu_kwh, inner.gpu_kwh, inner.ram_kwh) == (2.0, 1.0, 1.0, 0.25)
    assert inner.total_kwh == pytest.approx(2.25)
    assert inner.emissions_kg == pytest.approx(2.25 * 0.5 * 1.2)
    assert outer.total_kwh == pytest.approx(7.0) and outer.duration_s == 4.0


def test_overlapping_windows_are_independent():
    meter = FakeMeter([(0, 0, 0, 0), (1, 1, 0, 0), (2, 3, 0, 0), (3, 6, 0, 0)])
    monitor = fake_monitor(meter)
    monitor.begin_window("a")
    monitor.begin_window("b")
    a = monitor.end_window("a")
    b = monitor.end_window("b")
    assert (a.cpu_kwh, b.cpu_kwh) == (3, 5)


def test_window_misuse_is_refused():
    monitor = fake_monitor(FakeMeter([(0, 0, 0, 0)] * 3))
    monitor.begin_window("a")
    with pytest.raises(ValueError, match="already open"):
        monitor.begin_window("a")
    with pytest.raises(ValueError, match="never begun"):
        monitor.end_window("b")


def test_idle_baseline_gives_net_energy():
    # idle: 10 s, 36 J of CPU and 72 J of RAM -> 3.6 W + 7.2 W = 10.8 W; window: 100 s, 3,600 J in all.
    j = 1 / 3.6e6
    meter = FakeMeter([(0, 0, 0, 0), (10, 36 * j, 0, 72 * j), (20, 36 * j, 0, 72 * j), (120, 2000 * j, 0, 1708 * j)])
    monitor = fake_monitor(meter)
    idle = monitor.measure_idle(10)
    assert idle.watts == pytest.approx({"cpu": 3.6, "gpu": 0.0, "ram": 7.2})
    window = monitor.window_energy("w", monitor.read(), monitor.read())
    assert window.total_kwh == pytest.approx(3600 * j)
    assert window.idle_w == pytest.approx(10.8)
    assert window.net_kwh == pytest.approx((3600 - 1080) * j)


def test_each_component_comes_from_the_first_meter_that_has_it():
    counter = FakeMeter([(0, 0, 0, 0), (1, 5, 0, 7)], sources={"cpu": "rapl", "ram": "rapl"})
    estimate = FakeMeter([(0, 0, 0, 0), (1, 100, 200, 300)], sources={"cpu": "codecarbon-estimate",
                                                                         "ram": "codecarbon-estimate"})
    monitor = EnergyMonitor([counter, estimate], 0.1, sleep=lambda s: None)
    assert monitor.sources == {"cpu": "rapl", "gpu": "none", "ram": "rapl"}
    window = monitor.window_energy("w", monitor.read(), monitor.read())
    assert (window.cpu_kwh, window.gpu_kwh, window.ram_kwh) == (5, 0, 7)


@pytest.mark.parametrize(
    ("before", "after", "max_uj", "delta"),
    [(100, 250, 1000, 150), (900, 50, 999, 150), (0, 0, 10, 0), (999, 0, 999, 1)],
)
def test_counter_wraparound(before, after, max_uj, delta):
    assert counter_delta(before, after, max_uj) == delta


def _zone(root, name, label, energy, max_uj):
    zone = root / name
    zone.mkdir()
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(str(energy))
    (zone / "max_energy_range_uj").write_text(str(max_uj))
    return zone


def test_rapl_meter_accumulates_across_a_wrap(tmp_path):
    package = _zone(tmp_path, "intel-rapl:0", "package-0", 262_000_000_000 - 1_000_000, 262_000_000_000 - 1)
    dram = _zone(tmp_path, "intel-rapl:0:0", "dram", 10_000_000, 65_000_000_000)
    zones = find_zones(tmp_path)
    assert zones == {"cpu": [package], "ram": [dram]}
    meter = RaplMeter(zones, poll_seconds=3600)
    meter.start()
    (package / "energy_uj").write_text("2600000")  # wrapped: 1 J before the wrap + 2.6 J after = 3.6 J
    (dram / "energy_uj").write_text("13600000")  # +3.6 J
    reading = meter.read()
    meter.stop()
    assert reading.kwh["cpu"] == pytest.approx(3.6 / 3.6e6)
    assert reading.kwh["ram"] == pytest.approx(3.6 / 3.6e6)
    assert meter.sources == {"cpu": "rapl", "ram": "rapl"}


def test_unreadable_rapl_zones_are_skipped(tmp_path):
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "name").write_text("package-0")
    assert find_zones(tmp_path) == {"cpu": [], "ram": []}


def test_nvml_meter_converts_millijoules_and_notes_other_processes():
    counters = {"a": [1_000, 3_601_000 + 1_000], "b": [0, 0]}
    fake = types.SimpleNamespace(
        nvmlDeviceGetTotalEnergyConsumption=lambda h: counters[h].pop(0),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [types.SimpleNamespace(pid=1)],
        NVMLError=RuntimeError,
        nvmlShutdown=lambda: None,
    )
    meter = NvmlMeter(fake, ["a", "b"])
    meter.start()
    reading = meter.read()
    assert reading.kwh == {"gpu": pytest.approx(3601 / 3.6e6)}
    assert meter.sources == {"gpu": "nvml-counter"} and meter.foreign_processes == {1}


def test_spread_by_hand():
    result = spread([1.0, 2.0, 3.0, 4.0, 5.0])
    assert result.mean == 3.0
    std = math.sqrt(2.5)
    assert result.cv == pytest.approx(std / 3)
    assert result.ci95 == pytest.approx(2.776445105 * std / math.sqrt(5))  # t(0.975, 4)
    single = spread([2.0])
    assert single.mean == 2.0 and math.isnan(single.ci95)
    with pytest.raises(ValueError):
        spread([])


def test_per_token_and_per_query_energy():
    assert joules_per_token(1 / 3600, 100) == pytest.approx(10.0)  # 1 Wh = 3,600 J over 100 tokens
    assert wh_per_1k_queries(0.002, 50) == pytest.approx(40.0)  # 2 Wh over 50 queries = 0.04 Wh each
    with pytest.raises(ValueError):
        joules_per_token(1.0, 0)


def test_settings_accept_a_single_meter_name():
    settings = EnergySettings.from_config({"meter": "codecarbon", "pue": 1.5})
    assert settings.meters == ("codecarbon",) and settings.pue == 1.5


def test_overlap_labels_machine_wide_components_as_shared():
    from joulebench.energy.core import shared_components

    rapl = {"cpu": "rapl", "gpu": "nvml-counter", "ram": "rapl"}
    estimate = {"cpu": "codecarbon-estimate", "gpu": "none", "ram": "codecarbon-estimate"}
    overlap = EnergySettings(allow_overlap=True, tracking_mode="process")
    assert shared_components(rapl, EnergySettings(allow_overlap=False)) == frozenset()
    assert shared_components(rapl, overlap) == {"cpu", "ram"}
    assert shared_components(estimate, overlap) == frozenset()
    assert shared_components(estimate, EnergySettings(allow_overlap=True, tracking_mode="machine")) == {"cpu", "ram"}
    monitor = EnergyMonitor([FakeMeter([], sources=rapl)], 0.1, shared=frozenset({"cpu", "ram"}))
    assert monitor.sources == {"cpu": "rapl (shared)", "gpu": "nvml-counter", "ram": "rapl (shared)"}


def test_the_default_meters_on_this_machine_label_estimates():
    """Whatever this machine offers, a CodeCarbon CPU figure without RAPL is never tagged as measured."""
    from joulebench.energy import is_measured, open_monitor

    monitor = open_monitor({"meters": ["nvml", "rapl", "codecarbon"], "country_iso_code": "CAN"})
    for component, source in monitor.sources.items():
        if source.startswith("codecarbon-estimate") or source == "constant":
            assert not is_measured(source), component
    assert monitor.carbon_kg_per_kwh > 0
