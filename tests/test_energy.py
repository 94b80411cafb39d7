"""The energy arithmetic, proved exactly with injected counter sequences."""

from __future__ import annotations

import math
import threading
import types

import pytest

from joulebench.energy import COMPONENTS, EnergyMonitor, EnergySettings, Reading, WindowEnergy
from joulebench.energy.core import provenance
from joulebench.energy.nvml import NvmlMeter
from joulebench.energy.rapl import RaplMeter, counter_delta, find_zones
from joulebench.stats import joules_per_token, spread

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


def test_per_token_energy():
    assert joules_per_token(1 / 3600, 100) == pytest.approx(10.0)  # 1 Wh = 3,600 J over 100 tokens
    with pytest.raises(ValueError):
        joules_per_token(1.0, 0)


def test_a_pass_without_tokens_has_no_per_token_figures():
    from joulebench.serving import TimedPass, answer_figures, pinned_figures
    from joulebench.stats import NO_TOKENS

    energy = {key: 1e-5 for key in ("cpu_kwh", "gpu_kwh", "ram_kwh", "total_kwh", "net_kwh", "emissions_kg")}
    empty = TimedPass(energy, generation_s=0.5, tokens=0, queries=4, batches=1, pinned=False)
    assert empty.j_per_token is None and empty.tokens_per_s is None  # before: ValueError, and 0 tokens/s
    assert empty.wh_per_query == pytest.approx(1e-5 * 1000 / 4)  # per query is still measured
    full = TimedPass(energy, generation_s=0.5, tokens=100, queries=4, batches=1, pinned=True)
    assert full.j_per_token == pytest.approx(0.36) and full.tokens_per_s == pytest.approx(200.0)
    figures = pinned_figures([full, empty])  # one blank pass blanks the figure: no spread of the others
    assert figures["j_per_token"] == {"n": 2, "mean": None, "ci95": None, "cv": None, "reason": NO_TOKENS}
    assert figures["tokens_per_s"]["mean"] is None and figures["infer_kwh"]["mean"] == pytest.approx(1e-5)
    assert answer_figures([empty])["answer_j_per_token"]["reason"] == NO_TOKENS
    assert pinned_figures([full])["j_per_token"]["mean"] == pytest.approx(0.36)


def test_settings_accept_a_single_meter_name():
    settings = EnergySettings.from_config({"meter": "codecarbon", "pue": 1.5})
    assert settings.meters == ("codecarbon",) and settings.pue == 1.5


def test_overlap_labels_machine_wide_components_as_shared():
    from joulebench.energy.core import shared_components

    rapl = {"cpu": "rapl", "gpu": "nvml-counter", "ram": "rapl"}
    overlap = EnergySettings(allow_overlap=True, tracking_mode="process")
    monitor = EnergyMonitor([FakeMeter([], sources=rapl)], 0.1)  # no `scopes`: each tag's usual one
    assert monitor.scopes == {"cpu": "machine-wide", "gpu": "device", "ram": "machine-wide"}
    assert shared_components(monitor.scopes, EnergySettings(allow_overlap=False)) == frozenset()
    assert shared_components(monitor.scopes, overlap) == {"cpu", "ram"}
    process = {"cpu": "process", "gpu": "none", "ram": "process"}
    assert shared_components(process, overlap) == frozenset()
    monitor.shared = shared_components(monitor.scopes, overlap)
    assert monitor.sources == {"cpu": "rapl (shared)", "gpu": "nvml-counter", "ram": "rapl (shared)"}
    zero = {c: 0.0 for c in COMPONENTS}
    window = monitor.window_energy("w", Reading(0, zero), Reading(1, zero))
    assert window.scopes == monitor.scopes and window.sources["cpu"] == "rapl (shared)"


def test_the_default_meters_on_this_machine_label_estimates():
    """Whatever this machine offers, a CodeCarbon CPU figure without RAPL is never tagged as measured."""
    from joulebench.energy import is_measured, open_monitor

    monitor = open_monitor({"meters": ["nvml", "rapl", "codecarbon"], "country_iso_code": "CAN"})
    for component, source in monitor.sources.items():
        if source.startswith("codecarbon-estimate") or source == "constant":
            assert not is_measured(source), component
    assert monitor.carbon_kg_per_kwh > 0


# --- scopes: what a figure covers, and when it is shared ------------------------------------------------------------


def _hardware(kind: str, **attributes):
    """A stand-in for one of CodeCarbon's hardware objects: the meter goes by the class name and its attributes."""
    hardware = type(kind, (), {})()
    hardware.__dict__.update(attributes)
    return hardware


