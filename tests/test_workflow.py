"""End-to-end runs of the Snakemake DAG on the micro grid (and on the real SAF data when it is present)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from joulebench.backends import BACKENDS, REFERENCE_BACKEND
from joulebench.cells import (
    REFERENCE_TRAINING,
    merged_cells,
    post_training_variants,
    pruned_cells,
    read_selection,
    unpruned_cells,
    variant_kinds,
)
from joulebench.summary import COLUMNS

from .conftest import ROOT, SAF_DIR
from .test_report import FIGURES
from .test_report import _page_ink as page_ink

pytestmark = pytest.mark.integration

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SOMETIMES_EMPTY = {
    "error", "rank", "finetune_rank", "finetune_score", "top_k", "score", "train_loss_first", "train_loss_last",
    "train_wall_s", "sparse_kernel", "speedup_vs_dense", "dense_j_per_token", "delta_rho", "delta_rho_lo",
    "delta_rho_hi", "verdict_rho", "p_first", "finetune_p_first", "delta_parent_rho", "delta_parent_rho_lo",
    "delta_parent_rho_hi", "verdict_parent_rho", "precision", "sparse_training", "early_exit", "mean_exit_layer",
    "exit_layers", "exit_compute_fraction", "exit_test_share", "exit_threshold", "exit_measure", "exit_heads",
    "train_sparsity", "train_matmul_dtype", "build_kwh", "quality_note", "rho_note",
    # a GGUF file's tensor types; the comparison with the same cell on transformers: other backends' rows only
    "format_detail", "delta_backend_rho", "delta_backend_rho_lo", "delta_backend_rho_hi", "verdict_backend_rho",
    # the base row is the reference of the comparisons; only the finalists are measured side by side
    "energy_ratio", "energy_ratio_lo", "energy_ratio_hi", "speed_ratio", "speed_ratio_lo", "speed_ratio_hi",
    "energy_ratio_base", "energy_verdict_base", "speed_ratio_base", "speed_verdict_base", "finalist",
    "paired_energy_ratio", "paired_energy_ratio_lo", "paired_energy_ratio_hi", "paired_energy_verdict",
    "paired_speed_ratio", "paired_speed_ratio_lo", "paired_speed_ratio_hi", "paired_speed_verdict",
}  # fmt: skip
ALWAYS_FILLED = [c for c in COLUMNS if c not in SOMETIMES_EMPTY]
TUNED_ONLY = ["rank", "score", "train_loss_first", "train_loss_last", "train_wall_s", "delta_rho", "delta_rho_lo",
              "delta_rho_hi", "verdict_rho", "p_first", "precision", "sparse_training", "train_matmul_dtype",
              "energy_ratio", "energy_ratio_lo", "energy_ratio_hi", "speed_ratio", "energy_ratio_base",
              "energy_verdict_base"]  # fmt: skip
VERDICTS = {"lower", "higher", "within noise"}


WORKFLOW_PARTS = ("Snakefile", "rules", "scripts", "joulebench", "schemas", "report", "envs", "profiles", "configs")


def snakemake(workdir: Path, config: Path, *args: str, snakefile: Path = ROOT / "Snakefile",
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [SNAKEMAKE, "-s", str(snakefile), "--directory", str(workdir), "--configfile", str(config),
               "--cores", "2", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=1200, env={**os.environ, **(env or {})})


def dry_run(workdir: Path, config: Path, snakefile: Path = ROOT / "Snakefile") -> list[tuple[str, dict[str, str]]]:
    """The jobs a dry run plans, as (rule, wildcards); [] when there is nothing to do."""
    result = snakemake(workdir, config, "-n", snakefile=snakefile)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = []
    for block in re.split(r"^(?=(?:local)?(?:rule|checkpoint) \w+:)", result.stdout + result.stderr, flags=re.M):
        header = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        if header:
            found = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            wildcards = dict(pair.split("=", 1) for pair in found.group(1).split(", ")) if found else {}
            jobs.append((header.group(1), wildcards))
    return jobs


def planned_jobs(workdir: Path, config: Path, snakefile: Path = ROOT / "Snakefile") -> dict[str, int]:
    """How many jobs of each rule a dry run plans ({} when there is nothing to do)."""
    return dict(Counter(rule for rule, _ in dry_run(workdir, config, snakefile)))


def run_grid(workdir: Path, config: dict, *args: str, snakefile: Path = ROOT / "Snakefile",
             env: dict[str, str] | None = None, blank: Sequence[str] = ()) -> list[dict[str, str]]:
    """The grid run to completion; every row ok with every figure filled, except the `blank` columns: empty."""
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, config_path, *args, snakefile=snakefile, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    with open(workdir / "results" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    selected = [
        cell for dataset in config["datasets"] if post_training_variants(config)
        for cell in read_selection(workdir / "results" / "selection" / f"{dataset}.json", dataset)
    ]  # fmt: skip
    cells = unpruned_cells(config) + merged_cells(config) + pruned_cells(config, selected)
    kinds = variant_kinds(config)
    others = [BACKENDS.get(name) for name in config.get("inference", {}).get("backends", []) if name != "transformers"]
    served = [cell for cell in cells for backend in others if backend.serves_kind(kinds[cell.pruning])]
    assert len(rows) == len(cells) + len(served)
    for row in rows:
        assert row["status"] == "ok", row
        filled = [c for c in ALWAYS_FILLED if c not in blank]
        assert all(row[c] != "" for c in filled), {c: row[c] for c in filled if row[c] == ""}
        assert all(row[c] == "" for c in blank), {c: row[c] for c in blank}
        if row["epochs"] != "0":
            assert all(row[c] != "" for c in TUNED_ONLY)
        if row["backend"] != REFERENCE_BACKEND:
            assert row["delta_backend_rho"] != "" and row["format_detail"] != ""
        check_ranges(row)
    check_report(workdir / "results")
    return rows


VALID_RANGES = {
    **dict.fromkeys(("bleu", "rouge1", "rouge2", "rougeL", "meteor", "sparsity", "p_first",
                     "finetune_p_first", "accuracy", "macro_f1", "auc_roc"), (0.0, 1.0)),
    **dict.fromkeys(("bertscore_f1_raw", "cosine_raw", "bertscore_f1_floor", "cosine_floor"), (-1.0, 1.0)),
    # rescaled against their floor, and ρ with them: below 0 is worse than a random pairing of the test set
    **dict.fromkeys(("bertscore_f1", "cosine", "rho"), (-math.inf, 1.0)),
    **dict.fromkeys(("train_kwh", "prepare_kwh", "cpu_kwh", "gpu_kwh", "ram_kwh", "emissions_kg", "idle_w",
                     "net_kwh"), (0.0, math.inf)),
}  # fmt: skip
POSITIVE = ("total_kwh", "gross_kwh", "infer_kwh", "infer_j_per_token", "wh_per_query", "deploy_wh_per_query",
            "tokens_per_s", "ttft_s", "tpot_s", "answer_tokens_per_query", "energy_ratio", "speed_ratio",
            "paired_energy_ratio", "paired_speed_ratio", "peak_mem_mb", "model_size_mb", "generated_tokens", "phi",
            "train_loss_first",
            "train_loss_last", "train_wall_s", "batch_latency_s", "mean_exit_layer", "exit_layers",
            "exit_compute_fraction", "lifecycle_kwh", "lifecycle_kg")  # fmt: skip


def check_ranges(row: dict[str, str]) -> None:
    """Every figure of an evaluated cell is a finite number in its valid range."""
    for column, (low, high) in VALID_RANGES.items():
        if row[column] != "":
            assert low <= float(row[column]) <= high, (column, row[column])
    for column in POSITIVE:
        if row[column] != "":
            assert math.isfinite(float(row[column])) and float(row[column]) > 0, (column, row[column])
    assert int(row["repeats"]) >= 5
    assert float(row["net_kwh"]) <= float(row["gross_kwh"]) * (1 + 1e-9)
    assert float(row["cpu_kwh"]) + float(row["gpu_kwh"]) + float(row["ram_kwh"]) == pytest.approx(
        float(row["total_kwh"]), rel=1e-4
    )
    if row["score"] != "":
        assert int(row["rank"]) >= 1
    if row["is_reference"] == "1":
        assert row["energy_vs"] == row["energy_verdict"] == row["speed_verdict"] == "reference"
    else:
        assert row["energy_verdict"] in VERDICTS and row["speed_verdict"] in VERDICTS
        # a cell on another backend is measured alone: its pruned form against its unpruned parent's own record
        parent = "unpruned parent (paired)" if row["backend"] == REFERENCE_BACKEND else "unpruned parent"
        assert row["energy_vs"] == ("base model" if row["pruning"] == "none" else parent)
    for column in ("energy_verdict_base", "speed_verdict_base", "paired_energy_verdict", "paired_speed_verdict"):
        assert row[column] in (VERDICTS | {"reference", ""}), (column, row[column])


def check_report(results: Path) -> None:
    """Every page of the PDF has content, every figure is in it, the HTML is well-formed XHTML."""
    pdf = results / "report.pdf"
    pages = int(re.search(r"Pages:\s+(\d+)", subprocess.run(["pdfinfo", str(pdf)], capture_output=True,
                                                             text=True).stdout).group(1))  # fmt: skip
    subprocess.run(["pdftoppm", "-r", "20", "-png", str(pdf), str(results / "page")], check=True)
    inks = [page_ink(png) for png in sorted(results.glob("page-*.png"))]
    assert len(inks) == pages >= 2 and min(inks) > 0.01, inks
    text = " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout.split())
    assert all(title in text for title in FIGURES.values()), text[:2000]
    first = " ".join(subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True,
                                    text=True).stdout.split())  # fmt: skip
    # The first page says how far the run's own measurements moved, and the side-by-side figures of its pick.
    assert "noise floor" in first and "paired" in first and "within noise" in first, first[:3000]
    ET.fromstring((results / "report.html").read_text())


def micro_config() -> dict:
    return yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The micro grid run once with `--cache`, from a copy of the workflow that the tests may edit."""
    root = tmp_path_factory.mktemp("micro")
    workflow, workdir, cache = root / "workflow", root / "work", root / "cache"
    workflow.mkdir()
    for part in WORKFLOW_PARTS:
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, workflow / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / part, workflow / part)
    workdir.mkdir()
    cache.mkdir()
    env = {"SNAKEMAKE_OUTPUT_CACHE": str(cache)}
    config = {**micro_config(), "inference": {"backends": [REFERENCE_BACKEND, "llama.cpp"]}}
    rows = run_grid(workdir, config, "--cache", snakefile=workflow / "Snakefile", env=env)
    return {"rows": rows, "config": config, "workflow": workflow, "workdir": workdir, "env": env, "root": root}


