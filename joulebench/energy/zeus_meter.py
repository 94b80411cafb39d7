"""Zeus (ml-energy's `zeus` package, 0.16.0) as a meter: the cumulative energy counters of its device layer.

`zeus.device.get_gpus()` covers the GPUs visible to the job (NVIDIA through NVML, AMD through amdsmi; both honour
CUDA_VISIBLE_DEVICES, AMD also HIP_VISIBLE_DEVICES), `get_cpus()` the RAPL packages with their DRAM, and `get_soc()`
Apple silicon; each answers `get_total_energy_consumption` in mJ. Zeus counts RAPL wrap-arounds itself (its daemon
adds a counter's range at each wrap it sees), so its counters are taken as they are.

CPU and DRAM come from Zeus only through its daemon (zeusd: `ZEUSD_SOCK_PATH` or `ZEUSD_HOST_PORT`), which reads RAPL
for a job without root. Read directly, Zeus's RAPL files start a wrap-around tracker with multiprocessing's "spawn",
whose child re-runs the main script's top level, which for a Snakemake `script:` job is the job itself; the `rapl`
meter reads those same files in this process. The SoC is asked for only on Apple silicon: on a Jetson, `get_soc`
starts a power-polling process, and integrated power samples are not a counter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from joulebench.energy.core import DEVICE, JOULES_PER_KWH, MACHINE_WIDE, METERS, EnergySettings, Reading
from joulebench.energy.nvml import gpu_scope

GPU_SOURCES = {"NVIDIAGPUs": "zeus-nvml", "AMDGPUs": "zeus-amdsmi"}  # Zeus's GPU managers by class name
DAEMON_CPU = "ZeusdRAPLCPU"  # Zeus's RAPL package read through zeusd
SOC_SOURCE = "zeus-apple"
SOC_FIELDS = {"cpu": "cpu_total_mj", "gpu": "gpu_mj", "ram": "dram_mj"}  # AppleSiliconMeasurement, per component

Probe = Callable[[], dict[str, float]]
"""One device's reading: its cumulative energy in mJ per component it counts."""


@dataclass(frozen=True)
class ZeusDevices:
    """Zeus's device managers on this machine; None where Zeus sees no such device."""

    gpus: Any | None = None  # zeus.device.gpu.GPUs: the job's visible GPUs
    cpus: Any | None = None  # zeus.device.cpu.CPUs: RAPL packages
    soc: Any | None = None  # zeus.device.soc.SoC: Apple silicon


def zeus_devices() -> ZeusDevices | None:
    """What Zeus sees here, None where zeus is not installed."""
    try:
        from zeus.device import get_cpus, get_gpus, get_soc
        from zeus.device.soc.apple import apple_silicon_is_available
    except ImportError:
        return None
    soc = _opened(get_soc) if apple_silicon_is_available() else None
    return ZeusDevices(gpus=_opened(get_gpus), cpus=_opened(get_cpus), soc=soc)


def _opened(open_manager: Callable[[], Any]) -> Any | None:
    try:
        return open_manager()
    except Exception:  # Zeus's init errors (no library, device or daemon), a UUID entry of CUDA_VISIBLE_DEVICES
        return None  # (Zeus reads each entry as an int), an unofficial pynvml: Zeus does not see that device


class ZeusMeter:
    """Sums its probes' counters per component; a reading is the increase since `start`, in kWh."""

    name = "zeus"

    def __init__(self, probes: list[Probe], sources: dict[str, str], scopes: dict[str, str]) -> None:
        self._probes = probes
        self.sources = sources
        self.scopes = scopes
        self._start_mj: dict[str, float] = {}

    def _total_mj(self) -> dict[str, float]:
        totals = dict.fromkeys(self.sources, 0.0)
        for probe in self._probes:
            for component, millijoules in probe().items():
                totals[component] += millijoules
        return totals

    def start(self) -> None:
        self._start_mj = self._total_mj()

    def read(self) -> Reading:
        now = self._total_mj()
        return Reading(
            time.perf_counter(), {c: (now[c] - self._start_mj[c]) / 1000 / JOULES_PER_KWH for c in self.sources}
        )

    def stop(self) -> None:
        """Nothing to release: Zeus keeps its managers for the life of the process."""


def build_zeus_meter(devices: ZeusDevices, environ: Mapping[str, str] | None = None) -> ZeusMeter | None:
    """The meter over every component Zeus has a counter for; None when it has none. A component is counted whole or
    not at all: a GPU or package without a counter would make the sum an undercount."""
    environ = os.environ if environ is None else environ
    probes: list[Probe] = []
    sources: dict[str, str] = {}
    scopes: dict[str, str] = {}
    gpus = devices.gpus
    gpu_source = GPU_SOURCES.get(type(gpus).__name__)
    gpu_indices = range(len(gpus)) if gpu_source else range(0)
    if gpu_indices and all(gpus.supports_get_total_energy_consumption(i) for i in gpu_indices):
        probes += [_gpu_probe(gpus, index) for index in gpu_indices]
        sources["gpu"], scopes["gpu"] = gpu_source, _gpu_scope(gpu_source, environ)
    cpus = devices.cpus
    packages = cpus.cpus if cpus is not None else ()
    if packages and all(type(package).__name__ == DAEMON_CPU for package in packages):
        with_dram = all(cpus.supports_get_dram_energy_consumption(i) for i in range(len(packages)))
        probes += [_package_probe(cpus, index, with_dram) for index in range(len(packages))]
        for component in ("cpu", "ram") if with_dram else ("cpu",):
            sources[component], scopes[component] = "zeus-rapl", MACHINE_WIDE
    if devices.soc is not None:
        measurement = devices.soc.get_total_energy_consumption()
        fields = {c: f for c, f in SOC_FIELDS.items() if c not in sources and getattr(measurement, f) is not None}
        if fields:
            probes.append(_soc_probe(devices.soc, fields))
            for component in fields:
                sources[component], scopes[component] = SOC_SOURCE, MACHINE_WIDE
    return ZeusMeter(probes, sources, scopes) if sources else None


def _gpu_scope(source: str, environ: Mapping[str, str]) -> str:
    """As for `nvml`; an AMD job is also given its GPUs by HIP_VISIBLE_DEVICES."""
    if source == "zeus-amdsmi" and "HIP_VISIBLE_DEVICES" in environ:
        return DEVICE
    return gpu_scope(environ)


def _gpu_probe(gpus: Any, index: int) -> Probe:
    return lambda: {"gpu": float(gpus.get_total_energy_consumption(index))}


def _package_probe(cpus: Any, index: int, with_dram: bool) -> Probe:
    def read() -> dict[str, float]:
        measurement = cpus.get_total_energy_consumption(index)
        counted = {"cpu": float(measurement.cpu_mj)}
        if with_dram:
            counted["ram"] = float(measurement.dram_mj)
        return counted

    return read


def _soc_probe(soc: Any, fields: dict[str, str]) -> Probe:
    def read() -> dict[str, float]:
        measurement = soc.get_total_energy_consumption()
        return {component: float(getattr(measurement, field)) for component, field in fields.items()}

    return read


@METERS.register("zeus")
def zeus_meter(settings: EnergySettings) -> ZeusMeter | None:
    devices = zeus_devices()
    return build_zeus_meter(devices) if devices is not None else None
