from __future__ import annotations

import re
import shutil
import socket
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from joulebench import report
from joulebench.report import ReportInputs, format_duration, format_kwh, format_metric, render_html, write_report
from joulebench.sparse_kernels import DENSE_LABEL
from joulebench.summary import cell_key

from .conftest import ROOT

TEMPLATES = ROOT / "report"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=http://example.invalid/x>"
XHTML = "{http://www.w3.org/1999/xhtml}"
FIGURES = {
    "fig-energy-breakdown": "Figure 1. Energy by component.",
    "fig-loss-energy": "Figure 2. Training loss against training energy.",
    "fig-inference-precision": "Figure 3. Inference energy and carbon by precision.",
    "fig-pruning-impact": "Figure 4. Pruning impact on quality.",
    "fig-pareto": "Figure 5. Energy–quality Pareto front.",
    "fig-early-exit": "Figure 6. Early exit along its thresholds.",
}

# --- a realistic fixture: the rca cells of a finished default run (rounded), plus a small saf grid -------------

# (bits, epochs, pruning, rank, finetune_rank, total_kwh, train_kwh, infer_kwh, rho, score)
RCA_CELLS = [
    (32, 0, "none", None, None, 1.08e-05, 0.0, 5.544e-06, 0.097, None),
    (4, 1, "none", 2, 1, 7.829e-05, 6.637e-05, 4.861e-06, 0.2114, 0.8292),
    (4, 3, "none", 18, 6, 0.0002099, 0.0001987, 4.578e-06, 0.3668, 0.4854),
    (8, 1, "none", 12, 3, 0.0001082, 9.547e-05, 6.728e-06, 0.2091, 0.6344),
    (8, 3, "none", 20, 8, 0.0003081, 0.0002952, 6.637e-06, 0.4228, 0.4363),
    (16, 1, "none", 4, 2, 7.862e-05, 6.803e-05, 4.187e-06, 0.2095, 0.8251),
    (16, 3, "none", 17, 5, 0.0002161, 0.0002039, 4.972e-06, 0.4218, 0.5114),
    (32, 1, "none", 14, 4, 0.0001098, 9.806e-05, 5.616e-06, 0.2095, 0.6272),
    (32, 3, "none", 19, 7, 0.0003011, 0.0002891, 6.124e-06, 0.4907, 0.482),
    (4, 1, "magnitude 30%", 3, None, 7.832e-05, 6.637e-05, 4.793e-06, 0.2109, 0.8287),
    (4, 1, "magnitude 2:4", 1, None, 7.865e-05, 6.637e-05, 5.117e-06, 0.2329, 0.8392),
    (4, 1, "wanda 2:4", 7, None, 8.1e-05, 6.637e-05, 5.062e-06, 0.211, 0.8056),
    (4, 1, "sparsegpt 2:4", 9, None, 8.372e-05, 6.637e-05, 4.717e-06, 0.2046, 0.7797),
    (16, 1, "magnitude 30%", 5, None, 7.892e-05, 6.803e-05, 4.397e-06, 0.2099, 0.8228),
    (16, 1, "magnitude 2:4", 6, None, 7.886e-05, 6.803e-05, 4.43e-06, 0.2085, 0.8224),
    (16, 1, "wanda 2:4", 8, None, 8.126e-05, 6.803e-05, 4.626e-06, 0.2066, 0.8007),
    (16, 1, "sparsegpt 2:4", 10, None, 8.521e-05, 6.803e-05, 4.613e-06, 0.2002, 0.7655),
    (8, 1, "magnitude 30%", 13, None, 0.0001085, 9.547e-05, 6.491e-06, 0.2101, 0.6338),
    (8, 1, "magnitude 2:4", 11, None, 0.0001081, 9.547e-05, 5.654e-06, 0.2195, 0.6414),
    (8, 1, "wanda 2:4", 15, None, 0.0001112, 9.547e-05, 6.176e-06, 0.2076, 0.6197),
    (8, 1, "sparsegpt 2:4", 16, None, 0.0001141, 9.547e-05, 6.446e-06, 0.2082, 0.6074),
]
SAF_CELLS = [
    (32, 0, "none", None, None, 2.1e-05, 0.0, 1.1e-05, 0.12, None),
    (4, 1, "none", 2, 1, 0.00015, 0.00013, 9.0e-06, 0.25, 0.81),
    (16, 1, "none", 3, 2, 0.00016, 0.00014, 8.5e-06, 0.24, 0.78),
    (4, 1, "magnitude 30%", 1, None, 0.000151, 0.00013, 9.2e-06, 0.26, 0.83),
]
# Per-metric multiples of ρ whose mean is 1, so ρ stays the mean of the seven metrics.
METRIC_SHARE = {"bleu": 0.2, "rouge1": 1.2, "rouge2": 0.6, "rougeL": 1.1, "meteor": 0.9, "bertscore_f1": 1.6,
                "cosine": 1.4}  # fmt: skip
P_FIRST = {1: 0.46, 2: 0.31, 3: 0.12, 4: 0.06}
QUERIES = 40
# The run's noise floor of rca (5 % on energy per token, 4 % on tokens/s): ratios within ×0.952 … ×1.05 are noise.
ENERGY_FLOOR, SPEED_FLOOR = 0.05, 0.04
TRAINING_RCA = {  # (bits, epochs): (losses, epoch_kwh)
    (4, 1): ([0.7071], [6.637e-05]),
    (4, 3): ([0.7071, 0.5801, 0.5434], [6.742e-05, 6.650e-05, 6.478e-05]),
    (8, 1): ([0.7054], [9.546e-05]),
    (8, 3): ([0.7054, 0.5791, 0.5456], [9.812e-05, 9.922e-05, 9.787e-05]),
    (16, 1): ([0.7054], [6.803e-05]),
    (16, 3): ([0.7054, 0.5793, 0.5453], [7.468e-05, 6.383e-05, 6.541e-05]),
    (32, 1): ([0.7053], [9.805e-05]),
    (32, 3): ([0.7053, 0.5795, 0.5448], [9.888e-05, 9.659e-05, 9.362e-05]),
}


def _cell_row(dataset: str, model: str, cell: tuple, base_total: float, top_k: int = 3) -> dict[str, Any]:
    bits, epochs, pruning, rank, ft_rank, total, train, infer, rho, score = cell
    pruned = pruning != "none"
    row: dict[str, Any] = {
        "dataset": dataset, "model": model, "bits": bits, "epochs": epochs, "pruning": pruning,
        "pruning_method": pruning.split()[0] if pruned else "none", "status": "ok", "is_reference": int(epochs == 0),
        "train_kwh": train, "prepare_kwh": total - train - infer, "infer_kwh": infer, "infer_kwh_ci95": infer * 0.035,
        "cpu_kwh": 0.29 * total, "gpu_kwh": 0.0, "ram_kwh": 0.71 * total, "total_kwh": total,
        "gross_kwh": total, "net_kwh": 0.0, "emissions_kg": total * 0.0039, "idle_w": 15.0, "repeats": 5,
        "energy_cv": 0.03, "infer_j_per_token": infer * 3.6e6 / 1920, "infer_j_per_token_ci95": infer * 3.6e4 / 1920,
        # One test pass is QUERIES queries; the ranking's Q is QUERIES too, so deploy = total kWh × 1000 / QUERIES.
        "wh_per_query": infer * 1000 / QUERIES, "wh_per_query_ci95": infer * 20 / QUERIES,
        "deploy_wh_per_query": total * 1000 / QUERIES, "answer_tokens_per_query": 12.0,
        "cpu_source": "codecarbon-estimate", "gpu_source": "none", "ram_source": "codecarbon-estimate",
        "energy_source": "cpu=codecarbon-estimate; gpu=none; ram=codecarbon-estimate", "tracking_mode": "process",
        "tokens_per_s": 1500.0 - 20 * bits, "tokens_per_s_ci95": 12.0, "ttft_s": 0.004, "ttft_s_ci95": 0.0002,
        "tpot_s": 0.001 * bits / 16, "tpot_s_ci95": 0.00005, "peak_mem_mb": 650.0, "training": "32-true_dense",
        "model_size_mb": {4: 2.7, 8: 5.3, 16: 7.5, 32: 15.0}[bits],
        "sparsity": (0.5 if "2:4" in pruning else 0.3) if pruned else 0.0,
        "sparse_kernel": DENSE_LABEL if pruned else "",
        "rho": rho, "phi": base_total / total, "score": score, "rank": rank,
        "finetune_rank": ft_rank, "finetune_score": None if ft_rank is None else score,
        "top_k": None if ft_rank is None else int(ft_rank <= top_k), "error": "",
    }  # fmt: skip
    row.update({metric: rho * share for metric, share in METRIC_SHARE.items()})
    return row


def _add_uncertainty(rows: list[dict[str, Any]]) -> None:
    """Interval fields as joulebench.summary.add_uncertainty writes them, with a mix of verdicts."""
    base = next(r for r in rows if r["is_reference"])
    parents = {(r["bits"], r["epochs"]): r for r in rows if r["pruning"] == "none" and not r["is_reference"]}
    for row in rows:
        if row["is_reference"]:
            continue
        for metric in [*METRIC_SHARE, "rho"]:
            delta = row[metric] - base[metric]
            half = 0.03 if metric == "bleu" else 0.4 * abs(delta) + 0.004
            if metric == "cosine" and row["pruning_method"] == "sparsegpt":
                delta, half = -0.02, 0.015
            low, high = delta - half, delta + half
            verdict = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
            row.update({f"delta_{metric}": delta, f"delta_{metric}_lo": low, f"delta_{metric}_hi": high,
                        f"verdict_{metric}": verdict})  # fmt: skip
        row["p_first"] = P_FIRST.get(row["rank"], 0.05 / 16)
        if row["pruning"] == "none":
            row["finetune_p_first"] = {1: 0.52, 2: 0.41, 3: 0.07}.get(row["finetune_rank"], 0.0)
        else:
            delta = row["rho"] - parents[(row["bits"], row["epochs"])]["rho"]
            row.update(delta_parent_rho=delta, delta_parent_rho_lo=delta - 0.005, delta_parent_rho_hi=delta + 0.005)


def _judge(ratio: float, low: float, high: float, floor: float) -> str:
    return "lower" if high < 1 / (1 + floor) else "higher" if low > 1 + floor else "within noise"


