from __future__ import annotations

import pytest

from joulebench.rank import phi, rank_cells, rho
from joulebench.summary import add_ranking


def test_phi_is_base_energy_over_cell_energy():
    assert phi(2.0, 1.0) == 0.5
    with pytest.raises(ValueError):
        phi(0.0, 1.0)


def test_rho_is_the_mean_of_the_seven_metrics():
    quality = dict(bleu=0.1, rouge1=0.2, rouge2=0.3, rougeL=0.4, meteor=0.5, bertscore_f1=0.6, cosine=0.7, extra=9)
    assert rho(quality) == pytest.approx(0.4)


def test_rank_by_hand():
    # energies 1 and 2 against a base of 1: φ = 1, 0.5 → normalised 1, 0.5; ρ = 0.2, 0.4 → 0.5, 1.
    ranked = rank_cells([1.0, 2.0], [1.0, 1.0], [0.2, 0.4], w=0.7)
    assert [r.score for r in ranked] == pytest.approx([0.7 * 1 + 0.3 * 0.5, 0.7 * 0.5 + 0.3 * 1])
    assert [r.rank for r in ranked] == [1, 2]
    quality_first = rank_cells([1.0, 2.0], [1.0, 1.0], [0.2, 0.4], w=0.0)
    assert [r.rank for r in quality_first] == [2, 1]


def test_ties_share_a_rank_and_bad_w_is_refused():
    assert [r.rank for r in rank_cells([1.0, 1.0, 4.0], [1.0] * 3, [0.5, 0.5, 0.5], 0.5)] == [1, 1, 3]
    with pytest.raises(ValueError):
        rank_cells([1.0], [1.0], [0.5], 1.5)


def _row(model, bits, pruning, kwh, quality, reference=False):
    return dict(dataset="d", model=model, bits=bits, epochs=0 if reference else 1, pruning=pruning,
                is_reference=int(reference), status="ok", total_kwh=kwh, rho=quality)


def test_add_ranking_uses_each_models_own_base_and_picks_top_k():
    rows = [
        _row("a", 32, "none", 1.0, 0.1, reference=True),
        _row("b", 32, "none", 4.0, 0.1, reference=True),
        _row("a", 4, "none", 2.0, 0.5),
        _row("b", 4, "none", 2.0, 0.5),
        _row("a", 4, "2:4", 2.0, 0.4),
    ]
    add_ranking(rows, w=0.7, k=1)
    assert rows[2]["phi"] == pytest.approx(0.5) and rows[3]["phi"] == pytest.approx(2.0)
    assert rows[3]["rank"] == 1 and rows[3]["top_k"] == 1 and rows[2]["top_k"] == 0
    assert "finetune_rank" not in rows[4] and rows[4]["rank"] == 3
    assert rows[0]["phi"] == 1.0 and "rank" not in rows[0]
