"""What each workflow job does, as plain functions of paths and settings (the `scripts/` adapters call these)."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from joulebench import images
from joulebench.io import atomic_write_json

_job_started = time.time()
_image: dict[str, str] | None = None  # the workflow's image identity (rules/common.smk: IMAGE), from job_context


def utc(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def job_context(log: str | Path, threads: int, gpus: int = 0, image: str | None = None,
                energy: str | None = None) -> Iterator[None]:  # fmt: skip
    """Send the job's output (progress bars included) to its log, pin its threads, give it a GPU of its own (on a
    multi-GPU server without a scheduler), forbid the network. `image`: the rule's `image` param (the workflow's
    container identity as JSON, null on the host), which the job's provenance records. `energy`: a measured job's
    energy settings (JSON), whose meters then set up while the job imports its libraries."""
    from joulebench.gpu_slots import claim_gpu, pin_device_order

    pin_device_order()  # CUDA numbers the GPUs as NVML does (PCI bus order), before CUDA starts
    if gpus:
        claim_gpu()
    if energy:
        from joulebench.energy import prewarm

        prewarm(json.loads(energy))
    import torch

    from joulebench.models import offline_environment

    global _job_started, _image
    _job_started = time.time()
    _image = json.loads(image) if image else None
    offline_environment()
    torch.set_num_threads(max(1, int(threads)))
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", buffering=1) as handle, contextlib.redirect_stderr(handle), contextlib.redirect_stdout(handle):
        logging.basicConfig(stream=handle, level=logging.INFO, force=True)
        yield


@contextlib.contextmanager
def measuring(energy: dict[str, Any]) -> Iterator[tuple[Any, Any]]:
    """A started energy monitor (idle baseline taken) inside the machine's measurement lock (joulebench.exclusive),
    and the span the lock was held for: no other job's measured windows overlap this job's."""
    from joulebench.energy import EnergySettings, measured
    from joulebench.exclusive import exclusive_measurement

    settings = EnergySettings.from_config(energy)
    with exclusive_measurement(settings.allow_overlap) as span, measured(energy) as monitor:
        yield monitor, span


def decoded(params: Any) -> dict[str, Any]:
    """A rule's params, each given as one canonical JSON string (rules/common.smk: `canonical`), decoded."""
    return {name: json.loads(value) for name, value in params.items()}


def make_rca_tickets(dataset: dict[str, Any], out: str) -> None:
    from joulebench.data.rca import generate_tickets, write_tickets

    write_tickets(Path(out), generate_tickets(int(dataset["n_tickets"]), int(dataset.get("seed", 0))))


def prepare_data(dataset: dict[str, Any], inputs: dict[str, str], out_dir: str) -> None:
    from joulebench.data import prepare_splits, write_examples

    splits = prepare_splits(dataset, {key: Path(value) for key, value in inputs.items()})
    for name in ("train", "validation", "test"):
        write_examples(Path(out_dir) / f"{name}.jsonl", getattr(splits, name))


def build_model(model: dict[str, Any], train: str, energy: dict[str, Any], out_dir: str, record: str) -> None:
    from joulebench.data import read_examples
    from joulebench.embedded import PretrainSettings, build_embedded_model

    with measuring(energy) as (monitor, span):
        result = build_embedded_model(
            read_examples(Path(train)),
            model["architecture"],
            PretrainSettings.from_config(model.get("pretrain", {})),
            monitor,
            Path(out_dir),
        )
        details = provenance(monitor, energy, span)
    atomic_write_json(record, {"status": "ok", "result": result.to_dict(), "provenance": details})


def finetune(
    cell: dict[str, Any],
    model: dict[str, Any],
    built_model: str | None,
    train: str,
    training: dict[str, Any],
    energy: dict[str, Any],
    adapter_dir: str,
    record: str,
    checkpoint: str | None = None,
    software: dict[str, str] | None = None,
    variant: dict[str, Any] | None = None,
) -> None:
    """Fine-tune one cell in its training variant (precision, sparse training); a failure is recorded (see
    `failures_recorded`). With `checkpoint`, the state after each epoch is kept there, and a job re-run after a kill
    resumes from it."""
    from joulebench.checkpoints import EpochCheckpoints, fingerprint
    from joulebench.data import read_examples
    from joulebench.finetune import TrainSettings, finetune
    from joulebench.models import Precision, resolve_model_path

    checkpoints = None
    if checkpoint:
        settings = {"cell": cell, "model": model, "training": training, "variant": variant, "software": software}
        inputs = [train, *([built_model] if built_model else [])]
        checkpoints = EpochCheckpoints(Path(checkpoint), fingerprint(settings, inputs))
    with failures_recorded(record, cell, lambda: Path(adapter_dir).mkdir(parents=True, exist_ok=True)):
        precision = Precision.from_config(int(cell["bits"]), training)
        with measuring(energy) as (monitor, span):
            result = finetune(
                resolve_model_path(cell["model"], model, built_model),
                read_examples(Path(train)),
                precision,
                TrainSettings.from_config(training),
                int(cell["epochs"]),
                monitor,
                Path(adapter_dir),
                bool(model.get("trust_remote_code", False)),
                checkpoints,
                train_variant(variant),
            )
            details = provenance(monitor, energy, span)
        atomic_write_json(record, {"cell": cell, "status": "ok", "result": result.to_dict(), "provenance": details})


