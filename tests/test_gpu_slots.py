"""One GPU per running job: claims by file lock, none where a scheduler already chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from joulebench import gpu_slots


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield
    gpu_slots.release_all()


def test_each_claim_takes_the_next_free_card_and_a_full_server_is_an_error(tmp_path):
    assert gpu_slots.claim_gpu(count=2, lock_dir=tmp_path) == 0
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    del os.environ["CUDA_VISIBLE_DEVICES"]
    assert gpu_slots.claim_gpu(count=2, lock_dir=tmp_path) == 1
    del os.environ["CUDA_VISIBLE_DEVICES"]
    with pytest.raises(RuntimeError, match="all 2 GPUs are held"):
        gpu_slots.claim_gpu(count=2, lock_dir=tmp_path)


def test_a_card_is_free_again_when_its_job_ends(tmp_path):
    holder = f"from joulebench import gpu_slots; print(gpu_slots.claim_gpu(count=1, lock_dir={str(tmp_path)!r}))"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    first = subprocess.run([sys.executable, "-c", holder], capture_output=True, text=True, env=env, check=True)
    assert first.stdout.strip() == "0"
    assert gpu_slots.claim_gpu(count=1, lock_dir=tmp_path) == 0  # the first process exited: its lock went with it


def test_a_scheduler_choice_or_no_gpu_claims_nothing(tmp_path, monkeypatch):
    assert gpu_slots.claim_gpu(count=0, lock_dir=tmp_path) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu_slots.claim_gpu(count=4, lock_dir=tmp_path) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
