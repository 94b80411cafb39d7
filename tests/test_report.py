from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from joulebench import report
from joulebench.report import ReportInputs, render_html, write_report

from .conftest import ROOT

TEMPLATES = ROOT / "report"


def _row(dataset, bits, epochs, pruning, rank, score, status="ok", error="", reference=False):
    return {
        "dataset": dataset, "model": "tiny-llama", "bits": str(bits), "epochs": str(epochs), "pruning": pruning,
        "status": status, "is_reference": "1" if reference else "0", "train_kwh": "0.0001", "prepare_kwh": "1e-05",
        "infer_kwh": "2e-05", "cpu_kwh": "4e-05", "gpu_kwh": "0", "ram_kwh": "9e-05", "total_kwh": "0.00013",
        "emissions_kg": "2e-05", "bleu": "0.1", "rouge1": "0.3", "rouge2": "0.2", "rougeL": "0.25", "meteor": "0.3",
        "bertscore_f1": "0.5", "cosine": "0.4", "tokens_per_s": "1500", "latency_s": "0.01", "peak_mem_mb": "600",
        "model_size_mb": "3", "sparsity": "0.5" if pruning == "2:4" else "0", "phi": "0.1", "rho": "0.3",
        "score": str(score), "rank": str(rank), "energy_source": "cpu=codecarbon-estimate; gpu=none; "
        "ram=codecarbon-estimate", "tracking_mode": "process", "train_loss_first": "0.6", "train_loss_last": "0.5",
        "error": error,
    }  # fmt: skip


def inputs(**overrides) -> ReportInputs:
    rows = [
        _row("rca", 32, 0, "none", "", "", reference=True),
        _row("rca", 4, 3, "none", 2, 0.6),
        _row("rca", 4, 1, "none", 1, 0.9),
        _row("rca", 4, 1, "2:4", 3, 0.5),
        _row("rca", 8, 1, "none", "", "", status="failed", error="<script>alert(1)</script>"),
        _row("saf", 32, 0, "none", "", "", reference=True),
        _row("saf", 16, 1, "none", 1, 0.8),
    ]
    training = [
        {"dataset": "rca", "model": "tiny-llama", "bits": 4, "epochs": 3, "losses": [0.6, 0.5, 0.45],
         "epoch_kwh": [1e-5, 1e-5, 1e-5], "wall_s": 10.0},
        {"dataset": "saf", "model": "tiny-llama", "bits": 16, "epochs": 1, "losses": [0.9], "epoch_kwh": [2e-5],
         "wall_s": 5.0},
    ]  # fmt: skip
    values = dict(
        rows=rows, training=training, config_yaml="w: 0.7\nnote: <script>alert(1)</script>\n", w=0.7, top_k=2,
        provenance={"torch": "2.13.0", "run date": "2026-11-22"}, energy_note="ENERGY-NOTE: estimates here",
        ranking_note="RANKING-NOTE", training_note="TRAINING-NOTE 0.6 → 0.45",
    )  # fmt: skip
    values.update(overrides)
    return ReportInputs(**values)


class _Balance(HTMLParser):
    VOID = {"meta", "br", "img", "hr", "col", "input", "link", "source", "wbr", "area", "base", "embed"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()


def test_html_is_well_formed_ranked_and_escaped():
    html = render_html(inputs(), TEMPLATES)
    checker = _Balance()
    checker.feed(html)
    checker.close()
    assert not checker.problems and not checker.stack, (checker.problems[:5], checker.stack[:5])
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<svg") >= 3
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "an id is defined twice (several inline SVGs)"
    assert "ENERGY-NOTE: estimates here" in html and "RANKING-NOTE" in html and "TRAINING-NOTE" in html
    rca = html.split("rca", 1)[1]
    assert rca.index("b4 e1") < rca.index("b4 e3") < rca.index("b4 e1 2:4")


def test_pdf_has_pages_with_content_and_fetches_nothing(tmp_path, monkeypatch):
    fetched = []
    original = report.NoFetchURLFetcher.fetch

    def record(self, url, headers=None):
        fetched.append(url)
        return original(self, url, headers)

    monkeypatch.setattr(report.NoFetchURLFetcher, "fetch", record)
    hostile = inputs(training_note='<img src="http://example.invalid/x">')
    write_report(hostile, TEMPLATES, tmp_path / "r.html", tmp_path / "r.pdf")
    assert fetched == []
    assert '<img src="http://example.invalid/x">' not in (tmp_path / "r.html").read_text()
    if shutil.which("pdfinfo") is None:
        pytest.skip("poppler-utils is not installed (envs/system-packages.sh installs it)")
    info = subprocess.run(["pdfinfo", str(tmp_path / "r.pdf")], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 2
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(tmp_path / "r.pdf"), str(tmp_path / "page")], check=True)
    from PIL import Image

    for png in sorted(tmp_path.glob("page-*.png")):
        page = Image.open(png).convert("L")
        body = page.crop((0, 0, page.width, int(page.height * 0.9)))  # the footer is on every page
        assert body.getextrema()[0] < 200, f"{png.name} is blank"


def test_an_external_resource_stops_the_pdf(tmp_path):
    with pytest.raises(report.ReportFetchError, match="example.invalid"):
        report.html_to_pdf('<html><body><img src="http://example.invalid/x.png"></body></html>')
