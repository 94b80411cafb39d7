from __future__ import annotations

import pytest

from joulebench.rank import (
    PAPER_LITERAL,
    PLAIN,
    RankingSettings,
    add_ranking,
    deploy_wh_per_query,
    phi,
    rank_cells,
    ranking_note,
    rho,
    sensitivity,
)


def test_phi_is_base_energy_over_cell_energy():
    assert phi(2.0, 1.0) == 0.5
    with pytest.raises(ValueError):
        phi(0.0, 1.0)


def test_rho_is_the_mean_of_the_seven_metrics():
    quality = dict(bleu=0.1, rouge1=0.2, rouge2=0.3, rougeL=0.4, meteor=0.5, bertscore_f1=0.6, cosine=0.7, extra=9,
                   bertscore_f1_raw=0.9, cosine_raw=0.8)  # fmt: skip
    assert rho(quality) == pytest.approx(0.4)  # rescaled BERTScore and cosine
    assert rho(quality, PLAIN) == pytest.approx((0.1 + 0.2 + 0.3 + 0.4 + 0.5 + 0.9 + 0.8) / 7)  # the paper's raw mean
    assert rho({**quality, "cosine": None}) is None  # a metric without a value: no ρ, not a mean of six


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


PAPER = RankingSettings(w=0.7, energy=PAPER_LITERAL)


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
    add_ranking(rows, PAPER, k=1)
    assert rows[2]["phi"] == pytest.approx(0.5) and rows[3]["phi"] == pytest.approx(2.0)
    assert rows[3]["rank"] == 1 and rows[3]["top_k"] == 1 and rows[2]["top_k"] == 0
    assert "finetune_rank" not in rows[4] and rows[4]["rank"] == 3
    assert rows[0]["phi"] == 1.0 and "rank" not in rows[0]


# --- the deployment cost ------------------------------------------------------------------------------------------


def _cell(name, train_kwh, prepare_kwh, wh_per_query, quality, reference=False, pruning="none"):
    return dict(dataset="d", model="m", name=name, bits=32, epochs=0 if reference else 1, pruning=pruning,
                is_reference=int(reference), status="ok", train_kwh=train_kwh, prepare_kwh=prepare_kwh,
                wh_per_query=wh_per_query, rho=quality)  # fmt: skip


def test_deploy_cost_spreads_the_one_off_energy_over_q_queries_by_hand():
    # 2 kWh of fine-tuning + 0.5 kWh to prepare, over a million queries, plus 0.01 Wh a query.
    assert deploy_wh_per_query(2.5, 0.01, 1_000_000) == pytest.approx(2500 / 1e6 + 0.01)
    rows = [_cell("base", 0.0, 0.001, 0.02, 0.1, reference=True), _cell("tuned", 2.0, 0.5, 0.01, 0.5)]
    add_ranking(rows, RankingSettings(w=0.7, queries=1_000_000), k=1)
    base_cost, cell_cost = 1 / 1e6 + 0.02, 2500 / 1e6 + 0.01  # the base model has no fine-tuning
    assert rows[0]["deploy_wh_per_query"] == pytest.approx(base_cost)
    assert rows[1]["deploy_wh_per_query"] == pytest.approx(cell_cost)
    assert rows[1]["phi"] == pytest.approx(base_cost / cell_cost)


def test_phi_does_not_change_with_the_number_of_test_prompts():
    """The energy per query held fixed, a test set twice as large doubles each pass's energy, not φ: the cost is
    per query, and the one-off energy is spread over Q deployment queries, not over the test pass."""

    def ranked(prompts: int) -> list[dict]:
        per_query = {"base": 0.02, "a": 0.01, "b": 0.015}
        rows = [_cell("base", 0.0, 0.001, per_query["base"], 0.1, reference=True),
                _cell("a", 2.0, 0.5, per_query["a"], 0.5), _cell("b", 1.0, 0.5, per_query["b"], 0.4)]  # fmt: skip
        for row in rows:  # what the paper-literal reading would see: one pass's energy grows with the prompts
            row["total_kwh"] = row["train_kwh"] + row["prepare_kwh"] + per_query[row["name"]] * prompts / 1000
        add_ranking(rows, RankingSettings(w=0.7, queries=1_000_000), k=1)
        return rows

    small, large = ranked(40), ranked(80)
    for a, b in zip(small, large, strict=True):
        assert a["phi"] == pytest.approx(b["phi"]) and a.get("rank") == b.get("rank")
    # The paper's literal reading is not invariant: it charges the fine-tuning to the one test pass.
    literal = [ranked(40), ranked(80)]
    for rows in literal:
        add_ranking(rows, PAPER, k=1)
    assert literal[0][1]["phi"] != pytest.approx(literal[1][1]["phi"])


def test_q_moves_the_balance_between_fine_tuning_and_inference():
    # "cheap": little fine-tuning, costlier per query; "lean": much fine-tuning, cheaper per query. Same quality.
    rows = [_cell("base", 0.0, 0.0, 0.02, 0.3, reference=True), _cell("cheap", 0.1, 0.0, 0.010, 0.3),
            _cell("lean", 10.0, 0.0, 0.005, 0.3)]  # fmt: skip
    by_hand = {}
    for queries in (1_000, 1_000_000_000):
        add_ranking(rows, RankingSettings(w=1.0, queries=queries), k=1)
        by_hand[queries] = {r["name"]: r.get("rank") for r in rows}
        for row in rows[1:]:
            assert row["deploy_wh_per_query"] == pytest.approx(row["train_kwh"] * 1000 / queries + row["wh_per_query"])
    assert by_hand[1_000] == {"base": None, "cheap": 1, "lean": 2}  # 0.11 against 10.005 Wh a query
    assert by_hand[1_000_000_000] == {"base": None, "cheap": 2, "lean": 1}  # 0.0101 against 0.00501
    table = sensitivity(rows, RankingSettings(w=1.0, queries=1_000))["d"]
    assert [rows[entry["row"]]["name"] for entry in table["queries"]] == ["cheap", "cheap", "lean"]
    assert [entry["w"] for entry in table["w"]] == [0.3, 0.5, 0.7, 0.9]


def test_the_note_says_what_the_code_computes():
    note = ranking_note(RankingSettings(w=0.7, queries=1_000_000))
    assert "w = 0.7" in note and "Q = 1,000,000" in note and "deploy_wh_per_query" in note and "prepare" in note
    assert "rescaled" in note
    literal = ranking_note(RankingSettings(energy=PAPER_LITERAL, rho=PLAIN))
    assert "paper-literal" in literal and "fine-tuning + prepare" in literal and "plain" in literal


def test_ranking_settings_take_q_from_the_lifecycle_unless_set():
    assert RankingSettings.from_config({"w": 0.5, "lifecycle": {"queries": 5000}}).queries == 5000
    config = {"w": 0.5, "ranking": {"queries": 7}, "lifecycle": {"queries": 5000}}
    assert RankingSettings.from_config(config).queries == 7
    with pytest.raises(ValueError, match="ranking.queries"):
        RankingSettings.from_config({"w": 0.5, "lifecycle": {"queries": 0}})
