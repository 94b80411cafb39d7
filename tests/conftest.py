from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The real SAF splits sit in ../shared beside the checkout; JOULEBENCH_SAF_DIR points elsewhere.
SAF_DIR = Path(os.environ.get("JOULEBENCH_SAF_DIR", ROOT.parent / "shared" / "data" / "saf" / "hf_v3_equivalent"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def benchmark_module(name: str) -> Any:
    """A script of benchmarks/ (not a package) imported by its path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeMeter:
    """Replays a fixed sequence of cumulative readings: tuples (time, cpu, gpu, ram) in kWh."""

    name = "fake"

    def __init__(self, readings, sources=None):
        self.readings = list(readings)
        self.sources = sources or {"cpu": "fake", "gpu": "fake", "ram": "fake"}
        self.started = self.stopped = False

    def start(self):
        self.started = True

    def read(self):
        from joulebench.energy import Reading

        time_s, cpu, gpu, ram = self.readings.pop(0)
        return Reading(time_s, {"cpu": cpu, "gpu": gpu, "ram": ram})

    def stop(self):
        self.stopped = True


class CountingMeter(FakeMeter):
    """A meter whose counters advance by a fixed amount on every reading, for code that reads it many times."""

    def __init__(self, step_kwh: float = 1e-6):
        super().__init__([])
        self.step_kwh = step_kwh
        self.count = 0

    def read(self):
        from joulebench.energy import Reading

        self.count += 1
        value = self.count * self.step_kwh
        return Reading(float(self.count), {"cpu": value, "gpu": 0.0, "ram": value})


def fake_monitor(meter, carbon_kg_per_kwh: float = 0.5, pue: float = 1.0):
    from joulebench.energy import EnergyMonitor

    return EnergyMonitor([meter], carbon_kg_per_kwh, pue, "machine", sleep=lambda seconds: None)
