"""Measurement windows over pluggable energy meters.

Each meter exposes cumulative energy counters for the components it can see (CPU, GPU, RAM). The monitor takes every
component from the first meter in its list that provides it, turns two readings into a window's energy, and so lets
windows overlap and nest freely. Every figure carries its source, so an estimate is never shown as a measurement, and
its scope (what it covers: the whole machine, this process, or the GPUs given to this job), so that a figure which
includes other jobs' work is labelled "(shared)" when jobs may overlap. Energy is the devices' own (IT) energy;
emissions = energy × grid carbon intensity × PUE.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from joulebench.registry import Registry

COMPONENTS = ("cpu", "gpu", "ram")
JOULES_PER_KWH = 3.6e6

# Source tags: how a component's figure was obtained.
MEASURED_SOURCES = {
    "rapl", "nvml-counter", "codecarbon-rapl", "codecarbon-nvml", "zeus-nvml", "zeus-amdsmi", "zeus-rapl", "zeus-apple",
}  # fmt: skip
NO_SOURCE = "none"
SHARED = " (shared)"  # appended to a machine-wide source while other cells may run

# Scopes: what a component's figure covers, whatever its source.
MACHINE_WIDE = "machine-wide"  # every process on the host: a RAPL package, every GPU of the host, all of the RAM
PROCESS = "process"  # attributed to this process (and its children) by CodeCarbon's `tracking_mode: process` models
DEVICE = "device"  # the GPUs given to this job (CUDA_VISIBLE_DEVICES, set by gpu_slots or a scheduler)
SCOPES = (MACHINE_WIDE, PROCESS, DEVICE)
SOURCE_SCOPE = {
    "rapl": MACHINE_WIDE,  # a package / DRAM counter counts every process on it, whatever the tracking mode
    "codecarbon-rapl": MACHINE_WIDE,  # CodeCarbon reads the same package counters and never scales them
    "constant": MACHINE_WIDE,  # a fixed share of the TDP, attributed to nobody in particular
    "nvml-counter": DEVICE,
    "codecarbon-nvml": DEVICE,
    "zeus-nvml": DEVICE,
    "zeus-amdsmi": DEVICE,
    "zeus-rapl": MACHINE_WIDE,  # Zeus's daemon reads the same package counters
    "zeus-apple": MACHINE_WIDE,  # the whole SoC: its CPU clusters, its GPU, its memory
}
"""The scope of a source tag where its meter does not say (a meter without `scopes`)."""


def default_scope(source: str) -> str:
    """The usual scope of a source tag; machine-wide for a tag not known here, the cautious reading (the figure may
    include other processes' work)."""
    tag = source.removesuffix(SHARED)
    return NO_SOURCE if tag == NO_SOURCE else SOURCE_SCOPE.get(tag, MACHINE_WIDE)


@dataclass(frozen=True)
class Reading:
    """Cumulative energy (kWh) per component since the meter started, at `time_s` (a monotonic clock)."""

    time_s: float
    kwh: dict[str, float]


class Meter(Protocol):
    """A meter may also have `scopes` (component -> one of SCOPES) where the scope depends on more than its source tag
    (tracking mode, CUDA_VISIBLE_DEVICES); a component it leaves out gets `default_scope` of its tag."""

    name: str
    sources: dict[str, str]  # component -> source tag, for the components this meter measures

    def start(self) -> None: ...

    def read(self) -> Reading: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class EnergySettings:
    meters: tuple[str, ...] = ("nvml", "rapl", "zeus", "codecarbon")
    country_iso_code: str = "CAN"
    region: str | None = None
    carbon_intensity_g_per_kwh: float | None = None
    pue: float = 1.0
    measure_power_secs: float = 1.0
    tracking_mode: str = "machine"
    idle_seconds: float = 0.0
    repeats: int = 5
    warmup: int = 1
    allow_overlap: bool = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EnergySettings:
        values = dict(config)
        if "meter" in values:  # a single meter name is a list of one
            values.setdefault("meters", [values.pop("meter")])
        values["meters"] = tuple(values.get("meters", cls.meters))
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in values.items() if key in known})


METERS: Registry[Callable[[EnergySettings], Meter | None]] = Registry("energy meter")
"""Factories that return a meter, or None when its hardware or interface is absent on this machine."""


