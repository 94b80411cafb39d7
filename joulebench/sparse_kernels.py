"""Running a 2:4-pruned model on sparse tensor cores, and saying plainly when a pruned model cannot be.

Zeros in a dense matrix are multiplied like any other number, so unstructured and N:M pruning other than 2:4 save
no time or energy with dense kernels. 2:4 patterns packed by `torch.sparse.to_sparse_semi_structured` run on the
sparse tensor cores of CUDA GPUs of compute capability 8.0 or newer (Ampere, Hopper) in float16 or bfloat16, and
even there mostly pay off at larger batch sizes (PyTorch's semi-structured sparsity tutorial).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from joulebench.cells import Pruning
from joulebench.models import Precision
from joulebench.prune import prunable_linears

DENSE_LABEL = "dense kernels — no speedup expected"
MIN_CAPABILITY = (8, 0)
SPARSE_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class KernelPlan:
    sparse: bool
    label: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_kernels(
    setting: Pruning, precision: Precision, enabled: bool = True, capability: tuple[int, int] | None = None
) -> KernelPlan | None:
    """How a cell's pruned model runs; None for an unpruned cell. `capability` is the GPU's (major, minor) compute
    capability, None without a CUDA GPU."""
    if setting.method == "none":
        return None
    if not setting.is_nm or (setting.n, setting.m) != (2, 4):
        return _dense(f"{setting.label} has no sparse kernel: only 2:4 runs on sparse tensor cores")
    if capability is None:
        return _dense("no CUDA GPU: 2:4 sparse kernels need one of compute capability 8.0 or newer")
    if capability < MIN_CAPABILITY:
        return _dense(f"GPU compute capability {capability[0]}.{capability[1]} < 8.0 has no sparse tensor cores")
    if precision.bits != 16:
        kind = "bitsandbytes kernels" if precision.quantized else "float32"
        return _dense(f"{precision.bits}-bit cells run {kind}, which have no 2:4 path; only float16/bfloat16 do")
    if not enabled:
        return _dense("sparse kernels are switched off (pruning.sparse_kernels: false)")
    backend = "cuSPARSELt" if _cusparselt_available() else "CUTLASS"
    return KernelPlan(True, f"2:4 semi-structured ({backend})", "")


def current_capability() -> tuple[int, int] | None:
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else None


def _dense(reason: str) -> KernelPlan:
    return KernelPlan(False, DENSE_LABEL, reason)


def _cusparselt_available() -> bool:
    backend = getattr(torch.backends, "cusparselt", None)
    return bool(backend is not None and backend.is_available())


@dataclass
class Conversion:
    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def min_shape(dtype: torch.dtype) -> tuple[int, int]:
    """Smallest (rows, columns) multiple the active semi-structured backend accepts for `dtype`."""
    from torch.sparse import (
        SparseSemiStructuredTensor,
        SparseSemiStructuredTensorCUSPARSELT,
        SparseSemiStructuredTensorCUTLASS,
    )

    cutlass = SparseSemiStructuredTensor._FORCE_CUTLASS or not _cusparselt_available()
    backend = SparseSemiStructuredTensorCUTLASS if cutlass else SparseSemiStructuredTensorCUSPARSELT
    constraint = backend._DTYPE_SHAPE_CONSTRAINTS[dtype]
    return constraint.sparse_min_rows, constraint.sparse_min_cols


@torch.no_grad()
def to_semi_structured(model: torch.nn.Module) -> Conversion:
    """Pack every eligible pruned linear weight for sparse tensor cores; others stay dense and are named."""
    from torch.sparse import to_sparse_semi_structured

    conversion = Conversion()
    for name, layer in prunable_linears(model):
        weight = layer.weight
        if weight.dtype not in SPARSE_DTYPES or not weight.is_cuda:
            conversion.skipped[name] = f"{weight.dtype} on {weight.device}"
            continue
        rows, cols = min_shape(weight.dtype)
        if weight.shape[0] % rows or weight.shape[1] % cols:
            conversion.skipped[name] = f"shape {tuple(weight.shape)} not a multiple of ({rows}, {cols})"
            continue
        layer.weight = torch.nn.Parameter(to_sparse_semi_structured(weight.contiguous()), requires_grad=False)
        conversion.converted.append(name)
    return conversion
