from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from joulebench import charts
from joulebench.charts import BETTER, NO_INTERVAL, UNCLEAR, WORSE, change_verdict, pareto_front, pruning_impact

from .test_report import SCRIPT, _llama, backend_rows, realistic_rows, realistic_training

SVG = "{http://www.w3.org/2000/svg}"


def _cell(name: str, wh: Any, rho: Any, status: str = "ok", **extra: Any) -> dict[str, Any]:
    """A cell by its energy per query over the deployment (the ranking's cost) and its quality."""
    return {"name": name, "deploy_wh_per_query": wh, "rho": rho, "status": status, **extra}


def _names(rows) -> list[str]:
    return [row["name"] for row in rows]


# --- Pareto front -----------------------------------------------------------------------------------------------


def test_pareto_front_keeps_only_non_dominated_cells_by_energy():
    rows = [
        _cell("cheap-poor", 1.0, 0.1),
        _cell("dominated", 2.0, 0.1),  # more energy, same ρ
        _cell("mid", 2.0, 0.3),
        _cell("dominated-2", 3.0, 0.25),  # more energy, less ρ than mid
        _cell("best", 4.0, 0.5),
        _cell("worse-everywhere", 5.0, 0.4),
    ]
    assert _names(pareto_front(rows)) == ["cheap-poor", "mid", "best"]
    assert _names(pareto_front(reversed(rows))) == ["cheap-poor", "mid", "best"]


def test_pareto_front_ties():
    rows = [_cell("a", 1.0, 0.3), _cell("b", 1.0, 0.3), _cell("same-energy-less-rho", 1.0, 0.2),
            _cell("same-rho-more-energy", 2.0, 0.3)]  # fmt: skip
    # Identical cells do not dominate each other; a tie on one axis and worse on the other is dominated.
    assert _names(pareto_front(rows)) == ["a", "b"]


def test_pareto_front_is_by_deployment_energy_per_query_not_total_kwh():
    """A cell that is cheap over one test pass (total kWh) but costly per deployed query is dominated."""
    rows = [
        _cell("cheap-per-query", 1.0, 0.3, total_kwh=9.0),
        _cell("cheap-per-pass", 2.0, 0.3, total_kwh=1.0),
        {"name": "old-summary", "total_kwh": 0.5, "rho": 0.9, "status": "ok"},  # no deploy_wh_per_query: left out
    ]
    assert _names(pareto_front(rows)) == ["cheap-per-query"]


def test_pareto_front_leaves_out_failed_and_incomplete_rows():
    rows = [
        _cell("failed-but-great", 0.1, 0.9, status="failed"),
        _cell("skipped", 0.1, 0.9, status="skipped"),
        _cell("no-energy", "", 0.9),
        _cell("no-rho", 0.1, None),
        _cell("nan", float("nan"), 0.9),
        _cell("ok", 1.0, 0.2),
    ]
    assert _names(pareto_front(rows)) == ["ok"]
    assert pareto_front([]) == []


def test_pareto_front_of_the_realistic_rows_per_dataset():
    fronts = charts.pareto_fronts(realistic_rows())
    labels = {d: [charts.cell_label(r) for r in front] for d, front in fronts.items()}
    assert labels == {
        "rca": ["base", "b4 e1", "b4 e1 magnitude 2:4", "b4 e3", "b16 e3", "b32 e3"],
        "saf": ["base", "b4 e1", "b4 e1 magnitude 30%"],
    }
    energies = [float(r["deploy_wh_per_query"]) for r in fronts["rca"]]
    rhos = [float(r["rho"]) for r in fronts["rca"]]
    assert energies == sorted(energies) and rhos == sorted(rhos)


# --- Fig. 6 verdicts --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "low", "high", "require", "verdict"),
    [
        (0.05, 0.01, 0.09, False, BETTER),
        (-0.05, -0.09, -0.01, False, WORSE),
        (0.05, -0.01, 0.11, False, UNCLEAR),  # a positive estimate whose interval holds zero
        (-0.05, -0.11, 0.0, False, UNCLEAR),  # an interval ending at zero does not exclude it
        (0.05, None, None, False, BETTER),  # no interval anywhere in the run: the sign
        (-0.05, None, None, False, WORSE),
        (0.0, None, None, False, UNCLEAR),
        (0.05, None, None, True, NO_INTERVAL),  # intervals exist, but not for this comparison
        (0.05, 0.01, None, True, NO_INTERVAL),  # half an interval is no interval
    ],
)
def test_change_verdict(delta, low, high, require, verdict):
    assert change_verdict(delta, low, high, require) == verdict


