"""Collect every evaluated cell's results into one table, rank it, and write `summary.csv`."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from joulebench.backends.base import REFERENCE_BACKEND
from joulebench.cells import REFERENCE_TRAINING
from joulebench.classification import CLASS_COLUMNS
from joulebench.io import atomic_write_text
from joulebench.rank import RESCALED, RankingSettings, rho, rho_note
from joulebench.stats import joules_per_token


def to_float(value: Any) -> float | None:
    """A summary cell (CSV text or JSON value) as a float; empty or non-numeric values (and NaN) become None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


COLUMNS = [
    "dataset", "model", "training", "precision", "sparse_training", "bits", "epochs", "pruning", "pruning_method",
    "model_form", "backend", "format", "format_detail", "status", "is_reference", "build_kwh", "train_kwh",
    "prepare_kwh", "infer_kwh", "cpu_kwh",
    "gpu_kwh", "ram_kwh", "total_kwh", "emissions_kg", "deploy_wh_per_query", "wh_per_query", "wh_per_query_ci95",
    "answer_tokens_per_query", "lifecycle_kwh", "lifecycle_kg", "lifecycle_inference_share", "lifecycle_build_kwh",
    "lifecycle_finetune_kwh", "lifecycle_compress_kwh", "lifecycle_inference_kwh",
    "bleu", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1", "cosine", "bertscore_f1_raw", "cosine_raw",
    "bertscore_f1_floor", "cosine_floor", "accuracy", "macro_f1", "auc_roc",
    "cpu_source", "gpu_source", "ram_source", "idle_w", "gross_kwh", "net_kwh",
    "infer_kwh_ci95", "infer_j_per_token", "infer_j_per_token_ci95", "repeats", "energy_cv",
    "tokens_per_s", "tokens_per_s_ci95", "ttft_s", "ttft_s_ci95", "tpot_s", "tpot_s_ci95", "batch_latency_s",
    "peak_mem_mb", "model_size_mb", "sparsity", "sparse_kernel", "speedup_vs_dense", "dense_j_per_token",
    "early_exit", "exit_threshold", "exit_measure", "exit_heads", "mean_exit_layer", "exit_layers",
    "exit_compute_fraction", "exit_test_share", "train_sparsity", "train_matmul_dtype",
    "phi", "rho", "score", "rank", "finetune_rank", "finetune_score", "top_k",
    "energy_vs", "energy_ratio", "energy_ratio_lo", "energy_ratio_hi", "energy_verdict",
    "speed_ratio", "speed_ratio_lo", "speed_ratio_hi", "speed_verdict",
    "energy_ratio_base", "energy_verdict_base", "speed_ratio_base", "speed_verdict_base",
    "finalist", "paired_energy_ratio", "paired_energy_ratio_lo", "paired_energy_ratio_hi", "paired_energy_verdict",
    "paired_speed_ratio", "paired_speed_ratio_lo", "paired_speed_ratio_hi", "paired_speed_verdict",
    "delta_rho", "delta_rho_lo", "delta_rho_hi", "verdict_rho", "p_first", "finetune_p_first",
    "delta_parent_rho", "delta_parent_rho_lo", "delta_parent_rho_hi", "verdict_parent_rho",
    "delta_backend_rho", "delta_backend_rho_lo", "delta_backend_rho_hi", "verdict_backend_rho",
    "train_loss_first", "train_loss_last", "train_wall_s", "generated_tokens", "answer_tokens",
    "answers_distinct", "answers_empty", "answers_sha256", "quality_note", "rho_note",
    "energy_source", "tracking_mode", "peak_mem_kind", "error",
]  # fmt: skip


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def cell_row(evaluation: dict[str, Any], training: dict[str, Any] | None, rho_mode: str = RESCALED) -> dict[str, Any]:
    """One summary row: the cell's energy (fine-tuning, prepare, one pinned pass), its serving figures and quality.
    `rho_mode` says which quality columns ρ averages (see joulebench.rank)."""
    cell = evaluation["cell"]
    row: dict[str, Any] = {key: cell[key] for key in ("dataset", "model", "bits", "epochs")}
    row["training"] = cell.get("training", REFERENCE_TRAINING.id)
    row["variant"] = cell["pruning"]  # the post-training variant's id (its output folder); `pruning` is its label
    row["pruning"] = cell["pruning_label"]
    row["pruning_method"] = cell.get("pruning_method", cell["pruning"])
    row["early_exit"] = cell["pruning_label"] if row["pruning_method"] == "early-exit" else ""
    row["backend"] = cell.get("backend", REFERENCE_BACKEND)
    # The base model on the reference backend is the base of φ and of every quality delta; on another backend it is
    # one more row, compared with it like the others but not ranked (it is not fine-tuned).
    row["is_reference"] = int(cell["epochs"] == 0 and row["backend"] == REFERENCE_BACKEND)
    row["status"] = evaluation["status"]
    row["error"] = evaluation.get("error", "")
    if training is not None and training["status"] != "ok":
        row["status"], row["error"] = "failed", f"fine-tuning: {training.get('error', '')}"
    if row["status"] != "ok":
        return row
    result = evaluation["result"]
    repeats = result["infer_kwh"]["n"]
    pinned_pass = result["pass_energy"]  # one pinned pass over the test prompts, mean of the timed passes
    windows = [result["prepare_energy"], pinned_pass]
    row["train_kwh"] = 0.0
    net = result["prepare_energy"]["net_kwh"] + pinned_pass["net_kwh"]
    if training is not None:
        train = training["result"]
        windows.append(train["energy"])
        row["train_kwh"] = train["energy"]["total_kwh"]
        net += train["energy"]["net_kwh"]
        losses = [epoch["loss"] for epoch in train["epochs"]]
        row.update(train_loss_first=losses[0], train_loss_last=losses[-1], train_wall_s=train["wall_s"])
        row["precision"] = train.get("precision", {}).get("name", REFERENCE_TRAINING.precision)
        sparse = train.get("sparse_training", {})
        row["sparse_training"] = sparse.get("label", "dense")
        if sparse.get("method", "dense") != "dense":
            row["train_sparsity"] = sparse["achieved"]
        row["train_matmul_dtype"] = main_dtype(train.get("matmul_dtypes", {}))
        if train.get("base_matmul"):
            row["train_matmul_dtype"] = f"{train['base_matmul']} in {row['train_matmul_dtype']}"
    row["prepare_kwh"] = result["prepare_energy"]["total_kwh"]
    row["infer_kwh"] = result["infer_kwh"]["mean"]
    for component in ("cpu", "gpu", "ram"):
        row[f"{component}_kwh"] = sum(window[f"{component}_kwh"] for window in windows)
    row["total_kwh"] = row["gross_kwh"] = row["cpu_kwh"] + row["gpu_kwh"] + row["ram_kwh"]
    row["net_kwh"] = net
    row["emissions_kg"] = sum(window["emissions_kg"] for window in windows)
    row["wh_per_query"], row["wh_per_query_ci95"] = result["wh_per_query"]["mean"], result["wh_per_query"]["ci95"]
    row["answer_tokens_per_query"] = result["answer_tokens_per_query"]
    row["answer_tokens"] = result["answer_tokens"]
    row.update(result["quality"])
    floors = result.get("quality_info", {}).get("floors", {})
    for metric in ("bertscore_f1", "cosine"):
        if floors.get(metric, {}).get("value") is not None:
            row[f"{metric}_floor"] = floors[metric]["value"]
    classes = result.get("classification", {})
    row.update({column: classes[column] for column in CLASS_COLUMNS if column in classes})
    if "skipped" in classes:
        row["classification_skipped"] = classes["skipped"]  # summary.json only: why those columns are blank
    info = result.get("quality_info", {})
    row["rho"] = rho(result["quality"], rho_mode)
    row["rho_note"] = rho_note(result["quality"], rho_mode, info.get("skipped"))
    row["quality_note"] = quality_note(info)
    if answers := info.get("answers"):
        row.update({f"answers_{key}": answers[key] for key in ("distinct", "empty", "sha256", "count")})
    sources = result["energy"]["sources"]
    for component in ("cpu", "gpu", "ram"):
        row[f"{component}_source"] = sources.get(component, "")
    row["energy_source"] = "; ".join(f"{c}={sources.get(c, '')}" for c in ("cpu", "gpu", "ram"))
    row["tracking_mode"] = result["energy"]["tracking_mode"]
    row["idle_w"] = sum(result["idle"].get("watts", {}).values())
    row["infer_kwh_ci95"] = result["infer_kwh"]["ci95"]
    row["energy_cv"] = result["infer_kwh"]["cv"]
    row["repeats"] = repeats
    row["infer_j_per_token"] = result["j_per_token"]["mean"]
    row["infer_j_per_token_ci95"] = result["j_per_token"]["ci95"]
    row["tokens_per_s"], row["tokens_per_s_ci95"] = result["tokens_per_s"]["mean"], result["tokens_per_s"]["ci95"]
    for key in ("ttft_s", "tpot_s"):
        if result.get(key):
            row[key], row[f"{key}_ci95"] = result[key]["mean"], result[key]["ci95"]
    # Per timed pass, for the energy and speed verdicts (summary.json only); none where a pass generated no token
    # (then the row is not compared: add_verdicts skips a row without them).
    if all(p["tokens"] > 0 and p["generation_s"] > 0 for p in result["repeats"]):
        row["j_per_token_repeats"] = [joules_per_token(p["energy"]["total_kwh"], p["tokens"])
                                      for p in result["repeats"]]  # fmt: skip
        row["tokens_per_s_repeats"] = [p["tokens"] / p["generation_s"] for p in result["repeats"]]
    paired = result.get("parent_comparison") or {}  # measured beside its unpruned parent in the same rounds
    if "energy" in paired and "speed" in paired:
        row["parent_paired"] = {key: paired[key] for key in ("energy", "speed")}
    for key in ("peak_mem_mb", "model_size_mb", "peak_mem_kind"):
        row[key] = result[key]
    row["model_form"] = result.get("model_form", "")
    row["format"], row["format_detail"] = result.get("format", ""), result.get("format_detail", "")
    row["batch_latency_s"] = result["batch_s"]["mean"]
    row["generated_tokens"] = result["tokens_per_repeat"]
    if exits := result.get("early_exit"):
        row.update(mean_exit_layer=exits["mean_exit_layer"], exit_layers=exits["layers"],
                   exit_compute_fraction=exits["compute_fraction"], exit_test_share=exits.get("test_share"))
        if setting := exits.get("setting"):
            row.update(exit_threshold=setting["threshold"], exit_measure=setting["measure"],
                       exit_heads=setting["heads"])  # fmt: skip
    row["sparsity"] = result["prune"]["achieved"]
    row["sparse_kernel"] = result["kernel"].get("label", "")
    if result["speedup_vs_dense"] is not None:
        row["speedup_vs_dense"] = result["speedup_vs_dense"]
        row["dense_j_per_token"] = result["dense_comparison"]["j_per_token"]["mean"]
    row["started_utc"] = evaluation.get("provenance", {}).get("started_utc", "")
    return row


