"""Training precision, an axis of its own beside storage bits: the dtype the trainable (master) weights and their
optimizer state are kept in, and the dtype the matmuls run in. Names and meanings follow PyTorch Lightning's
`precision` values: `32-true` (all float32), `bf16-mixed` / `16-mixed` (float32 master weights, matmuls autocast to
bfloat16 / float16, float16 with a dynamic loss scaler so small gradients do not flush to zero), `bf16-true` /
`16-true` (the trainable weights themselves in 16 bits, no float32 copy).

AdamW's default eps (1e-8) is below float16's smallest normal number (6.1e-5) and rounds to 0 there. LoRA's B starts
at 0, so A's first gradient is 0 and its first update 0 / (0 + 0): NaN. Lightning leaves the optimizer to the user;
here the optimizer of a `16-true` cell gets eps = 6.1e-5 (`adam_eps`), the smallest value float16 holds exactly, and
says so in `describe()`.

The frozen base keeps its storage precision (`bits`): at 16 bits its matmuls are 16-bit whatever the training
precision, at 4 and 8 bits bitsandbytes computes in its own compute dtype.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from joulebench.registry import Registry

ADAM_EPS = 1e-8  # torch.optim.AdamW's default
MATMULS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_scaled_dot_product_flash_attention_for_cpu",
           "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention"}  # fmt: skip


@dataclass(frozen=True)
class TrainingPrecision:
    name: str
    master_dtype: torch.dtype
    autocast_dtype: torch.dtype | None = None
    loss_scaling: bool = False

    def prepare(self, model: torch.nn.Module) -> None:
        """Keep the trainable weights in the master dtype (peft creates adapters in float32)."""
        for parameter in model.parameters():
            if parameter.requires_grad and parameter.dtype != self.master_dtype:
                parameter.data = parameter.data.to(self.master_dtype)

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager[None]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)

    def scaler(self, device_type: str) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(device_type) if self.loss_scaling else None

    @property
    def adam_eps(self) -> float:
        """AdamW's eps: the default 1e-8, or the master dtype's smallest normal number where 1e-8 is below it."""
        return max(ADAM_EPS, torch.finfo(self.master_dtype).tiny)

    def describe(self) -> dict[str, str | bool | float | None]:
        return {"name": self.name, "master_dtype": _name(self.master_dtype),
                "autocast_dtype": _name(self.autocast_dtype) if self.autocast_dtype else None,
                "loss_scaling": self.loss_scaling, "adam_eps": self.adam_eps}  # fmt: skip


TRAINING_PRECISIONS: Registry[TrainingPrecision] = Registry("training precision")


def _register(precision: TrainingPrecision) -> None:
    TRAINING_PRECISIONS.register(precision.name)(precision)


_register(TrainingPrecision("32-true", torch.float32))
_register(TrainingPrecision("bf16-mixed", torch.float32, torch.bfloat16))
_register(TrainingPrecision("16-mixed", torch.float32, torch.float16, loss_scaling=True))
_register(TrainingPrecision("bf16-true", torch.bfloat16))
_register(TrainingPrecision("16-true", torch.float16))


def backward_and_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """Backward and one optimizer step; with a loss scaler, on the scaled loss (a step whose gradients overflowed is
    skipped and the scale lowered)."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _MatmulDtypes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        name = func.overloadpacket.__name__
        if name in MATMULS:
            floats = [a.dtype for a in args if isinstance(a, torch.Tensor) and a.dtype.is_floating_point]
            self.counts["/".join(sorted({_name(d) for d in floats}))] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def matmul_dtypes() -> Iterator[Counter[str]]:
    """Count the matmuls that run inside the block by the float dtypes of their operands (e.g. {"bfloat16": 40,
    "float32": 2}): what autocast really did, forward and backward, not what was asked of it."""
    mode = _MatmulDtypes()
    with mode:
        yield mode.counts
