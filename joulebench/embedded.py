"""The embedded default model: a small Llama trained offline on the task's own text.

Random weights generate noise, so fine-tuning would have nothing to improve on. The warm-up pre-trains on the training
split's prompts and targets as separate, shuffled documents: the base learns the task's vocabulary and style but not
which answer belongs to which input, which is what fine-tuning then teaches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from joulebench.data import Example
from joulebench.energy import EnergyMonitor
from joulebench.finetune import Batch, TrainResult, train_loop
from joulebench.io import atomic_directory
from joulebench.models import init_llama, train_tokenizer


@dataclass(frozen=True)
class PretrainSettings:
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 2e-3
    seed: int = 0

    @classmethod
    def from_config(cls, pretrain: dict[str, Any]) -> PretrainSettings:
        return cls(**pretrain)


def unpaired_documents(examples: Sequence[Example], seed: int) -> list[str]:
    documents = [text for example in examples for text in (example.prompt, example.target)]
    random.Random(seed).shuffle(documents)
    return documents


def token_stream(tokenizer: Any, documents: Sequence[str]) -> torch.Tensor:
    """Documents joined by blank lines, with no end-of-sequence token: the base then continues a prompt's cue with
    whatever document tends to follow (often an unrelated answer) instead of stopping at once."""
    ids: list[int] = []
    separator = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    for document in documents:
        ids.extend(tokenizer(document, add_special_tokens=False)["input_ids"])
        ids.extend(separator)
    return torch.tensor(ids, dtype=torch.long)


def random_blocks(stream: torch.Tensor, settings: PretrainSettings) -> list[Batch]:
    if len(stream) <= settings.seq_len:
        raise ValueError(f"pre-training text has {len(stream)} tokens, fewer than seq_len {settings.seq_len}")
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (settings.steps, settings.batch_size)
    starts = torch.randint(0, len(stream) - settings.seq_len, shape, generator=generator)
    batches = []
    for row in starts:
        block = torch.stack([stream[s : s + settings.seq_len] for s in row.tolist()])
        batches.append({"input_ids": block, "labels": block.clone(), "attention_mask": torch.ones_like(block)})
    return batches


def build_embedded_model(
    train: Sequence[Example],
    architecture: dict[str, Any],
    settings: PretrainSettings,
    monitor: EnergyMonitor,
    out_dir: Path,
) -> TrainResult:
    documents = unpaired_documents(train, settings.seed)
    tokenizer = train_tokenizer(documents, architecture["vocab_size"], architecture["max_position_embeddings"])
    model = init_llama(architecture, tokenizer, settings.seed)
    batches = random_blocks(token_stream(tokenizer, documents), settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=max(1, settings.steps))
    result = TrainResult()
    if settings.steps:
        result = train_loop(
            model, lambda _epoch: batches, optimizer, 1, monitor, "pretrain", settings.steps, scheduler
        )
    with atomic_directory(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return result

