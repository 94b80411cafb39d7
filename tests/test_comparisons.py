"""Energy and speed verdicts on summary rows, the finalists' paired figures, and the measurement lock."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from joulebench.comparisons import add_paired, add_verdicts, noise_floors
from joulebench.exclusive import exclusive_measurement
from joulebench.jobs import choose_finalists
from joulebench.rank import RankingSettings, add_ranking
from joulebench.summary import cell_key


def _row(epochs, pruning, jpt, tps, bits=32, rho=0.3, started="2026-12-03T10:00:00+00:00", **extra):
    return {"dataset": "d", "model": "m", "training": "32-true_dense", "bits": bits, "epochs": epochs,
            "pruning": pruning, "variant": pruning, "status": "ok", "is_reference": int(epochs == 0),
            "j_per_token_repeats": jpt, "tokens_per_s_repeats": tps, "rho": rho, "started_utc": started,
            "train_kwh": 0.0 if epochs == 0 else 1.0, "prepare_kwh": 0.001, "wh_per_query": 0.01, **extra}  # fmt: skip


def _probe(index, jpt, tps):
    passes = [{"energy": {"total_kwh": j * t / 3.6e6}, "tokens": t, "generation_s": t / s}
              for j, s, t in zip(jpt, tps, [100] * len(jpt), strict=True)]  # fmt: skip
    return {"status": "ok", "probe": index, "cell": {"dataset": "d", "model": "m", "bits": 32},
            "result": {"repeats": passes},
            "provenance": {"started_utc": f"2026-12-03T10:0{index}:00+00:00"}}  # fmt: skip


CELL = {"model": "m", "bits": 32}


@pytest.fixture
def rows():
    base = _row(0, "none", [1.0, 1.02, 0.98, 1.01, 0.99], [100, 101, 99, 100, 100])
    tuned = _row(1, "none", [0.5, 0.51, 0.49, 0.5, 0.5], [200, 202, 198, 200, 200])
    # Masked-dense pruned: the same kernels as its parent, measured later on a machine that drifted 5 %.
    pruned = _row(1, "magnitude 2:4", [0.525, 0.53, 0.52, 0.525, 0.525], [190, 191, 189, 190, 190])
    return [base, tuned, pruned]


def test_the_floor_comes_from_the_reference_and_its_probes(rows):
    probes = [_probe(1, [1.1] * 5, [95] * 5), _probe(2, [1.05] * 5, [98] * 5), _probe(3, [0.95] * 5, [104] * 5)]
    floor = noise_floors(rows, probes)["d/m"]
    assert [m.source for m in floor.measurements] == ["evaluation", "probe 1", "probe 2", "probe 3"]
    assert floor.energy_per_token.floor == pytest.approx(1.1 / 0.95 - 1)  # medians: 1.0, 1.1, 1.05, 0.95
    assert floor.tokens_per_s.floor == pytest.approx(104 / 95 - 1)


def test_verdicts_against_parent_and_base_clear_the_floor_or_are_within_noise(rows):
    probes = [_probe(1, [1.1] * 5, [95] * 5), _probe(2, [1.05] * 5, [98] * 5), _probe(3, [0.95] * 5, [104] * 5)]
    add_verdicts(rows, noise_floors(rows, probes))
    base, tuned, pruned = rows
    assert base["energy_verdict"] == base["speed_verdict"] == "reference"
    # Half the energy per token of the base, twice its speed: beyond the 16 % floor either way.
    assert tuned["energy_vs"] == "base model" and tuned["energy_verdict"] == "lower"
    assert tuned["speed_verdict"] == "higher" and tuned["energy_ratio"] == pytest.approx(0.5, rel=0.01)
    # 5 % more than its parent, each interval tight: the interval excludes 1, the floor does not. Within noise.
    assert pruned["energy_vs"] == "unpruned parent" and pruned["energy_verdict"] == "within noise"
    assert pruned["energy_ratio_lo"] > 1 and "noise floor" in pruned["energy_reason"]
    assert pruned["energy_verdict_base"] == "lower"  # against the base it still clears the floor


def test_a_cell_measured_beside_its_parent_is_judged_on_the_paired_ratio(rows):
    pruned = rows[2]
    # Its own evaluation served the parent in the same rounds: the 5 % seen across jobs was drift, 1 % remains.
    pruned["parent_paired"] = {"energy": {"estimate": 1.01, "low": 0.99, "high": 1.03, "paired": True, "reason": ""},
                               "speed": {"estimate": 0.99, "low": 0.97, "high": 1.01, "paired": True, "reason": ""}}
    probes = [_probe(1, [1.1] * 5, [95] * 5)]
    add_verdicts(rows, noise_floors(rows, probes))
    assert pruned["energy_vs"] == "unpruned parent (paired)" and pruned["energy_ratio"] == pytest.approx(1.01)
    assert pruned["energy_verdict"] == pruned["speed_verdict"] == "within noise"
    assert "interval includes 1" in pruned["energy_reason"]


def test_each_bit_width_has_its_own_floor_and_a_comparison_takes_the_larger(rows):
    def probe(index, widths):
        record = _probe(index, [1.0] * 5, [100] * 5)
        record["result"]["by_bits"] = {bits: {"repeats": _probe(index, [j] * 5, [s] * 5)["result"]["repeats"]}
                                       for bits, (j, s) in widths.items()}  # fmt: skip
        return record

    # The base model at 32 bits barely moves; at 16 bits it moves by 30 %.
    probes = [probe(1, {"32": (1.0, 100), "16": (0.5, 200)}), probe(2, {"32": (1.01, 99), "16": (0.65, 160)})]
    floors = noise_floors(rows, probes)
    assert floors["d/m"].energy_per_token.floor == pytest.approx(0.01, abs=0.021)  # evaluation, probes 1 and 2
    assert floors["d/m/b16"].energy_per_token.floor == pytest.approx(0.3)
    tuned = {**rows[1], "bits": 16}
    add_verdicts([rows[0], tuned], floors)
    assert tuned["energy_ratio"] == pytest.approx(0.5, rel=0.01)
    assert tuned["energy_verdict"] == "lower"  # 0.5 clears 1 / 1.3
    tuned["j_per_token_repeats"] = [0.8, 0.81, 0.79, 0.8, 0.8]
    add_verdicts([rows[0], tuned], floors)
    assert tuned["energy_verdict"] == "within noise"  # 0.8 would clear the 32-bit floor, not the 16-bit one


def test_without_a_floor_no_difference_is_claimed(rows):
    add_verdicts(rows, {})
    assert rows[1]["energy_verdict"] == "within noise" and "no noise floor" in rows[1]["energy_reason"]


def test_finalists_get_paired_ratios_against_their_base(rows):
    record = {"dataset": "d", "status": "ok", "rounds": 3, "finalists": [
        {"label": "base", "roles": ["base"], "cell_key": list(cell_key(rows[0])), "cell": CELL,
         "rounds": {"wh_per_query": [1.0, 1.3, 0.8], "tokens_per_s": [100, 80, 120]}},
        {"label": "tuned", "roles": ["rank 1"], "cell_key": list(cell_key(rows[1])), "cell": CELL,
         "rounds": {"wh_per_query": [0.5, 0.66, 0.4], "tokens_per_s": [200, 161, 240]}},
        {"label": "pruned", "roles": ["baseline"], "cell_key": list(cell_key(rows[2])), "cell": CELL,
         "rounds": {"wh_per_query": [0.52, 0.67, 0.41], "tokens_per_s": [195, 155, 236]}},
    ]}  # fmt: skip
    floors = noise_floors(rows, [_probe(1, [1.1] * 5, [95] * 5)])  # floors of 10 % and 5 %
    sections = add_paired(rows, [record], floors, cell_key)
    tuned = rows[1]
    # Drift of ±30 % between rounds hits both alike: the paired ratio stays at 0.5, its interval tight.
    assert tuned["paired_energy_ratio"] == pytest.approx(0.5, rel=0.02)
    assert tuned["paired_energy_ratio_hi"] < 0.55 and tuned["paired_energy_verdict"] == "lower"
    assert tuned["paired_speed_verdict"] == "higher" and tuned["finalist"] == "rank 1"
    assert rows[0]["paired_energy_verdict"] == "reference"
    versus = sections[0]["optimised_vs_baseline"]
    assert versus["cell"] == "tuned" and versus["against"] == "pruned"
    assert versus["energy_verdict"]["verdict"] == "within noise"  # 3 % apart, inside the 10 % floor


def test_the_finalists_are_the_top_k_the_base_the_baseline_and_the_picks():
    rows = [
        _row(0, "none", [1.0] * 5, [100] * 5, rho=0.1),
        _row(1, "none", [0.5] * 5, [200] * 5, rho=0.30, wh_per_query=0.010),
        _row(2, "none", [0.5] * 5, [200] * 5, rho=0.50, wh_per_query=0.012, train_kwh=2.0),
        _row(1, "none", [0.5] * 5, [200] * 5, bits=4, rho=0.20, wh_per_query=0.008),
        _row(1, "magnitude 2:4", [0.5] * 5, [200] * 5, rho=0.29, wh_per_query=0.010),
    ]
    add_ranking(rows, RankingSettings(w=0.7, queries=1_000_000), k=1)
    chosen = {(r["bits"], r["epochs"], r["pruning"]): roles
              for r, roles in choose_finalists(rows, "d", 1, {}, "deploy_wh_per_query")}  # fmt: skip
    assert chosen[(32, 0, "none")] == ["base"]
    assert chosen[(32, 2, "none")] == ["baseline", "highest ρ"]  # the largest bits and epochs, 32-true, dense
    assert chosen[(4, 1, "none")] == ["rank 1", "least energy"]
    assert (32, 1, "magnitude 2:4") not in chosen


def _hold(path: str, seconds: float, queue) -> None:
    import os

    os.environ["JOULEBENCH_ENERGY_LOCK"] = path
    with exclusive_measurement(False) as span:
        queue.put(("held", time.time(), span.waited_s))
        time.sleep(seconds)
    queue.put(("released", time.time(), 0.0))


def test_a_second_measurement_waits_for_the_first(tmp_path, monkeypatch):
    lock = str(tmp_path / "energy.lock")
    monkeypatch.setenv("JOULEBENCH_ENERGY_LOCK", lock)
    queue = multiprocessing.get_context("fork").Queue()
    first = multiprocessing.get_context("fork").Process(target=_hold, args=(lock, 1.0, queue))
    first.start()
    assert queue.get(timeout=10)[0] == "held"
    with exclusive_measurement(False) as span:
        entered = time.time()
    released = queue.get(timeout=10)
    first.join(timeout=10)
    assert released[0] == "released" and entered >= released[1] - 0.05 and span.waited_s > 0.5 and span.exclusive
    with exclusive_measurement(True) as shared:  # overlap allowed: no lock, no wait
        assert not shared.exclusive and shared.waited_s == 0
