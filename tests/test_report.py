from __future__ import annotations

import re
import shutil
import socket
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from joulebench import report
from joulebench.report import ReportInputs, format_duration, format_kwh, format_metric, render_html, write_report
from joulebench.sparse_kernels import DENSE_LABEL

from .conftest import ROOT

TEMPLATES = ROOT / "report"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=http://example.invalid/x>"
XHTML = "{http://www.w3.org/1999/xhtml}"
FIGURES = {
    "fig-energy-breakdown": "Figure 1. Energy by component.",
    "fig-loss-energy": "Figure 2. Training loss against training energy.",
    "fig-inference-precision": "Figure 3. Inference energy and carbon by precision.",
    "fig-pruning-impact": "Figure 4. Pruning impact on quality.",
    "fig-pareto": "Figure 5. Energy–quality Pareto front.",
}

# --- a realistic fixture: the rca cells of a finished default run (rounded), plus a small saf grid -------------

# (bits, epochs, pruning, rank, finetune_rank, total_kwh, train_kwh, infer_kwh, rho, score)
RCA_CELLS = [
    (32, 0, "none", None, None, 1.08e-05, 0.0, 5.544e-06, 0.097, None),
    (4, 1, "none", 2, 1, 7.829e-05, 6.637e-05, 4.861e-06, 0.2114, 0.8292),
    (4, 3, "none", 18, 6, 0.0002099, 0.0001987, 4.578e-06, 0.3668, 0.4854),
    (8, 1, "none", 12, 3, 0.0001082, 9.547e-05, 6.728e-06, 0.2091, 0.6344),
    (8, 3, "none", 20, 8, 0.0003081, 0.0002952, 6.637e-06, 0.4228, 0.4363),
    (16, 1, "none", 4, 2, 7.862e-05, 6.803e-05, 4.187e-06, 0.2095, 0.8251),
    (16, 3, "none", 17, 5, 0.0002161, 0.0002039, 4.972e-06, 0.4218, 0.5114),
    (32, 1, "none", 14, 4, 0.0001098, 9.806e-05, 5.616e-06, 0.2095, 0.6272),
    (32, 3, "none", 19, 7, 0.0003011, 0.0002891, 6.124e-06, 0.4907, 0.482),
    (4, 1, "magnitude 30%", 3, None, 7.832e-05, 6.637e-05, 4.793e-06, 0.2109, 0.8287),
    (4, 1, "magnitude 2:4", 1, None, 7.865e-05, 6.637e-05, 5.117e-06, 0.2329, 0.8392),
    (4, 1, "wanda 2:4", 7, None, 8.1e-05, 6.637e-05, 5.062e-06, 0.211, 0.8056),
    (4, 1, "sparsegpt 2:4", 9, None, 8.372e-05, 6.637e-05, 4.717e-06, 0.2046, 0.7797),
    (16, 1, "magnitude 30%", 5, None, 7.892e-05, 6.803e-05, 4.397e-06, 0.2099, 0.8228),
    (16, 1, "magnitude 2:4", 6, None, 7.886e-05, 6.803e-05, 4.43e-06, 0.2085, 0.8224),
    (16, 1, "wanda 2:4", 8, None, 8.126e-05, 6.803e-05, 4.626e-06, 0.2066, 0.8007),
    (16, 1, "sparsegpt 2:4", 10, None, 8.521e-05, 6.803e-05, 4.613e-06, 0.2002, 0.7655),
    (8, 1, "magnitude 30%", 13, None, 0.0001085, 9.547e-05, 6.491e-06, 0.2101, 0.6338),
    (8, 1, "magnitude 2:4", 11, None, 0.0001081, 9.547e-05, 5.654e-06, 0.2195, 0.6414),
    (8, 1, "wanda 2:4", 15, None, 0.0001112, 9.547e-05, 6.176e-06, 0.2076, 0.6197),
    (8, 1, "sparsegpt 2:4", 16, None, 0.0001141, 9.547e-05, 6.446e-06, 0.2082, 0.6074),
]
SAF_CELLS = [
    (32, 0, "none", None, None, 2.1e-05, 0.0, 1.1e-05, 0.12, None),
    (4, 1, "none", 2, 1, 0.00015, 0.00013, 9.0e-06, 0.25, 0.81),
    (16, 1, "none", 3, 2, 0.00016, 0.00014, 8.5e-06, 0.24, 0.78),
    (4, 1, "magnitude 30%", 1, None, 0.000151, 0.00013, 9.2e-06, 0.26, 0.83),
]
# Per-metric multiples of ρ whose mean is 1, so ρ stays the mean of the seven metrics.
METRIC_SHARE = {"bleu": 0.2, "rouge1": 1.2, "rouge2": 0.6, "rougeL": 1.1, "meteor": 0.9, "bertscore_f1": 1.6,
                "cosine": 1.4}  # fmt: skip