def test_micro_grid_prunes_the_top_k_and_says_kernels_are_dense(micro):
    config, workdir = micro["config"], micro["workdir"]
    rows = [r for r in micro["rows"] if r["backend"] == REFERENCE_BACKEND]
    assert {r["bits"] for r in rows} == {"4", "32"}
    # The paper's flow: exactly the top-k unpruned fine-tuned cells by R were pruned, each with every method.
    k, methods = config["top_k"], {"magnitude", "wanda"}
    top = {(r["bits"], r["epochs"]) for r in rows if r["pruning"] == "none" and r["top_k"] == "1"}
    assert len(top) == k
    assert top == {(str(c.bits), str(c.epochs)) for c in read_selection(workdir / "results/selection/rca.json", "rca")}
    pruned = [r for r in rows if r["pruning_method"] in methods]
    assert {(r["bits"], r["epochs"]) for r in pruned} == top and len(pruned) == k * len(methods)
    assert {r["pruning_method"] for r in rows} == {"none", "merge", *methods}
    assert {r["pruning_method"] for r in pruned} == methods
    for row in pruned:  # 2:4 on a CPU: masked-dense, and said so
        assert abs(float(row["sparsity"]) - 0.5) < 0.005
        assert row["sparse_kernel"] == "dense kernels — no speedup expected" and row["speedup_vs_dense"] == ""
    assert "no speedup expected" in (workdir / "results" / "report.html").read_text()
    # Masked-dense kernels multiply the zeros like any other number: no energy or speed difference is claimed.
    for row in pruned:
        assert row["energy_vs"] == "unpruned parent (paired)"
        assert row["energy_verdict"] == row["speed_verdict"] == "within noise", row


