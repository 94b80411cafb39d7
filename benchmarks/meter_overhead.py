"""How much CPU the energy meters themselves use while they sample (issue 3: at most 1 % of one core).

Runs the configured meters in an otherwise idle process for `--seconds`, and reports the process's CPU time over that
wall time (all threads: CodeCarbon's sampling scheduler, the RAPL poll) and the cost of one window-edge reading.
Usage: python benchmarks/meter_overhead.py [--config config.yaml] [--seconds 60]  (writes results/bench/)
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import yaml

from joulebench.energy import EnergySettings, open_monitor
from joulebench.io import atomic_write_json
from joulebench.jobs import cpu_model


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(energy: dict, seconds: float, reads: int) -> dict:
    monitor = open_monitor(energy)
    with monitor:
        time.sleep(2)  # let the meters' own start-up settle before timing the steady state
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        time.sleep(seconds)
        cpu1, wall1 = cpu_seconds(), time.perf_counter()
        began = time.perf_counter()
        for _ in range(reads):
            monitor.read()
        read_ms = (time.perf_counter() - began) / reads * 1000
    return {
        "meters": [meter.name for meter in monitor.meters],
        "sources": monitor.sources,
        "measure_power_secs": EnergySettings.from_config(energy).measure_power_secs,
        "seconds": wall1 - wall0,
        "cpu_seconds": cpu1 - cpu0,
        "core_percent_while_sampling": (cpu1 - cpu0) / (wall1 - wall0) * 100,
        "window_edge_read_ms": read_ms,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--out", default="results/bench/meter_overhead.json")
    args = parser.parse_args()
    energy = yaml.safe_load(Path(args.config).read_text())["energy"]
    result = measure(energy, args.seconds, args.reads)
    atomic_write_json(args.out, result)
    print(f"meters {result['meters']} sampling every {result['measure_power_secs']} s for {result['seconds']:.0f} s:")
    print(f"  CPU {result['cpu_seconds']:.3f} s = {result['core_percent_while_sampling']:.2f} % of one core")
    print(f"  one window-edge reading: {result['window_edge_read_ms']:.1f} ms")


if __name__ == "__main__":
    main()
