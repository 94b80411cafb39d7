"""Energy measurement windows over pluggable meters.

A meter exposes cumulative per-component energy counters; an `EnergyMonitor` turns two readings into a window's
energy, so windows compose and nest freely (`begin_window("train")`, `begin_window("epoch-1")`, ...). Every figure
carries the source of each component so that an estimate is never shown as a measurement.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from joulebench.registry import Registry

COMPONENTS = ("cpu", "gpu", "ram")


@dataclass(frozen=True)
class Reading:
    """Cumulative energy per component since the meter started, at `time_s` (perf_counter)."""

    time_s: float
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float


@dataclass(frozen=True)
class WindowEnergy:
    name: str
    duration_s: float
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    total_kwh: float
    emissions_kg: float
    sources: dict[str, str] = field(default_factory=dict)
    tracking_mode: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Meter(Protocol):
    sources: dict[str, str]
    tracking_mode: str
    carbon_kg_per_kwh: float

    def start(self) -> None: ...

    def read(self) -> Reading: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class EnergySettings:
    meter: str = "codecarbon"
    country_iso_code: str = "CAN"
    measure_power_secs: float = 1.0
    pue: float = 1.0
    tracking_mode: str = "machine"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EnergySettings:
        return cls(**config)


METERS: Registry[Callable[[EnergySettings], Meter]] = Registry("energy meter")


@METERS.register("codecarbon")
class CodeCarbonMeter:
    """CodeCarbon's offline tracker, read between its periodic samples.

    CodeCarbon keeps cumulative per-component energy that its scheduler advances every `measure_power_secs`; a
    reading first forces a fresh sample so a window edge is not up to one sampling interval stale.
    """

    def __init__(self, settings: EnergySettings) -> None:
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self._tracker = OfflineEmissionsTracker(
            country_iso_code=settings.country_iso_code,
            measure_power_secs=settings.measure_power_secs,
            pue=settings.pue,
            tracking_mode=settings.tracking_mode,
            save_to_file=False,
            log_level="error",
            allow_multiple_runs=True,
        )
        self.tracking_mode = settings.tracking_mode
        self.sources: dict[str, str] = {}
        self.carbon_kg_per_kwh = 0.0

    def start(self) -> None:
        from codecarbon.core.units import Energy

        self._tracker.start()
        self._tracker._ensure_geo_metadata()
        self._tracker._ensure_emissions_engine()
        self.sources = self._component_sources()
        self.carbon_kg_per_kwh = float(
            self._tracker._emissions.get_private_infra_emissions(Energy.from_energy(kWh=1.0), self._tracker._geo)
        )

    def read(self) -> Reading:
        tracker = self._tracker
        tracker._measure_power_and_energy()
        return Reading(
            time_s=time.perf_counter(),
            cpu_kwh=float(tracker._total_cpu_energy.kWh),
            gpu_kwh=float(tracker._total_gpu_energy.kWh),
            ram_kwh=float(tracker._total_ram_energy.kWh),
        )

    def stop(self) -> None:
        self._tracker.stop()

    def _component_sources(self) -> dict[str, str]:
        """Name how CodeCarbon obtained each component: only RAPL and NVML read real counters."""
        sources = {"cpu": "codecarbon-estimate", "gpu": "none", "ram": "codecarbon-estimate"}
        for hardware in self._tracker._hardware:
            kind = type(hardware).__name__
            mode = str(getattr(hardware, "_mode", "")).lower()
            if kind == "CPU" and "rapl" in mode:
                sources["cpu"] = "codecarbon-rapl"
            elif kind == "GPU":
                sources["gpu"] = "codecarbon-nvml"
        return sources


class EnergyMonitor:
    """Begin/end named windows over one meter; windows may overlap and nest."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self._open: dict[str, Reading] = {}
        self._started = False

    def __enter__(self) -> EnergyMonitor:
        self.meter.start()
        self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.meter.stop()
            self._started = False

    def begin_window(self, name: str) -> None:
        if name in self._open:
            raise ValueError(f"energy window {name!r} is already open")
        _synchronize_accelerator()
        self._open[name] = self.meter.read()

    def end_window(self, name: str) -> WindowEnergy:
        try:
            begin = self._open.pop(name)
        except KeyError:
            raise ValueError(f"energy window {name!r} was never begun") from None
        _synchronize_accelerator()
        return window_energy(name, begin, self.meter.read(), self.meter)

    @contextmanager
    def window(self, name: str) -> Iterator[dict[str, WindowEnergy]]:
        """`with monitor.window("x") as out:` leaves the result in `out["energy"]` when the block ends."""
        out: dict[str, WindowEnergy] = {}
        self.begin_window(name)
        try:
            yield out
        finally:
            out["energy"] = self.end_window(name)


def window_energy(name: str, begin: Reading, end: Reading, meter: Meter) -> WindowEnergy:
    cpu, gpu, ram = (getattr(end, f"{c}_kwh") - getattr(begin, f"{c}_kwh") for c in COMPONENTS)
    total = cpu + gpu + ram
    return WindowEnergy(
        name=name,
        duration_s=end.time_s - begin.time_s,
        cpu_kwh=cpu,
        gpu_kwh=gpu,
        ram_kwh=ram,
        total_kwh=total,
        emissions_kg=total * meter.carbon_kg_per_kwh,
        sources=dict(meter.sources),
        tracking_mode=meter.tracking_mode,
    )


def open_monitor(config: dict[str, Any]) -> EnergyMonitor:
    settings = EnergySettings.from_config(config)
    return EnergyMonitor(METERS.get(settings.meter)(settings))


def _synchronize_accelerator() -> None:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
