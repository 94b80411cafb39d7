from __future__ import annotations

import numpy as np
import pytest

from joulebench.metrics import QUALITY_COLUMNS
from joulebench.uncertainty import CellSample, Interval, item_rho, paired_bootstrap, rank_stability


def _scores(seed: int, n: int = 200) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(0.0, 0.8, n).tolist() for name in QUALITY_COLUMNS}


def test_verdict_needs_the_whole_interval_on_one_side_of_zero():
    assert Interval(0.1, 0.01, 0.2).verdict == "better"
    assert Interval(-0.1, -0.2, -0.01).verdict == "worse"
    assert Interval(0.1, 0.0, 0.2).verdict == "no clear difference"
    assert Interval(0.1, -0.01, 0.2).verdict == "no clear difference"
    assert Interval(0.1, 0.01, 0.2).to_dict() == dict(estimate=0.1, low=0.01, high=0.2, verdict="better")


def test_identical_cell_and_base_show_no_difference():
    base = _scores(1)
    intervals = paired_bootstrap(base, base, resamples=300)
    assert set(intervals) == {*QUALITY_COLUMNS, "rho"}
    for interval in intervals.values():
        assert interval.low <= 0 <= interval.high
        assert interval.verdict == "no clear difference"


def test_a_uniform_gain_is_better():
    base = _scores(2)
    cell = {name: [v + 0.2 for v in values] for name, values in base.items()}
    for interval in paired_bootstrap(cell, base, resamples=300).values():
        assert interval.estimate == pytest.approx(0.2)
        assert interval.verdict == "better"


def test_a_small_noisy_difference_is_not_called_better():
    rng = np.random.default_rng(3)
    base = {"bleu": rng.uniform(0.2, 0.8, 30)}
    noise = rng.normal(0.0, 0.2, 30)
    cell = {"bleu": base["bleu"] + noise - noise.mean() + 0.01}
    interval = paired_bootstrap(cell, base, resamples=1000)["bleu"]
    assert interval.estimate == pytest.approx(0.01)
    assert interval.low < 0 < interval.high
    assert interval.verdict == "no clear difference"


def test_rho_is_present_only_with_all_seven_metrics_and_is_the_per_item_mean():
    cell, base = _scores(4), _scores(5)
    rho = paired_bootstrap(cell, base, resamples=50)["rho"]
    assert rho.estimate == pytest.approx(np.mean(item_rho(cell)) - np.mean(item_rho(base)))
    partial = paired_bootstrap({"bleu": cell["bleu"], "cosine": cell["cosine"]}, base, resamples=50)
    assert set(partial) == {"bleu", "cosine"}


def test_same_seed_repeats_and_another_seed_moves_the_bounds():
    cell, base = _scores(6), _scores(7)
    first = paired_bootstrap(cell, base, resamples=300, seed=0)
    assert paired_bootstrap(cell, base, resamples=300, seed=0) == first
    other = paired_bootstrap(cell, base, resamples=300, seed=1)
    assert other["rho"].estimate == first["rho"].estimate
    assert (other["rho"].low, other["rho"].high) != (first["rho"].low, first["rho"].high)
    assert other["rho"].low == pytest.approx(first["rho"].low, abs=0.02)


def test_wider_confidence_gives_a_wider_interval():
    cell, base = _scores(8), _scores(9)
    narrow = paired_bootstrap(cell, base, resamples=500, confidence=0.5)["rho"]
    wide = paired_bootstrap(cell, base, resamples=500, confidence=0.99)["rho"]
    assert wide.low < narrow.low < narrow.high < wide.high


def test_the_bootstrap_is_paired():
    rng = np.random.default_rng(10)
    base = rng.uniform(0.0, 0.9, 100)
    cell = base + 0.05
    interval = paired_bootstrap({"meteor": cell}, {"meteor": base}, resamples=500)["meteor"]
    assert interval.estimate == pytest.approx(0.05)
    assert interval.high - interval.low < 1e-9
    assert interval.verdict == "better"
    # Resampling cell and base independently would blur the same data into an interval containing zero.
    a, b = rng.integers(0, 100, (2, 500, 100))
    unpaired = cell[a].mean(axis=1) - base[b].mean(axis=1)
    assert np.quantile(unpaired, 0.025) < 0 < np.quantile(unpaired, 0.975)


@pytest.mark.parametrize(
    ("cell", "message"),
    [({"bleu": [0.1, 0.2, 0.3]}, "bleu"), ({"bleu": [0.1, 0.2], "rouge2": [0.1]}, "rouge2"), ({"bleu": []}, "bleu")],
)
def test_misaligned_or_empty_items_name_the_metric(cell, message):
    base = {"bleu": [0.1, 0.2], "rouge2": [0.1, 0.2]}
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(cell, base, resamples=10)