def quality_note(info: Mapping[str, Any]) -> str:
    """The quality columns without a value, and those whose mean covers fewer items than the test set, with the
    reasons the evaluation recorded (eval.json's quality_info: skipped, unscored); "" when every column covers every
    item."""
    parts: dict[str, list[str]] = {}
    for column, why in (info.get("skipped") or {}).items():
        parts.setdefault(f"no value: {why}", []).append(column)
    for column, gap in (info.get("unscored") or {}).items():
        reasons = ", ".join(f"{count} × {why}" for why, count in gap["reasons"].items())
        parts.setdefault(f"mean over {gap['of'] - gap['items']} of {gap['of']} items ({reasons})", []).append(column)
    return "; ".join(f"{', '.join(columns)}: {what}" for what, columns in parts.items())


def main_dtype(counts: dict[str, int]) -> str:
    """The operand dtype most of a training step's matmuls ran in (e.g. "bfloat16" under bf16 autocast)."""
    return max(counts, key=lambda dtype: counts[dtype]) if counts else ""


def write_summary(rows: Sequence[dict[str, Any]], path: Path) -> None:
    from io import StringIO

    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _fmt(row.get(key, "")) for key in COLUMNS})
    atomic_write_text(path, buffer.getvalue())


def _fmt(value: Any) -> str:
    if value is None:  # no value: an empty cell, never the text "None"
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def run_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """When the jobs behind these results ran, and how their energy was measured (from each job's provenance)."""
    provenances = [record.get("provenance", {}) for record in records]
    started = [p["started_utc"] for p in provenances if "started_utc" in p]
    finished = [p["finished_utc"] for p in provenances if "finished_utc" in p]
    measurements = [p["measurement"] for p in provenances if "measurement" in p]
    summary: dict[str, Any] = {
        "jobs": len(records),
        "job_seconds": sum(p.get("job_seconds", 0.0) for p in provenances),
    }
    if started and finished:
        summary.update(first_job_started=min(started), last_job_finished=max(finished))
    if measurements:
        summary["meters"] = {c: sorted({m["sources"].get(c, "") for m in measurements}) for c in ("cpu", "gpu", "ram")}
        summary["grid_intensity_g_per_kwh"] = sorted({round(m["carbon_kg_per_kwh"] * 1000, 3) for m in measurements})
        summary["pue"] = sorted({m["pue"] for m in measurements})
        summary["tracking_mode"] = sorted({m["tracking_mode"] for m in measurements})
    return summary