@contextlib.contextmanager
def failures_recorded(record: str, cell: dict[str, Any], placeholders: Callable[[], None]) -> Iterator[None]:
    """A cell that fails (out of memory, a loss that is not finite, a generation error, any other error) writes a
    record with status "failed" and its reason instead of failing the job: the other cells and the report go on, and
    the run's last rule (`run_status`) lists it, makes the next run retry it and ends the run with a non-zero exit.
    `placeholders` creates the job's other outputs. The traceback goes to the job's log."""
    from joulebench.failures import describe

    try:
        yield
    except Exception as err:
        logging.getLogger("joulebench").exception("cell %s failed", cell_name(cell))
        placeholders()
        failure = describe(err)
        atomic_write_json(record, {
            "cell": cell,
            "status": "failed",
            "error": failure["error"],
            "failure": failure,
            "provenance": {**software_and_hardware(), **images.provenance(_image), **job_times()},
        })  # fmt: skip


def cell_name(cell: dict[str, Any]) -> str:
    """A fine-tuning's name (dataset/model/32-true_dense/b4-e5), or an evaluation's with its post-training variant
    (…/b4-e5-magnitude 30%)."""
    from joulebench.cells import REFERENCE_TRAINING

    if "job" in cell:  # a dataset's job rather than a cell's (the finalists)
        return f"{cell['dataset']}/{cell['job']}"
    training = cell.get("training", REFERENCE_TRAINING.id)
    name = f"{cell['dataset']}/{cell['model']}/{training}/b{cell['bits']}-e{cell['epochs']}"
    name = f"{name}-{cell['pruning_label']}" if "pruning_label" in cell else name
    return f"{name} on {cell['backend']}" if "backend" in cell else name


def train_variant(variant: dict[str, Any] | None) -> Any:
    """A rule's `variant` param (the TrainVariant as a dict) back as a TrainVariant."""
    from joulebench.cells import REFERENCE_TRAINING, SparseTraining, TrainVariant

    if not variant:
        return REFERENCE_TRAINING
    return TrainVariant(variant["precision"], SparseTraining(**variant["sparsity"]))


