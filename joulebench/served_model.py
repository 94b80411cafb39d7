"""The model an evaluated cell serves, built as it would be deployed.

Order of operations: the adapter is merged into the full-precision base (with the masks sparse training reached),
pruning happens on those 32-bit weights, 16-bit cells are cast and 8/4-bit cells re-quantized from the pruned weights
(bitsandbytes maps 0 to 0, so the zeros survive), and early-exit heads are fitted last. After each step the mask is
checked (`joulebench.prune.verify`): every pruned weight still zero, every N:M group still compliant. Evaluation, the
noise probes and the finalists all build their models here, so the model measured is the same in each.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from joulebench.cells import EarlyExit, Pruning
from joulebench.data import Example
from joulebench.early_exit import EXIT_HEADS, EarlyExitDecoder, check_supported
from joulebench.finetune import MASKS_FILE
from joulebench.models import Precision, load_model, load_tokenizer
from joulebench.prune import (
    CalibrationSettings,
    PrunedPositions,
    PruneReport,
    calibration_windows,
    check_masks,
    prune_model,
)
from joulebench.prune.base import PRUNERS
from joulebench.sparse_training import apply_masks, load_masks


def prepare_model(
    model_path: str,
    adapter_dir: Path | None,
    precision: Precision,
    pruning: Pruning,
    trust_remote_code: bool,
    calibration: torch.Tensor | None = None,
    calibration_batch: int = 8,
) -> tuple[Any, PruneReport, PrunedPositions]:
    """Merge (and apply the masks sparse training reached) → prune at the working precision → store at the cell's
    precision (re-quantize for 8/4 bits), checking the mask after each step."""
    from peft import PeftModel

    model = load_model(model_path, working_precision(precision), trust_remote_code)
    trained: dict[str, torch.Tensor] = {}
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
        if (adapter_dir / MASKS_FILE).is_file():  # sparse training: its masks hold for the merged weights
            trained = load_masks(adapter_dir / MASKS_FILE)
            apply_masks(model, trained)
    report, positions = prune_model(model, pruning, calibration, calibration_batch)
    if trained:
        # A pruner that updates the weights it keeps (SparseGPT) may refill weights sparse training removed.
        apply_masks(model, trained)
        for name, keep in trained.items():
            pruned = ~keep.cpu()
            positions.add(name, ~(pruned | positions.get(name)) if name in positions else keep.cpu())
        check = check_masks(model, positions, pruning, "sparse-training masks kept")
        report.checks.append(check)
        report.achieved, report.layers = check.achieved, check.layers
    if precision.bits == 16:
        model = model.to(precision.torch_dtype)
    elif precision.quantized:
        with tempfile.TemporaryDirectory(prefix="joulebench-requant-") as tmp:
            model.save_pretrained(tmp)
            del model
            model = load_model(tmp, precision, trust_remote_code)
    if precision.bits != 32 and (pruning.method != "none" or trained):
        report.checks.append(check_masks(model, positions, pruning, f"stored at {precision.label}"))
    return model, report, positions


def working_precision(precision: Precision) -> Precision:
    """Merge and prune in float32, except on a GPU for cells of 16 bits or fewer: there in the 16-bit dtype, as the
    weights ship, so an 8B model fits a 24 GB card (Wanda and SparseGPT accumulate their statistics in float32)."""
    if precision.bits == 32 or not torch.cuda.is_available():
        return Precision(32)
    return Precision(16, precision.dtype_16)


@dataclass(frozen=True)
class CellSpec:
    """What builds the model an evaluated cell serves: the base, its adapter (None: the base model itself), the
    precision it is stored at, and its post-training variant."""

    model_path: str
    adapter_dir: Path | None
    precision: Precision
    pruning: Pruning
    early_exit: EarlyExit | None = None
    trust_remote_code: bool = False


@dataclass
class ServedCell:
    """A cell's model as it is served, and what building it found."""

    model: Any
    tokenizer: Any
    prune_report: PruneReport
    positions: PrunedPositions
    decoder: EarlyExitDecoder | None

    @property
    def decode(self) -> Any:
        return self.decoder.generate if self.decoder else None


def serve_cell(
    spec: CellSpec,
    calibration_examples: Sequence[Example] = (),
    calibration: CalibrationSettings | None = None,
) -> ServedCell:
    """Build the cell's model (merge, masks, prune, store, exit heads): call it inside the cell's `prepare` window."""
    tokenizer = load_tokenizer(spec.model_path, spec.trust_remote_code)
    calibration = calibration or CalibrationSettings()
    heads_kind = EXIT_HEADS.get(spec.early_exit.heads) if spec.early_exit else None
    windows = None
    if PRUNERS.get(spec.pruning.method).calibrated or (heads_kind and heads_kind.needs_calibration):
        windows = calibration_windows(calibration_examples, tokenizer, calibration)
    model, prune_report, positions = prepare_model(
        spec.model_path, spec.adapter_dir, spec.precision, spec.pruning, spec.trust_remote_code, windows,
        calibration.batch_size,
    )  # fmt: skip
    decoder = None
    if spec.early_exit is not None and heads_kind is not None:
        check_supported(model)
        decoder = EarlyExitDecoder(model, spec.early_exit, heads_kind.prepare(model, windows, calibration.seed))
    return ServedCell(model, tokenizer, prune_report, positions, decoder)
