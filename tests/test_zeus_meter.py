"""The Zeus meter over fake Zeus device managers: mJ counters in, cumulative kWh out, each figure tagged by the device
Zeus read. The fakes carry the class names of Zeus 0.16.0's managers, which the meter goes by."""

from __future__ import annotations

import sys
import types

import pytest
import yaml

from joulebench.energy import METERS, EnergyMonitor, EnergySettings, open_monitor
from joulebench.energy import zeus_meter as zeus_module
from joulebench.energy.core import MEASURED_SOURCES, SOURCE_SCOPE
from joulebench.energy.zeus_meter import ZeusDevices, build_zeus_meter

from .conftest import ROOT, FakeMeter

MJ_PER_KWH = 3.6e9


class NVIDIAGPUs:
    """Zeus's GPU manager: one counter sequence (mJ) per visible GPU, each reading takes the next value."""

    def __init__(self, counters_mj: list[list[int]], with_counter: list[bool] | None = None) -> None:
        self.counters_mj = [list(counter) for counter in counters_mj]
        self.with_counter = with_counter or [True] * len(counters_mj)

    def __len__(self) -> int:
        return len(self.counters_mj)

    def supports_get_total_energy_consumption(self, gpu_index: int) -> bool:
        return self.with_counter[gpu_index]

    def get_total_energy_consumption(self, gpu_index: int) -> int:
        return self.counters_mj[gpu_index].pop(0)


class AMDGPUs(NVIDIAGPUs):
    pass


class ZeusdRAPLCPU:
    """A RAPL package read through Zeus's daemon."""


class RAPLCPU:
    """A RAPL package whose files Zeus reads itself (through a spawned wrap-around tracker)."""


class RAPLCPUs:
    """Zeus's CPU manager: per package, a sequence of (cpu_mj, dram_mj) readings; dram_mj None without a DRAM zone."""

    def __init__(self, readings: list[list[tuple[float, float | None]]], package: type = ZeusdRAPLCPU) -> None:
        self.readings = [list(package_readings) for package_readings in readings]
        self.cpus = [package() for _ in readings]

    def supports_get_dram_energy_consumption(self, index: int) -> bool:
        return self.readings[index][0][1] is not None

    def get_total_energy_consumption(self, index: int) -> types.SimpleNamespace:
        cpu_mj, dram_mj = self.readings[index].pop(0)
        return types.SimpleNamespace(cpu_mj=cpu_mj, dram_mj=dram_mj)


class AppleSilicon:
    """Zeus's Apple silicon SoC: a sequence of measurements (cpu_total_mj, gpu_mj, dram_mj)."""

    def __init__(self, readings: list[tuple[int | None, int | None, int | None]]) -> None:
        self.readings = list(readings)

    def get_total_energy_consumption(self) -> types.SimpleNamespace:
        cpu, gpu, dram = self.readings.pop(0)
        return types.SimpleNamespace(cpu_total_mj=cpu, gpu_mj=gpu, dram_mj=dram, ane_mj=5)


