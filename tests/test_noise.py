"""The noise floor, ratio intervals and the verdicts that call an energy or speed difference real."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from joulebench.noise import (
    HIGHER,
    LOWER,
    WITHIN_NOISE,
    Measurement,
    NoiseFloor,
    Ratio,
    floor_of,
    paired_ratio,
    unpaired_ratio,
    verdict,
)


def test_unpaired_ratio_is_welchs_interval_on_the_log_scale():
    cell, other = [2.0, 2.2, 2.1, 1.9, 2.0], [1.0, 1.1, 0.95, 1.05, 1.0]
    ratio = unpaired_ratio(cell, other)
    logs_a, logs_b = [math.log(v) for v in cell], [math.log(v) for v in other]
    welch = stats.ttest_ind(logs_a, logs_b, equal_var=False).confidence_interval(0.95)
    assert ratio.estimate == pytest.approx(math.exp(sum(logs_a) / 5 - sum(logs_b) / 5))
    assert (ratio.low, ratio.high) == pytest.approx((math.exp(welch.low), math.exp(welch.high)))
    assert not ratio.paired


def test_paired_ratio_is_a_t_interval_of_the_per_round_log_ratios():
    # Drift moves both alike round by round: the per-round ratio stays at 2, so the paired interval is tight.
    drift = [1.0, 1.3, 0.8, 1.2, 1.1]
    cell, other = [2 * d for d in drift], [d * (1 + 0.01 * (-1) ** i) for i, d in enumerate(drift)]
    paired = paired_ratio(cell, other)
    logs = [math.log(a / b) for a, b in zip(cell, other, strict=True)]
    interval = stats.ttest_1samp(logs, 0).confidence_interval(0.95)
    assert (paired.low, paired.high) == pytest.approx((math.exp(interval.low), math.exp(interval.high)))
    assert paired.high / paired.low < 1.05
    unpaired = unpaired_ratio(cell, other)
    assert unpaired.high / unpaired.low > 1.3  # the same values unpaired: drift widens it
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def test_the_floor_is_how_far_the_same_cell_moved():
    floor = floor_of([10.0, 12.5, 11.0, 10.5])
    assert floor.floor == pytest.approx(0.25) and floor.measurements == 4
    assert floor_of([10.0]).floor is None


def test_a_difference_is_called_only_beyond_interval_and_floor():
    assert verdict(Ratio(0.5, 0.45, 0.55, False), 0.25).verdict == LOWER  # 0.55 < 1/1.25 = 0.8
    assert verdict(Ratio(1.6, 1.4, 1.8, False), 0.25).verdict == HIGHER  # 1.4 > 1.25
    # The interval excludes 1 but reaches into the floor: within noise, and the reason says so.
    within = verdict(Ratio(1.3, 1.2, 1.4, False), 0.25)
    assert within.verdict == WITHIN_NOISE and "noise floor" in within.reason
    assert verdict(Ratio(1.0, 0.9, 1.1, False), 0.0).verdict == WITHIN_NOISE
    # No floor or no interval: nothing is claimed.
    assert verdict(Ratio(0.5, 0.45, 0.55, False), None).verdict == WITHIN_NOISE
    assert verdict(Ratio(0.5, None, None, False, "one round"), 0.1).verdict == WITHIN_NOISE


def test_noise_floor_record_names_its_method_and_measurements():
    floor = NoiseFloor("m b32 e0", [
        Measurement("probe 1", "2026-12-03T10:05:00+00:00", 1.1, 900.0),
        Measurement("evaluation", "2026-12-03T10:00:00+00:00", 1.0, 1000.0),
        Measurement("probe 2", "2026-12-03T10:20:00+00:00", 1.2, 850.0),
    ])  # fmt: skip
    record = floor.to_dict()
    assert record["energy_per_token"]["floor"] == pytest.approx(0.2)
    assert record["tokens_per_s"]["floor"] == pytest.approx(1000 / 850 - 1)
    assert [m["source"] for m in record["measurements"]] == ["evaluation", "probe 1", "probe 2"]  # by time
    assert "3 times" in record["method"] and "2 re-measurements" in record["method"]
