"""The model an evaluated cell serves, built as it would be deployed, and named for what it is (`form`).

- The base model (no adapter, not pruned) is loaded at the cell's precision.
- A 4- or 8-bit cell, unpruned and dense-trained, serves its adapter unmerged on the bitsandbytes base it was trained
  on (`adapter on nf4 base`): bit for bit the model fine-tuning produced.
- Every other cell goes the float way: the base as stored (what fine-tuning saw, read back into the working dtype),
  the adapter merged into it, the masks sparse training reached applied, pruning (scored and calibrated on the
  weights as they will be stored), then stored at the cell's precision: a 16-bit cast, or quantized again at 8/4
  bits (bitsandbytes maps 0 to 0, so the zeros survive). A `merge` variant takes this way unpruned: `requantize`
  stores at the cell's bits (`merged → nf4`), `16-bit` in the 16-bit dtype (`merged → bfloat16`).

After each step the mask is checked (`joulebench.prune.verify`): every pruned weight still zero, every N:M group still
compliant; the sparsity reported is that of the weights as stored. Early-exit heads are fitted last. Evaluation, the
noise probes and the finalists all build their models here, so the model measured is the same in each.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from joulebench.cells import EarlyExit, Merge, Pruning
from joulebench.data import Example
from joulebench.early_exit import EXIT_HEADS, EarlyExitDecoder, check_supported
from joulebench.finetune import MASKS_FILE
from joulebench.models import Precision, load_model, load_tokenizer
from joulebench.prune import (
    CalibrationSettings,
    MaskCheck,
    PrunedPositions,
    PruneReport,
    calibration_windows,
    check_masks,
    prune_model,
)
from joulebench.prune.base import PRUNERS
from joulebench.sparse_training import apply_masks, effective_weight, load_masks, masked_linears
from joulebench.storage import dequantized, round_trip


@dataclass(frozen=True)
class CellSpec:
    """What builds the model an evaluated cell serves: the base, its adapter (None: the base model itself), the
    precision it was trained and is stored at, and its post-training variant (a pruning, an early-exit decoding or a
    merge form)."""

    model_path: str
    adapter_dir: Path | None
    precision: Precision
    pruning: Pruning
    early_exit: EarlyExit | None = None
    trust_remote_code: bool = False
    merge: Merge | None = None

    @property
    def has_variant(self) -> bool:
        """A post-training variant that changes the model: a pruning or a merge form (its parent lacks it)."""
        return self.pruning.method != "none" or self.merge is not None

    @property
    def unvaried(self) -> CellSpec:
        """The cell's parent: the same fine-tuned cell, unpruned, in the form it was trained in, at full depth."""
        return CellSpec(self.model_path, self.adapter_dir, self.precision, Pruning("none"), None,
                        self.trust_remote_code)  # fmt: skip


@dataclass
class PreparedModel:
    model: Any
    prune_report: PruneReport
    positions: PrunedPositions
    form: str  # what was served: "adapter on nf4 base", "merged → nf4", "merged → pruned → bfloat16", "base, nf4"


def stored_precision(spec: CellSpec) -> Precision:
    """What the served weights are stored in: the cell's precision, or its 16-bit dtype for a `16-bit` merge."""
    if spec.merge is not None and spec.merge.form == "16-bit":
        return Precision(16, spec.precision.dtype_16)
    return spec.precision


