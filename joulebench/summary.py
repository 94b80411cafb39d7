"""Collect every evaluated cell's results into one table, rank it, and write `summary.csv`."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from joulebench.cells import REFERENCE_TRAINING
from joulebench.classification import CLASS_COLUMNS
from joulebench.io import atomic_write_text
from joulebench.rank import Ranked, rank_cells, rho


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
    "status", "is_reference", "build_kwh", "train_kwh", "prepare_kwh", "infer_kwh", "cpu_kwh", "gpu_kwh", "ram_kwh",
    "total_kwh", "emissions_kg", "lifecycle_kwh", "lifecycle_kg", "lifecycle_inference_share", "lifecycle_build_kwh",
    "lifecycle_finetune_kwh", "lifecycle_compress_kwh", "lifecycle_inference_kwh",
    "bleu", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1", "cosine", "accuracy", "macro_f1", "auc_roc",
    "cpu_source", "gpu_source", "ram_source", "idle_w", "gross_kwh", "net_kwh",
    "infer_kwh_ci95", "infer_j_per_token", "infer_j_per_token_ci95", "wh_per_1k_queries", "repeats", "energy_cv",
    "tokens_per_s", "tokens_per_s_ci95", "latency_s", "latency_s_ci95", "batch_latency_s", "peak_mem_mb",
    "model_size_mb", "sparsity", "sparse_kernel", "speedup_vs_dense", "dense_j_per_token",
    "early_exit", "mean_exit_layer", "exit_layers", "exit_compute_fraction", "train_sparsity", "train_matmul_dtype",
    "phi", "rho", "score", "rank", "finetune_rank", "finetune_score", "top_k",
    "delta_rho", "delta_rho_lo", "delta_rho_hi", "verdict_rho", "p_first", "finetune_p_first",
    "delta_parent_rho", "delta_parent_rho_lo", "delta_parent_rho_hi", "verdict_parent_rho",
    "train_loss_first", "train_loss_last", "train_wall_s", "generated_tokens",
    "energy_source", "tracking_mode", "peak_mem_kind", "error",
]  # fmt: skip


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def cell_row(evaluation: dict[str, Any], training: dict[str, Any] | None) -> dict[str, Any]:
    cell = evaluation["cell"]
    row: dict[str, Any] = {key: cell[key] for key in ("dataset", "model", "bits", "epochs")}
    row["training"] = cell.get("training", REFERENCE_TRAINING.id)
    row["pruning"] = cell["pruning_label"]
    row["pruning_method"] = cell.get("pruning_method", cell["pruning"])
    row["early_exit"] = cell["pruning_label"] if row["pruning_method"] == "early-exit" else ""
    row["is_reference"] = int(cell["epochs"] == 0)
    row["status"] = evaluation["status"]
    row["error"] = evaluation.get("error", "")
    if training is not None and training["status"] != "ok":
        row["status"], row["error"] = "failed", f"fine-tuning: {training.get('error', '')}"
    if row["status"] != "ok":
        return row
    result = evaluation["result"]
    repeats = result["infer_kwh"]["n"]
    # The inference window spans the timed repeats exactly: per pass over the test set is the window / repeats.
    per_pass = {key: result["energy"][key] / repeats for key in ("cpu_kwh", "gpu_kwh", "ram_kwh", "emissions_kg")}
    windows = [result["prepare_energy"], per_pass]
    row["train_kwh"] = 0.0
    net = result["prepare_energy"]["net_kwh"] + result["infer_net_kwh"]["mean"]
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
    row["prepare_kwh"] = result["prepare_energy"]["total_kwh"]
    row["infer_kwh"] = result["infer_kwh"]["mean"]
    for component in ("cpu", "gpu", "ram"):
        row[f"{component}_kwh"] = sum(window[f"{component}_kwh"] for window in windows)
    row["total_kwh"] = row["gross_kwh"] = row["cpu_kwh"] + row["gpu_kwh"] + row["ram_kwh"]
    row["net_kwh"] = net
    row["emissions_kg"] = sum(window["emissions_kg"] for window in windows)
    row.update(result["quality"])
    classes = result.get("classification", {})
    row.update({column: classes[column] for column in CLASS_COLUMNS if column in classes})
    row["rho"] = rho(result["quality"])
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
    row["wh_per_1k_queries"] = result["wh_per_1k_queries"]
    for key in ("tokens_per_s", "latency_s"):
        row[key], row[f"{key}_ci95"] = result[key]["mean"], result[key]["ci95"]
    for key in ("peak_mem_mb", "model_size_mb", "peak_mem_kind"):
        row[key] = result[key]
    row["batch_latency_s"] = result["batch_s"]["mean"]
    row["generated_tokens"] = result["tokens_per_repeat"]
    if exits := result.get("early_exit"):
        row.update(mean_exit_layer=exits["mean_exit_layer"], exit_layers=exits["layers"],
                   exit_compute_fraction=exits["compute_fraction"])  # fmt: skip
    row["sparsity"] = result["prune"]["achieved"]
    row["sparse_kernel"] = result["kernel"].get("label", "")
    if result["speedup_vs_dense"] is not None:
        row["speedup_vs_dense"] = result["speedup_vs_dense"]
        row["dense_j_per_token"] = result["dense_comparison"]["j_per_token"]["mean"]
    return row


def main_dtype(counts: dict[str, int]) -> str:
    """The operand dtype most of a training step's matmuls ran in (e.g. "bfloat16" under bf16 autocast)."""
    return max(counts, key=lambda dtype: counts[dtype]) if counts else ""


