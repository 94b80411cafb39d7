"""Calibration text for the activation-aware pruners, drawn from the task's own training split.

As Wanda and SparseGPT draw fixed-length windows from C4, we draw `samples` windows of `seq_len` tokens from the
training examples (prompt and target, as the model sees them in fine-tuning), shuffled with `seed`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from joulebench.data import Example
from joulebench.finetune import encode_supervised


@dataclass(frozen=True)
class CalibrationSettings:
    samples: int = 32
    seq_len: int = 128
    seed: int = 0
    batch_size: int = 8

    @classmethod
    def from_config(cls, calibration: dict[str, Any]) -> CalibrationSettings:
        return cls(**calibration)


def calibration_windows(examples: Sequence[Example], tokenizer: Any, settings: CalibrationSettings) -> torch.Tensor:
    """`samples` × `seq_len` token ids: the shuffled examples, encoded as in fine-tuning, joined into one stream and
    cut into windows."""
    order = list(examples)
    random.Random(settings.seed).shuffle(order)
    needed = settings.samples * settings.seq_len
    stream: list[int] = []
    for example in order:
        input_ids, _ = encode_supervised(tokenizer, [example], needed, needed)[0]
        stream.extend(input_ids)
        if len(stream) >= needed:
            break
    if len(stream) < needed:
        raise ValueError(
            f"pruning.calibration: {settings.samples} samples × {settings.seq_len} tokens need {needed} tokens, "
            f"the training split holds {len(stream)}; lower samples or seq_len"
        )
    return torch.tensor(stream[:needed]).view(settings.samples, settings.seq_len)


@torch.no_grad()
def language_model_loss(model: Any, windows: torch.Tensor, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy of `model` over token windows (perplexity = exp of it)."""
    model.eval()
    total, count = 0.0, 0
    for batch in windows.split(batch_size):
        batch = batch.to(model.device)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        tokens = batch.numel() - batch.shape[0]
        total += float(loss) * tokens
        count += tokens
    return total / count