@dataclass(frozen=True)
class WindowEnergy:
    name: str
    duration_s: float
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    total_kwh: float
    emissions_kg: float
    idle_w: float = 0.0
    net_kwh: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)
    tracking_mode: str = ""
    scopes: dict[str, str] = field(default_factory=dict)  # component -> MACHINE_WIDE, PROCESS, DEVICE or "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def total(cls, name: str, windows: Sequence[dict[str, Any]]) -> WindowEnergy:
        """Consecutive windows (e.g. epochs measured by two processes, before and after a resume) as one; the idle
        power, sources, scopes and mode are the last window's (a record written before scopes existed has none)."""
        summed = ("duration_s", "cpu_kwh", "gpu_kwh", "ram_kwh", "total_kwh", "emissions_kg", "net_kwh")
        last = windows[-1]
        return cls(
            name=name,
            **{key: sum(float(window[key]) for window in windows) for key in summed},
            idle_w=last["idle_w"],
            sources=dict(last["sources"]),
            tracking_mode=last["tracking_mode"],
            scopes=dict(last.get("scopes", {})),
        )


@dataclass(frozen=True)
class IdleBaseline:
    """Mean power per component over an idle window, W."""

    seconds: float
    watts: dict[str, float]

    @property
    def total_w(self) -> float:
        return sum(self.watts.values())


class EnergyMonitor:
    """Begin/end named windows over a set of meters; windows may overlap and nest."""

    def __init__(
        self,
        meters: Sequence[Meter],
        carbon_kg_per_kwh: float,
        pue: float = 1.0,
        tracking_mode: str = "",
        sleep: Callable[[float], None] = time.sleep,
        shared: frozenset[str] = frozenset(),
    ) -> None:
        self.meters = list(meters)
        self.carbon_kg_per_kwh = carbon_kg_per_kwh
        self.pue = pue
        self.tracking_mode = tracking_mode
        self.idle: IdleBaseline | None = None
        self._sleep = sleep
        self._open: dict[str, Reading] = {}
        self._owner = {c: next((m for m in self.meters if c in m.sources), None) for c in COMPONENTS}
        self.shared = shared

    @property
    def sources(self) -> dict[str, str]:
        """Each component's source tag; "(shared)" marks a machine-wide figure while other cells may run."""
        tags = {c: meter.sources[c] if meter else NO_SOURCE for c, meter in self._owner.items()}
        return {c: tag + SHARED if c in self.shared and tag != NO_SOURCE else tag for c, tag in tags.items()}

    @property
    def scopes(self) -> dict[str, str]:
        """What each component's figure covers (one of SCOPES), "none" where no meter sees it. Whether it is shared
        is a separate matter (`shared`): a machine-wide figure is shared only while other cells may run."""
        scopes = {}
        for component, meter in self._owner.items():
            if meter is None:
                scopes[component] = NO_SOURCE
            else:
                declared = getattr(meter, "scopes", {})
                scopes[component] = declared.get(component) or default_scope(meter.sources[component])
        return scopes

    def meter_of(self, component: str) -> Meter | None:
        """The meter this component's figure comes from, None if no meter sees it."""
        return self._owner[component]

    def __enter__(self) -> EnergyMonitor:
        for meter in self.meters:
            meter.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for meter in self.meters:
            meter.stop()

    def read(self) -> Reading:
        _synchronize_accelerator()
        readings = {id(meter): meter.read() for meter in self.meters}
        kwh = {c: readings[id(m)].kwh.get(c, 0.0) if m else 0.0 for c, m in self._owner.items()}
        clock = readings[id(self.meters[0])].time_s if self.meters else time.perf_counter()
        return Reading(clock, kwh)

    def begin_window(self, name: str) -> None:
        if name in self._open:
            raise ValueError(f"energy window {name!r} is already open")
        self._open[name] = self.read()

    def end_window(self, name: str) -> WindowEnergy:
        try:
            begin = self._open.pop(name)
        except KeyError:
            raise ValueError(f"energy window {name!r} was never begun") from None
        return self.window_energy(name, begin, self.read())

    @contextmanager
    def window(self, name: str) -> Iterator[dict[str, WindowEnergy]]:
        """`with monitor.window("x") as out:` leaves the result in `out["energy"]` when the block ends."""
        out: dict[str, WindowEnergy] = {}
        self.begin_window(name)
        try:
            yield out
        finally:
            out["energy"] = self.end_window(name)

    def measure_idle(self, seconds: float) -> IdleBaseline:
        """Mean power of each component while this process sleeps; windows then also report net energy."""
        begin = self.read()
        self._sleep(seconds)
        end = self.read()
        duration = end.time_s - begin.time_s
        watts = {c: (end.kwh[c] - begin.kwh[c]) * JOULES_PER_KWH / duration for c in COMPONENTS}
        self.idle = IdleBaseline(duration, watts)
        return self.idle

    def window_energy(self, name: str, begin: Reading, end: Reading) -> WindowEnergy:
        duration = end.time_s - begin.time_s
        parts = {c: end.kwh[c] - begin.kwh[c] for c in COMPONENTS}
        total = sum(parts.values())
        idle_w = self.idle.total_w if self.idle else 0.0
        return WindowEnergy(
            name=name,
            duration_s=duration,
            cpu_kwh=parts["cpu"],
            gpu_kwh=parts["gpu"],
            ram_kwh=parts["ram"],
            total_kwh=total,
            emissions_kg=total * self.carbon_kg_per_kwh * self.pue,
            idle_w=idle_w,
            net_kwh=max(0.0, total - idle_w * duration / JOULES_PER_KWH),
            sources=self.sources,
            tracking_mode=self.tracking_mode,
            scopes=self.scopes,
        )