def evaluate(
    cell: dict[str, Any],
    model: dict[str, Any],
    built_model: str | None,
    adapter_dir: str | None,
    test: str,
    train: str,
    pruning: dict[str, Any],
    calibration: dict[str, Any],
    sparse_kernels: bool,
    training: dict[str, Any],
    generation: dict[str, Any],
    metrics: dict[str, Any],
    energy: dict[str, Any],
    record: str,
    predictions: str,
    training_record: str | None = None,
    early_exit: dict[str, Any] | None = None,
    classes: str | None = None,
    merge: dict[str, Any] | None = None,
) -> None:
    """Evaluate one cell (pruned first, merged in a deployment form, or decoded with early exits, if its setting says
    so) on the inference backend its `cell` names (`backend`; the reference backend when it names none); a failure is
    recorded (`failures_recorded`), and a cell whose fine-tuning failed is recorded as skipped without loading
    anything."""
    import tempfile

    import torch

    from joulebench.backends import BACKENDS, REFERENCE_BACKEND
    from joulebench.cells import EarlyExit, Merge, Pruning
    from joulebench.classification import classes_from_dict
    from joulebench.data import read_examples
    from joulebench.energy import EnergySettings
    from joulebench.evaluate import CellSpec, GenerationSettings, evaluate_cell, evaluate_on_backend
    from joulebench.finetune import TrainSettings
    from joulebench.io import write_jsonl
    from joulebench.metrics import MetricSettings
    from joulebench.models import Precision, resolve_model_path
    from joulebench.prune import CalibrationSettings

    setting = Pruning(**pruning)
    exit_setting = EarlyExit(**early_exit) if early_exit else None
    merge_setting = Merge(**merge) if merge else None
    described = {**cell, "pruning_label": setting.label, "pruning_method": setting.method}
    if exit_setting is not None:
        described.update(pruning_label=exit_setting.label, pruning_method="early-exit")
    if merge_setting is not None:
        described.update(pruning_label=merge_setting.label, pruning_method="merge")
    if training_record and (tuned := json.loads(Path(training_record).read_text()))["status"] != "ok":
        write_jsonl(predictions, [])
        atomic_write_json(record, {
            "cell": described, "status": "skipped", "error": f"its fine-tuning failed ({tuned.get('error', '')})",
        })  # fmt: skip
        return
    with failures_recorded(record, described, lambda: write_jsonl(predictions, [])):
        examples = read_examples(Path(test))
        backend = cell.get("backend", REFERENCE_BACKEND)
        model_path = resolve_model_path(cell["model"], model, built_model)
        precision = Precision.from_config(int(cell["bits"]), training)
        adapter = Path(adapter_dir) if adapter_dir else None
        trust = bool(model.get("trust_remote_code", False))
        class_centroids = classes_from_dict(json.loads(Path(classes).read_text())) if classes else None
        with measuring(energy) as (monitor, span):
            shared = {
                "test": examples, "generation": GenerationSettings.from_config(generation),
                "training": TrainSettings.from_config(training), "metric_settings": MetricSettings.from_config(metrics),
                "monitor": monitor, "measurement": EnergySettings.from_config(energy),
                "calibration_examples": read_examples(Path(train)),
                "calibration": CalibrationSettings.from_config(calibration), "classes": class_centroids,
            }  # fmt: skip
            if backend != REFERENCE_BACKEND:
                # The GGUF files (a float32 one on the way): in TMPDIR, so that a killed job leaves nothing in results
                with tempfile.TemporaryDirectory(prefix="joulebench-served-") as workdir:
                    spec = CellSpec(model_path, adapter, precision, setting, trust_remote_code=trust)
                    result = evaluate_on_backend(BACKENDS.get(backend), spec, workdir=Path(workdir),
                                                 threads=torch.get_num_threads(), **shared)  # fmt: skip
            else:
                result = evaluate_cell(model_path, adapter, precision, setting, trust_remote_code=trust,
                                       sparse_kernels=sparse_kernels, early_exit=exit_setting, merge=merge_setting,
                                       **shared)  # fmt: skip
            details = provenance(monitor, energy, span)
        lines = [
            {"id": e.id, "label": e.label, "target": e.target, "prediction": p,
             "scores": {metric: values[index] for metric, values in result.item_scores.items()}}
            for index, (e, p) in enumerate(zip(examples, result.predictions, strict=True))
        ]  # fmt: skip
        write_jsonl(predictions, lines)
        outcome = {"cell": described, "status": "ok", "result": result.to_dict(), "provenance": details}
        atomic_write_json(record, outcome)


def class_centroids(train: str, metrics: dict[str, Any], out: str) -> None:
    """The classification view's classifier for one dataset: its classes' mean embeddings of the training
    references, fitted once here rather than by every evaluated cell; or, for a dataset without two classes, why
    its cells get no accuracy, macro-F1 or AUC-ROC."""
    from joulebench.classification import fit_classes
    from joulebench.data import read_examples
    from joulebench.metrics import MetricSettings, sentence_embeddings

    examples = read_examples(Path(train))
    settings = MetricSettings.from_config(metrics)
    classifier = fit_classes(
        [e.target for e in examples], [e.label for e in examples], lambda texts: sentence_embeddings(texts, settings)
    )
    atomic_write_json(out, {"embedding_model": settings.embedding_model, **classifier.to_dict()})


def provenance(monitor: Any, energy: dict[str, Any], span: Any = None) -> dict[str, Any]:
    """Hardware, software and how the energy was measured, for one job; `span`: when it held the machine's
    measurement lock (joulebench.exclusive), until now."""
    from joulebench.energy import EnergySettings
    from joulebench.energy.core import provenance as measurement

    details = measurement(monitor, EnergySettings.from_config(energy))
    if span is not None:
        details["exclusive"] = {**span.to_dict(), "held_until_utc": time.time()}
    return {**software_and_hardware(), **images.provenance(_image), "measurement": details, **job_times()}


