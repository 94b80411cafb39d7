"""Magnitude pruning: drop the weights with the smallest |w|, per layer, over all layers (global), or N:M."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from joulebench.cells import Pruning
from joulebench.prune.base import PRUNERS, LayerStatistics, Pruner, keep_mask

BISECTION_STEPS = 64


@PRUNERS.register("magnitude")
class Magnitude(Pruner):
    supports_global = True

    def __init__(self) -> None:
        self.threshold: float | None = None

    def begin(self, layers: Mapping[str, torch.nn.Linear], setting: Pruning) -> None:
        if setting.scope == "global":
            self.threshold = global_threshold([layer.weight for layer in layers.values()], setting.ratio)

    def prune(self, layer: torch.nn.Linear, setting: Pruning, statistics: LayerStatistics | None,
              fixed: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        weight = layer.weight.detach()
        if self.threshold is not None:
            keep = weight.abs() > self.threshold
            return keep if fixed is None else keep & ~fixed.to(keep.device)
        return keep_mask(weight.abs(), setting, fixed=fixed)


@torch.no_grad()
def global_threshold(weights: list[torch.Tensor], ratio: float) -> float:
    """The |w| below which `ratio` of all weights lie, found by bisection: one counting pass per step, so no copy of
    all weights is ever made (an 8B model's magnitudes would not fit beside it)."""
    total = sum(w.numel() for w in weights)
    target = ratio * total
    low, high = 0.0, max(float(w.abs().max()) for w in weights)
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        below = sum(int((w.abs() <= middle).sum()) for w in weights)
        if below < target:
            low = middle
        else:
            high = middle
    return high
