"""RAPL package and DRAM energy counters, read directly from the Linux powercap interface."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from joulebench.energy.core import JOULES_PER_KWH, MACHINE_WIDE, METERS, EnergySettings, Reading

POWERCAP = Path("/sys/class/powercap")
POLL_SECONDS = 5.0


@dataclass
class Counter:
    """One wrapping microjoule counter; `add` accumulates the increase since the last sample."""

    path: Path
    max_uj: int
    last_uj: int = 0
    total_uj: int = 0

    def sample(self) -> int:
        return int(self.path.read_text())

    def add(self, now_uj: int) -> None:
        self.total_uj += counter_delta(self.last_uj, now_uj, self.max_uj)
        self.last_uj = now_uj


def counter_delta(before_uj: int, after_uj: int, max_uj: int) -> int:
    """The increase of a counter that wraps to 0 after `max_uj` (at most one wrap between samples)."""
    if after_uj >= before_uj:
        return after_uj - before_uj
    return max_uj - before_uj + after_uj + 1


def find_zones(root: Path = POWERCAP) -> dict[str, list[Path]]:
    """Readable package zones (CPU) and their DRAM sub-zones (RAM)."""
    zones: dict[str, list[Path]] = {"cpu": [], "ram": []}
    for zone in sorted(root.glob("intel-rapl:*")):
        name_file, energy = zone / "name", zone / "energy_uj"
        try:
            name = name_file.read_text().strip()
            int(energy.read_text())
        except (OSError, ValueError):
            continue
        if name.startswith("package"):
            zones["cpu"].append(zone)
        elif name == "dram":
            zones["ram"].append(zone)
    return zones


class RaplMeter:
    """Sums the package (CPU) and DRAM (RAM) counters; a background poll every few seconds keeps long windows from
    missing a wrap-around (a counter can wrap within minutes at high power). A package counter counts every process
    on the package, so both figures are machine-wide, whatever CodeCarbon's tracking mode."""

    name = "rapl"

    def __init__(self, zones: dict[str, list[Path]], poll_seconds: float = POLL_SECONDS) -> None:
        self.counters = {
            component: [Counter(zone / "energy_uj", int((zone / "max_energy_range_uj").read_text())) for zone in paths]
            for component, paths in zones.items()
            if paths
        }
        self.sources = {component: "rapl" for component in self.counters}
        self.scopes = {component: MACHINE_WIDE for component in self.counters}
        self._poll_seconds = poll_seconds
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for counters in self.counters.values():
            for counter in counters:
                counter.last_uj = counter.sample()
        self._thread = threading.Thread(target=self._poll, name="rapl-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            self._update()

    def _update(self) -> None:
        with self._lock:  # re-entrant: `read` holds it already
            for counters in self.counters.values():
                for counter in counters:
                    counter.add(counter.sample())

    def read(self) -> Reading:
        """Sample, then sum under the same lock: the poll thread cannot advance one component between the two."""
        with self._lock:
            self._update()
            kwh = {c: sum(k.total_uj for k in ks) / 1e6 / JOULES_PER_KWH for c, ks in self.counters.items()}
            return Reading(time.perf_counter(), kwh)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


@METERS.register("rapl")
def rapl_meter(settings: EnergySettings) -> RaplMeter | None:
    zones = find_zones()
    return RaplMeter(zones) if zones["cpu"] or zones["ram"] else None