def _add_verdicts(rows: list[dict[str, Any]]) -> None:
    """Energy and speed verdicts as joulebench.comparisons.add_verdicts writes them (unpaired, ±10 % intervals)."""
    base = next(r for r in rows if r["is_reference"])
    parents = {(r["bits"], r["epochs"]): r for r in rows if r["pruning"] == "none" and not r["is_reference"]}
    base.update(energy_vs="reference", energy_verdict="reference", speed_verdict="reference")
    for row in rows:
        if row["is_reference"]:
            continue
        pruned = row["pruning"] != "none"
        other = parents[(row["bits"], row["epochs"])] if pruned else base
        row["energy_vs"] = "unpruned parent" if pruned else "base model"
        for suffix, against in (("", other), ("_base", base)):
            for figure, key, floor in (("energy", "infer_j_per_token", ENERGY_FLOOR),
                                       ("speed", "tokens_per_s", SPEED_FLOOR)):  # fmt: skip
                ratio = row[key] / against[key]
                low, high = ratio * 0.9, ratio * 1.1
                row.update({f"{figure}_ratio{suffix}": ratio, f"{figure}_ratio{suffix}_lo": low,
                            f"{figure}_ratio{suffix}_hi": high,
                            f"{figure}_verdict{suffix}": _judge(ratio, low, high, floor)})  # fmt: skip
        row["energy_reason"] = "" if row["energy_verdict"] != "within noise" else "the interval includes 1"


# The finalists of rca, re-measured side by side: (bits, epochs, pruning) -> roles, paired energy and speed ratios
# (estimate, low, high) against the base model.
RCA_FINALISTS = {
    (32, 0, "none"): (["base"], None, None),
    (4, 1, "magnitude 2:4"): (["rank 1"], (0.82, 0.78, 0.86), (1.04, 0.97, 1.11)),
    (4, 1, "none"): (["rank 2", "least energy"], (0.97, 0.93, 1.02), (1.01, 0.95, 1.07)),
    (4, 1, "magnitude 30%"): (["rank 3"], (0.9, 0.85, 0.95), (1.02, 0.96, 1.08)),
    (32, 3, "none"): (["baseline", "highest ρ"], (1.15, 1.09, 1.21), (0.8, 0.76, 0.84)),
}


def _ratio(values: tuple[float, float, float]) -> dict[str, Any]:
    return {"estimate": values[0], "low": values[1], "high": values[2], "paired": True, "reason": ""}


def _paired(cell: str, against: str, energy: tuple, speed: tuple) -> dict[str, Any]:
    judged = {figure: _judge(*values, floor) for figure, values, floor in
              (("energy", energy, ENERGY_FLOOR), ("speed", speed, SPEED_FLOOR))}  # fmt: skip
    return {
        "cell": cell, "against": against, "rounds": 5, "energy": _ratio(energy), "speed": _ratio(speed),
        **{f"{figure}_verdict": {"verdict": verdict, "reason": "" if verdict != "within noise" else
                                  "the interval includes 1"} for figure, verdict in judged.items()},
    }  # fmt: skip


def _finalist_label(bits: int, epochs: int, pruning: str) -> str:
    return f"tiny-llama b{bits} e{epochs} {pruning}"


def rca_finalists() -> dict[str, Any]:
    base = _finalist_label(32, 0, "none")
    finalists = []
    for (bits, epochs, pruning), (roles, energy, speed) in RCA_FINALISTS.items():
        entry: dict[str, Any] = {"label": _finalist_label(bits, epochs, pruning), "roles": roles,
                                 "cell_key": ["rca", "tiny-llama", "32-true_dense", bits, epochs, pruning]}  # fmt: skip
        if energy is not None:
            entry["vs_base"] = _paired(entry["label"], base, energy, speed)
        finalists.append(entry)
    return {
        "dataset": "rca", "status": "ok", "rounds": 5, "order": [f["label"] for f in finalists], "finalists": finalists,
        "optimised_vs_baseline": _paired(_finalist_label(4, 1, "magnitude 2:4"), _finalist_label(32, 3, "none"),
                                         (0.71, 0.66, 0.76), (1.3, 1.22, 1.38)),
    }  # fmt: skip


def _add_paired(rows: list[dict[str, Any]], finalists: dict[str, Any]) -> None:
    """The finalists' `finalist` and `paired_*` columns, as joulebench.comparisons.add_paired writes them."""
    by_label = {f["label"]: f for f in finalists["finalists"]}
    for row in rows:
        found = by_label.get(_finalist_label(row["bits"], row["epochs"], row["pruning"]))
        if found is None:
            continue
        row["finalist"] = ", ".join(found["roles"])
        if "base" in found["roles"]:
            row.update(paired_energy_verdict="reference", paired_speed_verdict="reference")
            continue
        for figure in ("energy", "speed"):
            ratio = found["vs_base"][figure]
            row.update({f"paired_{figure}_ratio": ratio["estimate"], f"paired_{figure}_ratio_lo": ratio["low"],
                        f"paired_{figure}_ratio_hi": ratio["high"],
                        f"paired_{figure}_verdict": found["vs_base"][f"{figure}_verdict"]["verdict"]})  # fmt: skip


def new_sections() -> dict[str, Any]:
    """summary.json's ranking, sensitivity, noise_floor, finalists and metrics sections for the realistic rows: rca
    in deployment mode with every section; saf ranked paper-literally, its base model measured once and its
    finalists job failed."""
    def winner(cell: str, **values: Any) -> dict[str, Any]:
        return {"cell": cell, "phi": 0.9, "rho": 0.23, "score": 0.84, "tied": 0, **values}

    rank_1 = _finalist_label(4, 1, "magnitude 2:4")
    measurements = [("evaluation", "2026-11-22T02:24:40+00:00", 0.0100, 1400.0),
                    ("probe 1", "2026-11-22T02:28:10+00:00", 0.0104, 1450.0),
                    ("probe 2", "2026-11-22T02:34:55+00:00", 0.0105, 1456.0)]  # fmt: skip
    return {
        "ranking": {
            "rca": {"w": 0.7, "queries": QUERIES, "energy": "deployment", "rho": "rescaled",
                    "cost_column": "deploy_wh_per_query", "base_cost": {"tiny-llama": 1.08e-05 * 1000 / QUERIES},
                    "max_phi": 0.138, "max_rho": 0.4907, "ranked": 20, "finetune_max_phi": 0.131,
                    "finetune_max_rho": 0.4812, "finetune_ranked": 12},
            "saf": {"w": 0.7, "queries": 1_000_000, "energy": "paper-literal", "rho": "plain",
                    "cost_column": "total_kwh", "base_cost": {"tiny-llama": 2.1e-05}, "max_phi": 0.14,
                    "max_rho": 0.26, "ranked": 3},
        },
        "sensitivity": {
            "rca": {
                "queries": [winner(_finalist_label(4, 1, "none"), queries=1000, w=0.7),
                            winner(rank_1, queries=1_000_000, w=0.7), winner(rank_1, queries=1_000_000_000, w=0.7)],
                "w": [winner(_finalist_label(32, 3, "none"), w=0.3, queries=QUERIES),
                      *(winner(rank_1, w=w, queries=QUERIES) for w in (0.5, 0.7, 0.9))],
                "depends_on_queries": True,
            },
            "saf": {
                "queries": [winner(_finalist_label(4, 1, "magnitude 30%"), queries=q, w=0.7)
                            for q in (1000, 1_000_000, 1_000_000_000)],
                "w": [winner(_finalist_label(4, 1, "magnitude 30%"), w=w, queries=1_000_000)
                      for w in (0.3, 0.5, 0.7, 0.9)],
                "depends_on_queries": False,
            },
        },
        "noise_floor": {
            "rca/tiny-llama": {
                "reference": "tiny-llama b32 e0 (the base model)",
                "energy_per_token": {"floor": ENERGY_FLOOR, "low": 0.0100, "high": 0.0105, "cv": 0.026,
                                     "measurements": 3},
                "tokens_per_s": {"floor": SPEED_FLOOR, "low": 1400.0, "high": 1456.0, "cv": 0.021, "measurements": 3},
                "measurements": [{"source": source, "started_utc": started, "j_per_token": j, "tokens_per_s": tps}
                                 for source, started, j, tps in measurements],
                "method": "the reference cell (the base model, not fine-tuned) measured 3 times spread over the run "
                          "(its own evaluation and 2 re-measurements); floor = max / min − 1 of those medians",
                "by_bits": {
                    "4": {"energy_per_token": {"floor": 0.12, "measurements": 2},
                          "tokens_per_s": {"floor": 0.11, "measurements": 2}},
                    "32": {"energy_per_token": {"floor": ENERGY_FLOOR, "measurements": 3},
                           "tokens_per_s": {"floor": SPEED_FLOOR, "measurements": 3}},
                },
            },
            "saf/tiny-llama": {
                "reference": "tiny-llama b32 e0 (the base model)",
                "energy_per_token": {"floor": None, "low": None, "high": None, "cv": None, "measurements": 1},
                "tokens_per_s": {"floor": None, "low": None, "high": None, "cv": None, "measurements": 1},
                "measurements": [{"source": "evaluation", "started_utc": "2026-11-22T02:30:00+00:00",
                                  "j_per_token": 0.02, "tokens_per_s": 900.0}],
                "method": "the reference cell measured 1 time",
            },
        },
        "finalists": [rca_finalists(), {"dataset": "saf", "status": "failed", "error": "CUDA out of memory"}],
        "metrics": {"signatures": {
            "bleu": "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0",
            "bertscore": "BERTScore|bert-score:0.3.13|model:all-MiniLM-L6-v2|layer:6|idf:no|F1 rescaled:random-pair "
                         "floor of the test set",
            "cosine": "cosine|sentence-transformers:6.2.0|model:all-MiniLM-L6-v2|pooling:mean|rescaled:random-pair "
                      "floor of the test set",
        }, "floor_method": ""},
    }  # fmt: skip


