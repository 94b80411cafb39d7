"""Layer-by-layer calibration, as in Wanda and SparseGPT: capture the inputs of the first decoder block on the
calibration windows, then for each block in turn collect its linear layers' inputs, prune them, and run the pruned
block to produce the next block's inputs, so every block is calibrated on what the already-pruned model computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

BLOCK_LIST_NAMES = ("layers", "h", "blocks")


class _Captured(Exception):
    pass


@dataclass
class BlockInputs:
    """One calibration batch at the entrance of a block: its hidden states and the keyword arguments the model
    passes every block (attention mask, rotary position embeddings, ...)."""

    hidden: torch.Tensor
    kwargs: dict[str, Any] = field(default_factory=dict)


def decoder_blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The model's list of transformer blocks and its name (e.g. `model.layers` for Llama and Gemma)."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in BLOCK_LIST_NAMES:
            return name, module
    raise ValueError(f"{type(model).__name__}: found no list of decoder blocks named {' or '.join(BLOCK_LIST_NAMES)}")


@torch.no_grad()
def first_block_inputs(
    model: torch.nn.Module, blocks: torch.nn.ModuleList, windows: torch.Tensor, batch_size: int
) -> list[BlockInputs]:
    captured: list[BlockInputs] = []

    def capture(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append(BlockInputs(hidden.detach(), kwargs))
        raise _Captured

    handle = blocks[0].register_forward_pre_hook(capture, with_kwargs=True)
    device = next(model.parameters()).device
    try:
        for batch in windows.split(batch_size):
            try:
                model(input_ids=batch.to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    return captured


def run_block(block: torch.nn.Module, inputs: BlockInputs) -> torch.Tensor:
    output = block(inputs.hidden, **inputs.kwargs)
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def calibrate_block(
    block: torch.nn.Module,
    batches: list[BlockInputs],
    layers: dict[str, torch.nn.Linear],
    make_statistics: Callable[[torch.nn.Linear], Any],
) -> dict[str, Any]:
    """Run the block on every batch and give each of its `layers` the inputs it saw."""
    statistics = {name: make_statistics(layer) for name, layer in layers.items()}

    def collect(name: str) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, args: tuple[torch.Tensor, ...], _output: Any) -> None:
            inputs = args[0]
            statistics[name].add_batch(inputs.reshape(-1, inputs.shape[-1]).detach())

        return hook

    handles = [layer.register_forward_hook(collect(name)) for name, layer in layers.items()]
    try:
        for inputs in batches:
            run_block(block, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return statistics


@torch.no_grad()
def next_block_inputs(block: torch.nn.Module, batches: list[BlockInputs]) -> list[BlockInputs]:
    return [BlockInputs(run_block(block, inputs), inputs.kwargs) for inputs in batches]