def test_a_4bit_cell_is_served_as_trained_and_merged_beside_it(micro):
    """Unpruned 4-bit cells serve their adapter on the NF4 base (as trained); the requantize merge form is
    measured beside each, with Δρ against it; pruned 4-bit cells say they were merged, pruned and re-quantized; the
    sizes are the bytes stored."""
    rows, workdir = [r for r in micro["rows"] if r["backend"] == REFERENCE_BACKEND], micro["workdir"]
    forms = {(r["bits"], r["epochs"], r["pruning_method"]): r for r in rows}
    for epochs in ("1", "2"):
        trained, merged = forms[("4", epochs, "none")], forms[("4", epochs, "merge")]
        record = json.loads((workdir / f"results/eval/rca/tiny-llama/{REFERENCE_TRAINING.id}/b4-e{epochs}-none/"
                                       "eval.json").read_text())  # fmt: skip
        assert record["result"]["model_form"] == trained["model_form"] == "adapter on nf4 base"
        assert merged["model_form"] == "merged → nf4" and merged["pruning"] == "merged → re-quantized"
        assert merged["delta_parent_rho"] != "" and merged["energy_vs"] == "unpruned parent (paired)"
        assert float(merged["model_size_mb"]) < float(trained["model_size_mb"])  # no adapter stored beside it
    assert forms[("32", "1", "none")]["model_form"] == "merged → float32"
    for row in rows:
        if row["bits"] == "4" and row["pruning_method"] in ("magnitude", "wanda"):
            assert row["model_form"] == "merged → pruned → nf4", row["model_form"]
    report = (workdir / "results" / "report.html").read_text()
    assert "How the 4- and 8-bit cells are deployed" in report and "No merge form was evaluated" not in report