def realistic_rows(uncertainty: bool = True) -> list[dict[str, str]]:
    rca = [_cell_row("rca", "tiny-llama", cell, RCA_CELLS[0][5]) for cell in RCA_CELLS]
    if uncertainty:
        _add_uncertainty(rca)
        _add_verdicts(rca)
        _add_paired(rca, rca_finalists())
    saf = [_cell_row("saf", "tiny-llama", cell, SAF_CELLS[0][5]) for cell in SAF_CELLS]
    saf += [
        {"dataset": "saf", "model": "tiny-llama", "bits": 8, "epochs": 1, "pruning": "none", "pruning_method": "none",
         "status": "failed", "is_reference": 0,
         "error": "Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory"},
        {"dataset": "saf", "model": "tiny-llama", "bits": 16, "epochs": 1, "pruning": "wanda 2:4",
         "pruning_method": "wanda", "status": "skipped", "is_reference": 0,
         "error": "calibration split has no examples"},
    ]  # fmt: skip
    # The report script hands the template strings, as read from summary.json.
    return [{k: "" if v is None else str(v) for k, v in row.items()} for row in rca + saf]


def realistic_training() -> list[dict[str, Any]]:
    training = [
        {"dataset": "rca", "model": "tiny-llama", "bits": bits, "epochs": epochs, "losses": losses,
         "epoch_kwh": kwh, "wall_s": 17.0 * epochs}
        for (bits, epochs), (losses, kwh) in TRAINING_RCA.items()
    ]  # fmt: skip
    training += [
        {"dataset": "saf", "model": "tiny-llama", "bits": 4, "epochs": 1, "losses": [1.21], "epoch_kwh": [0.00013],
         "wall_s": 31.0},
        {"dataset": "saf", "model": "tiny-llama", "bits": 16, "epochs": 1, "losses": [1.19], "epoch_kwh": [0.00014],
         "wall_s": 33.0},
    ]  # fmt: skip
    return training


def realistic_inputs(**overrides: Any) -> ReportInputs:
    values: dict[str, Any] = dict(
        rows=realistic_rows(), training=realistic_training(),
        config_yaml="w: 0.7\ntop_k: 3\nbits: [4, 8, 16, 32]\nepochs: [1, 3]\nenergy:\n  pue: 1.0\n", w=0.7, top_k=3,
        provenance={"python": "3.11.2", "torch": "2.13.0", "cpu": "AMD EPYC", "gpu": "none"},
        energy_note="CPU and RAM energy figures in this report are estimates, not measurements. CPU energy: a "
        "CodeCarbon estimate. GPU energy: not present (no such device, so 0). RAM energy: a CodeCarbon estimate.",
        ranking_note="RANKING-NOTE R = w·φ/max φ + (1−w)·ρ/max ρ.",
        training_note="Training loss fell in 4 of 4 multi-epoch fine-tuning cells.",
        run_info={
            "config_sha256": "ab" * 32, "started": "2026-11-22T02:24:12Z", "finished": "2026-11-22T02:35:15Z",
            "duration_s": 663.0, "meters": {"cpu": "codecarbon-estimate", "gpu": "none", "ram": "codecarbon-estimate"},
            "grid_intensity_g_per_kwh": 3.9, "pue": 1.0, "region": "CAN / quebec", "tracking_mode": "process",
        },
        examples=[
            {"dataset": "rca", "model": "tiny-llama", "cell": "b4 e1 magnitude 2:4", "id": "TKT-000435",
             "target": "Cause: OSPF hello/dead timer mismatch on xe-0/0/16. Fix: Set the same intervals on both ends.",
             "prediction": "Cause: A rogue client on VLAN 30 drained pool 10.25.72.0/24.\nFix: Enable DHCP snooping.",
             "base_prediction": "interface interface interface"},
            {"dataset": "saf", "model": "tiny-llama", "cell": "b4 e1 magnitude 30%", "id": "q7-a3",
             "target": "Correct. The stack is LIFO.", "prediction": f"Correct. {SCRIPT} {IMG} & more",
             "base_prediction": ""},
        ],
        **new_sections(),
    )  # fmt: skip
    values.update(overrides)
    return ReportInputs(**values)


# Columns that summaries from before the noise floor, the finalists and the deployment cost did not have.
NEW_COLUMNS = ("deploy_wh_per_query", "wh_per_query", "wh_per_query_ci95", "answer_tokens_per_query", "ttft_s",
               "ttft_s_ci95", "tpot_s", "tpot_s_ci95", "energy_vs", "finalist", "training")  # fmt: skip
NEW_PREFIXES = ("energy_", "speed_", "paired_")


def old_inputs() -> ReportInputs:
    """A summary from before the new sections and columns: no ranking terms, sensitivity, noise floor, finalists or
    signatures, and rows without the new columns."""
    rows = [{k: v for k, v in row.items() if k not in NEW_COLUMNS and not k.startswith(NEW_PREFIXES)}
            for row in realistic_rows(uncertainty=False)]  # fmt: skip
    return realistic_inputs(rows=rows, **dict.fromkeys(new_sections()))


def hostile_inputs() -> ReportInputs:
    """Names and model text that are markup, in every place data reaches the report (the new sections included)."""
    rows = realistic_rows()
    for row in rows:
        if row["dataset"] == "saf":
            row["dataset"] = f"saf {SCRIPT}"
            row["model"] = f"tiny {IMG}"
    training = realistic_training()
    for cell in training:
        if cell["dataset"] == "saf":
            cell["dataset"], cell["model"] = f"saf {SCRIPT}", f"tiny {IMG}"
    sections = new_sections()
    return realistic_inputs(
        rows=rows, training=training,
        provenance={"hardware": IMG}, run_info={"region": SCRIPT, "container_image": IMG},
        examples=[{"dataset": f"saf {SCRIPT}", "cell": IMG, "id": SCRIPT, "target": IMG,
                   "prediction": f"{SCRIPT}{IMG}", "base_prediction": f"</td></tr></table>{SCRIPT}"}],
        config_yaml=f"note: {SCRIPT}\nlink: {IMG}\n",
        metrics={"signatures": {"bleu": SCRIPT, "bertscore": f"BERTScore|model:{IMG}|layer:6"}},
        noise_floor={**sections["noise_floor"], "rca/tiny-llama": {**sections["noise_floor"]["rca/tiny-llama"],
                                                                   "method": IMG, "reference": SCRIPT}},
        finalists=[{"dataset": "rca", "status": "failed", "error": SCRIPT}],
    )  # fmt: skip


# --- helpers --------------------------------------------------------------------------------------------------