def answer_examples(
    rows: Sequence[dict[str, Any]], predictions: dict[tuple[Any, ...], list[dict[str, Any]]], count: int = 3
) -> list[dict[str, Any]]:
    """The first `count` test items of each dataset's best-ranked cell, with the base model's answer beside."""
    examples = []
    for dataset in sorted({r["dataset"] for r in rows}):
        ranked = [r for r in rows if r["dataset"] == dataset and r.get("rank")]
        if not ranked:
            continue
        best = min(ranked, key=lambda r: r["rank"])
        base = next((r for r in rows if r["dataset"] == dataset and r["model"] == best["model"]
                     and r["is_reference"] and r["status"] == "ok"), None)  # fmt: skip
        base_items = predictions.get(cell_key(base), []) if base else []
        base_answers = {item["id"]: item["prediction"] for item in base_items}
        label = f"b{best['bits']} e{best['epochs']} {best['pruning']}"
        if best["training"] != REFERENCE_TRAINING.id:
            label += f" ({best['training']})"
        if best.get("backend", REFERENCE_BACKEND) != REFERENCE_BACKEND:
            label += f" on {best['backend']} {best['format']}"
        for item in predictions.get(cell_key(best), [])[:count]:
            examples.append({"dataset": dataset, "model": best["model"], "cell": label, "id": item["id"],
                             "target": item["target"], "prediction": item["prediction"],
                             "base_prediction": base_answers.get(item["id"], "")})  # fmt: skip
    return examples


