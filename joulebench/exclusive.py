"""Measured windows never overlap: a job holds one machine-wide lock from its idle baseline to its last window.

CPU and RAM counters (RAPL, CodeCarbon) and a shared GPU are machine-wide, and even a per-process estimate moves
when another job competes for the same cores and memory bandwidth. The workflow schedules measured jobs one at a
time (the `energy_window` resource, limit 1 unless the command line raises it), but a second Snakemake run, another
executor or a hand-started job would not know that. So every measured job also takes an exclusive `flock` on one
file per machine before its idle baseline, and releases it after its last window: whatever starts the jobs, their
measured windows never overlap on one machine. Only `energy.allow_overlap: true` skips the lock, and the figures are
then labelled "(shared)".

The lock file is `/tmp/joulebench-energy.lock` (node-local, so jobs of one SLURM node wait for each other and jobs of
different nodes do not); `JOULEBENCH_ENERGY_LOCK` names another, e.g. where `/tmp` is private to each job.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOCK_ENV = "JOULEBENCH_ENERGY_LOCK"
DEFAULT_LOCK = "/tmp/joulebench-energy.lock"


@dataclass
class MeasuredSpan:
    """Whether the job's measurement held the machine alone, how long it waited for that, and when it held it."""

    exclusive: bool
    lock: str
    waited_s: float
    held_from_utc: float  # Unix time the lock was taken (the measurement began)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lock_path() -> Path:
    return Path(os.environ.get(LOCK_ENV, DEFAULT_LOCK))


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:  # created by another user: a read-only descriptor can hold a flock too
        return os.open(path, os.O_RDONLY)


@contextlib.contextmanager
def exclusive_measurement(allow_overlap: bool) -> Iterator[MeasuredSpan]:
    """Hold the machine's measurement lock for the block (unless overlap is allowed)."""
    if allow_overlap:
        yield MeasuredSpan(False, "", 0.0, time.time())
        return
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = _open(path)
    try:
        began = time.perf_counter()
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield MeasuredSpan(True, str(path), time.perf_counter() - began, time.time())
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)