class _Balance(HTMLParser):
    VOID = {"meta", "br", "img", "hr", "col", "input", "link", "source", "wbr", "area", "base", "embed"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def _text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def _tables(tree: ET.Element, css: str) -> list[ET.Element]:
    return [t for t in tree.iter(f"{XHTML}table") if css in t.get("class", "").split()]


def _rows_of(table: ET.Element) -> list[ET.Element]:
    return [tr for tr in table.iter(f"{XHTML}tr") if tr.find(f"{XHTML}td") is not None]


def _needs(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (envs/system-packages.sh installs poppler-utils)")


def _page_ink(png: Path) -> float:
    """Share of non-white pixels above the footer band (the footer is on every page)."""
    from PIL import Image

    page = Image.open(png).convert("L")
    body = page.crop((0, 0, page.width, int(page.height * 0.93)))
    histogram = body.histogram()
    return sum(histogram[:235]) / (body.width * body.height)


@pytest.fixture(scope="module")
def html() -> str:
    return render_html(realistic_inputs(), TEMPLATES)


@pytest.fixture(scope="module")
def tree(html: str) -> ET.Element:
    return ET.fromstring(html)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The realistic report written as HTML and PDF, with every network path spied on."""
    out = tmp_path_factory.mktemp("report")
    write_report(realistic_inputs(), TEMPLATES, out / "report.html", out / "report.pdf")
    return out


# --- structure --------------------------------------------------------------------------------------------------


def test_html_is_well_formed_xhtml(html, tree):
    checker = _Balance()
    checker.feed(html)
    checker.close()
    assert not checker.problems and not checker.stack, (checker.problems[:5], checker.stack[:5])
    assert tree.tag == f"{XHTML}html"  # ET.fromstring above: a strict XML parse of the whole page
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "an id is defined twice (several inline SVGs)"


def test_finetune_ranking_marks_the_top_k_as_pruned(tree):
    tables = _tables(tree, "finetune")
    assert len(tables) == 2
    rca = _rows_of(tables[0])
    assert [tr.get("data-finetune-rank") for tr in rca] == [str(i) for i in range(1, 9)]
    marked = [_text(tr) for tr in rca if "→ pruned" in _text(tr)]
    assert len(marked) == 3 and all(t.split()[:3] in (["1", "4", "1"], ["2", "16", "1"], ["3", "8", "1"])
                                    for t in marked)  # fmt: skip
    # R is the fine-tune ranking's own (finetune_score; rank 1: 0.8292); φ = E_base / E_cell.
    first = [_text(td) for td in rca[0].iter(f"{XHTML}td")]
    assert first[:5] == ["1", "4", "1", "0.829", f"{1.08e-05 / 7.829e-05:.3f}"]
    assert "52 %" in first  # finetune_p_first
    headers = [_text(th) for th in tables[0].iter(f"{XHTML}th")]
    for name in ("R (score)", "φ", "ρ", "BLEU ×100", "ROUGE‑1", "ROUGE‑2", "ROUGE‑L", "METEOR",
                 "BERTScore F1 rescaled all-MiniLM-L6-v2, layer 6", "cosine rescaled all-MiniLM-L6-v2", "Wh / query",
                 "deploy Wh / query", "energy / token vs base model", "tokens/s vs base model"):  # fmt: skip
        assert name in headers
    assert "total kWh" not in headers
    saf = [[_text(td) for td in tr.iter(f"{XHTML}td")] for tr in _rows_of(tables[1])]
    assert [r[0] for r in saf] == ["1", "2"] and all(r[-1] == "→ pruned" for r in saf)
    assert saf[0][3] == "0.810"


def test_final_ranking_lists_reference_first_then_rank_with_kernel_marks(tree, html):
    tables = _tables(tree, "final")
    assert len(tables) == 2
    orders = [[tr.get("data-rank") for tr in _rows_of(t)] for t in tables]
    assert orders[0] == ["base"] + [str(i) for i in range(1, 21)]
    assert orders[1] == ["base", "1", "2", "3"]
    first_pruned = _text(_rows_of(tables[0])[1])
    assert "magnitude 2:4 †" in first_pruned
    assert DENSE_LABEL in html
    headers = [_text(th) for th in tables[0].iter(f"{XHTML}th")]
    assert {"Wh / query", "deploy Wh / query", "compared with", "energy / token", "tokens/s"} <= set(headers)
    assert "total kWh" not in headers
    # The note under each table is rendered from the summary's terms of R: none of the configuration's note.
    sections = [s.split('id="lifecycle-', 1)[0] for s in html.split("Results: ")[1:]]
    assert "RANKING-NOTE" not in html
    for section, (queries, energy) in zip(sections, (("Q = 40 queries", "deploy_wh_per_query"),
                                                      ("ranking.energy: paper-literal", "total_kwh")), strict=True):
        assert section.count("R = w·φ/max φ + (1−w)·ρ/max ρ over the ranked cells of a dataset, w = 0.7.") == 2
        assert section.count("w = 0.7.") >= 2 and queries in section and energy in section


def test_quality_table_shows_every_difference_with_its_interval(tree, html):
    tables = _tables(tree, "quality")
    assert len(tables) == 1, "only rca carries intervals"
    rows = _rows_of(tables[0])
    assert len(rows) == 20
    headers = [_text(th) for th in tables[0].iter(f"{XHTML}th")]
    assert headers[-1] == "p(first)" and "Δ ρ" in headers and "Δ BERTScore F1 rescaled" in headers
    assert "Δ BLEU ×100" in headers
    interval = re.compile(r"^[+-]\d+\.\d{2,3} [▲▼○] ?\[-?\d+\.\d{2,3}, -?\d+\.\d{2,3}\]$")
    for tr in rows:
        cells = [_text(td) for td in tr.iter(f"{XHTML}td")]
        assert all(interval.match(c) for c in cells[2:10]), cells
        assert cells[10].endswith("%")
    marks = {td.get("class") for tr in rows for td in tr.iter(f"{XHTML}td") if td.get("class")}
    assert {"verdict-better", "verdict-worse", "verdict-no-clear-difference"} <= marks
    best = [_text(td) for td in rows[0].iter(f"{XHTML}td")]
    assert best[0] == "b4 e1 magnitude 2:4" and best[-1] == "46 %"
    saf = html.split("Results: saf", 1)[1].split("</section>", 1)[0]
    assert "Intervals were not computed" in saf and "▲" not in saf


def test_a_difference_without_both_bounds_is_not_shown():
    rows = realistic_rows()
    for row in rows:
        row["delta_bleu_lo"] = ""  # an estimate with half an interval
    html = render_html(realistic_inputs(rows=rows), TEMPLATES)
    table = _tables(ET.fromstring(html), "quality")[0]
    bleu = [[_text(td) for td in tr.iter(f"{XHTML}td")][2] for tr in _rows_of(table)]
    assert set(bleu) == {"not computed"}


def test_older_summaries_say_intervals_were_not_computed():
    html = render_html(old_inputs(), TEMPLATES)
    assert html.count("Intervals were not computed") == 2
    assert "p(first)" not in html and "▲" not in html.split('id="energy"')[0]
    assert "Hatched bars have no interval" in html  # Fig. 6 falls back to the sign of the point estimate


def test_every_figure_is_inline_with_a_caption(html, tree):
    figures = {f.get("id"): f for f in tree.iter(f"{XHTML}figure")}
    assert set(figures) == set(FIGURES)
    svg = "{http://www.w3.org/2000/svg}svg"
    for fig_id, title in FIGURES.items():
        figure = figures[fig_id]
        assert figure.find(f".//{svg}") is not None, f"{fig_id} has no inline SVG"
        caption = _text(figure.find(f"{XHTML}figcaption"))
        assert caption.startswith(title)
        if fig_id != "fig-pruning-impact":
            assert "CPU and RAM energy figures in this report are estimates, not measurements." in caption
    assert "emissions of the whole cell" in _text(figures["fig-inference-precision"])


def test_without_merge_forms_or_early_exits_their_sections_say_so(html, tree):
    assert "No merge form was evaluated (config key merge;" in _text(_tables(tree, "deployment-forms")[0])
    assert "No early-exit cell was evaluated." in html and "no early-exit cells were evaluated" in html


def _variant_rows() -> list[dict[str, str]]:
    """The realistic rows plus rca's b4 e1 cell merged and re-quantized, and two early exits of its b16 e1 cell
    along their thresholds."""
    rows = realistic_rows()
    parent = next(r for r in rows if (r["dataset"], r["bits"], r["epochs"], r["pruning"]) == ("rca", "4", "1", "none"))
    parent["model_form"] = "adapter on nf4 base"
    merged = {**parent, "pruning": "merged → re-quantized", "pruning_method": "merge", "model_form": "merged → nf4",
              "rho": "0.2014", "model_size_mb": "2.5", "delta_parent_rho": "-0.01", "delta_parent_rho_lo": "-0.016",
              "delta_parent_rho_hi": "-0.004", "energy_vs": "unpruned parent", "energy_ratio": "0.93",
              "energy_ratio_lo": "0.9", "energy_ratio_hi": "0.96", "energy_verdict": "lower", "rank": "21"}
    exits = []
    for threshold, fraction, share, rho in (("1.0", "1.21", "0.18", "0.2095"), ("0.5", "0.97", "0.22", "0.19")):
        exits.append({**next(r for r in rows if (r["dataset"], r["bits"], r["epochs"], r["pruning"]) ==
                             ("rca", "16", "1", "none")),  # fmt: skip
                      "pruning": f"early exit softmax-gap > {float(threshold):.2f}, shared (untrained) heads",
                      "pruning_method": "early-exit", "exit_threshold": threshold, "exit_measure": "softmax-gap",
                      "exit_heads": "shared", "mean_exit_layer": "3.1", "exit_layers": "4",
                      "exit_compute_fraction": fraction, "exit_test_share": share, "rho": rho, "rank": "22"})
    return [*rows, merged, *exits]


def test_a_merge_form_is_shown_beside_the_cell_as_trained_with_its_delta_rho():
    tree = ET.fromstring(render_html(realistic_inputs(rows=_variant_rows()), TEMPLATES))
    cells = [[_text(td) for td in tr.iter(f"{XHTML}td")] for tr in _rows_of(_tables(tree, "deployment-forms")[0])]
    assert len(cells) == 1
    assert cells[0][:5] == ["b4 e1", "adapter on nf4 base", "merged → nf4", "0.211", "0.201"]
    assert cells[0][5] == "-0.0100 [-0.0160, -0.0040] worse"
    assert cells[0][6].startswith("↓ lower") and cells[0][8:] == ["2.700", "2.500"]
    final = _text(_tables(tree, "final")[0])
    assert "merged → re-quantized merged → nf4" in final and "none adapter on nf4 base" in final


def test_early_exit_cells_show_their_setting_and_what_the_exit_tests_cost():
    tree = ET.fromstring(render_html(realistic_inputs(rows=_variant_rows()), TEMPLATES))
    cells = [[_text(td) for td in tr.iter(f"{XHTML}td")] for tr in _rows_of(_tables(tree, "early-exit")[0])]
    assert [c[:6] for c in cells] == [
        ["b16 e1", "softmax-gap, shared", "1.00", "3.10 / 4", "121.0 %", "18.0 %"],
        ["b16 e1", "softmax-gap, shared", "0.50", "3.10 / 4", "97.0 %", "22.0 %"],
    ]
    figure = next(f for f in tree.iter(f"{XHTML}figure") if f.get("id") == "fig-early-exit")
    assert "b16 e1 · softmax-gap, shared heads" in "".join(figure.itertext())


def test_pareto_table_names_the_non_dominated_cells(tree):
    table = _tables(tree, "pareto")[0]
    cells = [[_text(td) for td in tr.iter(f"{XHTML}td")][:2] for tr in _rows_of(table)]
    assert cells == [
        ["rca", "base"], ["rca", "b4 e1"], ["rca", "b4 e1 magnitude 2:4"], ["rca", "b4 e3"], ["rca", "b16 e3"],
        ["rca", "b32 e3"], ["saf", "base"], ["saf", "b4 e1"], ["saf", "b4 e1 magnitude 30%"],
    ]  # fmt: skip


def test_provenance_run_info_config_hash_and_failed_cells(html, tree):
    provenance = html.split('id="provenance"', 1)[1]
    for text in ("2026-11-22T02:24:12Z", "11 min 3 s (663 s)", "cpu: codecarbon-estimate; gpu: none",
                 "not run in a container", "ab" * 32, "CAN / quebec", "process", "AMD EPYC",
                 "torch.OutOfMemoryError", "calibration split has no examples", "status: skipped"):  # fmt: skip
        assert text in provenance, text
    assert provenance.count("ab" * 32) == 1 and provenance.index("ab" * 32) > provenance.index("Configuration (YAML)")
    assert "container digest" not in provenance  # absent entries are omitted
    with_image = render_html(realistic_inputs(run_info={"container_image": "joulebench.sif"}), TEMPLATES)
    assert "not run in a container" not in with_image and "joulebench.sif" in with_image
    assert "failed or skipped (reasons under" in html.split("Results: saf", 1)[1]


def test_example_answers_are_text(html, tree):
    section = next(s for s in tree.iter(f"{XHTML}section") if s.get("id") == "examples")
    answers = [td.text for td in section.iter(f"{XHTML}td")]
    assert answers[:3] == [
        "Cause: OSPF hello/dead timer mismatch on xe-0/0/16. Fix: Set the same intervals on both ends.",
        "Cause: A rogue client on VLAN 30 drained pool 10.25.72.0/24.\nFix: Enable DHCP snooping.",
        "interface interface interface",
    ]
    assert answers[4] == f"Correct. {SCRIPT} {IMG} & more"  # the XML parser unescaped the text, so it was text


def test_existing_callers_still_work():
    minimal = ReportInputs(rows=realistic_rows(uncertainty=False), training=[], config_yaml="w: 0.7\n", w=0.7, top_k=3,
                           provenance={}, energy_note="All energy figures come from hardware counters. More.",
                           ranking_note="", training_note="")  # fmt: skip
    html = render_html(minimal, TEMPLATES)
    ET.fromstring(html)
    assert "No example answers were collected" in html and "not run in a container" in html
    assert "no training losses with per-epoch energy recorded" in html


# --- the first page: what the numbers mean ----------------------------------------------------------------------


def _section(tree: ET.Element, section_id: str) -> ET.Element:
    return next(s for s in tree.iter(f"{XHTML}section") if s.get("id") == section_id)


def _cells(tr: ET.Element) -> list[str]:
    return [_text(td) for td in tr if td.tag in (f"{XHTML}td", f"{XHTML}th")]


def test_first_page_states_the_noise_floor_and_the_recommendation(html, tree):
    first = _section(tree, "how-to-read")
    text = _text(first)
    assert html.index('id="how-to-read"') < html.index('id="dataset-1"')
    # The noise floor: how often, when, how far it moved, the method and the rule.
    assert ("rca / tiny-llama: tiny-llama b32 e0 (the base model) was measured 3 times (its own evaluation and 2 "
            "re-measurements) between 2026-11-22 02:24:40 UTC and 2026-11-22 02:34:55 UTC (10 min 15 s apart)") in text
    assert "Its energy per token moved by 5.0 % (0.0100 to 0.0105 J/token, CV 2.6 %)" in text
    assert "its tokens/s by 4.0 % (1400 to 1456 tokens/s, CV 2.1 %)" in text
    assert "outside ×0.952 … ×1.050, a tokens/s ratio outside ×0.962 … ×1.040" in text
    assert "floor = max / min − 1 of those medians" in text
    assert "called lower or higher only when its whole 95 % interval lies beyond the run's noise floor" in text
    assert "a comparison between two cells uses the larger floor of their two widths" in text
    by_bits = [[_text(td) for td in tr.iter(f"{XHTML}td")] for table in _tables(first, "floor-by-bits")
               for tr in table.iter(f"{XHTML}tr")][1:]  # fmt: skip
    assert by_bits == [["4", "2", "12.0 %", "11.0 %"], ["32", "3", "5.0 %", "4.0 %"]]
    assert "saf / tiny-llama: tiny-llama b32 e0 (the base model) was measured 1 time" in text
    assert "Its energy per token has no floor (fewer than two measurements)" in text
    # The recommendation: the rank-1 cell, its paired figures against the base with their verdicts, Δρ, p(first).
    recommendations = [d for d in first.iter(f"{XHTML}div") if d.get("class") == "recommendation"]
    rca, saf = (_text(d) for d in recommendations)
    assert rca.startswith("rca: the ranking puts b4 e1 magnitude 2:4 first of 20 ranked cells")
    assert "energy per query against the base model (paired, 5 rounds) ×0.820 [0.780, 0.860]: lower" in rca
    assert "tokens/s against the base model (paired) ×1.040 [0.970, 1.110]: within noise (the interval includes 1)" \
        in rca  # fmt: skip
    assert "Δρ against the base model (paired bootstrap 95 %) +0.136 [0.078, 0.194]: better" in rca
    assert "p(first) = 46 %" in rca
    assert "The winner changes with Q: 10³: b4 e1; 10⁶: b4 e1 magnitude 2:4; 10⁹: b4 e1 magnitude 2:4." in rca
    assert "The winner changes with w: 0.3: b32 e3; 0.5: b4 e1 magnitude 2:4" in rca
    assert ("What this run supports: b4 e1 magnitude 2:4 ranks first; uses less energy per query than the base model, "
            "beyond the noise floor; its speed cannot be told from the base model's in this run") in rca
    # saf: its finalists job failed, so no paired figure is invented; its ranking does not depend on Q.
    assert "no paired figures: the finalists job failed: CUDA out of memory." in saf
    assert "×" not in saf.split("Δρ")[0]
    assert "Q does not enter this ranking (ranking.energy: paper-literal)" in saf
    # The first page also names the finalists with their roles and paired figures.
    finalists = {cells[0]: cells[1:] for tr in _tables(first, "finalists")[0].iter(f"{XHTML}tr")
                 if (cells := _cells(tr))}  # fmt: skip
    assert finalists["base"] == ["base", "reference", "reference"]
    assert finalists["b4 e1 magnitude 2:4"] == ["rank 1", "↓ lower ×0.820 [0.780, 0.860]",
                                                "≈ within noise ×1.040 [0.970, 1.110]"]  # fmt: skip
    assert finalists["b32 e3"][0] == "baseline, highest ρ"
    assert finalists["optimised vs baseline: b4 e1 magnitude 2:4 ÷ b32 e3"] == [
        "rank 1 ÷ baseline", "↓ lower ×0.710 [0.660, 0.760]", "↑ higher ×1.300 [1.220, 1.380]"]
    assert "saf: no paired figures: the finalists job failed" in text


def test_at_a_glance_picks_least_deploy_energy_with_paired_figures(tree):
    table = _tables(_section(tree, "how-to-read"), "glance")[0]
    headers = [_text(th) for th in table.iter(f"{XHTML}th")]
    assert headers == ["dataset", "criterion", "cell", "rank", "R (score)", "ρ", "deploy Wh / query",
                       "energy / query vs base (paired)", "tokens/s vs base (paired)", "p(first)"]  # fmt: skip
    picks: dict[tuple[str, str], list[str]] = {}
    dataset = ""
    for tr in _rows_of(table):
        if len(cells := _cells(tr)) > 3:
            dataset = cells[0] or dataset
            picks[(dataset, cells[1])] = cells[2:]
    assert picks[("rca", "best R")][:2] == ["b4 e1 magnitude 2:4", "1"]
    assert picks[("rca", "best R")][5:7] == ["↓ lower ×0.820 [0.780, 0.860]", "≈ within noise ×1.040 [0.970, 1.110]"]
    least = picks[("rca", "least energy")]
    assert least[0] == "b4 e1" and least[4] == report.format_sig(7.829e-05 * 1000 / QUERIES)
    assert least[5] == "≈ within noise ×0.970 [0.930, 1.020]"
    assert picks[("rca", "highest ρ")][0] == "b32 e3"
    assert picks[("saf", "least energy")][0] == "b4 e1"
    assert "not re-measured side by side" in picks[("saf", "least energy")]


def test_within_noise_is_printed_as_such(tree):
    final = _tables(tree, "final")[0]
    headers = [_text(th) for th in final.iter(f"{XHTML}th")]
    column = headers.index("energy / token")
    rows = {tr.get("data-rank"): tr for tr in _rows_of(final)}

    def cell(rank: str, offset: int = 0) -> ET.Element:
        return [td for td in rows[rank] if td.tag == f"{XHTML}td"][column + offset]

    # b4 e1 against the base: ×0.877, its interval [0.789, 0.964] reaches into the floor's band (×0.952 …).
    noise = cell("2")
    assert _text(noise) == "≈ within noise ×0.877 [0.789, 0.964]" and "verdict-within-noise" in noise.get("class")
    assert _text([td for td in rows["2"] if td.tag == f"{XHTML}td"][column - 1]) == "base model"
    # b16 e1: ×0.755 [0.680, 0.831], wholly below ×0.952: lower; its speed is higher (×1.620).
    assert _text(cell("4")).startswith("↓ lower ×0.755") and "verdict-better" in cell("4").get("class")
    assert _text(cell("4", 1)).startswith("↑ higher") and "verdict-better" in cell("4", 1).get("class")
    # A pruned cell is compared with its unpruned parent; the base model is the reference.
    assert _text([td for td in rows["1"] if td.tag == f"{XHTML}td"][column - 1]) == "unpruned parent"
    assert _text(cell("base")) == "reference"
    verdicts = {_text(td).split(" ×")[0] for tr in _rows_of(final) for td in tr if "verdict" in (td.get("class") or "")}
    assert verdicts <= {"≈ within noise", "↓ lower", "↑ higher", "reference"} and "≈ within noise" in verdicts


def test_bleu_is_printed_times_100(tree):
    for css in ("final", "finetune"):
        table = _tables(tree, css)[0]
        headers = [_text(th) for th in table.iter(f"{XHTML}th")]
        column = headers.index("BLEU ×100")
        first = [_text(td) for td in _rows_of(table)[1 if css == "final" else 0] if td.tag == f"{XHTML}td"]
        # rank 1 of the final ranking (b4 e1 magnitude 2:4) and of the fine-tune ranking (b4 e1): BLEU = 0.2 ρ.
        assert first[column] == f"{100 * 0.2 * (0.2329 if css == 'final' else 0.2114):.2f}"
    quality = _tables(tree, "quality")[0]
    first = [_text(td) for td in _rows_of(quality)[0] if td.tag == f"{XHTML}td"]
    assert first[2].startswith(f"{100 * 0.2 * (0.2329 - 0.097):+.2f}")  # Δ BLEU ×100


def test_sensitivity_tables_list_every_q_and_w_with_its_winner(tree, html):
    rca = _section(tree, "dataset-1")
    by_q = [_cells(tr) for tr in _rows_of(_tables(rca, "by-queries")[0])]
    assert [(r[0], r[1], r[2]) for r in by_q] == [("10³ (1,000)", "0.7", "b4 e1"),
                                                  ("10⁶ (1,000,000)", "0.7", "b4 e1 magnitude 2:4"),
                                                  ("10⁹ (1,000,000,000)", "0.7", "b4 e1 magnitude 2:4")]  # fmt: skip
    by_w = [_cells(tr) for tr in _rows_of(_tables(rca, "by-w")[0])]
    assert [(r[0], r[1], r[2]) for r in by_w] == [("0.3", "40", "b32 e3"), ("0.5", "40", "b4 e1 magnitude 2:4"),
                                                  ("0.7 (this run)", "40", "b4 e1 magnitude 2:4"),
                                                  ("0.9", "40", "b4 e1 magnitude 2:4")]  # fmt: skip
    assert "The winner changes with Q" in _text(rca)
    saf = _section(tree, "dataset-2")
    q_rows = [_cells(tr) for tr in _rows_of(_tables(saf, "by-queries")[0])]
    assert [r[0] for r in q_rows] == ["10³ (1,000)", "10⁶ (1,000,000) (this run)", "10⁹ (1,000,000,000)"]
    assert "The energy mode does not depend on Q (ranking.energy: paper-literal)" in _text(saf)


def test_every_term_of_r_and_the_signatures_are_under_the_tables(tree):
    rca = _text(_section(tree, "dataset-1"))
    terms = ("Terms of R: w = 0.7; Q = 40 queries (ranking.queries; lifecycle.queries unless set); energy "
             "(ranking.energy) = deployment: C = deploy_wh_per_query, Wh per query; ρ (ranking.rho) = rescaled; "
             f"C_base, the base model's cost = tiny-llama: {report.format_sig(1.08e-05 * 1000 / QUERIES)} Wh per "
             "query; max φ = 0.1380; max ρ = 0.4907; cells ranked = 20.")  # fmt: skip
    assert rca.count(terms) == 1  # under the final ranking; the fine-tune ranking normalises over its own cells
    assert rca.count("max φ = 0.1310; max ρ = 0.4812; cells ranked = 12.") == 1
    assert rca.count("the last two rescaled against their floor") == 2  # the ρ definition of ranking.rho: rescaled
    assert rca.count("BERTScore|bert-score:0.3.13|model:all-MiniLM-L6-v2|layer:6") == 2
    saf = _text(_section(tree, "dataset-2"))
    assert "energy (ranking.energy) = paper-literal: C = total_kwh, kWh" in saf
    assert "ρ = the plain mean of BLEU" in saf


def test_energy_table_has_the_serving_figures_and_verdicts(tree):
    section = _section(tree, "energy")
    table = _tables(section, "energy")[0]
    headers = [_text(th) for th in table.iter(f"{XHTML}th")]
    assert headers == ["dataset", "cell", "CPU kWh", "GPU kWh", "RAM kWh", "train kWh", "prepare kWh",
                       "J / token, tokens pinned ±95% CI", "Wh / query, real lengths ±95% CI", "deploy Wh / query",
                       "tokens/s ±95% CI", "ttft s, batch 1 ±95% CI", "tpot s, batch 1 ±95% CI", "compared with",
                       "energy / token", "tokens/s"]  # fmt: skip
    first = _cells(_rows_of(table)[1])  # rca, rank 1: b4 e1 magnitude 2:4
    assert first[1] == "b4 e1 magnitude 2:4" and first[8] == f"{report.format_sig(5.117e-06 * 1000 / QUERIES)} ± " \
        f"{report.format_sig(5.117e-06 * 20 / QUERIES)}"  # fmt: skip
    assert first[11] == "0.00400 ± 2.00e-04" and first[13] == "unpruned parent"
    text = _text(section)
    assert "Wh / 1k queries" not in text
    for words in ("J / token is from the timed passes over the test prompts with the number of generated tokens pinned",
                  "Wh / query from answer passes that stop at end-of-sequence",
                  "measured at batch 1, one prompt at a time: they are not a batch's time divided by its queries",
                  "called lower or higher only when its whole 95 % interval lies beyond the run's noise floor",
                  "so those figures are estimates, not measurements"):  # fmt: skip
        assert words in text, words


def test_an_old_summary_without_the_new_sections_renders():
    html = render_html(old_inputs(), TEMPLATES)
    tree = ET.fromstring(html)
    first = _text(_section(tree, "how-to-read"))
    assert "This summary has no noise floor (it predates the base model's re-measurements over the run)" in first
    assert ("no paired figures: this summary has no finalists section (it predates the side-by-side "
            "re-measurement)") in first
    assert "not known: this summary has no sensitivity tables (it predates them)" in first
    assert "least energy no cell has a deployment energy per query" in first
    assert "RANKING-NOTE" in html and "this summary does not record the terms of R" in html
    assert "this summary records no metric signatures" in html
    assert "no evaluated cells with a deployment energy per query and a quality figure" in html
    assert "BERTScore F1 rescaled" not in html  # raw scores, as the old summary had them
    lifecycle = _lifecycle_sections(tree)["rca"]
    measures = _table_cells(lifecycle, "lifecycle")
    assert measures["energy: inference per query (real answer lengths)"][-1] == "no paired measurement: not tested"
    assert "this summary has no finalists section" in _text(lifecycle)


# --- optimised vs baseline ---------------------------------------------------------------------------------------


def _lifecycle_sections(tree: ET.Element) -> dict[str, ET.Element]:
    sections = [s for s in tree.iter(f"{XHTML}section") if s.get("id", "").startswith("lifecycle-")]
    return {_text(s.find(f"{XHTML}h2")).removeprefix("Optimised vs baseline: "): s for s in sections}


def _table_cells(section: ET.Element, css: str) -> dict[str, list[str]]:
    """First cell's text -> the row's other cells, of the section's table with class `css`."""
    table = _tables(section, css)[0]
    return {cells[0]: cells[1:] for tr in table.iter(f"{XHTML}tr")
            if (cells := [_text(c) for c in tr if c.tag in (f"{XHTML}td", f"{XHTML}th")]) and cells[0]}  # fmt: skip


def test_optimised_vs_baseline_without_the_new_columns(tree, html):
    """A summary from before precision, build energy and batch latency existed: defaults, blanks, no crash."""
    sections = _lifecycle_sections(tree)
    assert list(sections) == ["rca", "saf"]
    rca = sections["rca"]
    lead = _text(rca.find(f"{XHTML}p"))
    assert lead.startswith("Baseline b32 e3: the unpruned fine-tuned cell at 32 bits and 3 epochs")
    assert "Optimised b4 e1 magnitude 2:4: the cell ranked first by R" in lead and "1,000,000 queries" in lead
    cells = _table_cells(rca, "lifecycle-cells")
    assert cells["training precision"] == ["32-true", "32-true"]
    assert cells["pruning / exit"] == ["none", "magnitude 2:4"]
    measures = _table_cells(rca, "lifecycle")
    # Not recorded: blank; but measured side by side, so its verdict is the paired one (tokens/s higher: time lower).
    assert measures["inference time per batch (tokens pinned)"] == [
        "s", "", "", "", "lower", "lower paired tokens/s ×1.300 [1.220, 1.380]"]
    assert measures["model size"] == ["MB", "15.0", "2.70", "-82.0 %", "lower", "one measurement each: not tested"]
    # Lifecycle kWh at 10⁶ queries: build not recorded, so fine-tuning + preparation + 10⁶ × Wh per query / 1000.
    row = next(r for r in realistic_rows() if r["dataset"] == "rca" and r["bits"] == "4" and r["rank"] == "1")
    expected = float(row["train_kwh"]) + float(row["prepare_kwh"]) + float(row["wh_per_query"]) * 1000
    assert measures["energy: lifecycle at 1,000,000 queries"][2] == format_kwh(expected)
    stages = _table_cells(rca, "lifecycle-stages")
    assert stages["build (pre-training the base model)"] == ["not recorded", "", "", "", "not recorded", "", "", ""]
    assert stages["fine-tuning"][2] == "measured for the cell" and stages["fine-tuning"][1] == "3.90"
    assert stages["lifecycle (Σ)"][4] == format_kwh(expected)
    text = _text(rca)
    assert "Build energy not recorded" in text
    assert "CPU and RAM energy figures in this report are estimates" in text and "ram=codecarbon-estimate" in text
    saf = _text(sections["saf"])
    assert "Baseline b16 e1" in saf and "16 bits and 1 epoch," in saf and "Optimised b4 e1 magnitude 30%" in saf


def test_optimised_vs_baseline_with_the_new_columns():
    rows = realistic_rows()
    for row in rows:
        row.update(precision="32-true", sparse_training="dense", build_kwh="0.25", batch_latency_s="0.5",
                   train_wall_s="40", accuracy="0.700", auc_roc="0.800")  # fmt: skip
        if row["dataset"] == "rca" and row["bits"] == "16" and row["epochs"] == "1" and row["pruning"] == "none":
            row.update(precision="bf16-mixed", batch_latency_s="0.25", accuracy="0.750", auc_roc="0.790")
        if row["dataset"] == "saf" and row.get("rank") == "1":
            row.update(pruning="early exit τ=0.90", early_exit="early exit τ=0.90", mean_exit_layer="2.75")
    lifecycle = {"queries": 5000, "emission_factors_g_per_kwh": {"build": 400, "inference": 20},
                 "baseline": {"bits": 16, "precision": "bf16-mixed"}}  # fmt: skip
    html = render_html(realistic_inputs(rows=rows, lifecycle=lifecycle), TEMPLATES)
    sections = _lifecycle_sections(ET.fromstring(html))
    rca = sections["rca"]
    lead = _text(rca.find(f"{XHTML}p"))
    assert "Baseline b16 e1 bf16-mixed:" in lead and "5,000 queries" in lead
    assert "(epochs: the largest evaluated" in lead
    measures = _table_cells(rca, "lifecycle")
    # The finalists measured b32 e3 as the baseline, not this b16 e1: no paired verdict for this table.
    assert measures["inference time per batch (tokens pinned)"] == [
        "s", "0.250", "0.500", "+100.0 %", "lower", "no paired measurement: not tested"]
    assert measures["accuracy"] == ["", "0.750", "0.700", "-6.7 %", "higher", "one measurement each: not tested"]
    assert measures["AUC-ROC"][3] == "+1.3 %"
    coloured = [td for tr in _tables(rca, "lifecycle")[0].iter(f"{XHTML}tr") for td in tr
                if td.get("class") in ("verdict-worse", "verdict-better")]  # fmt: skip
    assert coloured == []  # no change is coloured without a paired verdict
    assert "not this table's optimised cell and baseline" in _text(rca)
    stages = _table_cells(rca, "lifecycle-stages")
    assert stages["build (pre-training the base model)"][:4] == ["0.250", "400", "configured", "0.100"]
    assert stages["inference at 5,000 queries"][1:3] == ["20.0", "configured"]
    assert "Build energy not recorded" not in _text(rca)
    saf = sections["saf"]
    assert "matches the baseline" in _text(saf)  # saf has no bf16-mixed cell: no baseline to compare with
    lifecycle["baseline"] = {"bits": 16, "precision": "32-true"}
    saf = _lifecycle_sections(ET.fromstring(render_html(realistic_inputs(rows=rows, lifecycle=lifecycle), TEMPLATES)))
    cells = _table_cells(saf["saf"], "lifecycle-cells")
    assert cells["pruning / exit"] == ["none", "early exit τ=0.90"] and cells["mean exit layer"] == ["", "2.75"]


def test_optimised_vs_baseline_verdicts_come_from_the_paired_rounds(tree):
    rca = _lifecycle_sections(tree)["rca"]
    table = _tables(rca, "lifecycle")[0]
    headers = [_text(th) for th in table.iter(f"{XHTML}th")]
    assert headers[-1] == "verdict (paired rounds)"
    measures = _table_cells(rca, "lifecycle")
    energy = measures["energy: inference per query (real answer lengths)"]
    assert energy[-1] == "lower paired ×0.710 [0.660, 0.760]" and energy[3] == "-16.4 %"
    assert measures["inference time per batch (tokens pinned)"][-1] == "lower paired tokens/s ×1.300 [1.220, 1.380]"
    tested = {"energy: inference per query (real answer lengths)", "inference time per batch (tokens pinned)"}
    assert all(cells[-1] == "one measurement each: not tested" for name, cells in measures.items()
               if name not in tested and name != "measure")  # fmt: skip
    # Only the tested change is coloured, in the way its verdict goes (less energy: better).
    coloured = {(_cells(tr)[0], td.get("class")) for tr in table.iter(f"{XHTML}tr") for td in tr
                if "verdict-" in (td.get("class") or "")}  # fmt: skip
    assert coloured == {("energy: inference per query (real answer lengths)", "verdict-better"),
                        ("energy: inference per query (real answer lengths)", "text verdict-better"),
                        ("inference time per batch (tokens pinned)", "text verdict-better")}  # fmt: skip
    assert "A change is coloured green or red only where its verdict says lower or higher" in _text(rca)


def test_a_within_noise_paired_verdict_colours_nothing():
    sections = new_sections()
    ovb = sections["finalists"][0]["optimised_vs_baseline"]
    ovb["energy"] = _ratio((0.96, 0.9, 1.02))
    ovb["energy_verdict"] = {"verdict": "within noise", "reason": "the interval includes 1"}
    html = render_html(realistic_inputs(finalists=sections["finalists"]), TEMPLATES)
    rca = _lifecycle_sections(ET.fromstring(html))["rca"]
    measures = _table_cells(rca, "lifecycle")
    energy = measures["energy: inference per query (real answer lengths)"]
    assert energy[-1] == "within noise paired ×0.960 [0.900, 1.020]"
    energy_row = next(tr for tr in _tables(rca, "lifecycle")[0].iter(f"{XHTML}tr")
                      if _cells(tr)[0].startswith("energy: inference per query"))  # fmt: skip
    assert not any(td.get("class") in ("verdict-better", "verdict-worse") for td in energy_row)


def test_optimised_vs_baseline_says_why_there_is_no_comparison():
    rows = realistic_rows()
    for row in rows:  # saf: the baseline is itself the best-ranked cell
        if row["dataset"] == "saf" and row.get("rank") in ("1", "3"):
            row["rank"] = {"1": "3", "3": "1"}[row["rank"]]
    html = render_html(realistic_inputs(rows=rows, lifecycle={"baseline": {"bits": 8}}), TEMPLATES)
    sections = _lifecycle_sections(ET.fromstring(html))
    rca = _text(sections["rca"])
    assert "Baseline b8 e3" in rca and "bits as configured" not in rca and "(epochs: the largest evaluated" in rca
    saf = _text(sections["saf"])
    assert "No evaluated, unpruned fine-tuned cell of this dataset matches the baseline" in saf and "bits 8" in saf
    assert not _tables(sections["saf"], "lifecycle")
    unranked = [{**r, "rank": ""} if r["dataset"] == "rca" else r for r in rows]
    sections = _lifecycle_sections(ET.fromstring(render_html(realistic_inputs(rows=unranked), TEMPLATES)))
    assert "No cell of this dataset is ranked" in _text(sections["rca"])
    saf = _text(sections["saf"])
    assert "The best-ranked cell by R, b16 e1, is the baseline itself" in saf and "every change is 0" in saf


# --- safety -----------------------------------------------------------------------------------------------------


def test_hostile_names_and_model_text_stay_text():
    html = render_html(hostile_inputs(), TEMPLATES)
    checker = _Balance()
    checker.feed(html)
    checker.close()
    assert "script" not in checker.tags and "img" not in checker.tags
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    tree = ET.fromstring(html)
    # Every string came through as text: in the examples, the names, the charts' <text> and the config.
    examples = next(s for s in tree.iter(f"{XHTML}section") if s.get("id") == "examples")
    assert f"</td></tr></table>{SCRIPT}" in [td.text for td in examples.iter(f"{XHTML}td")]
    titles = [_text(h) for h in tree.iter(f"{XHTML}h2")]
    assert f"Results: saf {SCRIPT}" in titles
    chart_text = " ".join(_text(t) for t in tree.iter("{http://www.w3.org/2000/svg}text"))
    assert f"saf {SCRIPT}" in chart_text


def test_pdf_rendering_never_touches_the_network(tmp_path, monkeypatch):
    attempts: list[Any] = []
    real_fetch = report.NoFetchURLFetcher.fetch

    def spy_fetch(self, url, headers=None):
        attempts.append(url)
        return real_fetch(self, url, headers)

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access during report rendering")

    monkeypatch.setattr(report.NoFetchURLFetcher, "fetch", spy_fetch)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    write_report(hostile_inputs(), TEMPLATES, tmp_path / "r.html", tmp_path / "r.pdf")
    assert attempts == []
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.pdf"], "a temp file was left behind"
    # The spy does see a fetch when there is one, so the empty list above means something.
    with pytest.raises(report.ReportFetchError):
        report.html_to_pdf(f"<html><body>{IMG}</body></html>")
    assert attempts == ["http://example.invalid/x"]


@pytest.mark.parametrize(
    "resource",
    [
        '<img src="http://example.invalid/x.png">',
        '<link rel="stylesheet" href="https://example.invalid/s.css">',
        '<style>@import url("http://example.invalid/i.css");</style>',
        '<div style="background: url(http://example.invalid/b.png)">x</div>',
        '<img src="data:image/png;base64,iVBORw0KGgo=">',
    ],
)
def test_an_external_resource_stops_the_pdf(resource):
    with pytest.raises(report.ReportFetchError, match="fetch"):
        report.html_to_pdf(f"<html><head></head><body>{resource}</body></html>")


# --- the PDF ----------------------------------------------------------------------------------------------------


def test_pdf_pages_have_content_and_every_figure(rendered):
    _needs("pdfinfo", "pdftoppm", "pdftotext")
    pdf = rendered / "report.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 8 and "A4" in info
    subprocess.run(["pdftoppm", "-r", "20", "-png", str(pdf), str(rendered / "page")], check=True)
    pngs = sorted(rendered.glob("page-*.png"))
    assert len(pngs) == pages
    inks = {png.name: _page_ink(png) for png in pngs}
    assert all(ink > 0.01 for ink in inks.values()), inks
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split())
    for title in FIGURES.values():
        assert title in flat, title
    for heading in ("Fine-tune ranking", "Final ranking after pruning", "Quality against the base model",
                    "Example answers", "Provenance", "→ pruned", "rca: Δρ against the unpruned parent",
                    "Optimised vs baseline: rca", "Lifecycle carbon by stage", "Recommendation",
                    "The run's noise floor", "Finalists, measured side by side", "The winner against Q and w",
                    "Energy and speed per cell"):  # fmt: skip
        assert heading in flat, heading


def test_wide_tables_sit_on_landscape_pages(rendered):
    _needs("pdfinfo")
    pdf = str(rendered / "report.pdf")
    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "99", pdf], capture_output=True, text=True, check=True).stdout
    sizes = re.findall(r"Page\s+\d+ size:\s+([\d.]+) x ([\d.]+)", info)
    landscape = [float(w) > float(h) for w, h in sizes]
    assert landscape[0] is False and any(landscape), "the per-dataset tables should be on landscape pages"