def test_every_cell_but_a_merge_form_is_also_served_on_llama_cpp(micro):
    """Rows per (cell, backend): the exact GGUF format, the same cells but the merge forms (llama.cpp merges every
    adapter), pruned ones labelled dense; at float32 the same answers as transformers; the report's figure."""
    rows, workdir = micro["rows"], micro["workdir"]
    ours = {(r["bits"], r["epochs"], r["pruning"]): r for r in rows if r["backend"] == "llama.cpp"}
    theirs = {(r["bits"], r["epochs"], r["pruning"]): r for r in rows if r["backend"] == REFERENCE_BACKEND}
    assert set(ours) == {key for key, r in theirs.items() if r["pruning_method"] != "merge"}
    for (bits, _, _), row in ours.items():
        assert row["format"] == {"4": "GGUF Q4_K_M", "32": "GGUF F32"}[bits]
        assert row["model_form"].endswith(row["format"])
        assert row["is_reference"] == "0" and (row["rank"] != "") == (row["epochs"] != "0")
        if row["pruning_method"] != "none":
            assert row["sparse_kernel"] == "dense kernels — no speedup expected"
    # The micro model's rows of 64 are too short for Q4_K's blocks of 256: llama.cpp falls back, and the row says so.
    assert "Q4_K" not in ours[("4", "1", "none")]["format_detail"]
    base = ours[("32", "0", "none")]
    assert base["delta_backend_rho"] == base["delta_rho"] and abs(float(base["delta_backend_rho"])) < 0.05
    predictions = [json.loads(line)["prediction"] for name in ("eval/rca/tiny-llama/32-true_dense/b32-e0-none/",
                   "eval/rca/tiny-llama/32-true_dense/b32-e0-none/llama.cpp/")
                   for line in (workdir / "results" / name / "predictions.jsonl").read_text().splitlines()]
    assert sum(a == b for a, b in zip(predictions[:8], predictions[8:], strict=True)) >= 6
    report = (workdir / "results" / "report.html").read_text()
    assert "llama.cpp" in report and "GGUF Q4_K_M" in report


def measured_records(workdir: Path) -> list[dict]:
    patterns = ("results/models/*/*/pretrain.json", "results/finetune/**/train.json", "results/eval/**/eval.json",
                "results/probes/**/probe.json", "results/finalists/*/finalists.json")  # fmt: skip
    return [json.loads(path.read_text()) for pattern in patterns for path in sorted(workdir.glob(pattern))]


