"""Post-training pruning of the decoder's linear layers: one module per method, registered in `PRUNERS`.

Pruned weights stay in dense tensors unless `joulebench.sparse_kernels` packs a 2:4 model for sparse tensor cores:
dense kernels multiply zeros like any other number, so there pruning changes quality and nothing about speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from joulebench.cells import Pruning
from joulebench.prune import magnitude, sparsegpt, wanda  # noqa: F401  (registers the methods)
from joulebench.prune.base import PRUNERS, Pruner, check_setting, keep_mask, nm_keep_mask, prunable_linears
from joulebench.prune.calibration import CalibrationSettings, calibration_windows, language_model_loss
from joulebench.prune.sequential import calibrate_block, decoder_blocks, first_block_inputs, next_block_inputs
from joulebench.prune.verify import MaskCheck, MaskLost, PrunedPositions, check_masks

__all__ = [
    "PRUNERS", "CalibrationSettings", "MaskCheck", "MaskLost", "PruneReport", "PrunedPositions", "Pruner",
    "calibration_windows", "check_masks", "check_setting", "keep_mask", "language_model_loss",
    "nm_keep_mask", "prunable_linears", "prune_model",
]  # fmt: skip


@dataclass
class PruneReport:
    method: str
    label: str
    requested: float
    achieved: float
    layers: dict[str, float]
    checks: list[MaskCheck] = field(default_factory=list)
    calibration_tokens: int = 0
    seconds: float = 0.0
    scored_on: str = ""  # the weights the pruner scored and calibrated on: float, or as stored (e.g. "nf4")

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "label": self.label, "requested": self.requested, "achieved": self.achieved,
            "layers": self.layers, "checks": [check.to_dict() for check in self.checks],
            "calibration_tokens": self.calibration_tokens, "seconds": self.seconds, "scored_on": self.scored_on,
        }  # fmt: skip

    def add_check(self, check: MaskCheck) -> None:
        """A later step's check; the sparsity reported is the last step's (what is stored)."""
        self.checks.append(check)
        self.achieved, self.layers = check.achieved, check.layers


@torch.no_grad()
def prune_model(
    model: torch.nn.Module,
    setting: Pruning,
    calibration: torch.Tensor | None = None,
    batch_size: int = 8,
    fixed: Mapping[str, torch.Tensor] | None = None,
    stored: Callable[[torch.Tensor], torch.Tensor] | None = None,
    stored_label: str = "",
) -> tuple[PruneReport, PrunedPositions]:
    """Prune every linear layer of the decoder blocks in place. Calibrated methods need `calibration` token windows
    and go block by block, each block seeing the inputs the already-pruned blocks before it produce. `fixed` maps a
    layer to its keep-mask from sparse training: those zeros go into the pruner (SparseGPT compensates for them).
    `stored` is the round trip of a weight through the format the model will be stored in (`stored_label`): the
    weights are scored as stored, and each pruned block is stored before it computes the next block's inputs, so the
    pruner calibrates on the model that will be served rather than on its float precursor."""
    began = time.perf_counter()
    pruner = PRUNERS.get(setting.method)()
    pruner.check(setting)
    layers = dict(prunable_linears(model))
    positions = PrunedPositions()

    def store(names: Iterable[str]) -> None:
        if stored is not None:
            for name in names:
                layers[name].weight.copy_(stored(layers[name].weight))

    store(layers)
    pruner.begin(layers, setting)

    def apply(name: str, keep: torch.Tensor) -> None:
        layer = layers[name]
        layer.weight.mul_(keep.to(layer.weight.dtype))
        positions.add(name, keep)
        store([name])

    def must_prune(name: str) -> torch.Tensor | None:
        return None if fixed is None or name not in fixed else ~fixed[name]

    tokens = 0
    if pruner.calibrated:
        if calibration is None:
            raise ValueError(f"pruning {setting.label} needs calibration text")
        model.eval()
        tokens = calibration.numel()
        prefix, blocks = decoder_blocks(model)
        batches = first_block_inputs(model, blocks, calibration, batch_size)
        for index, block in enumerate(blocks):
            own = {name: layer for name, layer in layers.items() if name.startswith(f"{prefix}.{index}.")}
            statistics = calibrate_block(block, batches, own, pruner.statistics)
            for name, layer in own.items():
                apply(name, pruner.prune(layer, setting, statistics[name], must_prune(name)))
            batches = next_block_inputs(block, batches)
        outside = sorted(set(layers) - {name for name in layers if name.startswith(f"{prefix}.")})
        if outside:
            raise ValueError(f"pruning {setting.label}: layers outside {prefix} cannot be calibrated: {outside[:3]}")
    else:
        for name, layer in layers.items():
            apply(name, pruner.prune(layer, setting, None, must_prune(name)))
    check = check_masks(model, positions, setting, "pruned")
    report = PruneReport(
        setting.method, setting.label, setting.requested_sparsity, check.achieved, check.layers, [check], tokens,
        time.perf_counter() - began, stored_label if stored is not None else _dtype_name(model),
    )
    return report, positions


def _dtype_name(model: torch.nn.Module) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")