P_FIRST = {1: 0.46, 2: 0.31, 3: 0.12, 4: 0.06}
TRAINING_RCA = {  # (bits, epochs): (losses, epoch_kwh)
    (4, 1): ([0.7071], [6.637e-05]),
    (4, 3): ([0.7071, 0.5801, 0.5434], [6.742e-05, 6.650e-05, 6.478e-05]),
    (8, 1): ([0.7054], [9.546e-05]),
    (8, 3): ([0.7054, 0.5791, 0.5456], [9.812e-05, 9.922e-05, 9.787e-05]),
    (16, 1): ([0.7054], [6.803e-05]),
    (16, 3): ([0.7054, 0.5793, 0.5453], [7.468e-05, 6.383e-05, 6.541e-05]),
    (32, 1): ([0.7053], [9.805e-05]),
    (32, 3): ([0.7053, 0.5795, 0.5448], [9.888e-05, 9.659e-05, 9.362e-05]),
}


def _cell_row(dataset: str, model: str, cell: tuple, base_total: float, top_k: int = 3) -> dict[str, Any]:
    bits, epochs, pruning, rank, ft_rank, total, train, infer, rho, score = cell
    pruned = pruning != "none"
    row: dict[str, Any] = {
        "dataset": dataset, "model": model, "bits": bits, "epochs": epochs, "pruning": pruning,
        "pruning_method": pruning.split()[0] if pruned else "none", "status": "ok", "is_reference": int(epochs == 0),
        "train_kwh": train, "prepare_kwh": total - train - infer, "infer_kwh": infer, "infer_kwh_ci95": infer * 0.035,
        "cpu_kwh": 0.29 * total, "gpu_kwh": 0.0, "ram_kwh": 0.71 * total, "total_kwh": total,
        "gross_kwh": total, "net_kwh": 0.0, "emissions_kg": total * 0.0039, "idle_w": 15.0, "repeats": 5,
        "energy_cv": 0.03, "infer_j_per_token": infer * 3.6e6 / 1920, "wh_per_1k_queries": infer * 1e6 / 40,
        "cpu_source": "codecarbon-estimate", "gpu_source": "none", "ram_source": "codecarbon-estimate",
        "energy_source": "cpu=codecarbon-estimate; gpu=none; ram=codecarbon-estimate", "tracking_mode": "process",
        "tokens_per_s": 1500.0 - 20 * bits, "latency_s": 0.03, "peak_mem_mb": 650.0,
        "model_size_mb": {4: 2.7, 8: 5.3, 16: 7.5, 32: 15.0}[bits],
        "sparsity": (0.5 if "2:4" in pruning else 0.3) if pruned else 0.0,
        "sparse_kernel": DENSE_LABEL if pruned else "",
        "rho": rho, "phi": base_total / total, "score": score, "rank": rank,
        "finetune_rank": ft_rank, "finetune_score": None if ft_rank is None else score,
        "top_k": None if ft_rank is None else int(ft_rank <= top_k), "error": "",
    }  # fmt: skip
    row.update({metric: rho * share for metric, share in METRIC_SHARE.items()})
    return row


def _add_uncertainty(rows: list[dict[str, Any]]) -> None:
    """Interval fields as joulebench.summary.add_uncertainty writes them, with a mix of verdicts."""
    base = next(r for r in rows if r["is_reference"])
    parents = {(r["bits"], r["epochs"]): r for r in rows if r["pruning"] == "none" and not r["is_reference"]}
    for row in rows:
        if row["is_reference"]:
            continue
        for metric in [*METRIC_SHARE, "rho"]:
            delta = row[metric] - base[metric]
            half = 0.03 if metric == "bleu" else 0.4 * abs(delta) + 0.004
            if metric == "cosine" and row["pruning_method"] == "sparsegpt":
                delta, half = -0.02, 0.015
            low, high = delta - half, delta + half
            verdict = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
            row.update({f"delta_{metric}": delta, f"delta_{metric}_lo": low, f"delta_{metric}_hi": high,
                        f"verdict_{metric}": verdict})  # fmt: skip
        row["p_first"] = P_FIRST.get(row["rank"], 0.05 / 16)
        if row["pruning"] == "none":
            row["finetune_p_first"] = {1: 0.52, 2: 0.41, 3: 0.07}.get(row["finetune_rank"], 0.0)
        else:
            delta = row["rho"] - parents[(row["bits"], row["epochs"])]["rho"]
            row.update(delta_parent_rho=delta, delta_parent_rho_lo=delta - 0.005, delta_parent_rho_hi=delta + 0.005)


