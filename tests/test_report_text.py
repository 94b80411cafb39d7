from __future__ import annotations

from joulebench.report_text import energy_note, training_note


def test_estimates_are_called_estimates():
    rows = [{"cpu_source": "codecarbon-estimate", "gpu_source": "none", "ram_source": "codecarbon-estimate"}]
    note = energy_note(rows)
    assert note.startswith("CPU and RAM energy figures in this report are estimates, not measurements.")
    assert "GPU energy: not present" in note


def test_measured_sources_are_not_called_estimates():
    row = {"cpu_source": "codecarbon-rapl", "gpu_source": "codecarbon-nvml", "ram_source": "codecarbon-estimate"}
    note = energy_note([row])
    assert note.startswith("RAM energy figures in this report are estimates")
    assert "RAPL" in note and "NVML" in note


def test_training_note_gives_the_numbers():
    training = [
        {"dataset": "rca", "bits": 4, "losses": [1.0, 0.8, 0.5]},
        {"dataset": "rca", "bits": 8, "losses": [1.0, 0.9]},
        {"dataset": "rca", "bits": 8, "losses": [1.0]},
    ]
    note = training_note(training)
    assert "in 2 of 2 multi-epoch" in note and "between 10.0% and 50.0%" in note
    assert "1.000 → 0.800 → 0.500" in note
    assert "no trend" in training_note([{"dataset": "rca", "bits": 4, "losses": [1.0]}])


def test_shared_and_constant_sources_are_described():
    note = energy_note([{"cpu_source": "rapl (shared)", "gpu_source": "nvml-counter", "ram_source": "constant"}])
    assert note.startswith("RAM energy figures in this report are estimates")
    assert "machine-wide while other cells may have run" in note