def prepare_model(
    spec: CellSpec, calibration: torch.Tensor | None = None, calibration_batch: int = 8
) -> PreparedModel:
    """The cell's model as deployed (see the module's docstring), with its mask checks and its form."""
    from peft import PeftModel

    precision, pruned = spec.precision, spec.pruning.method != "none"
    trained = load_masks(spec.adapter_dir / MASKS_FILE) if spec.adapter_dir and (
        spec.adapter_dir / MASKS_FILE).is_file() else {}  # fmt: skip
    if not pruned and not trained and spec.merge is None and (spec.adapter_dir is None or precision.quantized):
        model = load_model(spec.model_path, precision, spec.trust_remote_code)
        form = f"base, {precision.storage}"
        if spec.adapter_dir is not None:
            model = PeftModel.from_pretrained(model, spec.adapter_dir).get_base_model()
            form = f"adapter on {precision.storage} base"
        return PreparedModel(model, served_sparsity(model, form), PrunedPositions(), form)

    model = dequantized(load_model(spec.model_path, precision, spec.trust_remote_code), working_dtype(precision))
    steps = []
    if spec.adapter_dir is not None:
        model = PeftModel.from_pretrained(model, spec.adapter_dir).merge_and_unload()
        steps.append("merged")
    if trained:  # sparse training: its masks hold for the merged weights
        apply_masks(model, trained)
        steps.append("masked")
    stored = stored_precision(spec)
    trip: Callable[[torch.Tensor], torch.Tensor] | None = None
    if stored.bits != 32:
        trip = partial(round_trip, precision=stored)
    report, positions = prune_model(model, spec.pruning, calibration, calibration_batch, trained or None, trip,
                                    f"{stored.storage} as stored")  # fmt: skip
    if pruned:
        steps.append("pruned")
    if trained:
        for name, keep in trained.items():  # the pruner kept them zero; the positions hold both masks
            positions.add(name, keep.cpu() & ~positions.get(name) if name in positions else keep.cpu())
        report.add_check(check_masks(model, positions, spec.pruning, "sparse-training masks kept"))
    if stored.bits == 16:
        model = model.to(stored.torch_dtype)
    elif stored.quantized:
        with tempfile.TemporaryDirectory(prefix="joulebench-requant-") as tmp:
            model.save_pretrained(tmp)
            del model
            model = load_model(tmp, stored, spec.trust_remote_code)
    if stored.bits != 32:
        report.add_check(check_masks(model, positions, spec.pruning, f"stored at {stored.label}"))
    return PreparedModel(model, report, positions, " → ".join([*steps, stored.storage]))


def working_dtype(precision: Precision) -> torch.dtype:
    """Merge and prune in float32, except on a GPU for cells of 16 bits or fewer: there in the 16-bit dtype, as the
    weights ship, so an 8B model fits a 24 GB card (Wanda and SparseGPT accumulate their statistics in float32)."""
    if precision.bits == 32 or not torch.cuda.is_available():
        return torch.float32
    return getattr(torch, precision.dtype_16)


@torch.no_grad()
def served_sparsity(model: Any, step: str) -> PruneReport:
    """The share of zeros in the weights a model without pruning serves (for an adapter on a quantized base, the
    effective weight W + s·B·A, which the quantizer's own zeros do not survive)."""
    layers = {}
    zeros = total = 0
    for name, module in masked_linears(model):
        weight = effective_weight(module)
        layer_zeros = int((weight == 0).sum())
        layers[name] = layer_zeros / weight.numel()
        zeros += layer_zeros
        total += weight.numel()
    achieved = zeros / total if total else 0.0
    return PruneReport("none", "none", 0.0, achieved, layers, [MaskCheck(step, achieved, 0, 0, layers)])


@dataclass
class ServedCell:
    """A cell's model as it is served, and what building it found."""

    model: Any
    tokenizer: Any
    prune_report: PruneReport
    positions: PrunedPositions
    decoder: EarlyExitDecoder | None
    form: str

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
    prepared = prepare_model(spec, windows, calibration.batch_size)
    decoder = None
    if spec.early_exit is not None and heads_kind is not None:
        check_supported(prepared.model)
        heads = heads_kind.prepare(prepared.model, windows, calibration.seed)
        decoder = EarlyExitDecoder(prepared.model, spec.early_exit, heads)
    return ServedCell(prepared.model, tokenizer, prepared.prune_report, prepared.positions, decoder, prepared.form)