def cell_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """The row's cell on its backend; without its last element (the post-training variant), its fine-tuned parent's
    on the same backend."""
    backend = row.get("backend") or REFERENCE_BACKEND
    return (*(row[key] for key in ("dataset", "model", "training", "bits", "epochs")), backend, row["pruning"])


def on_reference_backend(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """A `cell_key`'s cell as the reference backend serves it."""
    return (*key[:-2], REFERENCE_BACKEND, key[-1])


def add_uncertainty(
    rows: Sequence[dict[str, Any]],
    predictions: dict[tuple[Any, ...], list[dict[str, Any]]],
    settings: RankingSettings,
    resamples: int = 2000,
    seed: int = 0,
    energy_floor: Callable[[Mapping[str, Any]], float | None] | None = None,
) -> None:
    """Paired bootstrap intervals of every quality metric against the base model (`delta_<m>`, `_lo`, `_hi`,
    `verdict_<m>`), of a pruned cell's ρ against its unpruned parent (`delta_parent_rho`, ...), of a cell served by
    another backend against the same cell on the reference backend (`delta_backend_rho`, ...), and how often each
    cell ranks first when the test items are resampled and, with `energy_floor` (a row's energy noise floor), each
    cell's energy redrawn within it: over all tuned cells (`p_first`) and over the unpruned ones that the top-k
    selection ranked (`finetune_p_first`). Cells without per-item scores are left without them. An item without a
    value in a metric (an empty answer's BERTScore or cosine, an empty reference) leaves that metric's means, in the
    cell and its comparison alike, to the items that have one, as the cell's own figure does; a metric without any
    value (a rescaled score whose floor could not be measured) gets no interval, and then neither does ρ."""
    from joulebench.rank import RHO_COLUMNS, cost
    from joulebench.uncertainty import CellSample, item_rho, paired_bootstrap, rank_stability

    columns = RHO_COLUMNS[settings.rho]

    def item_scores(row: dict[str, Any]) -> dict[str, list[float]] | None:
        """Per metric, the row's per-item scores in test-item id order (the pairing is by item)."""
        items = sorted(predictions.get(cell_key(row), []), key=lambda item: str(item["id"]))
        if not items or any("scores" not in item for item in items):
            return None
        metrics = [m for m in items[0]["scores"] if any(item["scores"].get(m) is not None for item in items)]
        nan = float("nan")  # an item without a value: the intervals average over the items that have one
        return {metric: [nan if (v := item["scores"].get(metric)) is None else v for item in items]
                for metric in metrics}

    bases = {(r["dataset"], r["model"]): r for r in rows if r["is_reference"] and r["status"] == "ok"}
    parents = {cell_key(r)[:-1]: r for r in rows if r["pruning"] == "none" and r["status"] == "ok"}
    scores = {cell_key(r): item_scores(r) for r in rows if r["status"] == "ok"}
    rows_by_key = {cell_key(r): r for r in rows if r["status"] == "ok"}
    for dataset in sorted({r["dataset"] for r in rows}):
        samples: list[tuple[dict[str, Any], CellSample]] = []
        for row in rows:
            base = bases.get((row["dataset"], row["model"]))
            if row["dataset"] != dataset or row["is_reference"] or row["status"] != "ok" or base is None:
                continue
            cell, reference = scores[cell_key(row)], scores[cell_key(base)]
            if cell is None or reference is None:
                continue
            intervals = paired_bootstrap(cell, reference, resamples, seed, rho_columns=columns)
            for metric, interval in intervals.items():
                row.update({f"delta_{metric}": interval.estimate, f"delta_{metric}_lo": interval.low,
                            f"delta_{metric}_hi": interval.high, f"verdict_{metric}": interval.verdict})  # fmt: skip
            row_cost, base_cost = cost(row, settings), cost(base, settings)
            if "rho" in intervals and row_cost is not None and base_cost is not None and "rank" in row:
                floor = (energy_floor(row) if energy_floor is not None else None) or 0.0
                samples.append((row, CellSample(row_cost, base_cost, item_rho(cell, columns), floor)))
            parent = parents.get(cell_key(row)[:-1])
            twin = rows_by_key.get(on_reference_backend(cell_key(row)))  # the row itself on the reference backend
            for prefix, other in (("parent", parent), ("backend", twin)):
                other_scores = scores.get(cell_key(other)) if other is not None and other is not row else None
                if other_scores is None:
                    continue
                interval = paired_bootstrap(cell, other_scores, resamples, seed, rho_columns=columns).get("rho")
                if interval is not None:
                    row.update({f"delta_{prefix}_rho": interval.estimate, f"delta_{prefix}_rho_lo": interval.low,
                                f"delta_{prefix}_rho_hi": interval.high, f"verdict_{prefix}_rho": interval.verdict})
        unpruned = [sample for sample in samples if sample[0]["pruning"] == "none"
                    and sample[0].get("backend", REFERENCE_BACKEND) == REFERENCE_BACKEND]  # fmt: skip
        for key, chosen in (("p_first", samples), ("finetune_p_first", unpruned)):
            shares = rank_stability([c for _, c in chosen], settings.w, resamples, seed)
            for (row, _), share in zip(chosen, shares, strict=True):
                row[key] = share
