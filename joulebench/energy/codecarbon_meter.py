"""CodeCarbon's offline tracker as a meter, read between its periodic samples."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from joulebench.energy.core import MACHINE_WIDE, METERS, PROCESS, EnergySettings, Reading
from joulebench.energy.nvml import gpu_scope, visible_nvml_indices


@METERS.register("codecarbon")
class CodeCarbonMeter:
    """CodeCarbon keeps cumulative per-component energy that its scheduler advances every `measure_power_secs`; a
    reading first forces a fresh sample so a window edge is not up to one interval stale. PUE is applied to
    emissions by the monitor, so CodeCarbon runs with PUE 1.

    Forcing a sample from the job's thread would race CodeCarbon's own sampling thread (a `threading.Timer` calling
    `_measure_power_and_energy`): two measurements at once both read `_last_measured_time` and count the same
    interval twice, or one of them reads the totals half-advanced. So every call of that function goes through one
    lock: the scheduler's (which holds the bound method it was created with, so its `function` is replaced), the
    tracker's own calls from `start`/`stop` (through the instance attribute), and ours, which also takes the three
    totals under the lock, so a reading is one consistent snapshot. `_monitor_power` (the 1 s power sampler) is left
    alone: it touches neither the totals nor `_last_measured_time`, only per-device sample buffers and utilisation
    histories that CodeCarbon guards with locks of its own."""

    name = "codecarbon"

    def __init__(self, settings: EnergySettings, tracker: Any | None = None) -> None:
        """`tracker` is for tests; by default an offline tracker is built from `settings`."""
        if tracker is None:
            tracker = self.prewarm(settings)
        self._tracker = tracker
        self._lock = threading.RLock()  # re-entrant: a locked measurement may be asked for from inside another
        self._measure: Callable[[], None] = tracker._measure_power_and_energy
        self._serialize_measurements()
        self.sources, self.scopes = self._components(settings.tracking_mode)

    @staticmethod
    def prewarm(settings: EnergySettings) -> Any:
        """An offline tracker for `settings` with its hardware detected. CodeCarbon keeps what it detected for the
        life of the process (keyed by these settings), so a call on a background thread while the job imports its
        libraries lets the meter built later skip the detection (py-cpuinfo's CPUID subprocess: over a second)."""
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        tracker = OfflineEmissionsTracker(
            country_iso_code=settings.country_iso_code,
            region=settings.region,
            measure_power_secs=settings.measure_power_secs,
            pue=1.0,
            tracking_mode=settings.tracking_mode,
            gpu_ids=visible_nvml_indices(),
            save_to_file=False,
            log_level="error",
            allow_multiple_runs=True,
        )
        tracker._ensure_hardware_ready()
        return tracker

    def _serialize_measurements(self) -> None:
        def locked_measure() -> None:
            with self._lock:
                self._measure()

        self._tracker._measure_power_and_energy = locked_measure
        scheduler = getattr(self._tracker, "_scheduler", None)
        if scheduler is not None:
            scheduler.function = locked_measure

    def start(self) -> None:
        self._tracker.start()

    def read(self) -> Reading:
        tracker = self._tracker
        with self._lock:
            self._measure()
            return Reading(
                time.perf_counter(),
                {
                    "cpu": float(tracker._total_cpu_energy.kWh),
                    "gpu": float(tracker._total_gpu_energy.kWh),
                    "ram": float(tracker._total_ram_energy.kWh),
                },
            )

    def stop(self) -> None:
        self._tracker.stop()

    def _components(self, tracking_mode: str) -> tuple[dict[str, str], dict[str, str]]:
        """Source tags and scopes. Only RAPL and NVML are readings of energy counters; CodeCarbon's other modes are
        models. `tracking_mode: process` attributes to the process only what CodeCarbon models from the process (its
        CPU time in CPU-load mode, its memory for RAM); a RAPL reading is the whole package's whatever the mode, and
        the constant mode a share of the TDP."""
        own = PROCESS if tracking_mode == "process" else MACHINE_WIDE
        if getattr(self._tracker, "_force_ram_power", None) is not None:
            sources, scopes = {"ram": "constant"}, {"ram": MACHINE_WIDE}
        else:
            sources, scopes = {"ram": "codecarbon-estimate"}, {"ram": own}
        for hardware in self._tracker._hardware:
            kind = type(hardware).__name__
            mode = str(getattr(hardware, "_mode", "")).lower()
            if kind == "CPU":
                if "rapl" in mode:
                    sources["cpu"], scopes["cpu"] = "codecarbon-rapl", MACHINE_WIDE
                elif mode == "constant":
                    sources["cpu"], scopes["cpu"] = "constant", MACHINE_WIDE
                else:
                    sources["cpu"], scopes["cpu"] = "codecarbon-estimate", own
            elif kind == "GPU" and getattr(hardware, "gpu_ids", None) != []:  # [] : CUDA_VISIBLE_DEVICES is empty
                sources["gpu"], scopes["gpu"] = "codecarbon-nvml", gpu_scope()
        return sources, scopes
