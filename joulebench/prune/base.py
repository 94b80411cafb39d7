"""What every pruner shares: the registry, the pruner interface, which layers are pruned, and score → mask rules.

A pruner scores each weight of a linear layer (higher = more worth keeping) and the shared rules below turn scores
into a keep-mask: N:M groups along the input dimension, or an unstructured share per layer or per output row.
Calibrated pruners (Wanda, SparseGPT) first see the layer's inputs on calibration text through `LayerStatistics`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import ClassVar, Protocol

import torch

from joulebench.cells import Pruning
from joulebench.registry import Registry


class LayerStatistics(Protocol):
    def add_batch(self, inputs: torch.Tensor) -> None:
        """Inputs of one forward pass through the layer, flattened to (tokens, in_features)."""


class Pruner:
    """One pruning method. Subclasses register with `@PRUNERS.register(name)` in a module of their own."""

    calibrated: ClassVar[bool] = False
    supports_global: ClassVar[bool] = False

    def check(self, setting: Pruning) -> None:
        if setting.scope == "global" and not self.supports_global:
            raise ValueError(f"pruning {setting.method} has no global scope")

    def begin(self, layers: Mapping[str, torch.nn.Linear], setting: Pruning) -> None:
        """Called once with every layer to be pruned, before any is pruned (e.g. for a global threshold)."""

    def statistics(self, layer: torch.nn.Linear) -> LayerStatistics:
        raise NotImplementedError(f"{type(self).__name__} needs no calibration")

    def prune(self, layer: torch.nn.Linear, setting: Pruning, statistics: LayerStatistics | None,
              fixed: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Return the boolean keep-mask of `layer.weight`; may also update the kept weights (SparseGPT does).
        `fixed` marks weights that must be pruned whatever their score (the zeros sparse training reached): they
        count towards the setting's share first, so a layer ends with max(setting, fixed) of its weights pruned in
        each group it is taken over."""
        raise NotImplementedError


PRUNERS: Registry[type[Pruner]] = Registry("pruning method")


@PRUNERS.register("none")
class KeepAll(Pruner):
    def prune(self, layer: torch.nn.Linear, setting: Pruning, statistics: LayerStatistics | None,
              fixed: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        keep = torch.ones_like(layer.weight, dtype=torch.bool)
        return keep if fixed is None else keep & ~fixed.to(keep.device)


def check_setting(setting: Pruning) -> None:
    """Refuse a setting its method cannot run, before any job starts."""
    try:
        pruner = PRUNERS.get(setting.method)
    except KeyError as error:
        raise ValueError(str(error).strip("'\"")) from None
    pruner().check(setting)


def prunable_linears(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Linear]]:
    """Linear layers inside the transformer blocks (those named `...layers.<i>...`); embeddings and the LM head are
    left dense, as in Wanda and SparseGPT."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}":
            yield name, module


def keep_mask(
    scores: torch.Tensor, setting: Pruning, per_row: bool = False, fixed: torch.Tensor | None = None
) -> torch.Tensor:
    """Keep the highest scores: the top N of every M along the input dimension, or all but the lowest `ratio`
    share of the layer (or, with `per_row`, of each output row). `fixed` weights are pruned first, and always."""
    if fixed is not None:
        fixed = fixed.to(scores.device)
        return _keep_mask(scores.float().masked_fill(fixed, -math.inf), setting, per_row) & ~fixed
    return _keep_mask(scores, setting, per_row)


def _keep_mask(scores: torch.Tensor, setting: Pruning, per_row: bool) -> torch.Tensor:
    if setting.is_nm:
        return nm_keep_mask(scores, setting.n, setting.m)
    if per_row:
        drop = round(scores.shape[1] * setting.ratio)
        mask = torch.ones_like(scores, dtype=torch.bool)
        if drop:
            mask.scatter_(1, scores.topk(drop, dim=1, largest=False).indices, False)
        return mask
    drop = round(scores.numel() * setting.ratio)
    mask = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if drop:
        mask[scores.flatten().topk(drop, largest=False).indices] = False
    return mask.view_as(scores)


def nm_keep_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every group of `m` consecutive input weights of a row, keep the `n` highest scores."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"N:M pruning needs in_features divisible by M={m}, got {cols}")
    groups = scores.reshape(rows, cols // m, m)
    keep = groups.topk(n, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True).reshape(rows, cols)
