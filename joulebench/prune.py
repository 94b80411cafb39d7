"""Post-training pruning of the decoder's linear layers, by registry.

The pruned weights stay in dense tensors: on CPU and with dense kernels zeros are multiplied like any other number,
so pruning here changes quality and (after re-quantization) nothing about speed. Embeddings and the LM head are not
pruned, as in Wanda and SparseGPT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from joulebench.cells import Pruning
from joulebench.registry import Registry

Pruner = Callable[[torch.Tensor, Pruning], torch.Tensor]
"""Takes a weight (out_features × in_features) and returns the boolean mask of weights to keep."""

PRUNERS: Registry[Pruner] = Registry("pruning method")


@PRUNERS.register("none")
def keep_all(weight: torch.Tensor, setting: Pruning) -> torch.Tensor:
    return torch.ones_like(weight, dtype=torch.bool)


@PRUNERS.register("magnitude")
def magnitude_mask(weight: torch.Tensor, setting: Pruning) -> torch.Tensor:
    """Unstructured, per layer: drop the `ratio` share of weights with the smallest |w|."""
    count = int(round(weight.numel() * setting.ratio))
    if count == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    order = weight.abs().flatten().argsort()
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[order[:count]] = False
    return mask.view_as(weight)


@PRUNERS.register("nm")
def nm_mask(weight: torch.Tensor, setting: Pruning) -> torch.Tensor:
    """N:M along the input dimension: in every group of M consecutive weights keep the N largest |w|."""
    rows, cols = weight.shape
    if cols % setting.m:
        raise ValueError(f"N:M pruning needs in_features divisible by M={setting.m}, got {cols}")
    groups = weight.abs().reshape(rows, cols // setting.m, setting.m)
    keep = groups.topk(setting.n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(rows, cols)


def prunable_linears(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Linear]]:
    """Linear layers inside the transformer blocks (those named `...layers.<i>...`)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}":
            yield name, module


@dataclass
class PruneReport:
    method: str
    requested: float
    achieved: float
    layers: dict[str, float]

    def to_dict(self) -> dict[str, object]:
        return {"method": self.method, "requested": self.requested, "achieved": self.achieved, "layers": self.layers}


def requested_sparsity(setting: Pruning) -> float:
    if setting.method == "magnitude":
        return setting.ratio
    if setting.method == "nm":
        return 1 - setting.n / setting.m
    return 0.0


@torch.no_grad()
def prune_model(model: torch.nn.Module, setting: Pruning) -> PruneReport:
    pruner = PRUNERS.get(setting.method)
    for _name, layer in prunable_linears(model):
        layer.weight.mul_(pruner(layer.weight.data, setting).to(layer.weight.dtype))
    return measure_sparsity(model, setting)


@torch.no_grad()
def measure_sparsity(model: torch.nn.Module, setting: Pruning) -> PruneReport:
    zeros = total = 0
    layers: dict[str, float] = {}
    for name, layer in prunable_linears(model):
        layer_zeros = int((layer.weight == 0).sum())
        layers[name] = layer_zeros / layer.weight.numel()
        zeros += layer_zeros
        total += layer.weight.numel()
    return PruneReport(setting.method, requested_sparsity(setting), zeros / total if total else 0.0, layers)
