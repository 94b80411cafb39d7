"""CodeCarbon's offline tracker as a meter, read between its periodic samples."""

from __future__ import annotations

import logging
import time

from joulebench.energy.core import METERS, EnergySettings, Reading


@METERS.register("codecarbon")
class CodeCarbonMeter:
    """CodeCarbon keeps cumulative per-component energy that its scheduler advances every `measure_power_secs`; a
    reading first forces a fresh sample so a window edge is not up to one interval stale. PUE is applied to
    emissions by the monitor, so CodeCarbon runs with PUE 1."""

    name = "codecarbon"

    def __init__(self, settings: EnergySettings) -> None:
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self._tracker = OfflineEmissionsTracker(
            country_iso_code=settings.country_iso_code,
            region=settings.region,
            measure_power_secs=settings.measure_power_secs,
            pue=1.0,
            tracking_mode=settings.tracking_mode,
            save_to_file=False,
            log_level="error",
            allow_multiple_runs=True,
        )
        self._tracker._ensure_hardware_ready()
        self.sources = self._component_sources()

    def start(self) -> None:
        self._tracker.start()

    def read(self) -> Reading:
        tracker = self._tracker
        tracker._measure_power_and_energy()
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

    def _component_sources(self) -> dict[str, str]:
        """Only RAPL and NVML are readings of energy counters; CodeCarbon's other modes are models."""
        sources = {"ram": "codecarbon-estimate"}
        for hardware in self._tracker._hardware:
            kind = type(hardware).__name__
            mode = str(getattr(hardware, "_mode", "")).lower()
            if kind == "CPU":
                if "rapl" in mode:
                    sources["cpu"] = "codecarbon-rapl"
                elif mode == "constant":
                    sources["cpu"] = "constant"
                else:
                    sources["cpu"] = "codecarbon-estimate"
            elif kind == "GPU":
                sources["gpu"] = "codecarbon-nvml"
        return sources
