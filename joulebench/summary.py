"""Collect every evaluated cell's results into one table, rank it, and write `summary.csv`."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from joulebench.io import atomic_write_text
from joulebench.rank import Ranked, rank_cells, rho

COLUMNS = [
    "dataset", "model", "bits", "epochs", "pruning", "pruning_method", "status", "is_reference",
    "train_kwh", "prepare_kwh", "infer_kwh", "cpu_kwh", "gpu_kwh", "ram_kwh", "total_kwh", "emissions_kg",
    "bleu", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1", "cosine",
    "cpu_source", "gpu_source", "ram_source", "idle_w", "gross_kwh", "net_kwh",
    "infer_kwh_ci95", "infer_j_per_token", "infer_j_per_token_ci95", "wh_per_1k_queries", "repeats", "energy_cv",
    "tokens_per_s", "tokens_per_s_ci95", "latency_s", "latency_s_ci95", "peak_mem_mb", "model_size_mb", "sparsity",
    "sparse_kernel", "speedup_vs_dense", "dense_j_per_token",
    "phi", "rho", "score", "rank", "finetune_rank", "top_k",
    "train_loss_first", "train_loss_last", "train_wall_s", "generated_tokens",
    "energy_source", "tracking_mode", "peak_mem_kind", "error",
]  # fmt: skip


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def cell_row(evaluation: dict[str, Any], training: dict[str, Any] | None) -> dict[str, Any]:
    cell = evaluation["cell"]
    row: dict[str, Any] = {key: cell[key] for key in ("dataset", "model", "bits", "epochs")}
    row["pruning"] = cell["pruning_label"]
    row["pruning_method"] = cell.get("pruning_method", cell["pruning"])
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
    row["prepare_kwh"] = result["prepare_energy"]["total_kwh"]
    row["infer_kwh"] = result["infer_kwh"]["mean"]
    for component in ("cpu", "gpu", "ram"):
        row[f"{component}_kwh"] = sum(window[f"{component}_kwh"] for window in windows)
    row["total_kwh"] = row["gross_kwh"] = row["cpu_kwh"] + row["gpu_kwh"] + row["ram_kwh"]
    row["net_kwh"] = net
    row["emissions_kg"] = sum(window["emissions_kg"] for window in windows)
    row.update(result["quality"])
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
    row["generated_tokens"] = result["tokens_per_repeat"]
    row["sparsity"] = result["prune"]["achieved"]
    row["sparse_kernel"] = result["kernel"].get("label", "")
    if result["speedup_vs_dense"] is not None:
        row["speedup_vs_dense"] = result["speedup_vs_dense"]
        row["dense_j_per_token"] = result["dense_comparison"]["j_per_token"]["mean"]
    return row


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
            r.update(finetune_rank=ranked.rank, top_k=int(ranked.rank <= k))


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
