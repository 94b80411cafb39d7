"""Sparse training during LoRA fine-tuning: the model reaches its sparsity while it learns, not after.

With LoRA the base weights are frozen, so sparsity is defined on what evaluation runs: the merged weight of every
prunable linear, W_eff = (W_base + s·B·A) ⊙ M with M a keep-mask. During training each prunable linear computes
exactly that (its `forward` is replaced), so the adapter learns to work around the weights it will lose; at
evaluation the adapter is merged and `apply_masks` zeroes the same weights. Masks are chosen by the magnitude of
the current W_eff, per layer, and only ever shrink: a pruned weight never comes back.

Methods (`SPARSE_TRAINERS`): `dense` does nothing; `gradual` prunes on the cubic schedule of Zhu & Gupta (2017);
`lottery` is iterative magnitude pruning with rewinding of the adapter (Frankle et al.).
"""

from __future__ import annotations

import io
import math
import types
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from joulebench.cells import SparseTraining
from joulebench.checkpoints import restore_trainable, trainable_state
from joulebench.io import atomic_write_bytes
from joulebench.registry import Registry
from joulebench.storage import float_weight

PEFT_PREFIX = "base_model.model."  # what get_peft_model puts before the base model's module names
MASK_BUFFER = "sparsity_keep_mask"  # non-persistent: follows the module across devices, never enters a checkpoint


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    return device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


def _autocast(state: tuple[str, bool, torch.dtype]) -> AbstractContextManager[None]:
    """Backward runs outside the caller's autocast block; re-enter the forward's, as torch.amp.custom_bwd does."""
    device_type, enabled, dtype = state
    return torch.autocast(device_type, dtype, enabled=enabled)


class _FrozenMaskedLinear(torch.autograd.Function):
    """x·(W ⊙ M)ᵀ + b for a frozen base layer. The dense masked weight is rebuilt in backward instead of being kept
    for it: kept, it would cost every prunable weight in float (eight times a 4-bit model) for the whole step."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: torch.nn.Module, keep: torch.Tensor) -> torch.Tensor:
        ctx.layer, ctx.keep, ctx.dtype, ctx.autocast = layer, keep, x.dtype, _autocast_state(x.device.type)
        bias = None if layer.bias is None else layer.bias.to(x.dtype)
        return F.linear(x, float_weight(layer).to(x.dtype) * keep, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None, None
        with _autocast(ctx.autocast):
            grad_x = grad @ (float_weight(ctx.layer) * ctx.keep).to(grad.dtype)
        return grad_x.to(ctx.dtype), None, None


class _MaskedLowRank(torch.autograd.Function):
    """x·((s·B·A) ⊙ M)ᵀ with gradients for x, A and B; (s·B·A) ⊙ M is rebuilt in backward, not kept, for the same
    reason as above. The mask on the product is what keeps the merged pruned weights zero."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float, keep: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(x, a, b)
        ctx.keep, ctx.scaling, ctx.autocast = keep, scaling, _autocast_state(x.device.type)
        return F.linear(x, ((b @ a) * scaling * keep).to(x.dtype))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, a, b = ctx.saved_tensors
        grad_x = grad_a = grad_b = None
        with _autocast(ctx.autocast):
            if ctx.needs_input_grad[0]:
                grad_x = (grad @ ((b @ a) * ctx.scaling * ctx.keep).to(grad.dtype)).to(x.dtype)
            if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
                outer = grad.reshape(-1, grad.shape[-1]).mT @ x.reshape(-1, x.shape[-1]).to(grad.dtype)
                outer = outer.to(a.dtype) * ctx.keep * ctx.scaling
                grad_a = (b.mT @ outer).to(a.dtype) if ctx.needs_input_grad[1] else None
                grad_b = (outer @ a.mT).to(b.dtype) if ctx.needs_input_grad[2] else None
        return grad_x, grad_a, grad_b, None, None


def _active_adapters(module: torch.nn.Module) -> list[str]:
    if module.disable_adapters or module.merged:
        return []
    return [name for name in module.active_adapters if name in module.lora_A]


