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
    assert "(machine-wide: the whole CPU package, every process on it), shared while other cells may have run" in note


def test_rapl_is_machine_wide_and_a_shared_gpu_says_what_it_covers():
    from joulebench.report_text import describe

    for tag in ("rapl", "codecarbon-rapl"):
        assert "machine-wide: the whole CPU package, every process on it" in describe(tag)
    assert describe("nvml-counter") == "measured from the GPU's NVML total-energy counter"
    assert describe("nvml-counter (shared)", "gpu").endswith(
        ", machine-wide (every GPU of the host, the job was given none of its own) while other cells may have run"
    )
    assert describe("codecarbon-estimate (shared)").endswith(", machine-wide while other cells may have run")
    note = energy_note([{"cpu_source": "codecarbon-estimate", "gpu_source": "nvml-counter (shared)",
                         "ram_source": "codecarbon-estimate (shared)"}])  # fmt: skip
    assert "every GPU of the host" in note and "all of the machine's memory" in note
