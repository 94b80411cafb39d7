"""One evaluated cell: build its model as deployed (joulebench.served_model), serve it measured
(joulebench.serving), score its answers.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from joulebench import memory
from joulebench.backends import REFERENCE_BACKEND, Backend
from joulebench.cells import EarlyExit, Merge, Pruning
from joulebench.classification import Classes, classification_view
from joulebench.data import Example
from joulebench.energy import EnergyMonitor, EnergySettings
from joulebench.finetune import TrainSettings
from joulebench.metrics import (
    MetricSettings,
    answers_fingerprint,
    metric_signatures,
    quality_with_samples,
    sentence_embeddings,
)
from joulebench.models import Precision
from joulebench.noise import paired_ratio
from joulebench.prune import CalibrationSettings, check_masks
from joulebench.served_model import CellSpec, prepare_model, serve_cell, stored_precision
from joulebench.serving import (
    GenerationResult,
    GenerationSettings,
    Server,
    ServingMeasurement,
    answer_figures,
    generate,
    measure_serving,
    pinned_figures,
    warm_up,
)
from joulebench.sparse_kernels import DENSE_LABEL, current_capability, plan_kernels, to_semi_structured
from joulebench.storage import stored_bytes

__all__ = ["GenerationSettings", "generate", "prepare_model", "evaluate_cell", "CellSpec", "serve_cell"]


@dataclass
class EvalResult:
    quality: dict[str, float]
    tokens_per_s: dict[str, Any]  # pinned passes, at the configured batch
    batch_s: dict[str, Any]
    infer_kwh: dict[str, Any]  # one pinned pass over the test prompts
    infer_net_kwh: dict[str, Any]
    j_per_token: dict[str, Any]  # pinned passes
    pass_energy: dict[str, float]  # one pinned pass's mean energy per component
    wh_per_query: dict[str, Any]  # answer passes: stop at end-of-sequence
    answer_tokens_per_query: float
    answers_stable: bool  # every answer pass gave the answers scored
    ttft_s: dict[str, Any] | None
    tpot_s: dict[str, Any] | None
    latency: dict[str, Any]
    tokens_per_repeat: int
    answer_tokens: int
    peak_mem_mb: float
    peak_mem_kind: str
    model_size_mb: float  # the bytes its weights are stored in (joulebench.storage.stored_bytes)
    model_form: str  # what was served, e.g. "adapter on nf4 base", "merged → nf4"
    prune: dict[str, Any]
    kernel: dict[str, Any]
    dense_comparison: dict[str, Any]
    speedup_vs_dense: float | None
    energy: dict[str, Any]
    prepare_energy: dict[str, Any]
    idle: dict[str, Any]
    repeats: list[dict[str, Any]]
    answer_repeats: list[dict[str, Any]]
    metrics_s: float
    generation_loop_s: float = 0.0  # every pass: warm-up, timed rounds, latency
    parent_comparison: dict[str, Any] = field(default_factory=dict)  # paired against the unpruned parent
    quality_info: dict[str, Any] = field(default_factory=dict)
    classification: dict[str, Any] = field(default_factory=dict)
    early_exit: dict[str, Any] = field(default_factory=dict)
    backend: str = REFERENCE_BACKEND
    format: str = ""  # the exact format served: "bitsandbytes nf4", "bfloat16", "GGUF Q4_K_M", …
    format_detail: str = ""  # a backend's file in detail (GGUF: its weight matrices' types)
    predictions: list[str] = field(repr=False, default_factory=list)
    item_scores: dict[str, list[float]] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("predictions")
        out.pop("item_scores")
        return out


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
    classes: Classes | None = None,
    merge: Merge | None = None,
) -> EvalResult:
    """Build the cell's model inside the `prepare` window and warm it up at the pinned length (its peak memory is
    that pass's, with nothing else loaded). Then measure it in `repeats` rounds of one pinned pass (tokens/s,
    J/token) and one answer pass that stops at end-of-sequence (energy per query at real lengths; the first round's
    answers are scored), then batch-1 latency. A pruned, merged or early-exit cell also serves its parent (the
    same fine-tuned cell, unpruned, as trained, at full depth) in the same rounds (built outside `prepare`: its
    energy is not the cell's), so the comparison with it is paired. A cell that runs 2:4 sparse kernels keeps its
    masked-dense twin in the rounds too: the speed-up is the paired ratio of their pass times. With `early_exit`,
    every pass of the cell decodes with early exits; the exit statistics are those of the first answer pass."""
    spec = CellSpec(model_path, adapter_dir, precision, pruning, early_exit, trust_remote_code, merge)
    with monitor.window("prepare") as prepared:
        served = serve_cell(spec, calibration_examples, calibration)
    model, tokenizer, prune_report = served.model, served.tokenizer, served.prune_report
    plan = plan_kernels(pruning, precision, sparse_kernels, current_capability())
    kernel: dict[str, Any] = plan.to_dict() if plan else {}
    prompts = [e.prompt for e in test]
    max_prompt = training.max_prompt_tokens
    twin = None
    if plan and plan.sparse:
        twin = copy.deepcopy(model).to("cpu")  # off the GPU while the packed cell's own peak is measured
        kernel["conversion"] = to_semi_structured(model).to_dict()
        prune_report.add_check(check_masks(model, served.positions, pruning, "packed for sparse kernels"))
    servers = {"cell": Server(model, tokenizer, prompts, generation, max_prompt, served.decode)}
    memory.reset_peak()
    warmup_loop_s = warm_up(servers["cell"].pinned, measurement.warmup)
    peak, peak_kind = memory.peak_mb()
    parent, built = None, None
    if early_exit is not None:  # the same model at full depth
        parent = Server(model, tokenizer, prompts, generation, max_prompt)
    elif spec.has_variant:
        with monitor.window("parent-prepare"):
            built = serve_cell(spec.unvaried)
        parent = Server(built.model, tokenizer, prompts, generation, max_prompt)
    if parent is not None:
        servers["parent"] = parent
        warmup_loop_s += warm_up(parent.pinned, measurement.warmup)
    if twin is not None:
        servers["masked-dense"] = Server(twin.to(model.device), tokenizer, prompts, generation, max_prompt)
        warmup_loop_s += warm_up(servers["masked-dense"].pinned, measurement.warmup)
    exits: dict[str, Any] = {}

    def exit_statistics(key: str, run: Any) -> Any:
        """The first answer pass's exit statistics, whatever the warm-up and the other passes counted."""

        def answers() -> GenerationResult:
            if served.decoder is None or exits:
                return run()
            served.decoder.stats.reset()
            result = run()
            exits.update(served.decoder.stats.to_dict(), heads=served.decoder.heads.fit_record(),
                         setting=asdict(served.decoder.setting))
            return result

        return answers

    serving = measure_serving(monitor, servers, 0, measurement.repeats, answers=["cell"], latency="cell",
                              answer_hook=exit_statistics)  # fmt: skip
    size_mb = stored_bytes(model) / 2**20
    del model, servers, parent, twin, built
    served.model = None
    rounds = serving.rounds
    dense = rounds.passes.get("masked-dense")
    speedup = None
    if dense:
        speedup = paired_ratio([p.generation_s for p in dense], [p.generation_s for p in rounds.passes["cell"]])
    parent_comparison = {}
    if parent_passes := rounds.passes.get("parent"):
        cell_passes = rounds.passes["cell"]
        for key, figure in (("energy", "j_per_token"), ("speed", "tokens_per_s")):
            cell_values = [getattr(p, figure) for p in cell_passes]
            parent_values = [getattr(p, figure) for p in parent_passes]
            if None not in cell_values and None not in parent_values:  # a pass without tokens: not compared
                parent_comparison[key] = paired_ratio(cell_values, parent_values).to_dict()
        parent_comparison.update(figures=pinned_figures(parent_passes), repeats=[asdict(p) for p in parent_passes])
    return scored_result(
        serving, test, metric_settings, classes, monitor,
        peak_mem_mb=peak,
        peak_mem_kind=peak_kind,
        model_size_mb=size_mb,
        model_form=served.form,
        format=stored_format(stored_precision(spec)),
        prune=prune_report.to_dict(),
        kernel=kernel,
        dense_comparison={**pinned_figures(dense), "repeats": [asdict(p) for p in dense],
                          "speedup": speedup.to_dict()} if dense and speedup else {},
        speedup_vs_dense=speedup.estimate if speedup else None,
        prepare_energy=prepared["energy"].to_dict(),
        generation_loop_s=serving.loop_s + warmup_loop_s,
        parent_comparison=parent_comparison,
        early_exit=exits,
    )  # fmt: skip


def evaluate_on_backend(
    backend: Backend,
    spec: CellSpec,
    test: Sequence[Example],
    generation: GenerationSettings,
    training: TrainSettings,
    metric_settings: MetricSettings,
    monitor: EnergyMonitor,
    measurement: EnergySettings,
    workdir: Path,
    threads: int,
    calibration_examples: Sequence[Example] = (),
    calibration: CalibrationSettings | None = None,
    classes: Classes | None = None,
) -> EvalResult:
    """The cell served by `backend`, measured as `evaluate_cell` measures it. Inside the `prepare` window: the
    adapter merged into the float32 base, the pruning applied, then the backend's own conversion and quantization to
    the bits' format (`backend.formats`). A pruned cell runs dense kernels unless the backend has sparse ones."""
    bits = spec.precision.bits
    float_spec = CellSpec(spec.model_path, spec.adapter_dir, Precision(32), spec.pruning, None,
                          spec.trust_remote_code)  # fmt: skip
    sequence_tokens = training.max_prompt_tokens + 1 + generation.max_new_tokens
    with monitor.window("prepare") as prepared:
        served = serve_cell(float_spec, calibration_examples, calibration)
        engine = backend.build(served.model, served.tokenizer, bits, workdir, threads,
                               max(generation.batch_size, 1), sequence_tokens)  # fmt: skip
    served.model = None
    try:
        prompts = [e.prompt for e in test]
        server = Server(None, served.tokenizer, prompts, generation, training.max_prompt_tokens,
                        runner=engine.generate)  # fmt: skip
        memory.reset_peak()
        warmup_loop_s = warm_up(server.pinned, measurement.warmup)
        peak, peak_kind = memory.peak_mb()
        if engine.device.startswith("cuda"):
            peak, peak_kind = float("nan"), f"not measured: {backend.name}'s GPU memory is outside torch's allocator"
        serving = measure_serving(monitor, {"cell": server}, 0, measurement.repeats, answers=["cell"], latency="cell")
    finally:
        engine.close()
    kernel: dict[str, Any] = {}
    if spec.pruning.method != "none" and not backend.sparse_kernels:
        kernel = {"sparse": False, "label": DENSE_LABEL, "reason": f"{backend.name} has no sparse kernels"}
    return scored_result(
        serving, test, metric_settings, classes, monitor,
        peak_mem_mb=peak,
        peak_mem_kind=peak_kind,
        model_size_mb=engine.file_bytes / 2**20,
        model_form=f"{served.form} → {engine.format}",
        format=engine.format,
        format_detail=f"{engine.format_detail}; on {engine.device}",
        backend=backend.name,
        prune=served.prune_report.to_dict(),
        kernel=kernel,
        dense_comparison={},
        speedup_vs_dense=None,
        prepare_energy=prepared["energy"].to_dict(),
        generation_loop_s=serving.loop_s + warmup_loop_s,
    )  # fmt: skip


def scored_result(serving: ServingMeasurement, test: Sequence[Example], metric_settings: MetricSettings,
                  classes: Classes | None, monitor: EnergyMonitor, **served: Any) -> EvalResult:  # fmt: skip
    """The cell's result: its first answer pass scored, its pinned and answer passes' figures, and `served` (what
    the backend built and how: form, format, sizes, prepare energy, comparisons)."""
    rounds = serving.rounds
    answers = rounds.first["cell:answers"]
    began = time.perf_counter()
    quality = quality_with_samples(answers.predictions, [e.target for e in test], metric_settings)
    class_view: dict[str, Any] = {}
    if classes is not None:
        class_view = classification_view(
            answers.predictions, [e.target for e in test], [e.label for e in test], classes,
            functools.partial(sentence_embeddings, settings=metric_settings),
        )  # fmt: skip
    pinned = pinned_figures(rounds.passes["cell"])
    real = answer_figures(rounds.passes["cell:answers"])
    return EvalResult(
        quality=quality.scores,
        tokens_per_s=pinned["tokens_per_s"],
        batch_s=pinned["batch_s"],
        infer_kwh=pinned["infer_kwh"],
        infer_net_kwh=pinned["infer_net_kwh"],
        j_per_token=pinned["j_per_token"],
        pass_energy=pinned["pass_energy"],
        wh_per_query=real["wh_per_query"],
        answer_tokens_per_query=real["answer_tokens_per_query"],
        answers_stable=rounds.stable["cell:answers"],
        ttft_s=serving.latency.ttft_s,
        tpot_s=serving.latency.tpot_s,
        latency={"prompts": serving.latency.prompts, "method": serving.latency.method},
        tokens_per_repeat=pinned["tokens_per_pass"],
        answer_tokens=answers.new_tokens,
        energy=rounds.window,
        idle=asdict(monitor.idle) if monitor.idle else {},
        repeats=[asdict(p) for p in rounds.passes["cell"]],
        answer_repeats=[asdict(p) for p in rounds.passes["cell:answers"]],
        metrics_s=time.perf_counter() - began,
        classification=class_view,
        quality_info={"floors": quality.floors_dict(), "signatures": metric_signatures(metric_settings),
                      "skipped": quality.skipped, "unscored": quality.unscored,
                      "answers": answers_fingerprint(answers.predictions)},  # fmt: skip
        predictions=answers.predictions,
        item_scores=quality.samples,
        **served,
    )


def stored_format(precision: Precision) -> str:
    """The exact format the transformers backend serves a precision in."""
    return f"bitsandbytes {precision.label}" if precision.quantized else precision.storage