def _impact(rows, label: str) -> dict[str, Any]:
    return next(e for e in pruning_impact(rows) if f"b{e['bits']} e{e['epochs']} {e['pruning']}" == label)


def test_pruning_impact_without_intervals_uses_the_sign_against_parent_and_base():
    rows = realistic_rows(uncertainty=False)
    entry = _impact([r for r in rows if r["dataset"] == "rca"], "b4 e1 magnitude 2:4")
    assert (entry["method"], entry["pattern"]) == ("magnitude", "2:4")
    assert entry["vs_parent"].delta == pytest.approx(0.2329 - 0.2114)
    assert entry["vs_parent"].verdict == BETTER and not entry["vs_parent"].has_interval
    assert entry["vs_base"].delta == pytest.approx(0.2329 - 0.097) and entry["vs_base"].verdict == BETTER
    sparsegpt = _impact(rows, "b4 e1 sparsegpt 2:4")
    assert sparsegpt["vs_parent"].verdict == WORSE  # 0.2046 < 0.2114


def test_pruning_impact_with_intervals_claims_only_what_the_interval_shows():
    rows = [r for r in realistic_rows() if r["dataset"] == "rca"]
    entry = _impact(rows, "b4 e1 magnitude 2:4")
    assert entry["vs_base"].has_interval and entry["vs_base"].verdict == BETTER
    assert entry["vs_parent"].has_interval and entry["vs_parent"].verdict == BETTER  # +0.0215 ± 0.005
    assert _impact(rows, "b4 e1 magnitude 30%")["vs_parent"].verdict == UNCLEAR  # -0.0005 ± 0.005
    assert _impact(rows, "b4 e1 sparsegpt 2:4")["vs_parent"].verdict == WORSE  # -0.0068 ± 0.005
    # An interval that holds zero against the base: no clear difference, even with a positive estimate.
    target = next(r for r in rows if r["pruning"] == "wanda 2:4" and r["bits"] == "4")
    target.update(delta_rho="0.02", delta_rho_lo="-0.01", delta_rho_hi="0.05")
    assert _impact(rows, "b4 e1 wanda 2:4")["vs_base"].verdict == UNCLEAR
    # Intervals against the base but none against the parent: no claim against the parent.
    for row in rows:
        for key in ("delta_parent_rho", "delta_parent_rho_lo", "delta_parent_rho_hi"):
            row.pop(key, None)
    entry = _impact(rows, "b4 e1 magnitude 2:4")
    assert entry["vs_parent"].verdict == NO_INTERVAL and not entry["vs_parent"].has_interval
    assert entry["vs_parent"].delta == pytest.approx(float(entry_row(rows, "magnitude 2:4")["delta_rho"])
                                                     - float(entry_row(rows, "none")["delta_rho"]))  # fmt: skip


def entry_row(rows, pruning: str) -> dict[str, Any]:
    return next(r for r in rows if r["pruning"] == pruning and r["bits"] == "4" and r["epochs"] == "1")


def test_pruning_impact_groups_by_method_and_pattern_and_skips_failed_cells():
    entries = pruning_impact(realistic_rows())
    assert all(e["dataset"] == "rca" for e in entries[:12]) and entries[12]["dataset"] == "saf"
    keys = [(e["method"], e["pattern"]) for e in entries[:12]]
    assert keys == sorted(keys)
    assert {e["method"] for e in entries} == {"magnitude", "wanda", "sparsegpt"}
    assert len(entries) == 13  # the skipped saf wanda cell is not there
    assert charts.pruning_pattern({"pruning": "magnitude 30%", "pruning_method": "magnitude"}) == "30%"
    assert charts.pruning_pattern({"pruning": "2:4", "pruning_method": ""}) == "2:4"


def test_a_pruned_cell_without_a_parent_has_no_parent_comparison():
    rows = [r for r in realistic_rows(uncertainty=False) if not (r["pruning"] == "none" and r["bits"] == "8")]
    entry = _impact(rows, "b8 e1 magnitude 2:4")
    assert entry["vs_parent"] is None and entry["vs_base"] is not None
    assert "no parent row" in charts.pruning_impact_svg(rows)


# --- the figures as SVG -----------------------------------------------------------------------------------------


