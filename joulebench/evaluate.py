"""One evaluated cell: merge the adapter, prune, store at the cell's precision, generate, score.

Order of operations: the adapter is merged into the full-precision base, pruning happens on those 32-bit weights,
16-bit cells are cast and 8/4-bit cells re-quantized from the pruned weights (bitsandbytes maps 0 to 0, so the zeros
survive), and 2:4 cells that can run sparse kernels are packed for them last. After each step the mask is checked
(`joulebench.prune.verify`): every pruned weight still zero, every N:M group still compliant.
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from joulebench import memory
from joulebench.cells import EarlyExit, Pruning
from joulebench.classification import CentroidClassifier, classification_view
from joulebench.data import Example
from joulebench.early_exit import EXIT_HEADS, EarlyExitDecoder, check_supported
from joulebench.energy import EnergyMonitor, EnergySettings
from joulebench.failures import GenerationError
from joulebench.finetune import MASKS_FILE, TrainSettings
from joulebench.metrics import MetricSettings, quality_with_samples, sentence_embeddings
from joulebench.models import Precision, load_model, load_tokenizer, model_size_bytes
from joulebench.prune import (
    CalibrationSettings,
    PrunedPositions,
    PruneReport,
    calibration_windows,
    check_masks,
    prune_model,
)
from joulebench.prune.base import PRUNERS
from joulebench.sparse_kernels import current_capability, plan_kernels, to_semi_structured
from joulebench.sparse_training import apply_masks, load_masks
from joulebench.stats import joules_per_token, spread, wh_per_1k_queries


@dataclass(frozen=True)
class GenerationSettings:
    batch_size: int = 16
    max_new_tokens: int = 48

    @classmethod
    def from_config(cls, generation: dict[str, Any]) -> GenerationSettings:
        return cls(**generation)


@dataclass
class GenerationResult:
    predictions: list[str]
    new_tokens: int
    wall_s: float  # inside the model's decode calls only
    loop_s: float = 0.0  # the whole loop: tokenising, decoding, detokenising


@dataclass
class TimedRepeat:
    """One timed pass over the test prompts with the number of generated tokens pinned."""

    energy: dict[str, Any]
    generation_s: float
    tokens: int
    queries: int
    batches: int

    @property
    def j_per_token(self) -> float:
        return joules_per_token(self.energy["total_kwh"], self.tokens)


@dataclass
class EvalResult:
    quality: dict[str, float]
    tokens_per_s: dict[str, Any]
    latency_s: dict[str, Any]
    batch_s: dict[str, Any]
    infer_kwh: dict[str, Any]
    infer_net_kwh: dict[str, Any]
    j_per_token: dict[str, Any]
    wh_per_1k_queries: float
    tokens_per_repeat: int
    quality_tokens: int
    peak_mem_mb: float
    peak_mem_kind: str
    model_size_mb: float
    prune: dict[str, Any]
    kernel: dict[str, Any]
    dense_comparison: dict[str, Any]
    speedup_vs_dense: float | None
    energy: dict[str, Any]
    prepare_energy: dict[str, Any]
    idle: dict[str, Any]
    repeats: list[dict[str, Any]]
    metrics_s: float
    generation_loop_s: float = 0.0  # every pass: quality, warm-up, timed repeats, the dense comparison
    classification: dict[str, Any] = field(default_factory=dict)
    early_exit: dict[str, Any] = field(default_factory=dict)
    predictions: list[str] = field(repr=False, default_factory=list)
    item_scores: dict[str, list[float]] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("predictions")
        out.pop("item_scores")
        return out


Decode = Callable[..., torch.Tensor]


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    settings: GenerationSettings,
    max_prompt_tokens: int,
    pin_tokens: bool = False,
    decode: Decode | None = None,
) -> GenerationResult:
    """Greedy, batched, left-padded generation; only the time inside `generate` is counted. With `pin_tokens` every
    sequence generates exactly `max_new_tokens` (end-of-sequence suppressed), so timed repeats do equal work.
    `decode` replaces `model.generate` (early exit); it takes the same arguments, greedy implied."""
    loop_began = time.perf_counter()
    decode = decode or functools.partial(model.generate, do_sample=False)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    model.eval()
    predictions: list[str] = []
    new_tokens = 0
    wall = 0.0
    starts = range(0, len(prompts), settings.batch_size)
    for start in tqdm(starts, desc="generate", mininterval=2):
        batch = [_with_bos(tokenizer, p) for p in prompts[start : start + settings.batch_size]]
        encoded = tokenizer(
            batch, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_tokens + 1,
            add_special_tokens=False,
        ).to(model.device)
        began = time.perf_counter()
        try:
            output = decode(
                input_ids=encoded["input_ids"],
                attention_mask=encoded["attention_mask"],
                max_new_tokens=settings.max_new_tokens,
                min_new_tokens=settings.max_new_tokens if pin_tokens else None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        except (RuntimeError, ValueError, IndexError) as err:
            raise GenerationError(f"prompts {start + 1}-{start + len(batch)}: {err}") from err
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall += time.perf_counter() - began
        generated = output[:, encoded["input_ids"].shape[1] :]
        for row in generated:
            tokens = row.tolist()
            if not pin_tokens and tokenizer.eos_token_id in tokens:
                tokens = tokens[: tokens.index(tokenizer.eos_token_id) + 1]
            new_tokens += len(tokens)
            predictions.append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
    return GenerationResult(predictions, new_tokens, wall, time.perf_counter() - loop_began)


def _with_bos(tokenizer: Any, prompt: str) -> str:
    return (tokenizer.bos_token or "") + prompt


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


@dataclass
class Inference:
    """The timed repeats of one model, inside one energy window."""

    window: dict[str, Any]
    repeats: list[TimedRepeat]
    loop_s: float  # warm-up passes included

    @property
    def seconds(self) -> float:
        return sum(r.generation_s for r in self.repeats) / len(self.repeats)

    def summary(self) -> dict[str, Any]:
        return {
            "tokens_per_s": spread([r.tokens / r.generation_s for r in self.repeats]).to_dict(),
            "j_per_token": spread([r.j_per_token for r in self.repeats]).to_dict(),
            "infer_kwh": spread([r.energy["total_kwh"] for r in self.repeats]).to_dict(),
        }


def measure_inference(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    generation: GenerationSettings,
    max_prompt_tokens: int,
    monitor: EnergyMonitor,
    measurement: EnergySettings,
    name: str = "inference",
    decode: Decode | None = None,
    warmed: int = 0,
) -> Inference:
    """After `warmup` passes (less the `warmed` ones the same model just made over the same prompts), `repeats`
    energy windows of one pass each over the prompts, tokens pinned, all inside one window called `name`."""
    loop_s = 0.0
    for _ in range(max(0, measurement.warmup - warmed)):
        warm = generate(model, tokenizer, prompts, generation, max_prompt_tokens, pin_tokens=True, decode=decode)
        loop_s += warm.loop_s
    repeats = []
    with monitor.window(name) as outer:
        for index in range(1, measurement.repeats + 1):
            with monitor.window(f"{name}-{index}") as window:
                run = generate(model, tokenizer, prompts, generation, max_prompt_tokens, True, decode)
            loop_s += run.loop_s
            batches = math.ceil(len(prompts) / generation.batch_size)
            repeats.append(TimedRepeat(window["energy"].to_dict(), run.wall_s, run.new_tokens, len(prompts), batches))
    return Inference(outer["energy"].to_dict(), repeats, loop_s)


def evaluate_cell(
    model_path: str,
    adapter_dir: Path | None,
    precision: Precision,
    pruning: Pruning,
    test: Sequence[Example],
    generation: GenerationSettings,
    training: TrainSettings,
    metric_settings: MetricSettings,
    monitor: EnergyMonitor,
    measurement: EnergySettings,
    trust_remote_code: bool = False,
    calibration_examples: Sequence[Example] = (),
    calibration: CalibrationSettings | None = None,
    sparse_kernels: bool = True,
    early_exit: EarlyExit | None = None,
    classes: CentroidClassifier | None = None,
) -> EvalResult:
    """Quality from one ordinary greedy pass; energy, latency and throughput from pinned, repeated windows. A cell
    that runs 2:4 sparse kernels is first measured masked-dense, then packed and measured again: the speed-up is the
    ratio of the two on the same prompts and tokens. With `early_exit`, every pass decodes with early exits (its exit
    heads are trained, if they need it, inside the `prepare` window); the exit statistics are the quality pass's."""
    tokenizer = load_tokenizer(model_path, trust_remote_code)
    prompts = [e.prompt for e in test]
    calibration = calibration or CalibrationSettings()
    heads_kind = EXIT_HEADS.get(early_exit.heads) if early_exit else None
    windows = None
    if PRUNERS.get(pruning.method).calibrated or (heads_kind and heads_kind.needs_calibration):
        windows = calibration_windows(calibration_examples, tokenizer, calibration)
    decoder = None
    with monitor.window("prepare") as prepared:
        model, prune_report, positions = prepare_model(
            model_path, adapter_dir, precision, pruning, trust_remote_code, windows, calibration.batch_size
        )
        if early_exit is not None and heads_kind is not None:
            check_supported(model)
            decoder = EarlyExitDecoder(model, early_exit, heads_kind.prepare(model, windows, calibration.seed))
    decode = decoder.generate if decoder else None
    plan = plan_kernels(pruning, precision, sparse_kernels, current_capability())
    kernel: dict[str, Any] = plan.to_dict() if plan else {}
    memory.reset_peak()
    max_prompt = training.max_prompt_tokens
    dense = None
    if plan and plan.sparse:
        dense = measure_inference(model, tokenizer, prompts, generation, max_prompt, monitor, measurement,
                                  "inference-dense")  # fmt: skip
        kernel["conversion"] = to_semi_structured(model).to_dict()
        prune_report.checks.append(check_masks(model, positions, pruning, "packed for sparse kernels"))
    answers = generate(model, tokenizer, prompts, generation, max_prompt, decode=decode)
    exits = {**decoder.stats.to_dict(), "heads": decoder.heads.fit_record()} if decoder else {}
    # The quality pass has just run this model over these prompts: it is the first warm-up pass.
    inference = measure_inference(model, tokenizer, prompts, generation, max_prompt, monitor, measurement,
                                  decode=decode, warmed=1)  # fmt: skip
    repeats = inference.repeats
    peak, peak_kind = memory.peak_mb()
    size_mb = model_size_bytes(model) / 2**20
    del model
    began = time.perf_counter()
    quality, item_scores = quality_with_samples(answers.predictions, [e.target for e in test], metric_settings)
    class_view: dict[str, Any] = {}
    if classes is not None:
        class_view = classification_view(
            answers.predictions, [e.target for e in test], [e.label for e in test], classes,
            functools.partial(sentence_embeddings, settings=metric_settings),
        )  # fmt: skip
    figures = inference.summary()
    return EvalResult(
        quality=quality,
        tokens_per_s=figures["tokens_per_s"],
        latency_s=spread([r.generation_s / r.queries for r in repeats]).to_dict(),
        batch_s=spread([r.generation_s / r.batches for r in repeats]).to_dict(),
        infer_kwh=figures["infer_kwh"],
        infer_net_kwh=spread([r.energy["net_kwh"] for r in repeats]).to_dict(),
        j_per_token=figures["j_per_token"],
        wh_per_1k_queries=wh_per_1k_queries(figures["infer_kwh"]["mean"], len(prompts)),
        tokens_per_repeat=repeats[0].tokens,
        quality_tokens=answers.new_tokens,
        peak_mem_mb=peak,
        peak_mem_kind=peak_kind,
        model_size_mb=size_mb,
        prune=prune_report.to_dict(),
        kernel=kernel,
        dense_comparison=dense.summary() if dense else {},
        speedup_vs_dense=dense.seconds / inference.seconds if dense else None,
        energy=inference.window,
        prepare_energy=prepared["energy"].to_dict(),
        idle=asdict(monitor.idle) if monitor.idle else {},
        repeats=[asdict(r) for r in repeats],
        metrics_s=time.perf_counter() - began,
        generation_loop_s=answers.loop_s + inference.loop_s + (dense.loop_s if dense else 0.0),
        classification=class_view,
        early_exit=exits,
        predictions=answers.predictions,
        item_scores=item_scores,
    )