def realistic_rows(uncertainty: bool = True) -> list[dict[str, str]]:
    rca = [_cell_row("rca", "tiny-llama", cell, RCA_CELLS[0][5]) for cell in RCA_CELLS]
    if uncertainty:
        _add_uncertainty(rca)
    saf = [_cell_row("saf", "tiny-llama", cell, SAF_CELLS[0][5]) for cell in SAF_CELLS]
    saf += [
        {"dataset": "saf", "model": "tiny-llama", "bits": 8, "epochs": 1, "pruning": "none", "pruning_method": "none",
         "status": "failed", "is_reference": 0,
         "error": "Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory"},
        {"dataset": "saf", "model": "tiny-llama", "bits": 16, "epochs": 1, "pruning": "wanda 2:4",
         "pruning_method": "wanda", "status": "skipped", "is_reference": 0,
         "error": "calibration split has no examples"},
    ]  # fmt: skip
    # The report script hands the template strings, as read from summary.json.
    return [{k: "" if v is None else str(v) for k, v in row.items()} for row in rca + saf]


def realistic_training() -> list[dict[str, Any]]:
    training = [
        {"dataset": "rca", "model": "tiny-llama", "bits": bits, "epochs": epochs, "losses": losses,
         "epoch_kwh": kwh, "wall_s": 17.0 * epochs}
        for (bits, epochs), (losses, kwh) in TRAINING_RCA.items()
    ]  # fmt: skip
    training += [
        {"dataset": "saf", "model": "tiny-llama", "bits": 4, "epochs": 1, "losses": [1.21], "epoch_kwh": [0.00013],
         "wall_s": 31.0},
        {"dataset": "saf", "model": "tiny-llama", "bits": 16, "epochs": 1, "losses": [1.19], "epoch_kwh": [0.00014],
         "wall_s": 33.0},
    ]  # fmt: skip
    return training


def realistic_inputs(**overrides: Any) -> ReportInputs:
    values: dict[str, Any] = dict(
        rows=realistic_rows(), training=realistic_training(),
        config_yaml="w: 0.7\ntop_k: 3\nbits: [4, 8, 16, 32]\nepochs: [1, 3]\nenergy:\n  pue: 1.0\n", w=0.7, top_k=3,
        provenance={"python": "3.11.2", "torch": "2.13.0", "cpu": "AMD EPYC", "gpu": "none"},
        energy_note="CPU and RAM energy figures in this report are estimates, not measurements. CPU energy: a "
        "CodeCarbon estimate. GPU energy: not present (no such device, so 0). RAM energy: a CodeCarbon estimate.",
        ranking_note="RANKING-NOTE R = w·φ/max φ + (1−w)·ρ/max ρ.",
        training_note="Training loss fell in 4 of 4 multi-epoch fine-tuning cells.",
        run_info={
            "config_sha256": "ab" * 32, "started": "2026-11-22T02:24:12Z", "finished": "2026-11-22T02:35:15Z",
            "duration_s": 663.0, "meters": {"cpu": "codecarbon-estimate", "gpu": "none", "ram": "codecarbon-estimate"},
            "grid_intensity_g_per_kwh": 3.9, "pue": 1.0, "region": "CAN / quebec", "tracking_mode": "process",
        },
        examples=[
            {"dataset": "rca", "model": "tiny-llama", "cell": "b4 e1 magnitude 2:4", "id": "TKT-000435",
             "target": "Cause: OSPF hello/dead timer mismatch on xe-0/0/16. Fix: Set the same intervals on both ends.",
             "prediction": "Cause: A rogue client on VLAN 30 drained pool 10.25.72.0/24.\nFix: Enable DHCP snooping.",
             "base_prediction": "interface interface interface"},
            {"dataset": "saf", "model": "tiny-llama", "cell": "b4 e1 magnitude 30%", "id": "q7-a3",
             "target": "Correct. The stack is LIFO.", "prediction": f"Correct. {SCRIPT} {IMG} & more",
             "base_prediction": ""},
        ],
    )  # fmt: skip
    values.update(overrides)
    return ReportInputs(**values)