def test_measured_windows_never_overlap_and_the_run_measures_its_own_noise(micro):
    config, workdir = micro["config"], micro["workdir"]
    spans = sorted((m["held_from_utc"], m["held_until_utc"])
                   for m in (r["provenance"]["measurement"]["exclusive"] for r in measured_records(workdir)))
    assert len(spans) >= len(micro["rows"]) + 3 + 1  # every evaluation, the probes, the finalists, the trainings
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "two measured jobs held the machine at once"
    summary = json.loads((workdir / "results" / "summary.json").read_text())
    floor = summary["noise_floor"]["rca/tiny-llama"]
    assert len(floor["measurements"]) == 1 + config["energy"].get("noise_probes", 3)
    assert {m["source"] for m in floor["measurements"]} == {"evaluation", "probe 1", "probe 2", "probe 3"}
    for figure in ("energy_per_token", "tokens_per_s"):
        assert floor[figure]["floor"] == pytest.approx(floor[figure]["high"] / floor[figure]["low"] - 1)
    finalists = summary["finalists"][0]
    roles = [role for f in finalists["finalists"] for role in f["roles"]]
    assert {"rank 1", "rank 2", "base", "baseline", "highest ρ", "least energy"} <= set(roles)
    assert finalists["rounds"] == config["energy"]["repeats"]
    for finalist in finalists["finalists"]:
        if "base" not in finalist["roles"]:
            figures = finalist["vs_base"]
            assert figures["energy"]["paired"] and figures["energy"]["low"] <= figures["energy"]["high"]
            assert figures["energy_verdict"]["verdict"] in VERDICTS


def test_a_rerun_does_nothing_and_a_grid_value_adds_only_its_cells(micro):
    config, workdir, snakefile = micro["config"], micro["workdir"], micro["workflow"] / "Snakefile"
    assert planned_jobs(workdir, workdir / "config.yaml", snakefile) == {}

    k, methods = config["top_k"], config["pruning"]["methods"]
    everything = workdir / "all.yaml"
    everything.write_text(yaml.safe_dump({**config, "pruning": {**config["pruning"], "select": "all"}}))
    unselected = len(config["bits"]) * len(config["epochs"]) - k
    # The new evaluations; the last noise probe, which follows every evaluation; the finalists, re-chosen from them.
    assert planned_jobs(workdir, everything, snakefile) == {
        "evaluate": unselected * len(methods), "evaluate_on_backend": unselected * len(methods),
        "probe_reference": 1, "finalists": 1, "aggregate": 1, "report": 1,
        "run_status": 1, "all": 1,
    }  # fmt: skip

    bigger = workdir / "bigger.yaml"
    bigger.write_text(yaml.safe_dump({**config, "epochs": [*config["epochs"], 3]}))
    # The middle probe follows the first half of the unpruned evaluations, which now holds a new cell.
    # Each new fine-tuned cell is evaluated (a 4-bit one also in each merge form, planned with the pruned cells once
    # the selection checkpoint has run: a dry run does not list those yet).
    assert planned_jobs(workdir, bigger, snakefile) == {
        "finetune": len(config["bits"]), "evaluate": len(config["bits"]), "select_for_pruning": 1,
        "probe_reference": 2, "finalists": 1, "aggregate": 1, "report": 1, "run_status": 1, "all": 1,
    }  # fmt: skip


def edited(path: Path, text: str):
    """Append `text` to `path` for the length of a `with` block, then put back its content and its times."""

    class Edit:
        def __enter__(self) -> None:
            self.content, self.stat = path.read_bytes(), path.stat()
            path.write_bytes(self.content + text.encode())

        def __exit__(self, *exc: object) -> None:
            path.write_bytes(self.content)
            os.utime(path, ns=(self.stat.st_atime_ns, self.stat.st_mtime_ns))

    return Edit()


