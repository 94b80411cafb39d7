"""Proof that the pruning mask survives every later step: casting to 16 bits, re-quantizing to 8 or 4 bits with
bitsandbytes, packing for sparse kernels. After each step every pruned weight must still be zero and every N:M
group must still hold at most N non-zeros; if not, the cell fails with the layer named."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from joulebench.cells import Pruning
from joulebench.prune.base import prunable_linears
from joulebench.storage import float_weight


class MaskLost(RuntimeError):
    pass


@dataclass
class MaskCheck:
    step: str
    achieved: float
    lost: int
    nm_violations: int
    layers: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PrunedPositions:
    """Which weights of each layer were pruned, bit-packed (an 8B model's masks take about 1 GB this way)."""

    def __init__(self) -> None:
        self._packed: dict[str, tuple[np.ndarray, tuple[int, ...]]] = {}

    def add(self, name: str, keep: torch.Tensor) -> None:
        self._packed[name] = (np.packbits((~keep).cpu().numpy().ravel()), tuple(keep.shape))

    def get(self, name: str) -> torch.Tensor:
        packed, shape = self._packed[name]
        count = int(np.prod(shape))
        return torch.from_numpy(np.unpackbits(packed, count=count).astype(bool)).view(shape)

    def __contains__(self, name: object) -> bool:
        return name in self._packed

    def __len__(self) -> int:
        return len(self._packed)


@torch.no_grad()
def check_masks(model: torch.nn.Module, pruned: PrunedPositions, setting: Pruning, step: str) -> MaskCheck:
    zeros = total = lost = violations = 0
    layers: dict[str, float] = {}
    first_problem = ""
    for name, layer in prunable_linears(model):
        weight = float_weight(layer).cpu()
        is_zero = weight == 0
        layer_zeros = int(is_zero.sum())
        layers[name] = layer_zeros / weight.numel()
        zeros += layer_zeros
        total += weight.numel()
        layer_lost = int((pruned.get(name) & ~is_zero).sum()) if name in pruned else 0
        layer_violations = nm_violations(~is_zero, setting.n, setting.m) if setting.is_nm else 0
        if (layer_lost or layer_violations) and not first_problem:
            first_problem = f"{name}: {layer_lost} pruned weights no longer zero, {layer_violations} N:M groups broken"
        lost += layer_lost
        violations += layer_violations
    check = MaskCheck(step, zeros / total if total else 0.0, lost, violations, layers)
    if first_problem:
        raise MaskLost(f"pruning mask did not survive '{step}' ({setting.label}): {first_problem}")
    return check


def nm_violations(nonzero: torch.Tensor, n: int, m: int) -> int:
    """Groups of M consecutive input weights holding more than N non-zeros."""
    rows, cols = nonzero.shape
    return int((nonzero.reshape(rows, cols // m, m).sum(-1) > n).sum())