def test_blank_page_check_can_fail(tmp_path):
    _needs("pdftoppm")
    pdf = tmp_path / "blank.pdf"
    pdf.write_bytes(report.html_to_pdf("<html><body><p style='break-after: page'>x</p><p></p></body></html>"))
    subprocess.run(["pdftoppm", "-r", "20", "-png", str(pdf), str(tmp_path / "page")], check=True)
    inks = [_page_ink(png) for png in sorted(tmp_path.glob("page-*.png"))]
    assert len(inks) == 2 and inks[1] < 0.01


# --- formatting -------------------------------------------------------------------------------------------------


def test_number_formatting():
    assert format_kwh("1.23e-05") == "1.23e-05"
    assert format_kwh("0.001234") == "0.00123"
    assert format_kwh("12.345") == "12.3"
    assert format_kwh("0.09996") == "0.100"
    assert format_kwh("0") == "0"
    assert format_kwh("") == format_metric("") == ""
    assert format_metric("0.12345") == "0.123"
    assert format_metric("n/a") == "n/a"
    assert format_duration(663) == "11 min 3 s (663 s)"
    assert format_duration(3725.5) == "1 h 2 min 6 s (3725.5 s)"
    assert report.format_delta(0.1234) == "+0.123" and report.format_delta(-0.05) == "-0.050"
    assert report.run_info_items({"meters": {"cpu": "rapl"}, "pue": [1.0, 1.2], "extra_key": "x"}) == [
        ("container image", "not run in a container"), ("energy meters (component: source)", "cpu: rapl"),
        ("PUE", "1.0, 1.2"), ("extra key", "x"),
    ]  # fmt: skip


