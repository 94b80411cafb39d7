"""The GPUs' own total-energy counters (NVML, Volta or newer), for the GPUs this job really uses.

CUDA and NVML number the cards differently: CUDA puts the fastest card first unless CUDA_DEVICE_ORDER=PCI_BUS_ID,
NVML always goes by PCI bus id. An index in CUDA_VISIBLE_DEVICES is CUDA's, so reading it as NVML's may measure
another card. The meter therefore names every visible CUDA device by its UUID (the one name both agree on) and asks
NVML for the card with that UUID.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joulebench.energy.core import DEVICE, JOULES_PER_KWH, MACHINE_WIDE, METERS, EnergySettings, Reading

PCI_BUS_ID = "PCI_BUS_ID"
UUID_PREFIXES = ("GPU-", "MIG-")  # NVML's forms; CUDA_VISIBLE_DEVICES takes them too (or any unique prefix)


@dataclass(frozen=True)
class VisibleGpu:
    """One card the job uses, as NVML names it; `handle` is the card's (a MIG instance's parent: NVML has no energy
    counter per instance)."""

    handle: Any
    uuid: str  # the card's NVML UUID, "GPU-…"
    name: str
    nvml_index: int
    cuda: str  # the visible CUDA device it was found from: its CUDA_VISIBLE_DEVICES entry, or torch's ordinal
    matched_by: str  # "uuid", "torch", "pci-bus-order", "only-gpu", "unverified-index" or "all"
    mig_uuid: str = ""

    def record(self) -> dict[str, Any]:
        """For provenance (no handle)."""
        record: dict[str, Any] = {
            "uuid": self.uuid,
            "name": self.name,
            "nvml_index": self.nvml_index,
            "cuda": self.cuda,
            "matched_by": self.matched_by,
        }
        if self.mig_uuid:
            record["mig_uuid"] = self.mig_uuid
        return record


def cuda_torch() -> Any | None:
    """torch, where its CUDA is available: then its devices are exactly the ones this job computes on. None where
    torch is absent or has no usable CUDA (a CPU build, no driver)."""
    try:
        import torch

        return torch if torch.cuda.is_available() else None
    except Exception:  # no torch, or a CUDA that fails to start: fall back on CUDA_VISIBLE_DEVICES
        return None


def visible_gpus(
    nvml: Any, torch: Any | None = None, environ: Mapping[str, str] | None = None
) -> tuple[list[VisibleGpu], list[str]]:
    """The cards behind the job's CUDA devices, each once, and warnings about any that could not be matched for sure.

    With torch's CUDA, each device's UUID comes from torch (`get_device_properties(i).uuid`: bare hex, no prefix).
    Without it, CUDA_VISIBLE_DEVICES is read as CUDA reads it: UUID entries as given (a unique prefix is enough); index
    entries are NVML's only under CUDA_DEVICE_ORDER=PCI_BUS_ID (or on a one-GPU host), otherwise they are used with a
    warning. Unset, the job sees every GPU of the host."""
    environ = os.environ if environ is None else environ
    warnings: list[str] = []
    found: list[VisibleGpu] = []
    for cuda, handle, matched_by in _visible_handles(nvml, torch, environ, warnings):
        gpu = _describe(nvml, handle, cuda, matched_by, warnings)
        if gpu is None:
            continue
        if any(other.uuid == gpu.uuid for other in found):  # two MIG instances of one card: count the card once
            continue
        found.append(gpu)
    return found, warnings


def _visible_handles(
    nvml: Any, torch: Any | None, environ: Mapping[str, str], warnings: list[str]
) -> list[tuple[str, Any, str]]:
    """(CUDA device, NVML handle, how it was matched) for each visible CUDA device NVML knows."""
    count = int(nvml.nvmlDeviceGetCount())
    if torch is not None:
        handles = []
        for ordinal in range(torch.cuda.device_count()):
            uuid = str(torch.cuda.get_device_properties(ordinal).uuid)
            handle = _handle_by_uuid(nvml, uuid, count)
            if handle is None:
                warnings.append(f"CUDA device {ordinal} (UUID {uuid}) is not known to NVML: its energy is not counted")
            else:
                handles.append((str(ordinal), handle, "torch"))
        return handles
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [(str(i), nvml.nvmlDeviceGetHandleByIndex(i), "all") for i in range(count)]
    order = environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    handles = []
    for entry in (e.strip() for e in visible.split(",") if e.strip()):
        if entry.isdigit():
            index = int(entry)
            if index >= count:
                warnings.append(f"CUDA_VISIBLE_DEVICES entry {entry} is past NVML's {count} GPUs; CUDA stops there")
                break
            if order == PCI_BUS_ID:
                matched_by = "pci-bus-order"
            elif count == 1:
                matched_by = "only-gpu"
            else:
                matched_by = "unverified-index"
                warnings.append(
                    f"CUDA_VISIBLE_DEVICES entry {entry} was read as NVML's GPU {entry}, but CUDA_DEVICE_ORDER is "
                    f"{order} (CUDA's index may name another card) and torch's CUDA is not available to tell"
                )
            handles.append((entry, nvml.nvmlDeviceGetHandleByIndex(index), matched_by))
        elif entry.startswith(UUID_PREFIXES):
            handle = _handle_by_uuid(nvml, entry, count)
            if handle is None:
                warnings.append(f"CUDA_VISIBLE_DEVICES entry {entry} matches no GPU NVML knows; CUDA stops there")
                break
            handles.append((entry, handle, "uuid"))
        else:
            warnings.append(f"CUDA_VISIBLE_DEVICES entry {entry!r} is neither an index nor a UUID; CUDA stops there")
            break
    return handles


def _handle_by_uuid(nvml: Any, uuid: str, count: int) -> Any | None:
    """NVML's handle for a UUID in any of the forms CUDA gives or takes: "GPU-…", "MIG-…", the bare hex torch gives
    (a card's or a MIG instance's), the older "MIG-GPU-<card>/<gi>/<ci>" (taken as its card), or a unique prefix."""
    if uuid.startswith("MIG-GPU-"):
        uuid = uuid.removeprefix("MIG-").split("/")[0]
    candidates = [uuid] if uuid.startswith(UUID_PREFIXES) else [prefix + uuid for prefix in UUID_PREFIXES]
    for candidate in candidates:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(candidate)
        except nvml.NVMLError:
            continue
    matches = []
    for index in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        if any(_text(nvml.nvmlDeviceGetUUID(handle)).startswith(c) for c in candidates):
            matches.append(handle)
    return matches[0] if len(matches) == 1 else None


def _describe(nvml: Any, handle: Any, cuda: str, matched_by: str, warnings: list[str]) -> VisibleGpu | None:
    uuid = _text(nvml.nvmlDeviceGetUUID(handle))
    mig_uuid = ""
    if uuid.startswith("MIG-"):
        mig_uuid = uuid
        try:
            handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        except nvml.NVMLError:
            warnings.append(f"MIG instance {mig_uuid}: its card is not known to NVML, its energy is not counted")
            return None
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        warnings.append(
            f"MIG instance {mig_uuid}: NVML counts energy per card, so the GPU figure is the whole card {uuid}'s, "
            "every instance on it"
        )
    return VisibleGpu(
        handle=handle,
        uuid=uuid,
        name=_text(nvml.nvmlDeviceGetName(handle)),
        nvml_index=int(nvml.nvmlDeviceGetIndex(handle)),
        cuda=cuda,
        matched_by=matched_by,
        mig_uuid=mig_uuid,
    )


def gpu_scope(environ: Mapping[str, str] | None = None) -> str:
    """A job given GPUs of its own (CUDA_VISIBLE_DEVICES, from a gpu_slots claim or a scheduler) measures them; a job
    given none sees, and measures, every GPU of the host, which other jobs may be using too."""
    environ = os.environ if environ is None else environ
    return DEVICE if "CUDA_VISIBLE_DEVICES" in environ else MACHINE_WIDE


def visible_nvml_indices() -> list[int] | None:
    """NVML's indices of the cards this job uses, for CodeCarbon's `gpu_ids` (its GPU indices are NVML's: it reads
    index entries of CUDA_VISIBLE_DEVICES as NVML's, and misses "GPU-…" entries). None, leaving CodeCarbon to its
    own reading, where CUDA_VISIBLE_DEVICES is unset (every GPU) or NVML is absent."""
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no GPU, or no library
        return None
    try:
        gpus, _ = visible_gpus(pynvml, cuda_torch())
        return sorted({gpu.nvml_index for gpu in gpus})
    except Exception:  # an NVML call this driver lacks: CodeCarbon's own reading is the fallback
        return None
    finally:
        pynvml.nvmlShutdown()


class NvmlMeter:
    """Sums the total-energy counters of the given cards. `devices` (their UUIDs, names, NVML indices and how each was
    matched), `warnings` and `foreign_processes` go into the job's provenance."""

    name = "nvml"

    def __init__(
        self,
        nvml: Any,
        handles: list[Any],
        devices: list[dict[str, Any]] | None = None,
        scope: str = DEVICE,
        warnings: list[str] | None = None,
    ) -> None:
        self._nvml = nvml
        self._handles = handles
        self._start_mj: list[int] = []
        self.sources = {"gpu": "nvml-counter"}
        self.scopes = {"gpu": scope}
        self.devices = list(devices or [])
        self.warnings = list(warnings or [])
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


def build_nvml_meter(nvml: Any, torch: Any | None = None, environ: Mapping[str, str] | None = None) -> NvmlMeter | None:
    """The meter over an initialised NVML; None (NVML shut down again) when no visible card has an energy counter."""
    gpus, warnings = visible_gpus(nvml, torch, environ)
    handles = [gpu.handle for gpu in gpus]
    try:
        for handle in handles:
            nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except nvml.NVMLError:  # pre-Volta GPUs have no energy counter
        handles = []
    if not handles:
        nvml.nvmlShutdown()
        return None
    return NvmlMeter(nvml, handles, [gpu.record() for gpu in gpus], gpu_scope(environ), warnings)


@METERS.register("nvml")
def nvml_meter(settings: EnergySettings) -> NvmlMeter | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no GPU, or no library: the meter is simply absent
        return None
    try:
        return build_nvml_meter(pynvml, cuda_torch())
    except pynvml.NVMLError:  # a query this driver does not answer: no reading we could trust
        pynvml.nvmlShutdown()
        return None