def test_the_visible_gpus_counters_are_summed_into_cumulative_kwh():
    gpus = NVIDIAGPUs([[1_000, 3_601_000, 7_201_000], [500, 7_200_500, 7_200_500]])
    meter = build_zeus_meter(ZeusDevices(gpus=gpus), environ={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert meter.sources == {"gpu": "zeus-nvml"} and meter.scopes == {"gpu": "device"}
    meter.start()
    assert meter.read().kwh == {"gpu": pytest.approx(10_800_000 / MJ_PER_KWH, rel=1e-12)}  # 3.6 kJ + 7.2 kJ
    assert meter.read().kwh == {"gpu": pytest.approx(14_400_000 / MJ_PER_KWH, rel=1e-12)}  # since start, not since last


@pytest.mark.parametrize(
    ("manager", "environ", "source", "scope"),
    [
        (NVIDIAGPUs, {}, "zeus-nvml", "machine-wide"),
        (AMDGPUs, {}, "zeus-amdsmi", "machine-wide"),
        (AMDGPUs, {"HIP_VISIBLE_DEVICES": "1"}, "zeus-amdsmi", "device"),
        (AMDGPUs, {"CUDA_VISIBLE_DEVICES": "1"}, "zeus-amdsmi", "device"),
        (NVIDIAGPUs, {"HIP_VISIBLE_DEVICES": "1"}, "zeus-nvml", "machine-wide"),
    ],
)
def test_a_gpu_figure_names_its_library_and_is_the_job_s_own_only_with_visible_devices(manager, environ, source, scope):
    meter = build_zeus_meter(ZeusDevices(gpus=manager([[0]])), environ=environ)
    assert (meter.sources, meter.scopes) == ({"gpu": source}, {"gpu": scope})
    assert source in MEASURED_SOURCES and SOURCE_SCOPE[source] == "device"


def test_gpus_are_counted_whole_or_not_at_all():
    partial = NVIDIAGPUs([[0], [0]], with_counter=[True, False])
    assert build_zeus_meter(ZeusDevices(gpus=partial), environ={}) is None
    assert build_zeus_meter(ZeusDevices(gpus=NVIDIAGPUs([])), environ={}) is None
    unknown = type("JetsonGPUs", (NVIDIAGPUs,), {})([[0]])
    assert build_zeus_meter(ZeusDevices(gpus=unknown), environ={}) is None


def test_rapl_through_the_daemon_gives_cpu_and_dram():
    cpus = RAPLCPUs([[(1_000.0, 2_000.0), (4_601_000.0, 2_500.0)], [(0.0, 0.0), (3_600_000.0, 1.0)]])
    meter = build_zeus_meter(ZeusDevices(cpus=cpus), environ={})
    assert meter.sources == {"cpu": "zeus-rapl", "ram": "zeus-rapl"}
    assert meter.scopes == {"cpu": "machine-wide", "ram": "machine-wide"}
    meter.start()
    assert meter.read().kwh == {"cpu": pytest.approx(8_200_000 / MJ_PER_KWH, rel=1e-12),
                                "ram": pytest.approx(501 / MJ_PER_KWH, rel=1e-12)}  # fmt: skip


def test_ram_needs_a_dram_zone_on_every_package():
    cpus = RAPLCPUs([[(0.0, 0.0), (7.0, 3.0)], [(0.0, None), (11.0, None)]])
    meter = build_zeus_meter(ZeusDevices(cpus=cpus), environ={})
    assert meter.sources == {"cpu": "zeus-rapl"}
    meter.start()
    assert meter.read().kwh == {"cpu": pytest.approx(18 / MJ_PER_KWH, rel=1e-12)}


def test_rapl_files_zeus_would_read_itself_are_left_to_the_rapl_meter():
    """Zeus's own RAPL reader spawns a tracker process that re-runs the job's script: those packages are never read."""
    cpus = RAPLCPUs([[]], package=RAPLCPU)  # any reading would fail: no values to pop
    assert build_zeus_meter(ZeusDevices(cpus=cpus), environ={}) is None


def test_apple_silicon_gives_what_its_soc_counts_and_the_gpu_managers_come_first():
    soc = AppleSilicon([(0, 0, None), (100, 40, None), (3_600_100, 7_200_040, None)])  # built, started, read
    meter = build_zeus_meter(ZeusDevices(soc=soc), environ={"CUDA_VISIBLE_DEVICES": "0"})
    assert meter.sources == {"cpu": "zeus-apple", "gpu": "zeus-apple"}  # no dram_mj on this chip: no RAM
    assert meter.scopes == {"cpu": "machine-wide", "gpu": "machine-wide"}
    meter.start()
    assert meter.read().kwh == {"cpu": pytest.approx(1e-3, rel=1e-12), "gpu": pytest.approx(2e-3, rel=1e-12)}
    both = build_zeus_meter(ZeusDevices(gpus=NVIDIAGPUs([[0]]), soc=AppleSilicon([(1, 2, 3)])), environ={})
    assert both.sources == {"gpu": "zeus-nvml", "cpu": "zeus-apple", "ram": "zeus-apple"}


def test_without_zeus_or_any_device_the_meter_is_absent(monkeypatch):
    for name in ("zeus", "zeus.device"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    assert zeus_module.zeus_devices() is None
    assert METERS.get("zeus")(EnergySettings()) is None
    monkeypatch.setattr(zeus_module, "zeus_devices", lambda: ZeusDevices())
    assert METERS.get("zeus")(EnergySettings()) is None


def _fake_zeus(monkeypatch, on_apple: bool, **managers) -> None:
    """`zeus.device` whose get_gpus / get_cpus / get_soc return the given managers, or raise when given an exception."""

    def opener(name):
        def open_manager():
            manager = managers[name]
            if isinstance(manager, Exception):
                raise manager
            return manager

        return open_manager

    device = types.ModuleType("zeus.device")
    device.get_gpus, device.get_cpus, device.get_soc = opener("gpus"), opener("cpus"), opener("soc")
    apple = types.ModuleType("zeus.device.soc.apple")
    apple.apple_silicon_is_available = lambda: on_apple
    modules = {"zeus": types.ModuleType("zeus"), "zeus.device": device, "zeus.device.soc": types.ModuleType("soc")}
    for name, module in {**modules, "zeus.device.soc.apple": apple}.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_a_device_zeus_fails_to_open_is_absent_and_the_soc_is_asked_for_only_on_apple(monkeypatch):
    cpus = RAPLCPUs([[(0.0, None)]])
    uuid_entry = ValueError("invalid literal for int() with base 10: 'GPU-8c3b'")  # Zeus on CUDA_VISIBLE_DEVICES=GPU-…
    _fake_zeus(monkeypatch, on_apple=False, gpus=uuid_entry, cpus=cpus, soc=AppleSilicon([]))  # a Jetson, say
    assert zeus_module.zeus_devices() == ZeusDevices(gpus=None, cpus=cpus, soc=None)
    soc = AppleSilicon([])
    _fake_zeus(monkeypatch, on_apple=True, gpus=uuid_entry, cpus=RuntimeError("no RAPL"), soc=soc)
    assert zeus_module.zeus_devices() == ZeusDevices(gpus=None, cpus=None, soc=soc)


def test_each_component_comes_from_zeus_only_where_no_earlier_meter_has_it():
    """nvml before zeus for the GPU; zeus's daemon RAPL for CPU and RAM; CodeCarbon's GPU only where none other has
    one."""
    cpus = RAPLCPUs([[(0.0, 0.0), (0.0, 0.0), (3_600_000.0, 7_200_000.0)]])  # started, window begins, window ends
    zeus = build_zeus_meter(ZeusDevices(gpus=NVIDIAGPUs([[0, 0, 5]]), cpus=cpus), environ={"CUDA_VISIBLE_DEVICES": "0"})
    nvml = FakeMeter([(0, 0, 0, 0), (1, 0, 0.25, 0)], sources={"gpu": "nvml-counter"})
    codecarbon = FakeMeter([(0, 0, 0, 0), (1, 10, 20, 30)], sources={"cpu": "codecarbon-estimate",
                                                                     "gpu": "codecarbon-nvml",
                                                                     "ram": "codecarbon-estimate"})  # fmt: skip
    with EnergyMonitor([nvml, zeus, codecarbon], 0.1, sleep=lambda s: None) as monitor:
        assert monitor.sources == {"cpu": "zeus-rapl", "gpu": "nvml-counter", "ram": "zeus-rapl"}
        window = monitor.window_energy("w", monitor.read(), monitor.read())
    assert (window.cpu_kwh, window.gpu_kwh, window.ram_kwh) == (pytest.approx(1e-3), 0.25, pytest.approx(2e-3))

    cpus = RAPLCPUs([[(0.0, 0.0), (0.0, 0.0), (3_600_000.0, 7_200_000.0)]])
    zeus = build_zeus_meter(ZeusDevices(cpus=cpus), environ={})
    codecarbon.readings = [(0, 0, 0, 0), (1, 10, 20, 30)]
    with EnergyMonitor([zeus, codecarbon], 0.1, sleep=lambda s: None) as monitor:
        assert monitor.sources == {"cpu": "zeus-rapl", "gpu": "codecarbon-nvml", "ram": "zeus-rapl"}
        window = monitor.window_energy("w", monitor.read(), monitor.read())
    assert (window.cpu_kwh, window.gpu_kwh, window.ram_kwh) == (pytest.approx(1e-3), 20, pytest.approx(2e-3))


def test_the_registered_meter_serves_a_configured_monitor(monkeypatch):
    amd = AMDGPUs([[0, 0, 1_800_000]])  # started, window begins, window ends
    monkeypatch.setattr(zeus_module, "zeus_devices", lambda: ZeusDevices(gpus=amd))
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "0")
    with open_monitor({"meters": ["zeus"], "carbon_intensity_g_per_kwh": 100.0}) as monitor:
        assert (monitor.sources["gpu"], monitor.scopes["gpu"]) == ("zeus-amdsmi", "device")
        with monitor.window("w") as out:
            pass
    assert out["energy"].gpu_kwh == pytest.approx(5e-4, rel=1e-12)


def test_zeus_comes_after_our_readers_and_before_codecarbon_everywhere():
    order = ["nvml", "rapl", "zeus", "codecarbon"]
    assert list(EnergySettings().meters) == order
    for path in [ROOT / "config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]:
        assert yaml.safe_load(path.read_text())["energy"]["meters"] == order, path
    schema = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["energy"]["properties"]["meters"]["items"]["enum"] == order


def test_zeus_tags_are_measurements_and_the_report_says_what_each_read():
    from joulebench.energy.core import default_scope, is_estimate, is_measured
    from joulebench.report_text import describe

    for tag, scope in (("zeus-nvml", "device"), ("zeus-amdsmi", "device"), ("zeus-rapl", "machine-wide"),
                       ("zeus-apple", "machine-wide")):  # fmt: skip
        assert is_measured(tag) and not is_estimate(tag) and default_scope(tag) == scope
        assert describe(tag).startswith("measured by Zeus")
    assert describe("zeus-rapl (shared)") == (
        "measured by Zeus's daemon from the RAPL energy counters, package or DRAM (machine-wide: the whole CPU "
        "package, every process on it), shared while other cells may have run"
    )