class SlowTracker:
    """A CodeCarbon tracker in miniature: its scheduler holds the bound measuring method, and one measurement advances
    the three totals one after the other, with `pause` (run once, by the first measurement) between the first and the
    others, where a second measurement running at the same time would fall in."""

    def __init__(self, hardware=()):
        self._total_cpu_energy = types.SimpleNamespace(kWh=0.0)
        self._total_gpu_energy = types.SimpleNamespace(kWh=0.0)
        self._total_ram_energy = types.SimpleNamespace(kWh=0.0)
        self._hardware = list(hardware)
        self._scheduler = types.SimpleNamespace(function=self._measure_power_and_energy)
        self.pause = None
        self.inside = self.most_inside = self.calls = 0

    def _measure_power_and_energy(self):
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        self.calls += 1
        self._total_cpu_energy.kWh += 1
        pause, self.pause = self.pause, None
        if pause:
            pause()
        self._total_gpu_energy.kWh += 1
        self._total_ram_energy.kWh += 1
        self.inside -= 1


class WatchedLock:
    """A re-entrant lock that says when a second thread has had to wait for it."""

    def __init__(self):
        self._lock = threading.RLock()
        self.contended = threading.Event()

    def __enter__(self):
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()


def _serialized_meter(tracker):
    from joulebench.energy.codecarbon_meter import CodeCarbonMeter

    meter = CodeCarbonMeter(EnergySettings(), tracker=tracker)
    meter._lock = WatchedLock()
    return meter


def test_a_reading_waits_for_the_scheduler_measurement_in_progress():
    """The scheduler's measurement stops half-way until the reading has had to wait for the lock (no sleeps): the
    reading then comes after it, whole. Without the lock the two would overlap and the reading would be torn."""
    tracker = SlowTracker()
    meter = _serialized_meter(tracker)
    halfway = threading.Event()

    def pause():
        halfway.set()
        assert meter._lock.contended.wait(timeout=30), "the reading never waited for the lock"

    tracker.pause = pause
    scheduler = threading.Thread(target=tracker._scheduler.function)  # what CodeCarbon's timer thread calls
    scheduler.start()
    assert halfway.wait(timeout=30)
    reading = meter.read()
    scheduler.join()
    assert tracker.most_inside == 1 and tracker.calls == 2
    assert reading.kwh == {"cpu": 2.0, "gpu": 2.0, "ram": 2.0}


def test_the_scheduler_waits_for_a_reading_in_progress():
    """The other way round: while a reading measures, and until it has taken all three totals, the scheduler's
    measurement (and the tracker's own calls from start/stop) wait."""
    tracker = SlowTracker()
    meter = _serialized_meter(tracker)
    halfway = threading.Event()
    readings = []

    def pause():
        halfway.set()
        assert meter._lock.contended.wait(timeout=30), "the scheduler never waited for the lock"

    tracker.pause = pause
    reader = threading.Thread(target=lambda: readings.append(meter.read()))
    reader.start()
    assert halfway.wait(timeout=30)
    tracker._scheduler.function()
    reader.join()
    assert tracker.most_inside == 1
    assert readings[0].kwh == {"cpu": 1.0, "gpu": 1.0, "ram": 1.0}
    assert tracker._measure_power_and_energy is tracker._scheduler.function  # start/stop go through it too


def test_the_real_codecarbon_tracker_measures_only_under_the_meter_lock():
    """Wired into CodeCarbon's own objects: its scheduler's function, the tracker's method (start, stop, flush call
    it) and our reading all run the measurement with the meter's lock held."""
    from joulebench.energy.codecarbon_meter import CodeCarbonMeter

    meter = CodeCarbonMeter(EnergySettings(measure_power_secs=3600))
    tracker = meter._tracker
    held = []

    def lock_is_held_elsewhere() -> None:
        free = []

        def try_lock():
            taken = meter._lock.acquire(blocking=False)
            free.append(taken)
            if taken:
                meter._lock.release()

        other = threading.Thread(target=try_lock)
        other.start()
        other.join()
        held.append(not free[0])

    tracker._do_measurements = lock_is_held_elsewhere
    tracker._scheduler.function()
    tracker._measure_power_and_energy()
    tracker._measure_power_and_energy_if_stale(min_interval_s=0.0)
    meter.read()
    assert held == [True, True, True, True]
    assert tracker._scheduler.function is tracker._measure_power_and_energy


