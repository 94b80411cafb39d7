"""End-to-end runs of the Snakemake DAG on the micro grid (and on the real SAF data when it is present)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from joulebench.cells import pruned_cells, read_selection, unpruned_cells
from joulebench.summary import COLUMNS

from .conftest import ROOT, SAF_DIR
from .test_report import FIGURES
from .test_report import _page_ink as page_ink

pytestmark = pytest.mark.integration

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SOMETIMES_EMPTY = {"error", "rank", "finetune_rank", "top_k", "score", "train_loss_first", "train_loss_last",
                   "train_wall_s", "sparse_kernel", "speedup_vs_dense", "dense_j_per_token", "delta_rho",
                   "delta_rho_lo", "delta_rho_hi", "verdict_rho", "p_first", "finetune_p_first", "delta_parent_rho",
                   "delta_parent_rho_lo", "delta_parent_rho_hi", "verdict_parent_rho"}  # fmt: skip
ALWAYS_FILLED = [c for c in COLUMNS if c not in SOMETIMES_EMPTY]
TUNED_ONLY = ["rank", "score", "train_loss_first", "train_loss_last", "train_wall_s", "delta_rho", "delta_rho_lo",
              "delta_rho_hi", "verdict_rho", "p_first"]  # fmt: skip


def snakemake(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config),
               "--cores", "2", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=1200)


def planned_jobs(workdir: Path, config: Path) -> dict[str, int]:
    """The job counts of a dry run, from Snakemake's job-stats table ({} when there is nothing to do)."""
    result = snakemake(workdir, config, "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def run_grid(workdir: Path, config: dict) -> list[dict[str, str]]:
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, config_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    with open(workdir / "results" / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    selected = [
        cell for dataset in config["datasets"] if config["pruning"]["methods"]
        for cell in read_selection(workdir / "results" / "selection" / f"{dataset}.json", dataset)
    ]  # fmt: skip
    assert len(rows) == len(unpruned_cells(config)) + len(pruned_cells(config, selected))
    for row in rows:
        assert row["status"] == "ok", row
        assert all(row[c] != "" for c in ALWAYS_FILLED), {c: row[c] for c in ALWAYS_FILLED if row[c] == ""}
        if row["is_reference"] == "0":
            assert all(row[c] != "" for c in TUNED_ONLY)
        for metric in ("bleu", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1", "cosine", "sparsity"):
            assert 0.0 <= float(row[metric]) <= 1.0, (metric, row[metric])
        assert float(row["total_kwh"]) > 0 and float(row["tokens_per_s"]) > 0
    check_report(workdir / "results")
    return rows


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
    ET.fromstring((results / "report.html").read_text())


def micro_config() -> dict:
    return yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())


def test_micro_grid_runs_reruns_nothing_and_adds_only_new_cells(tmp_path):
    config = micro_config()
    rows = run_grid(tmp_path, config)
    assert {r["bits"] for r in rows} == {"4", "32"}

    # The paper's flow: exactly the top-k unpruned fine-tuned cells by R were pruned, each with every method.
    k, methods = config["top_k"], {"magnitude", "wanda"}
    top = {(r["bits"], r["epochs"]) for r in rows if r["pruning"] == "none" and r["top_k"] == "1"}
    assert len(top) == k
    assert top == {(str(c.bits), str(c.epochs)) for c in read_selection(tmp_path / "results/selection/rca.json", "rca")}
    pruned = [r for r in rows if r["pruning"] != "none"]
    assert {(r["bits"], r["epochs"]) for r in pruned} == top and len(pruned) == k * len(methods)
    assert {r["pruning_method"] for r in pruned} == methods
    for row in pruned:  # 2:4 on a CPU: masked-dense, and said so
        assert abs(float(row["sparsity"]) - 0.5) < 0.005
        assert row["sparse_kernel"] == "dense kernels — no speedup expected" and row["speedup_vs_dense"] == ""
    assert "no speedup expected" in (tmp_path / "results" / "report.html").read_text()

    assert planned_jobs(tmp_path, tmp_path / "config.yaml") == {}

    everything = tmp_path / "all.yaml"
    everything.write_text(yaml.safe_dump({**config, "pruning": {**config["pruning"], "select": "all"}}))
    unselected = len(config["bits"]) * len(config["epochs"]) - k
    assert planned_jobs(tmp_path, everything) == {
        "evaluate": unselected * len(methods), "aggregate": 1, "report": 1, "all": 1,
    }  # fmt: skip

    config["epochs"].append(3)
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump(config))
    assert planned_jobs(tmp_path, bigger) == {
        "finetune": len(config["bits"]),
        "evaluate": len(config["bits"]),
        "select_for_pruning": 1,
        "aggregate": 1,
        "report": 1,
        "all": 1,
    }


@pytest.mark.skipif(not SAF_DIR.is_dir(), reason=f"the real SAF data is not at {SAF_DIR}")
def test_micro_grid_on_real_saf_data(tmp_path):
    config = micro_config()
    config["datasets"] = {
        "saf": {"kind": "saf", "task": "saf", "source": str(SAF_DIR), "seed": 1, "max_train": 48, "max_test": 8}
    }
    config["bits"], config["epochs"], config["pruning"]["methods"] = [32], [1], []
    rows = run_grid(tmp_path, config)
    assert {r["dataset"] for r in rows} == {"saf"}
    predictions = (tmp_path / "results/eval/saf/tiny-llama/b32-e1-none/predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 8
    assert all(
        json.loads(line)["label"] in {"Correct", "Partially correct", "Incorrect"} for line in predictions
    )