# --- answers that carry no quality information, and blank quality figures (issue 19) ----------------------------


def _dataset_section(tree: ET.Element, dataset: str) -> ET.Element:
    return next(s for s in tree.iter(f"{XHTML}section") if "dataset" in s.get("class", "").split()
                and _text(s.find(f"{XHTML}h2")) == f"Results: {dataset}")  # fmt: skip


def _with_answers(rows: list[dict[str, str]], same: bool) -> list[dict[str, str]]:
    """Every ok cell's answers fingerprint: one answer list for all rca cells (`same`), or one list each."""
    for index, row in enumerate(rows):
        if row["status"] == "ok":
            digest = "f" * 64 if same and row["dataset"] == "rca" else f"{index:064x}"
            row.update(answers_sha256=digest, answers_count="40", answers_distinct="9", answers_empty="0")
    return rows


def test_one_answer_list_across_the_ranked_cells_is_warned_about_near_the_ranking():
    tree = ET.fromstring(render_html(realistic_inputs(rows=_with_answers(realistic_rows(), same=True)), TEMPLATES))
    rca, saf = _dataset_section(tree, "rca"), _dataset_section(tree, "saf")
    warning = [div for div in rca.iter(f"{XHTML}div") if "same-answers" in div.get("class", "").split()]
    assert len(warning) == 1
    text = _text(warning[0])
    assert "All 20 ranked cells of this dataset gave the same answers" in text
    assert "the quality ranking carries no information" in text and "So did the base model." in text
    children = list(rca)
    assert children.index(warning[0]) < children.index(_tables(rca, "finetune")[0])  # above the rankings
    assert "same-answers" not in ET.tostring(saf, encoding="unicode")  # saf's cells answered differently