@pytest.mark.parametrize(
    ("mode", "tracking_mode", "cpu", "cpu_scope", "ram_scope"),
    [
        ("intel_rapl", "process", "codecarbon-rapl", "machine-wide", "process"),
        ("intel_rapl", "machine", "codecarbon-rapl", "machine-wide", "machine-wide"),
        ("cpu_load", "process", "codecarbon-estimate", "process", "process"),
        ("cpu_load", "machine", "codecarbon-estimate", "machine-wide", "machine-wide"),
        ("constant", "process", "constant", "machine-wide", "process"),
    ],
)
def test_codecarbon_rapl_is_machine_wide_in_any_tracking_mode(monkeypatch, mode, tracking_mode, cpu, cpu_scope,
                                                              ram_scope):  # fmt: skip
    """CodeCarbon's RAPL mode reads the package counter unscaled; only its load and memory models follow the
    process. With overlap, whatever is machine-wide is shared, and says so in its tag."""
    from joulebench.energy.codecarbon_meter import CodeCarbonMeter
    from joulebench.energy.core import shared_components

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    tracker = SlowTracker([_hardware("RAM"), _hardware("CPU", _mode=mode)])
    settings = EnergySettings(tracking_mode=tracking_mode, allow_overlap=True)
    meter = CodeCarbonMeter(settings, tracker=tracker)
    assert meter.sources == {"cpu": cpu, "ram": "codecarbon-estimate"}
    assert meter.scopes == {"cpu": cpu_scope, "ram": ram_scope}
    monitor = EnergyMonitor([meter], 0.1, tracking_mode=tracking_mode)
    monitor.shared = shared_components(monitor.scopes, settings)
    assert (monitor.sources["cpu"] == cpu + " (shared)") == (cpu_scope == "machine-wide")
    assert (monitor.sources["ram"].endswith(" (shared)")) == (ram_scope == "machine-wide")


def test_codecarbon_gpu_is_the_job_s_own_only_with_visible_devices(monkeypatch):
    from joulebench.energy.codecarbon_meter import CodeCarbonMeter

    tracker = SlowTracker([_hardware("RAM"), _hardware("GPU", gpu_ids=None)])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert CodeCarbonMeter(EnergySettings(), tracker=tracker).scopes["gpu"] == "machine-wide"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert CodeCarbonMeter(EnergySettings(), tracker=SlowTracker(tracker._hardware)).scopes["gpu"] == "device"
    none_visible = SlowTracker([_hardware("GPU", gpu_ids=[])])
    assert "gpu" not in CodeCarbonMeter(EnergySettings(), tracker=none_visible).sources


def test_rapl_meter_figures_are_machine_wide(tmp_path):
    _zone(tmp_path, "intel-rapl:0", "package-0", 0, 1000)
    meter = RaplMeter(find_zones(tmp_path), poll_seconds=3600)
    assert meter.scopes == {"cpu": "machine-wide"}


def test_old_window_records_without_scopes_still_add_up():
    window = {"duration_s": 1.0, "cpu_kwh": 1.0, "gpu_kwh": 0.0, "ram_kwh": 1.0, "total_kwh": 2.0,
              "emissions_kg": 0.1, "net_kwh": 1.0, "idle_w": 0.0, "sources": {"cpu": "rapl"},
              "tracking_mode": ""}  # fmt: skip
    total = WindowEnergy.total("t", [window, {**window, "scopes": {"cpu": "machine-wide"}}])
    assert total.total_kwh == 4.0 and total.scopes == {"cpu": "machine-wide"}
    assert WindowEnergy.total("t", [window]).scopes == {}


# --- NVML: the card the job really uses --------------------------------------------------------------------------

T4 = ("GPU-aaaaaaaa-0000-0000-0000-000000000000", "Tesla T4")  # PCI bus 0: NVML's GPU 0, CUDA's 1 by default
H100 = ("GPU-bbbbbbbb-1111-1111-1111-111111111111", "NVIDIA H100")  # PCI bus 1: NVML's GPU 1, fastest: CUDA's 0


