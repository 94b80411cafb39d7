"""Faults in a real run: a failed cell costs no other cell; a killed fine-tuning resumes from its checkpoint."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import ROOT
from .test_workflow import SNAKEMAKE, check_report, dry_run, micro_config, run_grid

pytestmark = pytest.mark.integration


def small_grid(**changes) -> dict:
    config = micro_config()
    config.update(bits=[32], epochs=[1, 2])
    config["pruning"] = {**config["pruning"], "methods": [{"method": "magnitude", "n": 2, "m": 4}]}
    config["top_k"] = 1
    config.update(changes)
    return config


def start(workdir: Path, config: dict) -> subprocess.Popen[str]:
    """The workflow as a user starts it (its default profile, so --keep-going), on `config`."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile",
               str(workdir / "config.yaml"), "--cores", "2"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def summary_rows(workdir: Path) -> list[dict[str, str]]:
    with open(workdir / "results" / "summary.csv") as handle:
        return list(csv.DictReader(handle))


def planned(workdir: Path) -> Counter:
    return Counter(rule for rule, _ in dry_run(workdir, workdir / "config.yaml"))


def test_a_failing_cell_is_reported_the_others_complete_and_the_run_is_incomplete(tmp_path):
    # A learning rate of 1e6 makes this one cell's loss overflow: a real divergence, not a simulated one.
    config = small_grid()
    config["training"] = {**config["training"], "cells": {"b32-e1": {"lr": 1.0e6}}}
    run = start(tmp_path, config)
    output, _ = run.communicate(timeout=1200)
    assert run.returncode != 0, output[-3000:]
    assert "run incomplete: 1 fine-tuning(s) failed" in output
    assert "rca/tiny-llama/32-true_dense/b32-e1: non-finite loss" in output

    rows = {(r["epochs"], r["pruning"]): r for r in summary_rows(tmp_path)}
    failed = rows.pop(("1", "none"))
    assert failed["status"] == "failed" and "loss became nan" in failed["error"] and failed["total_kwh"] == ""
    assert set(rows) == {("0", "none"), ("2", "none"), ("2", "magnitude 2:4")}  # the top-1 of what remained
    assert all(r["status"] == "ok" and float(r["total_kwh"]) > 0 for r in rows.values())

    check_report(tmp_path / "results")
    pdf_text = subprocess.run(["pdftotext", str(tmp_path / "results/report.pdf"), "-"], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
    assert "loss became nan" in " ".join(pdf_text.split())
    assert not (tmp_path / "results/run_status.json").exists()
    # The traceback is in the cell's log; the failed outputs are gone, so the next run retries that cell only.
    assert "NonFiniteLoss" in (tmp_path / "logs/finetune/rca/tiny-llama/32-true_dense/b32-e1.log").read_text()
    assert not (tmp_path / "results/finetune/rca/tiny-llama/32-true_dense/b32-e1").exists()
    jobs = dry_run(tmp_path, tmp_path / "config.yaml")
    assert [w for rule, w in jobs if rule == "finetune"] == [
        {"dataset": "rca", "model": "tiny-llama", "training": "32-true_dense", "bits": "32", "epochs": "1"}
    ]
    assert {(w["epochs"], w["pruning"]) for rule, w in jobs if rule == "evaluate"} == {("1", "none")}


def fine_tune_process(log: Path) -> int | None:
    """The pid of the job that has `log` open (each job writes its own log)."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == str(log) for fd in fd_dir.iterdir()):
                return int(fd_dir.parent.name)
        except OSError:  # the process ended, or is not ours
            continue
    return None


def test_a_fine_tuning_killed_mid_epoch_resumes_from_its_checkpoint_and_only_it_reruns(tmp_path):
    config = small_grid(epochs=[1, 3])
    config["pruning"]["methods"] = []
    # Enough steps per epoch (about 50) for the kill to land inside epoch 2.
    config["datasets"]["rca"].update(n_tickets=400, max_train=200)
    config["training"] = {**config["training"], "batch_size": 4}
    checkpoint = tmp_path / "checkpoints/rca/tiny-llama/32-true_dense/b32-e3.pt"
    log = tmp_path / "logs/finetune/rca/tiny-llama/32-true_dense/b32-e3.log"

    run = start(tmp_path, config)
    deadline = time.monotonic() + 900
    while not checkpoint.exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0][-3000:]
        time.sleep(0.05)
    pid = fine_tune_process(log)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    output, _ = run.communicate(timeout=900)
    assert run.returncode != 0, output[-3000:]

    state = torch.load(checkpoint, weights_only=True)
    assert state["epoch"] == 1, "the kill was meant to land in epoch 2"
    assert not (tmp_path / "results/finetune/rca/tiny-llama/32-true_dense/b32-e3").exists()
    # the other cell went on
    assert (tmp_path / "results/eval/rca/tiny-llama/32-true_dense/b32-e1-none/eval.json").exists()

    jobs = planned(tmp_path)
    assert jobs["finetune"] == 1 and jobs["evaluate"] == 1 and not jobs["embedded_model"] and not jobs["prepare_data"]

    rows = run_grid(tmp_path, config)
    assert sorted((r["bits"], r["epochs"], r["pruning"]) for r in rows) == [
        ("32", "0", "none"), ("32", "1", "none"), ("32", "3", "none")
    ]  # fmt: skip
    record = json.loads((tmp_path / "results/finetune/rca/tiny-llama/32-true_dense/b32-e3/train.json").read_text())
    record = record["result"]
    assert record["resumed_from_epoch"] == 1
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    # Epoch 1's energy, measured by the killed job, counts: the resumed job's window spans only epochs 2 and 3.
    assert record["energy"]["total_kwh"] >= sum(e["energy"]["total_kwh"] for e in record["epochs"]) * (1 - 1e-9)
    assert "resumed after epoch 1" in log.read_text()
    assert not checkpoint.exists()
