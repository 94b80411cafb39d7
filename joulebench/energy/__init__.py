"""Energy measurement: windows (`core`), meters by registry (one module each), carbon intensity."""

# Importing the meter modules registers them.
from joulebench.energy import codecarbon_meter, nvml, rapl, zeus_meter  # noqa: E402, F401, I001
from joulebench.energy.core import (
    COMPONENTS,
    JOULES_PER_KWH,
    METERS,
    EnergyMonitor,
    EnergySettings,
    IdleBaseline,
    Meter,
    Reading,
    WindowEnergy,
    is_measured,
    measured,
    open_monitor,
    prewarm,
)

__all__ = [
    "COMPONENTS", "JOULES_PER_KWH", "METERS", "EnergyMonitor", "EnergySettings", "IdleBaseline", "Meter", "Reading",
    "WindowEnergy", "is_measured", "measured", "open_monitor", "prewarm",
]  # fmt: skip