def job_times() -> dict[str, Any]:
    """The job's own span (from `job_context`), and the process's: the difference is interpreter start-up, the
    Snakemake script preamble and the imports before the job began (benchmarks/harness.py sums both)."""
    now = time.time()
    times = {"started_utc": utc(_job_started), "finished_utc": utc(now), "job_seconds": now - _job_started}
    started = process_started()
    if started is not None:
        times["process_seconds"] = now - started
    return times


def process_started() -> float | None:
    """When this process began (Unix time), from the kernel's process table; None where it cannot be read."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except (ImportError, OSError):
        return None


REPORTED_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "codecarbon", "zeus", "snakemake", "nltk",
                     "bert-score", "sentence-transformers", "rouge-score", "weasyprint", "jinja2")  # fmt: skip


def package_versions(packages: tuple[str, ...]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def software_and_hardware() -> dict[str, Any]:
    import torch

    return {
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": str(os.cpu_count()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        **package_versions(REPORTED_PACKAGES),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_records(
    evaluations: list[str], trainings: list[str], rho_mode: str = "rescaled"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """One summary row per evaluated cell, joined with its fine-tuning record; the evaluation and fine-tuning
    records themselves. `rho_mode`: which quality columns ρ averages (joulebench.rank.RHO_COLUMNS)."""
    from joulebench.summary import cell_row, load_json

    def finetune_key(record: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(record["cell"][key] for key in ("dataset", "model", "training", "bits", "epochs"))

    training_records = {finetune_key(record): record for record in map(load_json, map(Path, trainings))}
    evaluation_records = [load_json(Path(path)) for path in evaluations]
    rows = [cell_row(record, training_records.get(finetune_key(record)), rho_mode) for record in evaluation_records]
    return rows, evaluation_records, list(training_records.values())


def select_for_pruning(evaluations: list[str], trainings: list[str], ranking: dict[str, Any], k: int,
                       out: str) -> None:  # fmt: skip
    """The paper's flow: rank the unpruned fine-tuned cells of one dataset by R and keep the top k for pruning."""
    from joulebench.rank import RankingSettings, add_ranking

    settings = RankingSettings(**ranking)
    rows, _, _ = load_records(evaluations, trainings, settings.rho)
    add_ranking(rows, settings, k)
    tuned = [r for r in rows if not r["is_reference"] and "finetune_rank" in r]
    tuned.sort(key=lambda r: r["finetune_rank"])
    keys = ("model", "training", "bits", "epochs", "finetune_rank", "finetune_score", "rho", "total_kwh",
            "deploy_wh_per_query")  # fmt: skip
    ranking_rows = [{key: r.get(key) for key in keys} for r in tuned]
    selected = [entry for entry, r in zip(ranking_rows, tuned, strict=True) if r["top_k"]]
    atomic_write_json(out, {"ranking_settings": settings.to_dict(), "top_k": k, "ranking": ranking_rows,
                            "selected": selected})  # fmt: skip


def probe_reference(
    cell: dict[str, Any],
    model: dict[str, Any],
    built_model: str | None,
    test: str,
    trainings: dict[str, dict[str, Any]],
    generation: dict[str, Any],
    energy: dict[str, Any],
    probe: int,
    record: str,
) -> None:
    """Re-measure the base model for the run's noise floor, stored in turn at each bit width of `trainings` (bits ->
    the training settings that say how, e.g. its 16-bit dtype), the reference cell's first, as an evaluation
    measures it: warm-up, then pinned passes. The probes of a run are spread over it (rules/common.smk:
    probe_after)."""
    from joulebench.cells import Pruning
    from joulebench.data import read_examples
    from joulebench.energy import EnergySettings
    from joulebench.finetune import TrainSettings
    from joulebench.models import Precision, resolve_model_path
    from joulebench.served_model import CellSpec, serve_cell
    from joulebench.serving import GenerationSettings, Server, measure_serving, pinned_figures

    described = {**cell, "pruning_label": f"noise probe {probe}", "pruning_method": "none"}
    with failures_recorded(record, described, lambda: None):
        prompts = [e.prompt for e in read_examples(Path(test))]
        settings = EnergySettings.from_config(energy)
        path = resolve_model_path(cell["model"], model, built_model)
        widths = [int(cell["bits"]), *(int(b) for b in trainings if int(b) != int(cell["bits"]))]
        by_bits: dict[str, Any] = {}
        with measuring(energy) as (monitor, span):
            for width in widths:
                training = trainings[str(width)]
                spec = CellSpec(path, None, Precision.from_config(width, training), Pruning("none"),
                                trust_remote_code=bool(model.get("trust_remote_code", False)))  # fmt: skip
                with monitor.window(f"prepare-b{width}"):
                    served = serve_cell(spec)
                server = Server(served.model, served.tokenizer, prompts, GenerationSettings.from_config(generation),
                                TrainSettings.from_config(training).max_prompt_tokens)  # fmt: skip
                serving = measure_serving(monitor, {"base": server}, settings.warmup, settings.repeats,
                                          name=f"probe-b{width}")  # fmt: skip
                passes = serving.rounds.passes["base"]
                by_bits[str(width)] = {**pinned_figures(passes), "repeats": [asdict(p) for p in passes],
                                       "generation_loop_s": serving.loop_s}  # fmt: skip
                del served, server
            details = provenance(monitor, energy, span)
        reference = by_bits[str(int(cell["bits"]))]
        atomic_write_json(record, {
            "cell": described, "status": "ok", "probe": probe,
            "result": {**reference, "by_bits": by_bits,
                       "generation_loop_s": sum(b["generation_loop_s"] for b in by_bits.values())},
            "provenance": details,
        })  # fmt: skip


