"""Wanda (Sun et al., 2023; locuslab/wanda): score |W_ij| · ‖X_j‖₂, the weight times the norm of its input feature
over the calibration tokens, and compare within each output row (unstructured) or each N:M group. No weight update.
"""

from __future__ import annotations

import torch

from joulebench.cells import Pruning
from joulebench.prune.base import PRUNERS, LayerStatistics, Pruner, keep_mask


class InputNorms:
    """Running Σ x_j² over every calibration token for each input feature j of one layer."""

    def __init__(self, layer: torch.nn.Linear) -> None:
        self.squares = torch.zeros(layer.in_features, dtype=torch.float32, device=layer.weight.device)
        self.tokens = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        self.squares += inputs.float().pow(2).sum(dim=0)
        self.tokens += inputs.shape[0]

    def norms(self) -> torch.Tensor:
        return self.squares.sqrt()


@PRUNERS.register("wanda")
class Wanda(Pruner):
    calibrated = True

    def statistics(self, layer: torch.nn.Linear) -> LayerStatistics:
        return InputNorms(layer)

    def prune(self, layer: torch.nn.Linear, setting: Pruning, statistics: LayerStatistics | None,
              fixed: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        if not isinstance(statistics, InputNorms) or statistics.tokens == 0:
            raise ValueError("Wanda needs the layer's calibration inputs")
        scores = layer.weight.detach().float().abs() * statistics.norms().unsqueeze(0)
        return keep_mask(scores, setting, per_row=True, fixed=fixed)
