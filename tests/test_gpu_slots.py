"""One GPU per running job: claims by file lock, none where a scheduler already chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from joulebench import gpu_slots


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        monkeypatch.setenv(name, "")  # recorded, so whatever a claim sets is undone after the test
        monkeypatch.delenv(name)
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


def test_the_device_order_is_pinned_to_pci_bus_order_unless_the_user_chose(tmp_path, monkeypatch):
    """CUDA's default order puts the fastest card first; NVML (and the lock files' numbers) go by PCI bus id."""
    assert gpu_slots.pin_device_order() == "PCI_BUS_ID" and os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
    assert gpu_slots.pin_device_order() == "FASTEST_FIRST"


def test_a_claim_pins_the_device_order_too(tmp_path, monkeypatch):
    assert gpu_slots.claim_gpu(count=2, lock_dir=tmp_path) == 0
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    assert gpu_slots.claim_gpu(count=2, lock_dir=tmp_path) is None  # a device already chosen: the order is pinned
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