def hostile_inputs() -> ReportInputs:
    """Names and model text that are markup, in every place data reaches the report."""
    rows = realistic_rows()
    for row in rows:
        if row["dataset"] == "saf":
            row["dataset"] = f"saf {SCRIPT}"
            row["model"] = f"tiny {IMG}"
    training = realistic_training()
    for cell in training:
        if cell["dataset"] == "saf":
            cell["dataset"], cell["model"] = f"saf {SCRIPT}", f"tiny {IMG}"
    return realistic_inputs(
        rows=rows, training=training,
        provenance={"hardware": IMG}, run_info={"region": SCRIPT, "container_image": IMG},
        examples=[{"dataset": f"saf {SCRIPT}", "cell": IMG, "id": SCRIPT, "target": IMG,
                   "prediction": f"{SCRIPT}{IMG}", "base_prediction": f"</td></tr></table>{SCRIPT}"}],
        config_yaml=f"note: {SCRIPT}\nlink: {IMG}\n",
    )  # fmt: skip


# --- helpers --------------------------------------------------------------------------------------------------


class _Balance(HTMLParser):
    VOID = {"meta", "br", "img", "hr", "col", "input", "link", "source", "wbr", "area", "base", "embed"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def _text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def _tables(tree: ET.Element, css: str) -> list[ET.Element]:
    return [t for t in tree.iter(f"{XHTML}table") if css in t.get("class", "").split()]


def _rows_of(table: ET.Element) -> list[ET.Element]:
    return [tr for tr in table.iter(f"{XHTML}tr") if tr.find(f"{XHTML}td") is not None]


def _needs(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (envs/system-packages.sh installs poppler-utils)")


def _page_ink(png: Path) -> float:
    """Share of non-white pixels above the footer band (the footer is on every page)."""
    from PIL import Image

    page = Image.open(png).convert("L")
    body = page.crop((0, 0, page.width, int(page.height * 0.93)))
    histogram = body.histogram()
    return sum(histogram[:235]) / (body.width * body.height)


@pytest.fixture(scope="module")
def html() -> str:
    return render_html(realistic_inputs(), TEMPLATES)


@pytest.fixture(scope="module")
def tree(html: str) -> ET.Element:
    return ET.fromstring(html)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The realistic report written as HTML and PDF, with every network path spied on."""
    out = tmp_path_factory.mktemp("report")
    write_report(realistic_inputs(), TEMPLATES, out / "report.html", out / "report.pdf")
    return out


# --- structure --------------------------------------------------------------------------------------------------


def test_html_is_well_formed_xhtml(html, tree):
    checker = _Balance()
    checker.feed(html)
    checker.close()
    assert not checker.problems and not checker.stack, (checker.problems[:5], checker.stack[:5])
    assert tree.tag == f"{XHTML}html"  # ET.fromstring above: a strict XML parse of the whole page
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "an id is defined twice (several inline SVGs)"


def test_finetune_ranking_marks_the_top_k_as_pruned(tree):
    tables = _tables(tree, "finetune")
    assert len(tables) == 2
    rca = _rows_of(tables[0])
    assert [tr.get("data-finetune-rank") for tr in rca] == [str(i) for i in range(1, 9)]
    marked = [_text(tr) for tr in rca if "→ pruned" in _text(tr)]
    assert len(marked) == 3 and all(t.split()[:3] in (["1", "4", "1"], ["2", "16", "1"], ["3", "8", "1"])
                                    for t in marked)  # fmt: skip
    # R is the fine-tune ranking's own (finetune_score; rank 1: 0.8292); φ = E_base / E_cell.
    first = [_text(td) for td in rca[0].iter(f"{XHTML}td")]
    assert first[:5] == ["1", "4", "1", "0.829", f"{1.08e-05 / 7.829e-05:.3f}"]
    assert "52 %" in first  # finetune_p_first
    headers = [_text(th) for th in tables[0].iter(f"{XHTML}th")]
    for name in ("R (score)", "φ", "ρ", "BLEU", "ROUGE‑1", "ROUGE‑2", "ROUGE‑L", "METEOR", "BERTScore F1", "cosine"):
        assert name in headers
    saf = [[_text(td) for td in tr.iter(f"{XHTML}td")] for tr in _rows_of(tables[1])]
    assert [r[0] for r in saf] == ["1", "2"] and all(r[-1] == "→ pruned" for r in saf)
    assert saf[0][3] == "0.810"


def test_final_ranking_lists_reference_first_then_rank_with_kernel_marks(tree, html):
    tables = _tables(tree, "final")
    assert len(tables) == 2
    orders = [[tr.get("data-rank") for tr in _rows_of(t)] for t in tables]
    assert orders[0] == ["base"] + [str(i) for i in range(1, 21)]
    assert orders[1] == ["base", "1", "2", "3"]
    first_pruned = _text(_rows_of(tables[0])[1])
    assert "magnitude 2:4 †" in first_pruned
    assert DENSE_LABEL in html
    for section in html.split("Results: ")[1:]:
        assert section.count("RANKING-NOTE") == 2 and section.count("w = 0.7.") == 2


def test_quality_table_shows_every_difference_with_its_interval(tree, html):
    tables = _tables(tree, "quality")
    assert len(tables) == 1, "only rca carries intervals"
    rows = _rows_of(tables[0])
    assert len(rows) == 20
    headers = [_text(th) for th in tables[0].iter(f"{XHTML}th")]
    assert headers[-1] == "p(first)" and "Δ ρ" in headers and "Δ BERTScore F1" in headers
    interval = re.compile(r"^[+-]\d\.\d{3} [▲▼○] ?\[-?\d\.\d{3}, -?\d\.\d{3}\]$")
    for tr in rows:
        cells = [_text(td) for td in tr.iter(f"{XHTML}td")]
        assert all(interval.match(c) for c in cells[2:10]), cells
        assert cells[10].endswith("%")
    marks = {td.get("class") for tr in rows for td in tr.iter(f"{XHTML}td") if td.get("class")}
    assert {"verdict-better", "verdict-worse", "verdict-no-clear-difference"} <= marks
    best = [_text(td) for td in rows[0].iter(f"{XHTML}td")]
    assert best[0] == "b4 e1 magnitude 2:4" and best[-1] == "46 %"
    saf = html.split("Results: saf", 1)[1].split("</section>", 1)[0]
    assert "Intervals were not computed" in saf and "▲" not in saf


def test_a_difference_without_both_bounds_is_not_shown():
    rows = realistic_rows()
    for row in rows:
        row["delta_bleu_lo"] = ""  # an estimate with half an interval
    html = render_html(realistic_inputs(rows=rows), TEMPLATES)
    table = _tables(ET.fromstring(html), "quality")[0]
    bleu = [[_text(td) for td in tr.iter(f"{XHTML}td")][2] for tr in _rows_of(table)]
    assert set(bleu) == {"not computed"}


def test_older_summaries_say_intervals_were_not_computed():
    html = render_html(realistic_inputs(rows=realistic_rows(uncertainty=False)), TEMPLATES)
    assert html.count("Intervals were not computed") == 2
    assert "p(first)" not in html and "▲" not in html.split('id="energy"')[0]
    assert "Hatched bars have no interval" in html  # Fig. 6 falls back to the sign of the point estimate


def test_every_figure_is_inline_with_a_caption(html, tree):
    figures = {f.get("id"): f for f in tree.iter(f"{XHTML}figure")}
    assert set(figures) == set(FIGURES)
    svg = "{http://www.w3.org/2000/svg}svg"
    for fig_id, title in FIGURES.items():
        figure = figures[fig_id]
        assert figure.find(f".//{svg}") is not None, f"{fig_id} has no inline SVG"
        caption = _text(figure.find(f"{XHTML}figcaption"))
        assert caption.startswith(title)
        if fig_id != "fig-pruning-impact":
            assert "CPU and RAM energy figures in this report are estimates, not measurements." in caption
    assert "emissions of the whole cell" in _text(figures["fig-inference-precision"])


def test_pareto_table_names_the_non_dominated_cells(tree):
    table = _tables(tree, "pareto")[0]
    cells = [[_text(td) for td in tr.iter(f"{XHTML}td")][:2] for tr in _rows_of(table)]
    assert cells == [
        ["rca", "base"], ["rca", "b4 e1"], ["rca", "b4 e1 magnitude 2:4"], ["rca", "b4 e3"], ["rca", "b16 e3"],
        ["rca", "b32 e3"], ["saf", "base"], ["saf", "b4 e1"], ["saf", "b4 e1 magnitude 30%"],
    ]  # fmt: skip


def test_provenance_run_info_config_hash_and_failed_cells(html, tree):
    provenance = html.split('id="provenance"', 1)[1]
    for text in ("2026-11-22T02:24:12Z", "11 min 3 s (663 s)", "cpu: codecarbon-estimate; gpu: none",
                 "not run in a container", "ab" * 32, "CAN / quebec", "process", "AMD EPYC",
                 "torch.OutOfMemoryError", "calibration split has no examples", "status: skipped"):  # fmt: skip
        assert text in provenance, text
    assert provenance.count("ab" * 32) == 1 and provenance.index("ab" * 32) > provenance.index("Configuration (YAML)")
    assert "container digest" not in provenance  # absent entries are omitted
    with_image = render_html(realistic_inputs(run_info={"container_image": "joulebench.sif"}), TEMPLATES)
    assert "not run in a container" not in with_image and "joulebench.sif" in with_image
    assert "failed or skipped (reasons under" in html.split("Results: saf", 1)[1]


def test_example_answers_are_text(html, tree):
    section = next(s for s in tree.iter(f"{XHTML}section") if s.get("id") == "examples")
    answers = [td.text for td in section.iter(f"{XHTML}td")]
    assert answers[:3] == [
        "Cause: OSPF hello/dead timer mismatch on xe-0/0/16. Fix: Set the same intervals on both ends.",
        "Cause: A rogue client on VLAN 30 drained pool 10.25.72.0/24.\nFix: Enable DHCP snooping.",
        "interface interface interface",
    ]
    assert answers[4] == f"Correct. {SCRIPT} {IMG} & more"  # the XML parser unescaped the text, so it was text


def test_existing_callers_still_work():
    minimal = ReportInputs(rows=realistic_rows(uncertainty=False), training=[], config_yaml="w: 0.7\n", w=0.7, top_k=3,
                           provenance={}, energy_note="All energy figures come from hardware counters. More.",
                           ranking_note="", training_note="")  # fmt: skip
    html = render_html(minimal, TEMPLATES)
    ET.fromstring(html)
    assert "No example answers were collected" in html and "not run in a container" in html
    assert "no training losses with per-epoch energy recorded" in html


# --- optimised vs baseline ---------------------------------------------------------------------------------------


def _lifecycle_sections(tree: ET.Element) -> dict[str, ET.Element]:
    sections = [s for s in tree.iter(f"{XHTML}section") if s.get("id", "").startswith("lifecycle-")]
    return {_text(s.find(f"{XHTML}h2")).removeprefix("Optimised vs baseline: "): s for s in sections}


def _table_cells(section: ET.Element, css: str) -> dict[str, list[str]]:
    """First cell's text -> the row's other cells, of the section's table with class `css`."""
    table = _tables(section, css)[0]
    return {cells[0]: cells[1:] for tr in table.iter(f"{XHTML}tr")
            if (cells := [_text(c) for c in tr if c.tag in (f"{XHTML}td", f"{XHTML}th")]) and cells[0]}  # fmt: skip


def test_optimised_vs_baseline_without_the_new_columns(tree, html):
    """A summary from before precision, build energy and batch latency existed: defaults, blanks, no crash."""
    sections = _lifecycle_sections(tree)
    assert list(sections) == ["rca", "saf"]
    rca = sections["rca"]
    lead = _text(rca.find(f"{XHTML}p"))
    assert lead.startswith("Baseline b32 e3: the unpruned fine-tuned cell at 32 bits and 3 epochs")
    assert "Optimised b4 e1 magnitude 2:4: the cell ranked first by R" in lead and "1,000,000 queries" in lead
    cells = _table_cells(rca, "lifecycle-cells")
    assert cells["training precision"] == ["32-true", "32-true"]
    assert cells["pruning / exit"] == ["none", "magnitude 2:4"]
    measures = _table_cells(rca, "lifecycle")
    assert measures["inference time per batch"] == ["s", "", "", "", "lower"]  # not recorded: blank
    assert measures["model size"] == ["MB", "15.0", "2.70", "-82.0 %", "lower"]
    # Lifecycle kWh at 10⁶ queries: build not recorded, so fine-tuning + preparation + 10⁶ × Wh per 1k / 10⁶.
    row = next(r for r in realistic_rows() if r["dataset"] == "rca" and r["bits"] == "4" and r["rank"] == "1")
    expected = float(row["train_kwh"]) + float(row["prepare_kwh"]) + float(row["wh_per_1k_queries"])
    assert measures["energy: lifecycle at 1,000,000 queries"][2] == format_kwh(expected)
    stages = _table_cells(rca, "lifecycle-stages")
    assert stages["build (pre-training the base model)"] == ["not recorded", "", "", "", "not recorded", "", "", ""]
    assert stages["fine-tuning"][2] == "measured for the cell" and stages["fine-tuning"][1] == "3.90"
    assert stages["lifecycle (Σ)"][4] == format_kwh(expected)
    text = _text(rca)
    assert "Build energy not recorded" in text
    assert "CPU and RAM energy figures in this report are estimates" in text and "ram=codecarbon-estimate" in text
    saf = _text(sections["saf"])
    assert "Baseline b16 e1" in saf and "16 bits and 1 epoch," in saf and "Optimised b4 e1 magnitude 30%" in saf


def test_optimised_vs_baseline_with_the_new_columns():
    rows = realistic_rows()
    for row in rows:
        row.update(precision="32-true", sparse_training="dense", build_kwh="0.25", batch_latency_s="0.5",
                   train_wall_s="40", accuracy="0.700", auc_roc="0.800")  # fmt: skip
        if row["dataset"] == "rca" and row["bits"] == "16" and row["epochs"] == "1" and row["pruning"] == "none":
            row.update(precision="bf16-mixed", batch_latency_s="0.25", accuracy="0.750", auc_roc="0.790")
        if row["dataset"] == "saf" and row.get("rank") == "1":
            row.update(pruning="early exit τ=0.90", early_exit="early exit τ=0.90", mean_exit_layer="2.75")
    lifecycle = {"queries": 5000, "emission_factors_g_per_kwh": {"build": 400, "inference": 20},
                 "baseline": {"bits": 16, "precision": "bf16-mixed"}}  # fmt: skip
    html = render_html(realistic_inputs(rows=rows, lifecycle=lifecycle), TEMPLATES)
    sections = _lifecycle_sections(ET.fromstring(html))
    rca = sections["rca"]
    lead = _text(rca.find(f"{XHTML}p"))
    assert "Baseline b16 e1 bf16-mixed:" in lead and "5,000 queries" in lead
    assert "(epochs: the largest evaluated" in lead
    measures = _table_cells(rca, "lifecycle")
    assert measures["inference time per batch"] == ["s", "0.250", "0.500", "+100.0 %", "lower"]
    assert measures["accuracy"] == ["", "0.750", "0.700", "-6.7 %", "higher"]
    assert measures["AUC-ROC"][3] == "+1.3 %"
    worse = [td for tr in _tables(rca, "lifecycle")[0].iter(f"{XHTML}tr") for td in tr
             if td.get("class") == "verdict-worse"]  # fmt: skip
    assert [_text(td) for td in worse] == ["+100.0 %", "+22.2 %", "-6.7 %"]  # +0.0 % is not coloured
    stages = _table_cells(rca, "lifecycle-stages")
    assert stages["build (pre-training the base model)"][:4] == ["0.250", "400", "configured", "0.100"]
    assert stages["inference at 5,000 queries"][1:3] == ["20.0", "configured"]
    assert "Build energy not recorded" not in _text(rca)
    saf = sections["saf"]
    assert "matches the baseline" in _text(saf)  # saf has no bf16-mixed cell: no baseline to compare with
    lifecycle["baseline"] = {"bits": 16, "precision": "32-true"}
    saf = _lifecycle_sections(ET.fromstring(render_html(realistic_inputs(rows=rows, lifecycle=lifecycle), TEMPLATES)))
    cells = _table_cells(saf["saf"], "lifecycle-cells")
    assert cells["pruning / exit"] == ["none", "early exit τ=0.90"] and cells["mean exit layer"] == ["", "2.75"]


def test_optimised_vs_baseline_says_why_there_is_no_comparison():
    rows = realistic_rows()
    for row in rows:  # saf: the baseline is itself the best-ranked cell
        if row["dataset"] == "saf" and row.get("rank") in ("1", "3"):
            row["rank"] = {"1": "3", "3": "1"}[row["rank"]]
    html = render_html(realistic_inputs(rows=rows, lifecycle={"baseline": {"bits": 8}}), TEMPLATES)
    sections = _lifecycle_sections(ET.fromstring(html))
    rca = _text(sections["rca"])
    assert "Baseline b8 e3" in rca and "bits as configured" not in rca and "(epochs: the largest evaluated" in rca
    saf = _text(sections["saf"])
    assert "No evaluated, unpruned fine-tuned cell of this dataset matches the baseline" in saf and "bits 8" in saf
    assert not _tables(sections["saf"], "lifecycle")
    unranked = [{**r, "rank": ""} if r["dataset"] == "rca" else r for r in rows]
    sections = _lifecycle_sections(ET.fromstring(render_html(realistic_inputs(rows=unranked), TEMPLATES)))
    assert "No cell of this dataset is ranked" in _text(sections["rca"])
    saf = _text(sections["saf"])
    assert "The best-ranked cell by R, b16 e1, is the baseline itself" in saf and "every change is 0" in saf


# --- safety -----------------------------------------------------------------------------------------------------


def test_hostile_names_and_model_text_stay_text():
    html = render_html(hostile_inputs(), TEMPLATES)
    checker = _Balance()
    checker.feed(html)
    checker.close()
    assert "script" not in checker.tags and "img" not in checker.tags
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    tree = ET.fromstring(html)
    # Every string came through as text: in the examples, the names, the charts' <text> and the config.
    examples = next(s for s in tree.iter(f"{XHTML}section") if s.get("id") == "examples")
    assert f"</td></tr></table>{SCRIPT}" in [td.text for td in examples.iter(f"{XHTML}td")]
    titles = [_text(h) for h in tree.iter(f"{XHTML}h2")]
    assert f"Results: saf {SCRIPT}" in titles
    chart_text = " ".join(_text(t) for t in tree.iter("{http://www.w3.org/2000/svg}text"))
    assert f"saf {SCRIPT}" in chart_text


def test_pdf_rendering_never_touches_the_network(tmp_path, monkeypatch):
    attempts: list[Any] = []
    real_fetch = report.NoFetchURLFetcher.fetch

    def spy_fetch(self, url, headers=None):
        attempts.append(url)
        return real_fetch(self, url, headers)

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access during report rendering")

    monkeypatch.setattr(report.NoFetchURLFetcher, "fetch", spy_fetch)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    write_report(hostile_inputs(), TEMPLATES, tmp_path / "r.html", tmp_path / "r.pdf")
    assert attempts == []
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.pdf"], "a temp file was left behind"
    # The spy does see a fetch when there is one, so the empty list above means something.
    with pytest.raises(report.ReportFetchError):
        report.html_to_pdf(f"<html><body>{IMG}</body></html>")
    assert attempts == ["http://example.invalid/x"]


@pytest.mark.parametrize(
    "resource",
    [
        '<img src="http://example.invalid/x.png">',
        '<link rel="stylesheet" href="https://example.invalid/s.css">',
        '<style>@import url("http://example.invalid/i.css");</style>',
        '<div style="background: url(http://example.invalid/b.png)">x</div>',
        '<img src="data:image/png;base64,iVBORw0KGgo=">',
    ],
)
def test_an_external_resource_stops_the_pdf(resource):
    with pytest.raises(report.ReportFetchError, match="fetch"):
        report.html_to_pdf(f"<html><head></head><body>{resource}</body></html>")


# --- the PDF ----------------------------------------------------------------------------------------------------


def test_pdf_pages_have_content_and_every_figure(rendered):
    _needs("pdfinfo", "pdftoppm", "pdftotext")
    pdf = rendered / "report.pdf"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 8 and "A4" in info
    subprocess.run(["pdftoppm", "-r", "20", "-png", str(pdf), str(rendered / "page")], check=True)
    pngs = sorted(rendered.glob("page-*.png"))
    assert len(pngs) == pages
    inks = {png.name: _page_ink(png) for png in pngs}
    assert all(ink > 0.01 for ink in inks.values()), inks
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split())
    for title in FIGURES.values():
        assert title in flat, title
    for heading in ("Fine-tune ranking", "Final ranking after pruning", "Quality against the base model",
                    "Example answers", "Provenance", "→ pruned", "rca: Δρ against the unpruned parent",
                    "Optimised vs baseline: rca", "Lifecycle carbon by stage"):  # fmt: skip
        assert heading in flat, heading


def test_wide_tables_sit_on_landscape_pages(rendered):
    _needs("pdfinfo")
    pdf = str(rendered / "report.pdf")
    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "99", pdf], capture_output=True, text=True, check=True).stdout
    sizes = re.findall(r"Page\s+\d+ size:\s+([\d.]+) x ([\d.]+)", info)
    landscape = [float(w) > float(h) for w, h in sizes]
    assert landscape[0] is False and any(landscape), "the per-dataset tables should be on landscape pages"