@contextmanager
def measured(config: dict[str, Any]) -> Iterator[EnergyMonitor]:
    """A started monitor whose idle baseline (if `idle_seconds` > 0) is taken before any window opens."""
    settings = EnergySettings.from_config(config)
    with open_monitor(config) as monitor:
        if settings.idle_seconds > 0:
            monitor.measure_idle(settings.idle_seconds)
        yield monitor


def prewarm(config: dict[str, Any]) -> None:
    """Start the set-up of each configured meter that offers one (`prewarm(settings)`) on a daemon thread: it then
    overlaps the job's imports, which come before any window, instead of delaying the first window."""
    settings = EnergySettings.from_config(config)
    for name in settings.meters:
        warm = getattr(METERS.get(name), "prewarm", None) if name in METERS else None
        if warm is not None:
            threading.Thread(target=warm, args=(settings,), name=f"prewarm-{name}", daemon=True).start()


def open_monitor(config: dict[str, Any]) -> EnergyMonitor:
    from joulebench.energy.carbon import grid_intensity_kg_per_kwh

    settings = EnergySettings.from_config(config)
    meters = [meter for meter in (METERS.get(name)(settings) for name in settings.meters) if meter is not None]
    if settings.carbon_intensity_g_per_kwh is not None:
        intensity = settings.carbon_intensity_g_per_kwh / 1000
    else:
        intensity = grid_intensity_kg_per_kwh(settings.country_iso_code, settings.region)
    monitor = EnergyMonitor(meters, intensity, settings.pue, settings.tracking_mode)
    monitor.shared = shared_components(monitor.scopes, settings)
    return monitor


def shared_components(scopes: dict[str, str], settings: EnergySettings) -> frozenset[str]:
    """The components whose figure may include other jobs' work: with overlap allowed, every machine-wide one.

    A RAPL figure (ours or CodeCarbon's) is machine-wide whatever `tracking_mode` says, since CodeCarbon reads the
    package counter as it is; only CodeCarbon's CPU-load and RAM-size models attribute CPU and RAM to the process. A
    GPU figure is the job's own when the job was given its GPUs (CUDA_VISIBLE_DEVICES: a gpu_slots claim or a
    scheduler), and machine-wide (every GPU of the host, which other jobs may be using) when it was not."""
    if not settings.allow_overlap:
        return frozenset()
    return frozenset(c for c in COMPONENTS if scopes.get(c) == MACHINE_WIDE)


def provenance(monitor: EnergyMonitor, settings: EnergySettings) -> dict[str, Any]:
    """How this job's energy was measured, and anything that makes the figures less trustworthy."""
    warnings = []
    for meter in monitor.meters:
        warnings.extend(str(warning) for warning in getattr(meter, "warnings", ()))
        others = sorted(getattr(meter, "foreign_processes", ()))
        if others:
            warnings.append(f"other processes used the GPU during the windows: pids {others}")
    gpu_meter = monitor.meter_of("gpu")
    return {
        "meters": [meter.name for meter in monitor.meters],
        "sources": monitor.sources,
        "scopes": monitor.scopes,
        "gpus": [dict(device) for device in getattr(gpu_meter, "devices", ())],
        "measure_power_secs": settings.measure_power_secs,
        "tracking_mode": settings.tracking_mode,
        "idle_w": monitor.idle.watts if monitor.idle else {},
        "idle_seconds": monitor.idle.seconds if monitor.idle else 0.0,
        "carbon_kg_per_kwh": monitor.carbon_kg_per_kwh,
        "pue": monitor.pue,
        "allow_overlap": settings.allow_overlap,
        "gpu_driver": _gpu_driver(monitor),
        "warnings": warnings,
    }


def _gpu_driver(monitor: EnergyMonitor) -> str:
    for meter in monitor.meters:
        driver = getattr(meter, "driver_version", None)
        if driver:
            return str(driver)
    return ""


def is_measured(source: str) -> bool:
    return source.removesuffix(SHARED) in MEASURED_SOURCES


def is_estimate(source: str) -> bool:
    """A power model rather than a counter reading; "none" (no device) is neither."""
    return not is_measured(source) and source.removesuffix(SHARED) != NO_SOURCE


def _synchronize_accelerator() -> None:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
