"""LoRA / QLoRA fine-tuning with per-epoch loss, time, memory and energy, and the training loop it shares."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from joulebench import memory
from joulebench.cells import REFERENCE_TRAINING, TrainVariant
from joulebench.checkpoints import EpochCheckpoints, restore_rng, restore_trainable, rng_state, trainable_state
from joulebench.data import Example
from joulebench.energy import EnergyMonitor, WindowEnergy
from joulebench.failures import NonFiniteLoss
from joulebench.io import atomic_directory
from joulebench.mixed_precision import TRAINING_PRECISIONS, TrainingPrecision, backward_and_step, matmul_dtypes
from joulebench.models import Precision, load_model, load_tokenizer
from joulebench.sparse_training import SPARSE_TRAINERS, SparseTrainer, save_masks

Batch = dict[str, torch.Tensor]
MASKS_FILE = "sparsity_masks.pt"  # beside the adapter: the keep-masks sparse training reached


@dataclass(frozen=True)
class TrainSettings:
    batch_size: int = 8
    lr: float = 3e-3
    max_prompt_tokens: int = 160
    max_target_tokens: int = 64
    seed: int = 0
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    @classmethod
    def from_config(cls, training: dict[str, Any]) -> TrainSettings:
        lora = training.get("lora", {})
        defaults = cls()
        return cls(
            batch_size=int(training.get("batch_size", defaults.batch_size)),
            lr=float(training.get("lr", defaults.lr)),
            max_prompt_tokens=int(training.get("max_prompt_tokens", defaults.max_prompt_tokens)),
            max_target_tokens=int(training.get("max_target_tokens", defaults.max_target_tokens)),
            seed=int(training.get("seed", defaults.seed)),
            lora_r=int(lora.get("r", defaults.lora_r)),
            lora_alpha=float(lora.get("alpha", defaults.lora_alpha)),
            lora_dropout=float(lora.get("dropout", defaults.lora_dropout)),
            lora_targets=tuple(lora.get("target_modules", defaults.lora_targets)),
        )


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    steps: int
    wall_s: float
    peak_mem_mb: float
    energy: dict[str, Any]


@dataclass
class TrainResult:
    epochs: list[EpochRecord] = field(default_factory=list)
    wall_s: float = 0.0
    loop_s: float = 0.0
    peak_mem_mb: float = 0.0
    peak_mem_kind: str = ""
    energy: dict[str, Any] = field(default_factory=dict)
    resumed_from_epoch: int = 0  # epochs restored from a checkpoint written by an earlier, interrupted job
    matmul_dtypes: dict[str, int] = field(default_factory=dict)  # of the first step run: what autocast really did
    precision: dict[str, Any] = field(default_factory=dict)
    sparse_training: dict[str, Any] = field(default_factory=dict)
    base_matmul: str = ""  # how the frozen base's matmuls ran, where not the storage's own kernels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_supervised(
    tokenizer: Any, examples: Sequence[Example], max_prompt_tokens: int, max_target_tokens: int
) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) with the prompt masked out of the loss; long prompts keep their end (the cue)."""
    encoded = []
    for example in examples:
        prompt_ids = tokenizer(example.prompt, add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
        target_ids = tokenizer(" " + example.target, add_special_tokens=False)["input_ids"][: max_target_tokens - 1]
        target_ids = target_ids + [tokenizer.eos_token_id]
        prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        input_ids = prefix + prompt_ids + target_ids
        labels = [-100] * (len(prefix) + len(prompt_ids)) + target_ids
        encoded.append((input_ids, labels))
    return encoded


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    width = max(len(ids) for ids, _ in pairs)
    input_ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), -100, dtype=torch.long)
    attention = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(pairs):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


def shuffled_batches(
    pairs: Sequence[tuple[list[int], list[int]]], batch_size: int, pad_id: int, seed: int
) -> list[Batch]:
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    return [collate([pairs[i] for i in order[s : s + batch_size]], pad_id) for s in range(0, len(order), batch_size)]