def add_ranking(rows: Sequence[dict[str, Any]], w: float, k: int) -> None:
    """Final rank over all tuned cells of a dataset; the fine-tune rank over its unpruned cells picks the top k."""
    base = {(r["dataset"], r["model"]): r["total_kwh"] for r in rows if r["is_reference"] and r["status"] == "ok"}
    for r in rows:
        if r["is_reference"] and r["status"] == "ok":
            r["phi"] = 1.0
    for dataset in sorted({r["dataset"] for r in rows}):
        tuned = [
            r for r in rows
            if r["dataset"] == dataset and not r["is_reference"] and r["status"] == "ok"
            and (r["dataset"], r["model"]) in base
        ]  # fmt: skip
        for r, ranked in zip(tuned, _rank(tuned, base, w), strict=True):
            r.update(phi=ranked.phi, score=ranked.score, rank=ranked.rank)
        unpruned = [r for r in tuned if r["pruning"] == "none"]
        for r, ranked in zip(unpruned, _rank(unpruned, base, w), strict=True):
            r.update(finetune_rank=ranked.rank, finetune_score=ranked.score, top_k=int(ranked.rank <= k))


def _rank(rows: Sequence[dict[str, Any]], base: dict[tuple[str, str], float], w: float) -> list[Ranked]:
    return rank_cells(
        [r["total_kwh"] for r in rows], [base[(r["dataset"], r["model"])] for r in rows], [r["rho"] for r in rows], w
    )


def write_summary(rows: Sequence[dict[str, Any]], path: Path) -> None:
    from io import StringIO

    buffer = StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _fmt(row.get(key, "")) for key in COLUMNS})
    atomic_write_text(path, buffer.getvalue())


def _fmt(value: Any) -> str:
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
        for item in predictions.get(cell_key(best), [])[:count]:
            examples.append({"dataset": dataset, "model": best["model"], "cell": label, "id": item["id"],
                             "target": item["target"], "prediction": item["prediction"],
                             "base_prediction": base_answers.get(item["id"], "")})  # fmt: skip
    return examples


def cell_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """The row's cell; without its last element (the post-training variant), its fine-tuned parent's."""
    return tuple(row[key] for key in ("dataset", "model", "training", "bits", "epochs", "pruning"))


def add_uncertainty(
    rows: Sequence[dict[str, Any]],
    predictions: dict[tuple[Any, ...], list[dict[str, Any]]],
    w: float,
    resamples: int = 2000,
    seed: int = 0,
) -> None:
    """Paired bootstrap intervals of every quality metric against the base model (`delta_<m>`, `_lo`, `_hi`,
    `verdict_<m>`), of a pruned cell's ρ against its unpruned parent (`delta_parent_rho`, ...), and how often each
    cell ranks first when the test items are resampled: over all tuned cells (`p_first`) and over the unpruned ones
    that the top-k selection ranked (`finetune_p_first`). Cells without per-item scores are left without them."""
    from joulebench.uncertainty import CellSample, item_rho, paired_bootstrap, rank_stability

    def item_scores(row: dict[str, Any]) -> dict[str, list[float]] | None:
        """Per metric, the row's per-item scores in test-item id order (the pairing is by item)."""
        items = sorted(predictions.get(cell_key(row), []), key=lambda item: str(item["id"]))
        if not items or any("scores" not in item for item in items):
            return None
        return {metric: [item["scores"][metric] for item in items] for metric in items[0]["scores"]}

    bases = {(r["dataset"], r["model"]): r for r in rows if r["is_reference"] and r["status"] == "ok"}
    parents = {cell_key(r)[:-1]: r for r in rows if r["pruning"] == "none" and r["status"] == "ok"}
    scores = {cell_key(r): item_scores(r) for r in rows if r["status"] == "ok"}
    for dataset in sorted({r["dataset"] for r in rows}):
        samples: list[tuple[dict[str, Any], CellSample]] = []
        for row in rows:
            base = bases.get((row["dataset"], row["model"]))
            if row["dataset"] != dataset or row["is_reference"] or row["status"] != "ok" or base is None:
                continue
            cell, reference = scores[cell_key(row)], scores[cell_key(base)]
            if cell is None or reference is None:
                continue
            for metric, interval in paired_bootstrap(cell, reference, resamples, seed).items():
                row.update({f"delta_{metric}": interval.estimate, f"delta_{metric}_lo": interval.low,
                            f"delta_{metric}_hi": interval.high, f"verdict_{metric}": interval.verdict})  # fmt: skip
            samples.append((row, CellSample(row["total_kwh"], base["total_kwh"], item_rho(cell))))
            parent = parents.get(cell_key(row)[:-1])
            parent_scores = scores[cell_key(parent)] if parent is not None and parent is not row else None
            if parent_scores is not None:
                interval = paired_bootstrap(cell, parent_scores, resamples, seed)["rho"]
                row.update(delta_parent_rho=interval.estimate, delta_parent_rho_lo=interval.low,
                           delta_parent_rho_hi=interval.high, verdict_parent_rho=interval.verdict)  # fmt: skip
        unpruned = [sample for sample in samples if sample[0]["pruning"] == "none"]
        for key, chosen in (("p_first", samples), ("finetune_p_first", unpruned)):
            for (row, _), share in zip(chosen, rank_stability([c for _, c in chosen], w, resamples, seed), strict=True):
                row[key] = share
