"""The prepared GPU check (benchmarks/gpu_check.py): on a machine without CUDA it skips in one line and writes
nothing; its arithmetic is checked here, its measurements only where a GPU runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import ROOT, benchmark_module


def gpu_check():
    return benchmark_module("gpu_check")


def test_without_a_gpu_it_skips_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: skipped: no CUDA GPU"), result.stdout
    assert not out.exists()


def test_the_roofline_and_the_meter_agreement_arithmetic():
    module = gpu_check()
    bound = module.roofline(weight_bytes=2_000, bandwidth=1_000.0, tpot_s=4.0)
    assert bound["roofline_tpot_s"] == 2.0 and bound["roofline_fraction"] == 0.5
    assert module.relative_difference(1.04, 1.0) == pytest.approx(0.04)
    assert module.relative_difference(0.5, 0.0) is None