def _masked_lora_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A LoRA linear computing x·((W_base + s·B·A) ⊙ M)ᵀ + b (the dropout, if any, on the LoRA input only)."""
    keep = getattr(self, MASK_BUFFER)
    out = _FrozenMaskedLinear.apply(x, self.get_base_layer(), keep)
    for name in _active_adapters(self):
        lora_x = self.lora_dropout[name](x).to(self.lora_A[name].weight.dtype)
        low_rank = _MaskedLowRank.apply(lora_x, self.lora_A[name].weight, self.lora_B[name].weight,
                                        self.scaling[name], keep)  # fmt: skip
        out = out + low_rank.to(out.dtype)
    return out


def _masked_linear_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _FrozenMaskedLinear.apply(x, self, getattr(self, MASK_BUFFER))


@torch.no_grad()
def effective_weight(module: torch.nn.Module) -> torch.Tensor:
    """W_base + Σ s·B·A in float32: the weight the merged model will hold."""
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer):
        return float_weight(module).float()
    weight = float_weight(module.get_base_layer()).float()
    for name in _active_adapters(module):
        weight = weight + module.get_delta_weight(name).float()
    return weight


def masked_linears(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """The outermost module of each prunable linear (the LoRA wrapper where there is one), named as in the merged
    model: the linears `joulebench.prune.base.prunable_linears` finds there, not the adapters' own A and B."""
    from peft.tuners.lora import LoraLayer

    wrapper = None
    for name, module in model.named_modules():
        if wrapper is not None and name.startswith(wrapper):
            continue
        merged = name.removeprefix(PEFT_PREFIX)
        if ".layers." not in f".{merged}":
            continue
        if isinstance(module, LoraLayer):
            wrapper = f"{name}."
            if isinstance(module.get_base_layer(), torch.nn.Linear):
                yield merged, module
        elif isinstance(module, torch.nn.Linear):
            yield merged, module


def _check_plain_lora(name: str, module: torch.nn.Module) -> None:
    """The masked forward implements vanilla LoRA; a variant (DoRA, ...) or a LoRA bias would be silently dropped."""
    for adapter in getattr(module, "lora_A", {}):
        if adapter in getattr(module, "lora_variant", {}) or getattr(module, "lora_bias", {}).get(adapter):
            raise ValueError(f"sparse training supports plain LoRA only; {name} has a LoRA variant or bias")
        if getattr(module, "fan_in_fan_out", False):
            raise ValueError(f"sparse training needs (out × in) linear weights; {name} is fan_in_fan_out")