def _all_svgs(rows, training) -> dict[str, str]:
    return {
        "breakdown": charts.energy_breakdown_svg(rows),
        "loss_energy": charts.loss_energy_svg(training),
        "inference": charts.inference_svg(rows),
        "pruning": charts.pruning_impact_svg(rows),
        "pareto": charts.pareto_svg(rows),
    }


@pytest.fixture(scope="module")
def svgs() -> dict[str, str]:
    return _all_svgs(realistic_rows(), realistic_training())


def test_figures_are_self_contained_inline_svg(svgs):
    for name, svg in [*svgs.items(), ("empty", charts.pareto_svg([]))]:
        assert svg.startswith("<svg") and "<?xml" not in svg and "<!DOCTYPE" not in svg, name
        assert len(svg.encode()) < 150_000, name
        urls = set(re.findall(r"https?://[^\"' ]+", svg))
        assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, name
        assert not re.search(r'href="(?!#)', svg), f"{name}: only same-document references"
        ET.fromstring(svg)
    assert charts.pareto_svg(realistic_rows()) == svgs["pareto"], "the same rows give the same SVG"


def _texts(svg: str) -> str:
    return " ".join("".join(t.itertext()) for t in ET.fromstring(svg).iter(f"{SVG}text"))


def test_figures_say_what_they_plot(svgs):
    assert "energy (kWh)" in _texts(svgs["breakdown"]) and "RAM" in _texts(svgs["breakdown"])
    loss = _texts(svgs["loss_energy"])
    assert "cumulative training energy (kWh)" in loss and "training loss" in loss and "b32 e3" in loss
    inference = _texts(svgs["inference"])
    assert "inference energy per test pass (kWh)" in inference and "emissions of the whole cell" in inference
    assert "base" in inference and "3 epochs" in inference
    pruning = _texts(svgs["pruning"])
    assert "Δρ against the unpruned parent" in pruning and "Δρ against the base model" in pruning
    assert "magnitude 2:4 · b4 e1" in pruning
    pareto = _texts(svgs["pareto"])
    assert charts.PARETO_ENERGY_LABEL in pareto and "deploy_wh_per_query" in pareto and "total energy" not in pareto
    for label in ("b4 e1 magnitude 2:4", "b16 e3", "b32 e3", "b4 e1 magnitude 30%"):
        assert label in pareto, label
    assert "b8 e3" not in pareto, "dominated cells are not named"


def test_inference_carbon_uses_the_inference_share_when_every_row_has_one():
    rows = realistic_rows()
    assert charts.inference_carbon_key(rows) == "emissions_kg"
    for row in rows:
        row["infer_emissions_kg"] = str(float(row.get("infer_kwh") or 0) * 0.0039)
    assert charts.inference_carbon_key(rows) == charts.INFER_EMISSIONS_KEY
    assert "inference emissions per test pass" in _texts(charts.inference_svg(rows))


def test_loss_energy_points_are_cumulative_and_stop_at_a_gap():
    cell = {"losses": [0.7, 0.58, 0.54], "epoch_kwh": [1e-4, 2e-4, 1e-4]}
    points = charts.loss_energy_points(cell)
    assert [x for x, _ in points] == pytest.approx([1e-4, 3e-4, 4e-4]) and [y for _, y in points] == [0.7, 0.58, 0.54]
    assert charts.loss_energy_points({"losses": [0.7, 0.6], "epoch_kwh": [1e-4, None]}) == [(1e-4, 0.7)]
    assert charts.loss_energy_points({"losses": [0.7]}) == []


def test_names_in_figures_are_text_not_markup():
    rows = realistic_rows()
    for row in rows:
        row["dataset"] = f"{SCRIPT} $x$"
    svg = charts.pareto_svg(rows)
    assert "<script" not in svg and "&lt;script&gt;" in svg
    assert f"{SCRIPT} $x$" in _texts(svg), "'$' must not be parsed as mathtext"


def test_empty_inputs_give_placeholders():
    for svg in _all_svgs([], []).values():
        assert svg.startswith("<svg") and "no " in _texts(svg)


# --- several inference backends ---------------------------------------------------------------------------------