FINALIST_ROLES = ("rank", "base", "baseline", "highest ρ", "least energy")


def choose_finalists(
    rows: list[dict[str, Any]], dataset: str, top_k: int, lifecycle: dict[str, Any], cost_column: str
) -> list[tuple[dict[str, Any], list[str]]]:
    """The cells the report compares side by side, each with its roles: the final ranking's top k ("rank 1", …),
    the optimised-vs-baseline table's baseline, the at-a-glance picks (highest ρ, least energy) and the base model of
    each of their models ("base")."""
    from joulebench.lifecycle import LifecycleSettings, find_baseline

    tuned = [r for r in rows if r["dataset"] == dataset and r["status"] == "ok" and "rank" in r]
    roles: dict[int, list[str]] = {}

    def add(row: dict[str, Any] | None, role: str) -> None:
        if row is not None:
            roles.setdefault(id(row), []).append(role)

    for row in sorted(tuned, key=lambda r: r["rank"]):
        if row["rank"] <= top_k:
            add(row, f"rank {row['rank']}")
    optimised = min(tuned, key=lambda r: r["rank"], default=None)
    model = optimised["model"] if optimised else ""
    add(find_baseline(rows, LifecycleSettings.from_config(lifecycle), dataset, model), "baseline")  # type: ignore[arg-type]
    if tuned:
        add(max(tuned, key=lambda r: (r["rho"], -r["rank"])), "highest ρ")
        add(min(tuned, key=lambda r: (r[cost_column], r["rank"])), "least energy")
    chosen = [r for r in rows if id(r) in roles]
    for model in dict.fromkeys(r["model"] for r in chosen):
        base = next((r for r in rows if r["dataset"] == dataset and r["model"] == model and r["is_reference"]
                     and r["status"] == "ok"), None)  # fmt: skip
        add(base, "base")
    return [(r, roles[id(r)]) for r in rows if id(r) in roles]


def finalist_spec(row: dict[str, Any], config: dict[str, Any]) -> Any:
    """The CellSpec that rebuilds a summary row's model as its evaluation served it."""
    from joulebench import cells as grid
    from joulebench.models import Precision, resolve_model_path
    from joulebench.served_model import CellSpec

    spec = config["models"][row["model"]]
    built = grid.embedded_model_dir(row["dataset"], row["model"]) if spec["source"] == "embedded" else None
    bits, epochs = int(row["bits"]), int(row["epochs"])
    adapter = None
    if epochs:
        adapter = Path(grid.FinetuneCell(row["dataset"], row["model"], bits, epochs, row["training"]).dir) / "adapter"
    variant = row["variant"]
    return CellSpec(
        resolve_model_path(row["model"], spec, built),
        adapter,
        Precision.from_config(bits, grid.training_for(config, bits, epochs)),
        grid.pruning_settings(config).get(variant, grid.Pruning("none")),
        grid.early_exit_settings(config).get(variant),
        bool(spec.get("trust_remote_code", False)),
        grid.merge_settings(config).get(variant),
    )