def test_no_warning_when_the_answer_lists_differ_or_are_not_recorded(html):
    assert "same-answers" not in html and "carries no information" not in html  # no fingerprints: not claimed
    different = render_html(realistic_inputs(rows=_with_answers(realistic_rows(), same=False)), TEMPLATES)
    assert "carries no information" not in different
    rows = _with_answers(realistic_rows(), same=True)
    next(r for r in rows if r["dataset"] == "rca" and r["epochs"] == "3")["answers_sha256"] = "e" * 64
    assert "carries no information" not in render_html(realistic_inputs(rows=rows), TEMPLATES)


def test_a_constant_answer_and_blank_quality_figures_are_noted_on_the_cell_never_shown_as_0():
    rows = _with_answers(realistic_rows(), same=False)
    constant = next(r for r in rows if r["dataset"] == "rca" and r["rank"] == "2")
    constant["answers_distinct"] = "1"
    blank = next(r for r in rows if r["dataset"] == "rca" and r["rank"] == "3")
    blank.update(dict.fromkeys(("rank", "score", "rho", *report.QUALITY_METRICS), ""), answers_empty="40",
                 answers_distinct="1", quality_note="bleu, rouge1: no value: every answer is empty: there is no text "
                 "to score", rho_note="no ρ, so not ranked: bleu, rouge1: every answer is empty: there is no text to "
                 "score")  # fmt: skip
    rca = _dataset_section(ET.fromstring(render_html(realistic_inputs(rows=rows), TEMPLATES)), "rca")
    notes = _text(next(d for d in rca.iter(f"{XHTML}div") if "cell-notes" in d.get("class", "").split()))
    assert "n1 b4 e1: all 40 answers are one and the same text (a constant answer" in notes
    assert "n2 b4 e1 magnitude 30%: every one of its 40 answers is empty; no ρ, so not ranked" in notes
    final = {_cells(tr)[0]: _cells(tr) for tr in _rows_of(_tables(rca, "final")[0])}
    assert final["— n2"][6:14] == ["—"] * 8  # ρ and the seven metrics: a dash, never 0
    assert "2 n1" in final and "0.000" not in final["— n2"]