def test_a_row_of_another_backend_is_named_with_its_backend_and_format():
    rows = backend_rows()
    b4 = next(r for r in rows if (r["dataset"], r["bits"], r["epochs"], r["pruning"]) == ("rca", "4", "1", "none"))
    assert "backend" not in b4 and charts.cell_label(b4) == "b4 e1"  # an older row: transformers, named as before
    assert charts.cell_label({**b4, "backend": "transformers"}) == "b4 e1"
    assert charts.cell_label(_llama(rows, "4", "1")) == "b4 e1 · llama.cpp GGUF Q4_K_M"
    assert charts.cell_label(_llama(rows, "4", "1", "magnitude 2:4")) == "b4 e1 magnitude 2:4 · llama.cpp GGUF Q4_K_M"
    assert charts.cell_label(_llama(rows, "32", "0"), with_model=True) == "tiny-llama base · llama.cpp GGUF F32"
    for dataset in ("rca", "saf"):
        labels = [charts.cell_label(r) for r in rows if r["dataset"] == dataset and charts.is_ok(r)]
        assert len(labels) == len(set(labels)), dataset
    assert charts.backends(rows) == ["transformers", "llama.cpp"]
    assert charts.backends([_llama(rows, "4", "1"), b4]) == ["transformers", "llama.cpp"]


def test_a_pruned_row_pairs_with_its_parent_on_the_same_backend():
    rows = backend_rows()
    parents = charts.parents_by_cell(rows)
    pruned = _llama(rows, "4", "1", "magnitude 2:4")
    assert parents[charts.finetune_key(pruned)] is _llama(rows, "4", "1")
    transformers = next(r for r in rows if "backend" not in r and r["dataset"] == "rca" and r["bits"] == "4"
                        and r["epochs"] == "1" and r["pruning"] == "magnitude 2:4")  # fmt: skip
    assert parents[charts.finetune_key(transformers)].get("backend") is None
    assert charts.variant_key(pruned, with_backend=False) == charts.variant_key(transformers, with_backend=False)
    assert not any(charts.is_base_model(parent) for parent in parents.values())
    entries = [e for e in pruning_impact(rows) if e["backend"] == "llama.cpp"]
    assert len(entries) == 1 and entries[0]["vs_parent"].delta == pytest.approx(0.2029 - 0.1814)
    assert "magnitude 2:4 · b4 e1 · llama.cpp GGUF Q4_K_M" in _texts(charts.pruning_impact_svg(rows))
    inference = _texts(charts.inference_svg(rows))
    assert "base llama.cpp" in inference and "1 epoch llama.cpp" in inference


def test_the_backends_figure_has_one_colour_per_backend_and_the_bits_as_markers():
    rows = backend_rows()
    svg = charts.backend_energy_quality_svg(rows)
    assert svg.startswith("<svg") and len(svg.encode()) < 150_000
    ET.fromstring(svg)
    texts = _texts(svg)
    for text in ("transformers", "llama.cpp", "4-bit", "8-bit", "16-bit", "32-bit", "hollow: pruned", "rca", "saf",
                 charts.BACKEND_ENERGY_LABEL, charts.BACKEND_QUALITY_LABEL, "line: one cell on each backend"):
        assert text in texts, text
    colours = charts.backend_colours(rows)
    assert list(colours) == ["transformers", "llama.cpp"] and len(set(colours.values())) == 2
    # Each point's colour is its backend's, its shape its bits'; only ok rows with both an energy per query and a ρ.
    selected = charts.backend_rows(rows)
    assert len(selected) == sum(1 for r in rows if charts.is_ok(r))
    fig = Figure()
    charts._draw_backends(fig, selected)
    rca, saf = fig.axes
    points = [(to_hex(c.get_edgecolor()[0]), c.get_facecolor().size > 0) for c in rca.collections]
    served = [r for r in selected if r["dataset"] == "rca"]
    assert points == [(colours[charts.backend_of(r)], not charts.is_pruned(r)) for r in served]
    assert {colour for colour, _ in points} == set(colours.values())
    assert {to_hex(c.get_edgecolor()[0]) for c in saf.collections} == {colours["transformers"]}
    assert rca.get_xscale() == "log" and saf.get_xscale() == "linear"  # rca's energies span decades
    assert len(rca.lines) == 4  # one thin line per cell served by both backends
    one_backend = charts.backend_energy_quality_svg(realistic_rows())
    assert "llama.cpp" not in _texts(one_backend) and f"fill: {charts.BACKEND_PALETTE[1]}" not in one_backend
    assert "no evaluated cells" in _texts(charts.backend_energy_quality_svg([]))
