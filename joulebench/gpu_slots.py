"""One GPU per running job on a multi-GPU server, without a cluster scheduler.

Snakemake's `gpu` resource caps how many GPU jobs run at once (`resources: gpu=4` in the profile for four cards)
but does not say which card each job gets. Each job therefore claims the first free card itself: it takes an
exclusive lock on one lock file per card and sets CUDA_VISIBLE_DEVICES before CUDA starts. The lock lasts as long as
the job's process, so two running jobs never share a card. Where a scheduler already chose (SLURM sets
CUDA_VISIBLE_DEVICES), nothing is claimed.

Card numbers mean NVML's (nvidia-smi's, PCI bus) order: `pin_device_order` makes CUDA number them the same way, so
the index in CUDA_VISIBLE_DEVICES names the card the lock file and the energy meter mean.
"""

from __future__ import annotations

import fcntl
import glob
import os
import tempfile
from pathlib import Path
from typing import IO

_held: list[IO[str]] = []

CUDA_DEVICE_ORDER = "CUDA_DEVICE_ORDER"
PCI_BUS_ID = "PCI_BUS_ID"


def pin_device_order() -> str:
    """Make CUDA number the GPUs by PCI bus id, as NVML and nvidia-smi do, unless the user chose an order; returns the
    order in effect. CUDA's default puts the fastest card first, so on a host with mixed cards index 1 in
    CUDA_VISIBLE_DEVICES would be another card than NVML's 1. Call it before CUDA starts (before torch touches the
    GPU): CUDA reads the variable once."""
    return os.environ.setdefault(CUDA_DEVICE_ORDER, PCI_BUS_ID)


def gpus_present() -> int:
    """Cards the driver exposes, counted without starting CUDA (which would fix the visible devices too early)."""
    return len(glob.glob("/dev/nvidia[0-9]*"))


def default_lock_dir() -> Path:
    return Path(os.environ.get("JOULEBENCH_GPU_LOCKS", Path(tempfile.gettempdir()) / f"joulebench-gpus-{os.getuid()}"))


def claim_gpu(count: int | None = None, lock_dir: str | Path | None = None) -> int | None:
    """Claim a free card for this process and make it the only visible one; None if there is nothing to choose. The
    device order is pinned either way, so an index (ours or a scheduler's) means the same card to CUDA and NVML."""
    pin_device_order()
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return None
    count = gpus_present() if count is None else count
    if count == 0:
        return None
    lock_dir = Path(lock_dir) if lock_dir else default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        handle = open(lock_dir / f"gpu-{index}.lock", "w")  # noqa: SIM115 (held open for the process's life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
        return index
    raise RuntimeError(
        f"all {count} GPUs are held by other joulebench jobs: the profile's `gpu` resource is larger than the number "
        "of cards"
    )


def release_all() -> None:
    while _held:
        _held.pop().close()
