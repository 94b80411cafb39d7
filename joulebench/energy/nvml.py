"""The GPUs' own total-energy counters (NVML, Volta or newer), for the GPUs this job was given."""

from __future__ import annotations

import os
import time
from typing import Any

from joulebench.energy.core import JOULES_PER_KWH, METERS, EnergySettings, Reading


def visible_gpu_handles(nvml: Any) -> list[Any]:
    """NVML handles of the GPUs in CUDA_VISIBLE_DEVICES (indices or UUIDs), else of all GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    handles = []
    for entry in (e.strip() for e in visible.split(",") if e.strip()):
        if entry.isdigit():
            handles.append(nvml.nvmlDeviceGetHandleByIndex(int(entry)))
        else:
            handles.append(nvml.nvmlDeviceGetHandleByUUID(entry))
    return handles


class NvmlMeter:
    name = "nvml"

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles
        self._start_mj: list[int] = []
        self.sources = {"gpu": "nvml-counter"}
        self.foreign_processes: set[int] = set()
        driver = getattr(nvml, "nvmlSystemGetDriverVersion", None)
        self.driver_version = _text(driver()) if driver else ""

    def start(self) -> None:
        self._start_mj = [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]

    def read(self) -> Reading:
        now = [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]
        self._note_foreign_processes()
        joules = sum(after - before for before, after in zip(self._start_mj, now, strict=True)) / 1000
        return Reading(time.perf_counter(), {"gpu": joules / JOULES_PER_KWH})

    def _note_foreign_processes(self) -> None:
        """Processes other than this one on our GPUs make the GPU figure include their work."""
        for handle in self._handles:
            try:
                processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except self._nvml.NVMLError:
                continue
            self.foreign_processes.update(p.pid for p in processes if p.pid != os.getpid())

    def stop(self) -> None:
        self._nvml.nvmlShutdown()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@METERS.register("nvml")
def nvml_meter(settings: EnergySettings) -> NvmlMeter | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no GPU, or no library: the meter is simply absent
        return None
    handles = visible_gpu_handles(pynvml)
    try:
        for handle in handles:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError:  # pre-Volta GPUs have no energy counter
        handles = []
    if not handles:
        pynvml.nvmlShutdown()
        return None
    return NvmlMeter(pynvml, handles)