class FakeNvml:
    """NVML over cards listed in PCI bus order (NVML's order); `migs` maps a MIG instance's UUID to its card."""

    class NVMLError(Exception):
        pass

    def __init__(self, cards, migs=None):
        self.cards = list(cards)
        self.migs = dict(migs or {})
        self.shutdowns = 0

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self):
        return b"550.54"

    def nvmlDeviceGetCount(self):
        return len(self.cards)

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.cards):
            raise self.NVMLError("invalid argument")
        return ("card", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for index, (card_uuid, _) in enumerate(self.cards):
            if card_uuid == uuid:
                return ("card", index)
        if uuid in self.migs:
            return ("mig", uuid)
        raise self.NVMLError("not found")

    def nvmlDeviceGetUUID(self, handle):
        kind, key = handle
        return self.cards[key][0].encode() if kind == "card" else key.encode()

    def nvmlDeviceGetName(self, handle):
        return self.cards[handle[1]][1].encode()

    def nvmlDeviceGetIndex(self, handle):
        if handle[0] != "card":
            raise self.NVMLError("not supported on a MIG instance")
        return handle[1]

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        return self.nvmlDeviceGetHandleByUUID(self.migs[handle[1]])

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if handle[0] != "card":
            raise self.NVMLError("not supported on a MIG instance")
        return 1_000

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return []


class FakeCuUuid:
    """torch's `_CUuuid`: str() gives the bare 8-4-4-4-12 hex, without NVML's "GPU-" or "MIG-"."""

    def __init__(self, nvml_uuid):
        self.text = nvml_uuid.split("-", 1)[1]

    def __str__(self):
        return self.text


def fake_torch(*nvml_uuids):
    """torch whose CUDA sees these devices, in its own order."""
    properties = [types.SimpleNamespace(uuid=FakeCuUuid(u)) for u in nvml_uuids]
    cuda = types.SimpleNamespace(
        is_available=lambda: True, device_count=lambda: len(properties), get_device_properties=properties.__getitem__
    )
    return types.SimpleNamespace(cuda=cuda)


def _picked(gpus):
    return [(gpu.nvml_index, gpu.name, gpu.matched_by) for gpu in gpus]


def test_a_fastest_first_cuda_index_is_matched_to_its_card_by_uuid():
    """CUDA_VISIBLE_DEVICES=0 under CUDA's default order is the H100 (fastest), which NVML calls GPU 1: the meter
    reads the card torch computes on, not NVML's GPU 0."""
    from joulebench.energy.nvml import visible_gpus

    nvml = FakeNvml([T4, H100])
    environ = {"CUDA_VISIBLE_DEVICES": "0"}
    gpus, warnings = visible_gpus(nvml, fake_torch(H100[0]), environ)
    assert _picked(gpus) == [(1, "NVIDIA H100", "torch")] and warnings == []
    assert gpus[0].record() == {"uuid": H100[0], "name": "NVIDIA H100", "nvml_index": 1, "cuda": "0",
                                "matched_by": "torch"}  # fmt: skip
    # every device, in CUDA's order, each to its own card
    gpus, _ = visible_gpus(nvml, fake_torch(H100[0], T4[0]), {})
    assert _picked(gpus) == [(1, "NVIDIA H100", "torch"), (0, "Tesla T4", "torch")]


def test_without_torch_an_index_is_nvml_s_only_in_pci_bus_order():
    from joulebench.energy.nvml import visible_gpus

    nvml = FakeNvml([T4, H100])
    pinned = {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    gpus, warnings = visible_gpus(nvml, None, pinned)
    assert _picked(gpus) == [(1, "NVIDIA H100", "pci-bus-order")] and warnings == []
    gpus, warnings = visible_gpus(nvml, None, {"CUDA_VISIBLE_DEVICES": "1"})
    assert _picked(gpus) == [(1, "NVIDIA H100", "unverified-index")]
    assert "may name another card" in warnings[0]
    gpus, warnings = visible_gpus(FakeNvml([T4]), None, {"CUDA_VISIBLE_DEVICES": "0"})
    assert _picked(gpus) == [(0, "Tesla T4", "only-gpu")] and warnings == []


def test_a_uuid_entry_names_its_card_whatever_the_order():
    from joulebench.energy.nvml import visible_gpus

    nvml = FakeNvml([T4, H100])
    gpus, warnings = visible_gpus(nvml, None, {"CUDA_VISIBLE_DEVICES": H100[0]})
    assert _picked(gpus) == [(1, "NVIDIA H100", "uuid")] and warnings == []
    gpus, _ = visible_gpus(nvml, None, {"CUDA_VISIBLE_DEVICES": "GPU-aaaa, 1"})  # a unique prefix, as CUDA takes
    assert [gpu.uuid for gpu in gpus] == [T4[0], H100[0]]
    gpus, warnings = visible_gpus(nvml, None, {"CUDA_VISIBLE_DEVICES": "GPU-ffff,0"})  # CUDA stops at a bad entry
    assert gpus == [] and "matches no GPU" in warnings[0]


def test_unset_visible_devices_means_every_gpu_of_the_host():
    from joulebench.energy.nvml import visible_gpus

    gpus, warnings = visible_gpus(FakeNvml([T4, H100]), None, {})
    assert _picked(gpus) == [(0, "Tesla T4", "all"), (1, "NVIDIA H100", "all")] and warnings == []


def test_a_mig_instance_is_measured_by_its_card_once():
    from joulebench.energy.nvml import visible_gpus

    mig_a = "MIG-cccccccc-2222-2222-2222-222222222222"
    mig_b = "MIG-dddddddd-3333-3333-3333-333333333333"
    nvml = FakeNvml([T4, H100], migs={mig_a: H100[0], mig_b: H100[0]})
    gpus, warnings = visible_gpus(nvml, fake_torch(mig_a, mig_b), {"CUDA_VISIBLE_DEVICES": f"{mig_a},{mig_b}"})
    assert [(gpu.uuid, gpu.mig_uuid) for gpu in gpus] == [(H100[0], mig_a)]
    assert "whole card" in warnings[0]
    gpus, _ = visible_gpus(nvml, None, {"CUDA_VISIBLE_DEVICES": mig_b})
    assert _picked(gpus) == [(1, "NVIDIA H100", "uuid")]


def test_the_nvml_meter_records_the_cards_it_reads():
    from joulebench.energy.nvml import build_nvml_meter

    meter = build_nvml_meter(FakeNvml([T4, H100]), fake_torch(H100[0]), {"CUDA_VISIBLE_DEVICES": "0"})
    assert meter is not None and meter._handles == [("card", 1)]
    assert [d["uuid"] for d in meter.devices] == [H100[0]] and meter.scopes == {"gpu": "device"}
    monitor = EnergyMonitor([meter], 0.1)
    details = provenance(monitor, EnergySettings())
    assert details["gpus"] == meter.devices and details["scopes"]["gpu"] == "device"
    assert details["gpu_driver"] == "550.54"
    nothing = FakeNvml([T4])
    assert build_nvml_meter(nothing, None, {"CUDA_VISIBLE_DEVICES": ""}) is None and nothing.shutdowns == 1


@pytest.mark.parametrize(("visible", "gpu_source"), [(None, "nvml-counter (shared)"), ("1", "nvml-counter")])
def test_a_job_without_gpus_of_its_own_shares_the_gpu_figure(monkeypatch, visible, gpu_source):
    """`gpus_per_job: 0` with overlap: no slot claimed, CUDA_VISIBLE_DEVICES unset, so the job measures every GPU
    of the host, which other jobs may be using: shared. A claimed slot or a scheduler's choice is the job's own."""
    import sys

    from joulebench.energy import nvml as nvml_module
    from joulebench.energy import open_monitor

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([T4, H100]))
    monkeypatch.setattr(nvml_module, "cuda_torch", lambda: None)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    config = {"meters": ["nvml"], "allow_overlap": True, "carbon_intensity_g_per_kwh": 100.0}
    monitor = open_monitor(config)
    assert monitor.sources["gpu"] == gpu_source
    assert monitor.scopes["gpu"] == ("machine-wide" if visible is None else "device")
    assert len(monitor.meter_of("gpu").devices) == (2 if visible is None else 1)
    assert "(shared)" not in open_monitor({**config, "allow_overlap": False}).sources["gpu"]


def test_prewarm_detects_codecarbon_s_hardware_on_a_thread_that_the_meter_then_reuses(monkeypatch):
    """`energy.prewarm` (a job's first step) runs CodeCarbon's hardware detection on a daemon thread; the meter built
    afterwards, with the same settings, finds it done (CodeCarbon's per-process cache) instead of detecting again."""
    import threading

    from codecarbon.core import hardware_cache

    from joulebench.energy import prewarm
    from joulebench.energy.codecarbon_meter import CodeCarbonMeter

    hardware_cache.clear_cache()
    detections = []
    original = hardware_cache.get_or_run_setup

    def counted(resource_tracker, setup_fn):
        def setup():
            detections.append(threading.current_thread().name)
            setup_fn()

        return original(resource_tracker, setup)

    monkeypatch.setattr("codecarbon.core.resource_tracker.get_or_run_setup", counted)
    config = {"meters": ["rapl", "codecarbon"], "measure_power_secs": 3600}
    prewarm(config)
    warming = [t for t in threading.enumerate() if t.name == "prewarm-codecarbon"]
    assert warming and warming[0].daemon
    warming[0].join(timeout=60)
    meter = CodeCarbonMeter(EnergySettings.from_config(config))
    assert detections == ["prewarm-codecarbon"]
    meter.start()
    meter.stop()