def test_no_shared_metric_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="share none"):
        paired_bootstrap({"bleu": [0.1]}, {"cosine": [0.1]})
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap({"bleu": [0.1]}, {"bleu": [0.1]}, confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap({"bleu": [0.1]}, {"bleu": [0.1]}, resamples=0)


def test_item_rho_is_the_mean_of_the_seven_scores_and_names_a_missing_metric():
    scores = {name: [i / 10, 0.0] for i, name in enumerate(QUALITY_COLUMNS)}
    assert item_rho(scores) == pytest.approx([0.3, 0.0])
    del scores["meteor"]
    with pytest.raises(ValueError, match="meteor"):
        item_rho(scores)


def test_a_cell_best_on_every_item_is_always_first():
    rng = np.random.default_rng(11)
    low = rng.uniform(0.1, 0.4, 50)
    cells = [
        CellSample(1.0, 1.0, (low + 0.5).tolist()),
        CellSample(1.0, 1.0, low.tolist()),
        CellSample(2.0, 1.0, (low + 0.1).tolist()),
    ]
    assert rank_stability(cells, w=0.5, resamples=200) == [1.0, 0.0, 0.0]


def test_identical_cells_share_first_place():
    values = np.random.default_rng(12).uniform(0.0, 1.0, 40).tolist()
    cells = [CellSample(1.0, 1.0, values), CellSample(1.0, 1.0, list(values)), CellSample(3.0, 1.0, values)]
    assert rank_stability(cells, w=0.5, resamples=200) == [1.0, 1.0, 0.0]


def test_close_cells_split_first_place():
    rng = np.random.default_rng(13)
    cells = [CellSample(1.0, 1.0, rng.uniform(0.0, 1.0, 30).tolist()) for _ in range(3)]
    shares = rank_stability(cells, w=0.3, resamples=300, seed=4)
    assert all(0.0 <= share <= 1.0 for share in shares)
    assert sum(shares) == pytest.approx(1.0)
    assert sum(0.0 < share < 1.0 for share in shares) >= 2
    assert rank_stability(cells, w=0.3, resamples=300, seed=4) == shares


def test_energy_stays_fixed_so_pure_energy_ranking_never_moves():
    rng = np.random.default_rng(14)
    cells = [CellSample(e, 1.0, rng.uniform(0.0, 1.0, 30).tolist()) for e in (2.0, 1.0, 3.0)]
    assert rank_stability(cells, w=1.0, resamples=100) == [0.0, 1.0, 0.0]


def test_rank_stability_refuses_cells_on_different_items():
    with pytest.raises(ValueError, match="cell 1"):
        rank_stability([CellSample(1.0, 1.0, [0.1, 0.2]), CellSample(1.0, 1.0, [0.1])], w=0.5)
    assert rank_stability([], w=0.5) == []


def test_rank_stability_redraws_energy_within_the_noise_floor():
    # Same items, the first cell 5 % cheaper: held fixed it always wins; within a 20 % floor either may win, within
    # a 1 % floor the 5 % still decides.
    values = np.random.default_rng(2).uniform(0.0, 1.0, 30).tolist()
    fixed = [CellSample(1.0, 1.0, values), CellSample(1.05, 1.0, values)]
    assert rank_stability(fixed, w=0.7, resamples=400) == [1.0, 0.0]
    wide = [CellSample(1.0, 1.0, values, 0.2), CellSample(1.05, 1.0, values, 0.2)]
    shares = rank_stability(wide, w=0.7, resamples=400)
    assert 0.5 < shares[0] < 0.95 and 0.05 < shares[1] < 0.5 and sum(shares) == pytest.approx(1.0)
    narrow = [CellSample(1.0, 1.0, values, 0.01), CellSample(1.05, 1.0, values, 0.01)]
    assert rank_stability(narrow, w=0.7, resamples=400) == [1.0, 0.0]
    with pytest.raises(ValueError, match="energy_floor"):
        rank_stability([CellSample(1.0, 1.0, values, -0.1)], w=0.7)


def test_an_item_without_a_value_leaves_the_means_to_the_items_that_have_one():
    """An empty answer has no BERTScore (NaN): the paired intervals still exist, each metric's means over the items
    with a value, as the cell's own figure is; a metric with no value at all gets none, and neither does ρ."""
    from joulebench.uncertainty import paired_bootstrap

    nan = float("nan")
    cell = {"bleu": [0.5, 0.4, 0.0, 0.6], "bertscore_f1": [0.8, 0.7, nan, 0.9]}
    base = {"bleu": [0.1, 0.2, 0.1, 0.3], "bertscore_f1": [0.2, 0.3, 0.4, 0.1]}
    intervals = paired_bootstrap(cell, base, resamples=500, rho_columns=["bleu", "bertscore_f1"])
    assert intervals["bertscore_f1"].estimate == pytest.approx(0.8 - 0.25)  # (0.8+0.7+0.9)/3 − (0.2+0.3+0.4+0.1)/4
    assert intervals["rho"].estimate == pytest.approx(((0.375 + 0.8) - (0.175 + 0.25)) / 2)
    assert intervals["rho"].low <= intervals["rho"].estimate <= intervals["rho"].high
    with pytest.raises(ValueError, match="not all NaN"):
        paired_bootstrap({"bleu": [nan] * 4}, base, resamples=10)