# --- several inference backends (inference.backends) -----------------------------------------------------------

TRANSFORMERS_FORMATS = {"4": "bitsandbytes nf4", "8": "bitsandbytes int8", "16": "bfloat16", "32": "float32"}
GGUF_FORMATS = {"4": "GGUF Q4_K_M", "8": "GGUF Q8_0", "16": "GGUF F16", "32": "GGUF F32"}
# rca cells also served by llama.cpp, (bits, epochs, pruning) -> (ρ, Wh per query, Δρ against transformers, half
# width of its interval; None: no interval).
LLAMA_CELLS = {
    ("32", "0", "none"): (0.096, 0.05, -0.001, 0.004),
    ("4", "1", "none"): (0.1814, 0.04, -0.03, 0.012),
    ("16", "1", "none"): (0.2090, 0.06, -0.0005, 0.005),
    ("4", "1", "magnitude 2:4"): (0.2029, 0.045, None, None),
}


def backend_rows() -> list[dict[str, str]]:
    """The realistic rows, each with its format (no `backend` column: an older transformers row), and rca's base
    model, b4 e1, b16 e1 and b4 e1 magnitude 2:4 served by llama.cpp too: not the reference, not ranked on the
    fine-tune ranking, with Δρ against the same cell on transformers."""
    rows = realistic_rows()
    for row in rows:
        row["format"] = TRANSFORMERS_FORMATS[row["bits"]]
    served = []
    for row in rows:
        values = LLAMA_CELLS.get((row["bits"], row["epochs"], row["pruning"]))
        if row["dataset"] != "rca" or values is None:
            continue
        rho, wh, delta, half = values
        twin = {k: v for k, v in row.items()
                if not k.startswith(("finetune_", "delta_parent", "paired_", "finalist", "energy_", "speed_"))}
        twin.update(backend="llama.cpp", format=GGUF_FORMATS[row["bits"]], format_detail="q4_K ×9, q6_K ×3, f32 ×7",
                    is_reference="0", rho=str(rho), wh_per_query=str(wh), rank="" if row["epochs"] == "0" else "21")
        if delta is not None:
            twin.update(delta_backend_rho=str(delta), delta_backend_rho_lo=str(delta - half),
                        delta_backend_rho_hi=str(delta + half))  # fmt: skip
        served.append(twin)
    return rows + served


def _llama(rows: list[dict[str, str]], bits: str, epochs: str, pruning: str = "none") -> dict[str, str]:
    return next(r for r in rows if r.get("backend") == "llama.cpp" and (r["bits"], r["epochs"], r["pruning"]) ==
                (bits, epochs, pruning))  # fmt: skip


@pytest.fixture(scope="module")
def backend_tree() -> ET.Element:
    html = render_html(realistic_inputs(rows=backend_rows()), TEMPLATES)
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "an id is defined twice (several inline SVGs)"
    return ET.fromstring(html)


def test_each_backend_has_its_own_figure_and_quality_table(backend_tree):
    figures = {f.get("id"): f for f in backend_tree.iter(f"{XHTML}figure")}
    assert set(figures) == {*FIGURES, "fig-backends"}
    figure = figures["fig-backends"]
    assert figure.find(".//{http://www.w3.org/2000/svg}svg") is not None
    caption = _text(figure.find(f"{XHTML}figcaption"))
    assert caption.startswith("Figure 7. Energy per query against quality, by inference backend.")
    assert "CPU and RAM energy figures in this report are estimates, not measurements." in caption
    table = _tables(backend_tree, "backend-quality")[0]
    cells = [_cells(tr) for tr in _rows_of(table)]
    # 16-bit cells first (the control), then by bits; the format served beside transformers' own.
    detail = " q4_K ×9, q6_K ×3, f32 ×7"
    assert [c[1] for c in cells[:4]] == [
        f"b16 e1 · llama.cpp GGUF F16{detail}", f"b4 e1 · llama.cpp GGUF Q4_K_M{detail}",
        f"b4 e1 magnitude 2:4 · llama.cpp GGUF Q4_K_M{detail}", f"base · llama.cpp GGUF F32{detail}",
    ]  # fmt: skip
    assert cells[0][0] == "rca" and cells[0][2:5] == ["transformers bfloat16", "0.209", "0.209"]
    assert cells[0][5] == "-0.0005 ○ [-0.0055, 0.0045] no clear difference"
    assert cells[1][2] == "transformers bitsandbytes nf4" and cells[1][5].endswith("worse")
    assert cells[2][5] == "no interval"
    tally = cells[4][1]
    assert tally.startswith("llama.cpp against transformers, by bit width: 16-bit (control): 1 × no clear difference")
    assert "4-bit: 1 × worse, 1 × no interval" in tally and "32-bit: 1 × no clear difference" in tally
    notes = [_text(p) for p in backend_tree.iter(f"{XHTML}p") if _text(p).startswith("Not run on llama.cpp")]
    assert notes and "early-exit cells (llama.cpp decodes every layer" in notes[0] and "merge cells" in notes[0]


def test_a_transformers_only_report_has_no_backend_section_or_column(html, tree):
    body = html.split("</style>", 1)[1]
    assert 'id="backends"' not in body and "fig-backends" not in body and "served as" not in body
    assert "llama.cpp" not in body and "Figure 7" not in body and not _tables(tree, "backend-quality")


def test_rankings_name_the_backend_and_format_of_each_row(backend_tree):
    rca = _dataset_section(backend_tree, "rca")
    final = _tables(rca, "final")[0]
    heads = [_text(th) for th in final.iter(f"{XHTML}th")]
    assert heads[4] == "served as"
    rows = {tuple(_cells(tr)[1:5]): tr.get("data-rank") for tr in _rows_of(final)}
    assert rows[("4", "1", "none", "llama.cpp GGUF Q4_K_M")] == "21"
    assert rows[("4", "1", "none", "transformers bitsandbytes nf4")] == "2"
    # The base model served by llama.cpp is no reference and has no rank: it sits under the reference, as "base".
    order = [tr.get("data-rank") for tr in _rows_of(final)]
    assert order[:3] == ["base", "base", "1"] and _cells(_rows_of(final)[1])[0] == "base"
    assert "reference" not in _rows_of(final)[1].get("class", "")
    # The fine-tune ranking (the choice of what to prune, made on transformers) lists no llama.cpp row.
    finetune = _tables(rca, "finetune")[0]
    assert len(_rows_of(finetune)) == 8 and "llama.cpp" not in _text(finetune) and "served as" in _text(finetune)
    # Labels elsewhere tell the backends apart; the finalists keep transformers' cells.
    quality = _text(_tables(rca, "quality")[0])
    assert "b4 e1 · llama.cpp GGUF Q4_K_M" in quality and "base · llama.cpp GGUF F32" in quality
    finalists = [_cells(tr)[0] for tr in _rows_of(_tables(backend_tree, "finalists")[0])]
    assert "b4 e1" in finalists and not any("llama.cpp" in label for label in finalists)
    # A finalist's cell key (joulebench.summary.cell_key: the backend before the variant) finds its own row; a key
    # from before backends (no backend) is the transformers row's, never llama.cpp's.
    served = backend_rows()
    llama = _llama(served, "4", "1")
    theirs = next(r for r in served if "backend" not in r and (r["bits"], r["epochs"], r["pruning"])
                  == ("4", "1", "none"))  # fmt: skip
    cell = ["rca", "tiny-llama", "32-true_dense", "4", "1"]
    for row in (theirs, llama):
        assert report._finalist_key({"cell_key": list(cell_key(row))}) == report._row_key(row)
    assert report._finalist_key({"cell_key": [*cell, "none"]}) == report._row_key(theirs) != report._row_key(llama)
    assert report._finalist_key({"cell_key": [*cell, "llama.cpp", "none"]}) == report._row_key(llama)
    energy = [_cells(tr)[1] for tr in _rows_of(_tables(backend_tree, "energy")[0]) if _cells(tr)[0] == "rca"]
    assert len(energy) == len(set(energy)) == 25