def measure_finalists(
    dataset: str,
    evaluations: list[str],
    trainings: list[str],
    train: str,
    test: str,
    config: dict[str, Any],
    record: str,
) -> None:
    """Re-measure the finalists of one dataset in one job, side by side: every model built first (inside `prepare`),
    then `repeats` rounds in which each runs one pinned pass and one answer pass (A B C … A B C …), so drift hits all
    of them alike. Their ratios against the base model and against each other are then paired (aggregate)."""
    from joulebench.data import read_examples
    from joulebench.energy import EnergySettings
    from joulebench.finetune import TrainSettings
    from joulebench.prune import CalibrationSettings
    from joulebench.rank import RankingSettings, add_ranking
    from joulebench.served_model import serve_cell
    from joulebench.serving import GenerationSettings, Server, measure_serving
    from joulebench.sparse_kernels import current_capability, plan_kernels, to_semi_structured
    from joulebench.summary import cell_key

    settings = RankingSettings.from_config(config)
    rows, _, _ = load_records(evaluations, trainings, settings.rho)
    rows = [r for r in rows if r["dataset"] == dataset]
    add_ranking(rows, settings, int(config["top_k"]))
    chosen = choose_finalists(rows, dataset, int(config["top_k"]), config.get("lifecycle") or {},
                              settings.cost_column)  # fmt: skip
    energy = config["energy"]
    described = {"dataset": dataset, "job": "finalists"}
    with failures_recorded(record, described, lambda: None):
        if not chosen:
            raise ValueError(f"dataset {dataset}: no evaluated cell to re-measure")
        measurement = EnergySettings.from_config(energy)
        prompts = [e.prompt for e in read_examples(Path(test))]
        calibration_examples = read_examples(Path(train))
        calibration = CalibrationSettings.from_config(config["pruning"].get("calibration", {}))
        generation = GenerationSettings.from_config(config["generation"])
        with measuring(energy) as (monitor, span):
            servers: dict[str, Any] = {}
            forms: dict[str, str] = {}
            with monitor.window("prepare"):
                for index, (row, _) in enumerate(chosen):
                    spec = finalist_spec(row, config)
                    served = serve_cell(spec, calibration_examples, calibration)
                    plan = plan_kernels(spec.pruning, spec.precision, config["pruning"].get("sparse_kernels", True),
                                        current_capability())  # fmt: skip
                    if plan and plan.sparse:
                        to_semi_structured(served.model)
                    forms[f"f{index}"] = plan.label if plan else ""
                    training = TrainSettings.from_config(grid_training(config, row))
                    servers[f"f{index}"] = Server(served.model, served.tokenizer, prompts, generation,
                                                  training.max_prompt_tokens, served.decode)  # fmt: skip
            serving = measure_serving(monitor, servers, measurement.warmup, measurement.repeats,
                                      answers=list(servers), name="finalists")  # fmt: skip
            details = provenance(monitor, energy, span)
        passes = serving.rounds.passes
        finalists = []
        for index, (row, roles) in enumerate(chosen):
            key = f"f{index}"
            finalists.append({
                "cell_key": list(cell_key(row)),
                "cell": {name: row[name] for name in ("dataset", "model", "training", "bits", "epochs", "variant")},
                "label": finalist_label(row),
                "roles": roles,
                "kernel": forms[key],
                "rounds": {
                    "tokens_per_s": [p.tokens_per_s for p in passes[key]],
                    "j_per_token": [p.j_per_token for p in passes[key]],
                    "wh_per_query": [p.wh_per_query for p in passes[f"{key}:answers"]],
                    "answer_tokens": [p.tokens for p in passes[f"{key}:answers"]],
                },
            })  # fmt: skip
        atomic_write_json(record, {
            "dataset": dataset, "cell": described, "status": "ok", "rounds": measurement.repeats,
            "order": [finalist_label(row) for row, _ in chosen], "finalists": finalists,
            "energy": serving.rounds.window, "generation_loop_s": serving.loop_s, "provenance": details,
        })  # fmt: skip


