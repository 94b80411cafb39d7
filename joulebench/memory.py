"""Peak memory of a phase: GPU allocator peak on CUDA, else the process's peak resident set (VmHWM)."""

from __future__ import annotations

import resource
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        _CLEAR_REFS.write_text("5")  # Linux ≥ 4.0: resets VmHWM to the current RSS
    except OSError:
        pass


def peak_mb() -> tuple[float, str]:
    """The peak since the last reset, in MiB, and what was measured."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda-allocated"
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "process-rss"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process-rss-lifetime"