def train_loop(
    model: torch.nn.Module,
    epoch_batches: Callable[[int], Iterable[Batch]],
    optimizer: torch.optim.Optimizer,
    epochs: int,
    monitor: EnergyMonitor,
    phase: str,
    steps_per_epoch: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    checkpoints: EpochCheckpoints | None = None,
    precision: TrainingPrecision | None = None,
    sparse: SparseTrainer | None = None,
) -> TrainResult:
    """Train for `epochs`, each epoch its own energy window nested in the phase window. With `checkpoints`, the state
    after each epoch is saved, and a saved state resumes training after its last finished epoch. A loss that is not
    finite stops training at once (NonFiniteLoss). `precision` sets autocast and loss scaling (the trainable weights
    are already in its master dtype); `sparse` is told of every step and epoch (it may prune and rewind)."""
    result = TrainResult()
    precision = precision or TRAINING_PRECISIONS.get("32-true")
    first = 1
    state = checkpoints.load() if checkpoints else None
    if state is not None:
        first = resume(state, model, optimizer, result, sparse)
        logging.getLogger(__name__).info("%s: resumed after epoch %d from %s", phase, first - 1, checkpoints.path)
    target_device = next(model.parameters()).device
    scaler = precision.scaler(target_device.type)
    if scaler is not None and state is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])

    def step(batch: Batch) -> float:
        with precision.autocast(target_device.type):
            loss = model(**batch).loss
        if not math.isfinite(loss.item()):
            return loss.item()
        backward_and_step(loss, optimizer, scaler)
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    started = time.perf_counter()
    monitor.begin_window(phase)
    model.train()
    for epoch in range(first, epochs + 1):
        monitor.begin_window(f"{phase}-epoch-{epoch}")
        memory.reset_peak()
        epoch_start = time.perf_counter()
        losses: list[float] = []
        bar = tqdm(epoch_batches(epoch), total=steps_per_epoch, desc=f"{phase} epoch {epoch}/{epochs}", mininterval=2)
        for index, batch in enumerate(bar, start=1):
            batch = {k: v.to(target_device) for k, v in batch.items()}
            if result.matmul_dtypes:
                losses.append(step(batch))
            else:
                with matmul_dtypes() as counts:
                    losses.append(step(batch))
                result.matmul_dtypes = dict(counts)
            if not math.isfinite(losses[-1]):
                raise NonFiniteLoss(f"{phase}: loss became {losses[-1]} at step {index} of epoch {epoch}; stopped")
            if sparse is not None:
                sparse.after_step(model, epoch, index)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if sparse is not None:
            sparse.after_epoch(model, optimizer, epoch, sum(losses) / len(losses))
        wall = time.perf_counter() - epoch_start
        result.loop_s += wall
        energy = monitor.end_window(f"{phase}-epoch-{epoch}")
        peak, result.peak_mem_kind = memory.peak_mb()
        result.peak_mem_mb = max(result.peak_mem_mb, peak)
        result.epochs.append(EpochRecord(epoch, sum(losses) / len(losses), len(losses), wall, peak, energy.to_dict()))
        if checkpoints is not None:
            checkpoints.save({
                "epoch": epoch,
                "result": result.to_dict(),
                "wall_s": result.wall_s + time.perf_counter() - started,
                "trainable": trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "sparse": sparse.state_dict() if sparse is not None else None,
                "rng": rng_state(),
            })  # fmt: skip
    phase_energy: WindowEnergy = monitor.end_window(phase)
    restored = [e.energy for e in result.epochs[: first - 1]]
    result.energy = WindowEnergy.total(phase, [*restored, phase_energy.to_dict()]).to_dict()
    result.wall_s += time.perf_counter() - started
    return result


def resume(
    state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    result: TrainResult,
    sparse: SparseTrainer | None = None,
) -> int:
    """Restore a checkpoint into the model, optimizer, sparse trainer, RNG and `result`; the first epoch to run."""
    restore_trainable(model, state["trainable"])
    optimizer.load_state_dict(state["optimizer"])
    if sparse is not None and state.get("sparse") is not None:
        sparse.load_state_dict(state["sparse"], model)
    restore_rng(state["rng"])
    saved = state["result"]
    result.epochs = [EpochRecord(**epoch) for epoch in saved["epochs"]]
    result.loop_s = saved["loop_s"]
    result.peak_mem_mb, result.peak_mem_kind = saved["peak_mem_mb"], saved["peak_mem_kind"]
    result.wall_s = state["wall_s"]
    result.resumed_from_epoch = int(state["epoch"])
    return result.resumed_from_epoch + 1


def finetune(
    model_path: str,
    train: Sequence[Example],
    precision: Precision,
    settings: TrainSettings,
    epochs: int,
    monitor: EnergyMonitor,
    adapter_dir: Path,
    trust_remote_code: bool = False,
    checkpoints: EpochCheckpoints | None = None,
    variant: TrainVariant = REFERENCE_TRAINING,
) -> TrainResult:
    """LoRA on a 32/16-bit base, LLM.int8 + LoRA at 8 bits, QLoRA at 4 bits, at the variant's training precision and
    sparse training; the adapter is saved to `adapter_dir` (atomically), with the sparse-training keep-masks beside
    it (`MASKS_FILE`). With `checkpoints`, training resumes after the last epoch an interrupted job finished.

    The frozen base is the model evaluation serves: at 4 and 8 bits its embeddings, norms and LM head stay in the
    precision's one non-quantized dtype (peft's `prepare_model_for_kbit_training` would upcast them to float32), so
    the adapter is trained against exactly the weights it is deployed on."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(settings.seed)
    tokenizer = load_tokenizer(model_path, trust_remote_code)
    model = load_model(model_path, precision, trust_remote_code)
    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.lora_targets),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    training_precision = TRAINING_PRECISIONS.get(variant.precision)
    training_precision.prepare(model)
    pairs = encode_supervised(tokenizer, train, settings.max_prompt_tokens, settings.max_target_tokens)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr,
                                  eps=training_precision.adam_eps)
    steps = math.ceil(len(pairs) / settings.batch_size)
    sparse = SPARSE_TRAINERS.get(variant.sparsity.method)(variant.sparsity, epochs, steps)
    sparse.attach(model)
    base_matmul = ""
    if sparse.masked and precision.quantized:  # W ⊙ M needs W in float: no bitsandbytes kernel runs
        base_matmul = "dequantized masked matmul"
    result = train_loop(
        model,
        lambda epoch: shuffled_batches(pairs, settings.batch_size, tokenizer.pad_token_id, settings.seed + epoch),
        optimizer,
        sparse.total_epochs,
        monitor,
        "finetune",
        steps,
        checkpoints=checkpoints,
        precision=training_precision,
        sparse=sparse,
    )
    result.precision = training_precision.describe()
    result.sparse_training = sparse.summary()
    result.base_matmul = base_matmul
    with atomic_directory(adapter_dir) as staging:
        model.save_pretrained(staging)
        if masks := sparse.masks():
            save_masks(masks, staging / MASKS_FILE)
    if checkpoints is not None:
        checkpoints.remove()
    return result