def shrink_mask(keep: torch.Tensor, scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Drop the lowest scores until `sparsity` of the layer is pruned, choosing only among the weights still kept."""
    drop = max(round(keep.numel() * sparsity), int((~keep).sum()))
    scores = scores.masked_fill(~keep, -math.inf).flatten()
    new = torch.ones(keep.numel(), dtype=torch.bool, device=keep.device)
    if drop:
        new[scores.topk(drop, largest=False).indices] = False
    return new.view_as(keep)


def _sparsity(masks: dict[str, torch.Tensor]) -> float:
    total = sum(mask.numel() for mask in masks.values())
    return sum(int((~mask).sum()) for mask in masks.values()) / total if total else 0.0


def _pack(masks: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Bit-packed masks: one bit a weight, not a byte (an 8B model's masks take about 1 GB this way)."""
    return {name: {"bits": torch.from_numpy(np.packbits(mask.cpu().numpy().ravel())), "shape": list(mask.shape)}
            for name, mask in masks.items()}  # fmt: skip


def _unpack(packed: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
    masks = {}
    for name, entry in packed.items():
        count = math.prod(entry["shape"])
        bits = np.unpackbits(entry["bits"].numpy(), count=count).astype(bool)
        masks[name] = torch.from_numpy(bits).view(entry["shape"])
    return masks


def save_masks(masks: dict[str, torch.Tensor], path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(_pack(masks), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_masks(path: Path) -> dict[str, torch.Tensor]:
    return _unpack(torch.load(path, map_location="cpu", weights_only=True))


@torch.no_grad()
def apply_masks(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> float:
    """Zero the masked weights of a plain (merged, float) model in place; the achieved sparsity of those layers.
    Every name and shape is checked before any weight changes, so a mismatch leaves the model untouched."""
    layers = {}
    for name, mask in masks.items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"sparsity mask for layer {name}: the model has no such layer") from None
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, torch.Tensor) or not weight.dtype.is_floating_point:
            raise ValueError(f"sparsity mask for layer {name}: not a plain float linear layer (merge first)")
        if tuple(weight.shape) != tuple(mask.shape):
            raise ValueError(f"sparsity mask for layer {name}: shape {tuple(mask.shape)}, weight {tuple(weight.shape)}")
        layers[name] = weight
    zeros = total = 0
    for name, weight in layers.items():
        weight.mul_(masks[name].to(weight.device))
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / total if total else 0.0


class SparseTrainer:
    """One sparse-training method, told of every optimizer step and epoch by the training loop. The base class
    holds the masks; subclasses register with `@SPARSE_TRAINERS.register(name)` and decide when to prune."""

    masked: ClassVar[bool] = True

    def __init__(self, setting: SparseTraining, epochs: int, steps_per_epoch: int) -> None:
        self.setting = setting
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self._layers: dict[str, torch.nn.Module] = {}
        self._records: list[dict[str, Any]] = []

    @property
    def total_epochs(self) -> int:
        return self.epochs

    def attach(self, model: torch.nn.Module) -> None:
        """Give every prunable linear an all-keep mask and the masked forward; call after get_peft_model."""
        if not self.masked:
            return
        self._layers = dict(masked_linears(model))
        if not self._layers:
            raise ValueError("sparse training found no prunable linear layers (inside `.layers.` blocks)")
        for name, module in self._layers.items():
            _check_plain_lora(name, module)
            lora = hasattr(module, "get_base_layer")
            base = module.get_base_layer() if lora else module
            keep = torch.ones(base.out_features, base.in_features, dtype=torch.bool, device=base.weight.device)
            module.register_buffer(MASK_BUFFER, keep, persistent=False)
            forward: Callable[..., torch.Tensor] = _masked_lora_forward if lora else _masked_linear_forward
            module.forward = types.MethodType(forward, module)

    def after_step(self, model: torch.nn.Module, epoch: int, step: int) -> None:
        """After each optimizer step; `epoch` 1-based over `total_epochs`, `step` 1-based within the epoch."""

    def after_epoch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, loss: float) -> None:
        """At the end of each epoch, with its mean loss."""

    def masks(self) -> dict[str, torch.Tensor]:
        return {name: getattr(module, MASK_BUFFER).cpu() for name, module in self._layers.items()}

    def records(self) -> list[dict[str, Any]]:
        return [dict(record) for record in self._records]

    def sparsity(self) -> float:
        """Share of pruned weights over all masked layers."""
        return _sparsity(self.masks())

    def summary(self) -> dict[str, Any]:
        return {"method": self.setting.method, "label": self.setting.label, "target": self.setting.final_sparsity,
                "achieved": self.sparsity(), "records": self.records()}  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """What resuming after an epoch needs; only tensors, lists, numbers and strings (torch.load weights_only)."""
        return {"method": self.setting.method, "masks": _pack(self.masks()), "records": self.records()}

    def load_state_dict(self, state: dict[str, Any], model: torch.nn.Module) -> None:
        if state.get("method") != self.setting.method:
            raise ValueError(f"sparse training state of {state.get('method')!r} cannot resume {self.setting.method!r}")
        if not self.masked:
            return
        if not self._layers:
            self.attach(model)
        masks = _unpack(state["masks"])
        if set(masks) != set(self._layers):
            raise ValueError(f"sparse training state masks other layers: {sorted(set(masks) ^ set(self._layers))[:3]}")
        for name, module in self._layers.items():
            setattr(module, MASK_BUFFER, masks[name].to(getattr(module, MASK_BUFFER).device))
        self._records = [dict(record) for record in state["records"]]

    def prune_to(self, sparsity: float) -> None:
        """Shrink every layer's mask to `sparsity` by the magnitude of its current effective (merged) weight."""
        for module in self._layers.values():
            keep = getattr(module, MASK_BUFFER)
            setattr(module, MASK_BUFFER, shrink_mask(keep, effective_weight(module).abs(), sparsity))


SPARSE_TRAINERS: Registry[type[SparseTrainer]] = Registry("sparse training method")


@SPARSE_TRAINERS.register("dense")
class Dense(SparseTrainer):
    masked = False

    def masks(self) -> dict[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.setting.method}


@SPARSE_TRAINERS.register("gradual")
class Gradual(SparseTrainer):
    """Zhu & Gupta (2017): sparsity rises as s(t) = target·(1 − (1 − (t − t0)/(t1 − t0))³) over the global steps
    t0..t1, fast while the weights are redundant and slowly as they become few; the masks are updated every
    `every` steps and always at t1 (or at the last step, if training ends first), so training ends at `target`.
    One record a mask update: its epoch and step and the sparsity reached."""

    def __init__(self, setting: SparseTraining, epochs: int, steps_per_epoch: int) -> None:
        super().__init__(setting, epochs, steps_per_epoch)
        total = max(epochs * steps_per_epoch, 1)
        self.t1 = min(max(round(setting.end * total), round(setting.start * total) + 1), total)
        self.t0 = min(round(setting.start * total), self.t1 - 1)
        self._finished = False

    def scheduled(self, t: int) -> float:
        """The sparsity the schedule asks for at global step `t`."""
        if t <= self.t0:
            return 0.0
        if t >= self.t1:
            return self.setting.target
        return self.setting.target * (1 - (1 - (t - self.t0) / (self.t1 - self.t0)) ** 3)

    def after_step(self, model: torch.nn.Module, epoch: int, step: int) -> None:
        t = (epoch - 1) * self.steps_per_epoch + step
        if self._finished or t <= self.t0 or ((t - self.t0) % self.setting.every and t < self.t1):
            return
        self._update(epoch, step, self.scheduled(t))

    def after_epoch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, loss: float) -> None:
        if epoch >= self.epochs and not self._finished:  # fewer steps ran than steps_per_epoch promised
            self._update(epoch, self.steps_per_epoch, self.setting.target)

    def _update(self, epoch: int, step: int, sparsity: float) -> None:
        self.prune_to(sparsity)
        self._finished = sparsity >= self.setting.target
        self._records.append({"epoch": epoch, "step": step, "sparsity": self.sparsity()})

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "finished": self._finished}

    def load_state_dict(self, state: dict[str, Any], model: torch.nn.Module) -> None:
        super().load_state_dict(state, model)
        self._finished = bool(state["finished"])


