"""The harness benchmark's own pieces (benchmarks/harness.py): its grid is valid and as large as it says, and its
table reports each target as met or missed. Timings themselves belong to `make bench`, not to tests."""

from __future__ import annotations

import yaml

from joulebench import cells, preflight

from .conftest import ROOT, benchmark_module


def harness():
    return benchmark_module("harness")


def test_the_dry_run_grid_is_valid_and_has_a_thousand_evaluated_cells(tmp_path):
    config = harness().thousand_cell_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
    assert preflight.check(config, tmp_path) == []
    assert len(cells.finetune_cells(config)) == 100 and len(cells.eval_cells(config)) == 1001


def test_the_table_says_which_targets_were_missed():
    bench = {"machine": "m", "date": "d", "commit": "c", "P1": {"overhead": 0.405}, "P2": {"wall_s": 1.8},
             "P4": {"ratio": 0.95}, "P5": {"wall_s": 1014.0, "jobs": 57, "measured_jobs": 30,
                                                          "overlapping_measured_jobs": 0}}  # fmt: skip
    module = harness()
    module.judge(bench)
    assert [bench[key]["met"] for key in ("P1", "P2", "P4", "P5")] == [False, True, True, False]
    lines = module.table(bench).splitlines()
    assert lines[2] == "| P1 | harness overhead on the default config | 40.5% | <= 10% | no |"
    assert lines[3] == "| P2 | no-op re-run | 1.8 s | <= 3 s | yes |"
    assert lines[4] == "| P4 | harness / bare `generate` throughput | 0.950 | >= 0.95 | yes |"
    assert lines[5] == ("| P5 | default run, 57 jobs, measured windows alone | 16.9 min (0 of 30 measured jobs "
                        "overlapped another) | <= 8 min | no |")
    assert lines[-1] == "Measured d on m, commit c."
    fast = {"P5": {"wall_s": 420.0, "jobs": 31, "measured_jobs": 30, "overlapping_measured_jobs": 1}}
    module.judge(fast)
    assert fast["P5"]["met"] is False  # in time, but two jobs' measured windows overlapped
    partial = {"machine": "m", "date": "d", "commit": "c",
               "P5": {"wall_s": 420.0, "jobs": 31, "measured_jobs": 30, "overlapping_measured_jobs": 0,
                      "techniques_shown": {"wanda": True, "early exit": False}}}  # fmt: skip
    module.judge(partial)
    assert partial["P5"]["met"] is False and "not shown: early exit" in module.table(partial)


def test_overlapping_measured_spans_are_counted():
    def held(start, end):
        return ("evaluate", {"provenance": {"measurement": {"exclusive": {"held_from_utc": start,
                                                                          "held_until_utc": end}}}})  # fmt: skip

    module = harness()
    assert module.overlapping_spans([held(0, 10), held(10, 20), held(25, 30)]) == 0
    assert module.overlapping_spans([held(0, 10), held(5, 8), held(9, 12), held(30, 31)]) == 2
    assert module.overlapping_spans([("finetune", {"provenance": {}})]) == 0


def test_the_techniques_the_default_must_show_are_read_from_the_summary_and_report(tmp_path):
    from joulebench.cells import EarlyExit, Pruning

    labels = [Pruning("magnitude", ratio=0.3).label, Pruning("magnitude", n=2, m=4).label,
              Pruning("wanda", n=2, m=4).label, Pruning("sparsegpt", n=2, m=4).label,
              EarlyExit.expand({"threshold": 0.5})[0].label]  # fmt: skip
    rows = [("1", "32-true_dense", 32, 0, "none"), ("0", "32-true_dense", 4, 2, "none"),
            ("0", "32-true_dense", 8, 2, "none"), ("0", "32-true_dense", 16, 1, "none"),
            ("0", "bf16-mixed_gradual50", 16, 2, "none"), ("0", "32-true_dense", 32, 2, "none"),
            *(("0", "32-true_dense", 16, 2, label) for label in labels)]  # fmt: skip
    results = tmp_path / "results"
    results.mkdir()
    lines = ["is_reference,training,bits,epochs,pruning", *(",".join(map(str, row)) for row in rows)]
    (results / "summary.csv").write_text("\n".join(lines) + "\n")
    (results / "report.html").write_text('<section class="lifecycle new-page"></section><table class="finalists">')
    module = harness()
    assert all(module.techniques_shown(tmp_path).values())
    (results / "summary.csv").write_text("\n".join(line for line in lines if "2:4" not in line and "exit" not in line))
    (results / "report.html").write_text("<p>no tables</p>")
    missing = {name for name, shown in module.techniques_shown(tmp_path).items() if not shown}
    assert missing == {"magnitude 2:4", "wanda", "sparsegpt", "early exit", "lifecycle table", "paired finalists"}