def test_each_edit_reruns_exactly_what_depends_on_it(micro):
    config, workdir, workflow = micro["config"], micro["workdir"], micro["workflow"]
    snakefile = workflow / "Snakefile"

    # One fine-tune setting of one cell: that cell's fine-tuning and what follows from it, nothing else.
    one_cell = workdir / "one_cell.yaml"
    training = {**config["training"], "cells": {"b4-e1": {"lr": 0.002}}}
    one_cell.write_text(yaml.safe_dump({**config, "training": training}))
    jobs = dry_run(workdir, one_cell, snakefile)
    rules = Counter(rule for rule, _ in jobs)
    assert rules["finetune"] == 1 and not rules["embedded_model"] and not rules["prepare_data"]
    assert all((w["bits"], w["epochs"]) == ("4", "1") for rule, w in jobs if rule in ("finetune", "evaluate"))
    assert rules["evaluate"] >= 1 and rules["aggregate"] == rules["report"] == 1

    with edited(workflow / "report" / "report.html.j2", "<!-- edited -->\n"):
        assert planned_jobs(workdir, workdir / "config.yaml", snakefile) == {"report": 1, "run_status": 1, "all": 1}

    with edited(workflow / "joulebench" / "metrics.py", "\n# edited\n"):
        rules = Counter(rule for rule, _ in dry_run(workdir, workdir / "config.yaml", snakefile))
    # The class centroids (their embeddings come from metrics.py) and the unpruned evaluations; the pruned and merged
    # ones join once the checkpoint the final summary follows has run again.
    # The noise probes after the re-run evaluations follow them again (the probes' own code does not score answers).
    assert rules == {"class_centroids": len(config["datasets"]), "evaluate": len(unpruned_cells(config)),
                     "select_for_pruning": 1, "probe_reference": 2, "finalists": 1, "aggregate": 1, "report": 1,
                     "run_status": 1, "all": 1}  # fmt: skip

    assert planned_jobs(workdir, workdir / "config.yaml", snakefile) == {}  # every edit was put back


def test_the_cache_serves_a_fresh_working_directory(micro):
    fresh = micro["root"] / "fresh"
    fresh.mkdir()
    rows = run_grid(fresh, micro["config"], "--cache", snakefile=micro["workflow"] / "Snakefile", env=micro["env"])
    assert len(rows) == len(micro["rows"])
    cache = Path(micro["env"]["SNAKEMAKE_OUTPUT_CACHE"])
    for stage, record in (("finetune", "train.json"), ("eval", "eval.json"), ("models", "pretrain.json")):
        records = list((fresh / "results" / stage).rglob(record))
        assert records and all(path.is_symlink() and path.resolve().parent == cache for path in records), stage
        # Snakemake creates a cached job's log file, but no job ran to write into it.
        assert all(log.stat().st_size == 0 for log in (fresh / "logs" / stage).rglob("*.log")), stage


@pytest.mark.skipif(not SAF_DIR.is_dir(), reason=f"the real SAF data is not at {SAF_DIR}")
def test_micro_grid_on_real_saf_data(tmp_path):
    """The whole micro grid (every bits × epochs cell, top-k pruning) on the real Short Answer Feedback splits, read
    in place from a declared data folder: every figure of every cell in its valid range."""
    config = micro_config()
    config["datasets"] = {
        "saf": {"kind": "saf", "task": "saf", "source": str(SAF_DIR), "seed": 1, "max_train": 48, "max_test": 8}
    }
    config["data_folders"] = [str(SAF_DIR)]
    rows = run_grid(tmp_path, config)
    assert {r["dataset"] for r in rows} == {"saf"}
    assert {(r["bits"], r["epochs"]) for r in rows if r["pruning"] == "none"} == {
        ("32", "0"), ("4", "1"), ("4", "2"), ("32", "1"), ("32", "2")
    }  # fmt: skip
    methods = {m["method"] for m in config["pruning"]["methods"]}
    assert sum(r["pruning_method"] in methods for r in rows) == config["top_k"] * len(config["pruning"]["methods"])
    for cell in (r for r in rows if r["pruning"] == "none"):
        name = f"{REFERENCE_TRAINING.id}/b{cell['bits']}-e{cell['epochs']}-none"
        predictions = (tmp_path / f"results/eval/saf/tiny-llama/{name}/predictions.jsonl").read_text().splitlines()
        assert len(predictions) == 8
        assert all(
            json.loads(line)["label"] in {"Correct", "Partially correct", "Incorrect"} for line in predictions
        )