@SPARSE_TRAINERS.register("lottery")
class Lottery(SparseTrainer):
    """Iterative magnitude pruning with rewinding (Frankle et al. 2019): run 0 trains `epochs` dense; after each run
    r < rounds, `rate` of the remaining weights of each layer are pruned, the adapter is rewound to its values after
    epoch `rewind_epoch` of run 0 (0: at attach) and the optimizer state is cleared; the last run trains with the
    final mask, at sparsity 1 − (1 − rate)^rounds. One record a run: its round, the epochs trained so far (all
    runs), the sparsity it trained at and the mean loss of its last epoch."""

    def __init__(self, setting: SparseTraining, epochs: int, steps_per_epoch: int) -> None:
        super().__init__(setting, epochs, steps_per_epoch)
        if setting.rewind_epoch > epochs:
            raise ValueError(f"sparse training lottery: rewind_epoch {setting.rewind_epoch} is after the last epoch "
                             f"({epochs}) of a run")  # fmt: skip
        self._snapshot: dict[str, torch.Tensor] | None = None

    @property
    def total_epochs(self) -> int:
        return (self.setting.rounds + 1) * self.epochs

    def round_sparsity(self, run: int) -> float:
        return 1 - (1 - self.setting.rate) ** run

    def attach(self, model: torch.nn.Module) -> None:
        super().attach(model)
        if self.setting.rewind_epoch == 0:
            self._snapshot = trainable_state(model)

    def snapshot(self) -> dict[str, torch.Tensor] | None:
        """The trainable weights each later run starts from (None until epoch `rewind_epoch` of run 0 ends)."""
        return self._snapshot

    def after_epoch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int, loss: float) -> None:
        run, within = divmod(epoch - 1, self.epochs)
        within += 1
        if run == 0 and within == self.setting.rewind_epoch:
            self._snapshot = trainable_state(model)
        if within != self.epochs:
            return
        self._records.append({"round": run, "epochs": epoch, "sparsity": self.sparsity(), "loss": loss})
        if run < self.setting.rounds:
            self.prune_to(self.round_sparsity(run + 1))
            if self._snapshot is None:
                raise RuntimeError("sparse training lottery: no rewind snapshot was taken")
            restore_trainable(model, self._snapshot)
            optimizer.state.clear()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "snapshot": self._snapshot}

    def load_state_dict(self, state: dict[str, Any], model: torch.nn.Module) -> None:
        super().load_state_dict(state, model)
        self._snapshot = state["snapshot"]
