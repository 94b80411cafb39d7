"""SparseGPT (Frantar & Alistarh, 2023; IST-DASLab/sparsegpt): prune column by column with the inverse Hessian of
the layer's reconstruction error, H = 2XXᵀ over the calibration tokens, and update the remaining weights to
compensate. Masks are chosen per block of columns (adaptive), or per N:M group as the sweep reaches it. A fixed mask
(the zeros sparse training reached) goes into the sweep: those weights are pruned first, and their removal is
compensated like any other's, rather than zeroed afterwards over weights the sweep had just updated.
"""

from __future__ import annotations

import math

import torch

from joulebench.cells import Pruning
from joulebench.prune.base import PRUNERS, LayerStatistics, Pruner

BLOCK_SIZE = 128
DAMPING = 0.01  # share of the mean Hessian diagonal added to it, as in the reference implementation


class Hessian:
    """Running H = 2/N · Σ x xᵀ over the N calibration tokens of one layer."""

    def __init__(self, layer: torch.nn.Linear) -> None:
        columns = layer.in_features
        self.sum = torch.zeros(columns, columns, dtype=torch.float32, device=layer.weight.device)
        self.tokens = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        x = inputs.float()
        self.sum += x.T @ x
        self.tokens += x.shape[0]

    def matrix(self) -> torch.Tensor:
        return self.sum * (2 / self.tokens)


@PRUNERS.register("sparsegpt")
class SparseGPT(Pruner):
    calibrated = True

    def statistics(self, layer: torch.nn.Linear) -> LayerStatistics:
        return Hessian(layer)

    @torch.no_grad()
    def prune(self, layer: torch.nn.Linear, setting: Pruning, statistics: LayerStatistics | None,
              fixed: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        if not isinstance(statistics, Hessian) or statistics.tokens == 0:
            raise ValueError("SparseGPT needs the layer's calibration inputs")
        weight = layer.weight.detach().float().clone()
        pruned = sparsegpt_sweep(weight, statistics.matrix(), setting, fixed)
        layer.weight.data.copy_(weight.to(layer.weight.dtype))
        return ~pruned


def inverse_hessian_cholesky(hessian: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of H⁻¹ after damping; inputs that never fire (zero diagonal) get their weights zeroed."""
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1
    weight[:, dead] = 0
    hessian += DAMPING * torch.mean(torch.diag(hessian)) * torch.eye(len(hessian), device=hessian.device)
    try:
        factor = torch.linalg.cholesky(hessian)
    except torch.linalg.LinAlgError as error:
        raise ValueError(f"SparseGPT: the damped Hessian is not positive definite ({error})") from None
    return torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True)


def sparsegpt_sweep(
    weight: torch.Tensor, hessian: torch.Tensor, setting: Pruning, fixed: torch.Tensor | None = None
) -> torch.Tensor:
    """Prune `weight` (float32, rows × columns) in place; return the boolean mask of pruned weights. `fixed` weights
    are pruned whatever their saliency and count towards each block's share (unstructured) or group's M − N."""
    rows, columns = weight.shape
    fixed = torch.zeros_like(weight, dtype=torch.bool) if fixed is None else fixed.to(weight.device)
    if setting.is_nm and columns % setting.m:
        raise ValueError(f"N:M pruning needs in_features divisible by M={setting.m}, got {columns}")
    hinv = inverse_hessian_cholesky(hessian, weight)
    block_size = BLOCK_SIZE if not setting.is_nm else setting.m * math.ceil(BLOCK_SIZE / setting.m)
    drop_per_group = setting.m - setting.n
    pruned = torch.zeros_like(weight, dtype=torch.bool)
    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        block = weight[:, start:end].clone()
        errors = torch.zeros_like(block)
        hinv_block = hinv[start:end, start:end]
        diagonal = torch.diag(hinv_block)
        held = fixed[:, start:end]
        mask = held.clone()
        if not setting.is_nm:
            saliency = (block.pow(2) / diagonal.pow(2).unsqueeze(0)).masked_fill(held, -math.inf)
            drop = max(round(saliency.numel() * setting.ratio), int(held.sum()))
            if drop:
                mask.view(-1)[saliency.flatten().topk(drop, largest=False).indices] = True
        for i in range(end - start):
            if setting.is_nm and i % setting.m == 0:
                group = block[:, i : i + setting.m].pow(2) / diagonal[i : i + setting.m].pow(2).unsqueeze(0)
                group = group.masked_fill(held[:, i : i + setting.m], -math.inf)
                mask.scatter_(1, i + group.topk(drop_per_group, dim=1, largest=False).indices, True)
            column = block[:, i]
            kept = torch.where(mask[:, i], torch.zeros_like(column), column)
            error = (column - kept) / hinv_block[i, i]
            block[:, i:] -= error.unsqueeze(1) @ hinv_block[i, i:].unsqueeze(0)
            block[:, i] = kept
            errors[:, i] = error
        weight[:, start:end] = block
        pruned[:, start:end] = mask
        weight[:, end:] -= errors @ hinv[start:end, end:]
    return pruned