def qa_pairs() -> list[dict[str, str]]:
    """Short English question/answer pairs, in a schema of their own (no id, no label)."""
    capitals = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Egypt": "Cairo",
                "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo", "Greece": "Athens",
                "Chile": "Santiago", "Poland": "Warsaw", "Cuba": "Havana", "Ireland": "Dublin",
                "Portugal": "Lisbon", "Austria": "Vienna", "Hungary": "Budapest", "Finland": "Helsinki"}  # fmt: skip
    opposites = {"hot": "cold", "up": "down", "big": "small", "fast": "slow", "early": "late", "light": "dark",
                 "open": "closed", "full": "empty", "high": "low", "old": "new", "wet": "dry", "hard": "soft"}
    sounds = {"dog": "barks", "cat": "meows", "cow": "moos", "duck": "quacks", "lion": "roars", "sheep": "bleats",
              "horse": "neighs", "owl": "hoots", "snake": "hisses", "bee": "buzzes"}  # fmt: skip
    numbers = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
               "twelve"]  # fmt: skip
    pairs = [(f"What is the capital of {country}?", f"The capital is {city}.") for country, city in capitals.items()]
    pairs += [(f"What is the opposite of {word}?", f"The opposite is {other}.") for word, other in opposites.items()]
    pairs += [(f"What sound does a {animal} make?", f"A {animal} {sound}.") for animal, sound in sounds.items()]
    pairs += [(f"What is {numbers[a]} plus {numbers[b]}?", f"It is {numbers[a + b]}.")
              for a in range(1, 7) for b in range(a, 7) if a + b <= 12]  # fmt: skip
    return [{"question": question, "answer": answer} for question, answer in pairs]


def test_a_text_pairs_file_without_labels_runs_the_grid_with_blank_class_figures(tmp_path):
    """The fewest cells of the micro grid (base model, two fine-tunings, no pruning) on a JSONL file of
    question/answer pairs mapped by `columns`: the run completes, and with no label the classification view is
    skipped with its reason (eval.json, the report), its figures blank in summary.csv, never 1.0."""
    pairs = qa_pairs()
    assert 60 <= len(pairs) <= 100
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    config = micro_config()
    config.update(bits=[32], epochs=[1, 2], top_k=1)
    config["pruning"] = {**config["pruning"], "methods": []}
    # Barely pretrained: on such short documents the tiny base soon learns to end every answer at once, and answers
    # that are all empty have no quality to rank by.
    config["models"]["tiny-llama"]["pretrain"]["steps"] = 1
    config["datasets"] = {"qa": {
        "kind": "text-pairs", "path": "qa.jsonl", "columns": {"input": "question", "target": "answer"},
        "prompt": "Question: {input}\nAnswer:", "target_template": " {target}", "seed": 13,
        "split": {"train": 0.7, "validation": 0.1, "test": 0.2}, "max_train": 48, "max_test": 8,
    }}  # fmt: skip
    rows = run_grid(tmp_path, config, blank=["accuracy", "macro_f1", "auc_roc"])
    assert sorted((r["dataset"], r["epochs"]) for r in rows) == [("qa", "0"), ("qa", "1"), ("qa", "2")]

    answers = {pair["answer"] for pair in pairs}
    test = [json.loads(line) for line in (tmp_path / "results/data/qa/test.jsonl").read_text().splitlines()]
    assert len(test) == 8 and all(e["label"] == "" and e["target"] in answers for e in test)
    assert all(e["prompt"].startswith("Question: What ") and e["prompt"].endswith("?\nAnswer:") for e in test)
    centroids = json.loads((tmp_path / "results/data/qa/class_centroids.json").read_text())
    assert centroids["skipped"].startswith("no labels: ") and "centroids" not in centroids
    for record in (tmp_path / "results/eval/qa").rglob("eval.json"):
        assert json.loads(record.read_text())["result"]["classification"] == {"skipped": centroids["skipped"]}
    text = " ".join(subprocess.run(["pdftotext", str(tmp_path / "results/report.pdf"), "-"], capture_output=True,
                                   text=True, check=True).stdout.split())  # fmt: skip
    assert "Accuracy, macro-F1 and AUC-ROC are blank for this dataset: no labels: " in text