def grid_training(config: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    from joulebench.cells import training_for

    return training_for(config, int(row["bits"]), int(row["epochs"]))


def finalist_label(row: dict[str, Any]) -> str:
    """b<bits> e<epochs> <variant>, with the model, and the training variant and backend where they are not the
    default."""
    from joulebench.backends.base import REFERENCE_BACKEND
    from joulebench.cells import REFERENCE_TRAINING

    label = f"{row['model']} b{row['bits']} e{row['epochs']} {row['pruning']}"
    label += f" ({row['training']})" if row["training"] != REFERENCE_TRAINING.id else ""
    backend = row.get("backend") or REFERENCE_BACKEND
    return label + (f" on {backend} {row.get('format', '')}".rstrip() if backend != REFERENCE_BACKEND else "")


def aggregate(
    evaluations: list[str],
    trainings: list[str],
    selections: list[str],
    ranking: dict[str, Any],
    k: int,
    out_csv: str,
    out_json: str,
    builds: list[str] = (),
    lifecycle: dict[str, Any] | None = None,
    probes: list[str] = (),
    finalists: list[str] = (),
) -> None:
    """`summary.csv` and `summary.json`: the ranked rows with their lifecycle energy and carbon, energy and speed
    verdicts against the run's noise floor, the finalists' paired figures, and for the report also the terms of R,
    how the winner moves with Q and w, the training series, the selections that chose the pruned cells, example
    answers and when and how the results were measured. Each cell's `predictions.jsonl` sits beside its
    `eval.json`; each embedded model's `pretrain.json` (in `builds`) sits in results/models/<dataset>/<model>/."""
    from joulebench.comparisons import add_paired, add_verdicts, energy_floor, floors_json, noise_floors
    from joulebench.lifecycle import LifecycleSettings, add_lifecycle
    from joulebench.rank import RankingSettings, add_ranking, sensitivity
    from joulebench.summary import (
        add_uncertainty,
        answer_examples,
        cell_key,
        load_json,
        run_summary,
        write_summary,
    )

    settings = RankingSettings(**ranking)
    rows, evaluation_records, training_records = load_records(evaluations, trainings, settings.rho)
    terms = add_ranking(rows, settings, k)
    built = {Path(path).parts[-3:-1]: load_json(Path(path))["result"]["energy"]["total_kwh"] for path in builds}
    for row in rows:
        if (kwh := built.get((row["dataset"], row["model"]))) is not None:
            row["build_kwh"] = kwh
    add_lifecycle(rows, LifecycleSettings.from_config(lifecycle or {}))
    probe_records = [load_json(Path(path)) for path in probes]
    floors = noise_floors(rows, probe_records)
    add_verdicts(rows, floors)
    finalist_records = [load_json(Path(path)) for path in finalists]
    paired = add_paired(rows, finalist_records, floors, cell_key)
    predictions = {cell_key(row): read_predictions(Path(path).with_name("predictions.jsonl"))
                   for row, path in zip(rows, evaluations, strict=True) if row["status"] == "ok"}  # fmt: skip
    add_uncertainty(rows, predictions, settings, energy_floor=lambda row: energy_floor(floors, row))
    moves = sensitivity(rows, settings)
    for table in moves.values():
        for entry in (*table["queries"], *table["w"]):
            if "row" in entry:
                winner = rows[entry.pop("row")]
                entry.update(cell=finalist_label(winner), cell_key=list(cell_key(winner)))
    write_summary(rows, Path(out_csv))
    atomic_write_json(out_json, {
        "rows": rows,
        "ranking": terms,
        "sensitivity": moves,
        "noise_floor": floors_json(floors),
        "finalists": paired,
        "metrics": metric_descriptions(evaluation_records),
        "training": [training_series(r) for r in training_records if r["status"] == "ok"],
        "selection": {Path(path).stem: load_json(Path(path)) for path in selections},
        "examples": answer_examples(rows, predictions),
        "run": run_summary(evaluation_records + training_records + probe_records + finalist_records),
    })  # fmt: skip


def metric_descriptions(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics' signatures (how each was computed), as the evaluation jobs recorded them."""
    for record in records:
        info = record.get("result", {}).get("quality_info", {})
        if info.get("signatures"):
            return {"signatures": info["signatures"], "floor_method": info.get("floor_method", "")}
    return {}


class RunIncomplete(Exception):
    """Cells failed: the message names them, one a line."""


def run_status(evaluations: list[str], trainings: list[str], out: str) -> None:
    """The run's last job. When every cell succeeded it writes `out`. Otherwise it removes the failed cells' outputs
    (and their entries in Snakemake's output cache: a failure is not a result to serve again), so that the next run
    retries exactly those cells, and raises RunIncomplete naming them: the run's exit status says it is incomplete,
    while the report already lists them."""
    records = {path: json.loads(Path(path).read_text()) for path in [*trainings, *evaluations]}
    unfinished = {path: record for path, record in records.items() if record["status"] != "ok"}
    if not unfinished:
        atomic_write_json(out, {"complete": True, "evaluated_cells": len(evaluations), "fine_tunings": len(trainings)})
        return
    cache = os.environ.get("SNAKEMAKE_OUTPUT_CACHE")
    for path in unfinished:
        forget_outputs(Path(path).parent, Path(cache) if cache else None)
    failed = {path: r for path, r in unfinished.items() if r["status"] == "failed"}
    tunings = sum(path in trainings for path in failed)
    counts = [f"{tunings} fine-tuning(s)" if tunings else "", f"{len(failed) - tunings} evaluation(s)"
              if len(failed) > tunings else ""]  # fmt: skip
    skipped = len(unfinished) - len(failed)
    message = "\n".join([
        f"run incomplete: {' and '.join(c for c in counts if c)} failed"
        + (f" ({skipped} evaluation(s) skipped after them)" if skipped else "")
        + "; the report lists them, and the next run retries them:",
        *(f"  {cell_name(r['cell'])}: {r['error']}" for r in failed.values()),
    ])  # fmt: skip
    logging.getLogger("joulebench").error(message)
    raise RunIncomplete(message)


def forget_outputs(folder: Path, cache: Path | None) -> None:
    """Remove one job's output folder; where its files link into the output cache, remove those entries too."""
    if not folder.exists():
        return
    cached = set()
    for entry in [*folder.iterdir(), *(e for d in folder.iterdir() if d.is_dir() and not d.is_symlink()
                                       for e in d.iterdir())]:  # fmt: skip
        target = entry.resolve() if entry.is_symlink() else None
        if target is not None and cache is not None and target.is_relative_to(cache.resolve()):
            # A fetched folder links each file; the cache entry is their folder.
            cached.add(target if entry.parent == folder else target.parent)
    shutil.rmtree(folder)
    for target in cached:
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def read_predictions(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_series(record: dict[str, Any]) -> dict[str, Any]:
    cell = record["cell"]
    epochs = record["result"]["epochs"]
    return {
        **{key: cell[key] for key in ("dataset", "model", "training", "bits", "epochs")},
        "losses": [e["loss"] for e in epochs],
        "epoch_kwh": [e["energy"]["total_kwh"] for e in epochs],
        "wall_s": record["result"]["wall_s"],
    }



def report(summary: str, config: dict[str, Any], template_dir: str, out_html: str, out_pdf: str) -> None:
    import yaml

    from joulebench.cells import prunes_all
    from joulebench.rank import RankingSettings, ranking_note
    from joulebench.report import ReportInputs, write_report
    from joulebench.report_text import energy_note, training_note
    from joulebench.summary import load_json

    data = load_json(Path(summary))
    rows = [{key: "" if value is None else str(value) for key, value in row.items()} for row in data["rows"]]
    run_date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    details = {**software_and_hardware(), "run date": run_date}
    inputs = ReportInputs(
        rows=rows,
        training=data["training"],
        config_yaml=yaml.safe_dump(config, sort_keys=False),
        w=float(config["w"]),
        top_k=int(config["top_k"]),
        provenance=details,
        energy_note=energy_note(data["rows"]),
        ranking_note=ranking_note(RankingSettings.from_config(config)),
        training_note=training_note(data["training"]),
        prune_all=prunes_all(config),
        run_info=run_info(data.get("run", {}), config),
        examples=data.get("examples", []),
        lifecycle=config.get("lifecycle") or {},
        # None where the summary predates the section: the report says so instead of inventing figures.
        ranking=data.get("ranking"),
        sensitivity=data.get("sensitivity"),
        noise_floor=data.get("noise_floor"),
        finalists=data.get("finalists"),
        metrics=data.get("metrics"),
    )
    write_report(inputs, Path(template_dir), Path(out_html), Path(out_pdf))


def config_sha256(config: dict[str, Any]) -> str:
    """Hash of the config as the workflow saw it (defaults filled in), keys sorted."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def run_info(run: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """What the provenance page says about this run: its config hash, when its results were measured, where."""
    finished = time.time()
    info: dict[str, Any] = {"config_sha256": config_sha256(config), "finished": utc(finished)}
    if run.get("first_job_started"):
        # Measured jobs (fine-tuning, evaluation) only: data preparation and the embedded model's build come first.
        started = datetime.datetime.fromisoformat(run["first_job_started"]).timestamp()
        info.update(started=run["first_job_started"], duration_s=round(finished - started, 1))
    if "job_seconds" in run:
        info["job_seconds"] = round(run["job_seconds"], 1)
    image = images.provenance(_image).get("container", {})
    if image:
        info["container_image"] = image.get("image") or image["apptainer_container"]
    if "sha256" in image:
        info["container_digest"] = f"sha256:{image['sha256']}"
    if "meters" in run:
        info["meters"] = {component: ", ".join(sources) for component, sources in run["meters"].items()}
    for key in ("grid_intensity_g_per_kwh", "pue", "tracking_mode"):
        if key in run:
            info[key] = ", ".join(str(value) for value in run[key])
    energy = config.get("energy", {})
    info["region"] = " / ".join(str(energy[key]) for key in ("country_iso_code", "region") if energy.get(key))
    return info