def test_blank_page_check_can_fail(tmp_path):
    _needs("pdftoppm")
    pdf = tmp_path / "blank.pdf"
    pdf.write_bytes(report.html_to_pdf("<html><body><p style='break-after: page'>x</p><p></p></body></html>"))
    subprocess.run(["pdftoppm", "-r", "20", "-png", str(pdf), str(tmp_path / "page")], check=True)
    inks = [_page_ink(png) for png in sorted(tmp_path.glob("page-*.png"))]
    assert len(inks) == 2 and inks[1] < 0.01


# --- formatting -------------------------------------------------------------------------------------------------


def test_number_formatting():
    assert format_kwh("1.23e-05") == "1.23e-05"
    assert format_kwh("0.001234") == "0.00123"
    assert format_kwh("12.345") == "12.3"
    assert format_kwh("0.09996") == "0.100"
    assert format_kwh("0") == "0"
    assert format_kwh("") == format_metric("") == ""
    assert format_metric("0.12345") == "0.123"
    assert format_metric("n/a") == "n/a"
    assert format_duration(663) == "11 min 3 s (663 s)"
    assert format_duration(3725.5) == "1 h 2 min 6 s (3725.5 s)"
    assert report.format_delta(0.1234) == "+0.123" and report.format_delta(-0.05) == "-0.050"
    assert report.run_info_items({"meters": {"cpu": "rapl"}, "pue": [1.0, 1.2], "extra_key": "x"}) == [
        ("container image", "not run in a container"), ("energy meters (component: source)", "cpu: rapl"),
        ("PUE", "1.0, 1.2"), ("extra key", "x"),
    ]  # fmt: skip
