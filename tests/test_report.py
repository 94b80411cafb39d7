from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from joulebench import charts, report
from joulebench.report import ReportInputs, format_kwh, format_metric, render_html, write_report

from .conftest import ROOT

TEMPLATES = ROOT / "report"
SCRIPT = "<script>alert(1)</script>"
IMG = '<img src="http://example.invalid/x">'


def _row(dataset, bits, epochs, pruning, rank, score, status="ok", error="", reference=False):
    return {
        "dataset": dataset, "model": "tiny-llama", "bits": str(bits), "epochs": str(epochs),
        "pruning": pruning, "status": status, "is_reference": "1" if reference else "0",
        "train_kwh": "0.0001", "prepare_kwh": "1e-05", "infer_kwh": "2e-05", "cpu_kwh": "4e-05",
        "gpu_kwh": "0", "ram_kwh": "9e-05", "total_kwh": "0.00013", "emissions_kg": "2e-05",
        "bleu": "0.1", "rouge1": "0.3", "rouge2": "0.2", "rougeL": "0.25", "meteor": "0.3",
        "bertscore_f1": "0.5", "cosine": "0.4", "tokens_per_s": "1500", "latency_s": "0.01",
        "peak_mem_mb": "600", "model_size_mb": "3", "sparsity": "0.5" if pruning == "2:4" else "0",
        "phi": "0.1", "rho": "0.3", "score": str(score), "rank": str(rank),
        "energy_source": "cpu=codecarbon-estimate; gpu=none; ram=codecarbon-estimate",
        "tracking_mode": "process", "train_loss_first": "0.6", "train_loss_last": "0.5", "error": error,
    }  # fmt: skip


def _rows() -> list[dict]:
    rows = [
        _row("rca", 32, 0, "none", "", "", reference=True),
        _row("rca", 4, 3, "none", 2, 0.6),
        _row("rca", 4, 1, "none", 1, 0.9),
        _row("rca", 4, 1, "2:4", 3, 0.5),
        _row("rca", 8, 1, "none", "", "", status="failed", error=f"{SCRIPT} {IMG}"),
        _row("saf", 32, 0, "none", "", "", reference=True),
        _row("saf", 16, 1, "none", 2, 0.4),
        _row("saf", 16, 1, "none", 1, 0.8),
    ]
    # Spread the energies over > 10x so the scatter takes its log-scale branch too.
    for i, row in enumerate(rows):
        row["total_kwh"] = f"{0.00013 * 3**i:.6g}"
    return rows


def inputs(**overrides) -> ReportInputs:
    training = [
        {"dataset": "rca", "model": "tiny-llama", "bits": 4, "epochs": 3, "losses": [0.6, 0.5, 0.45],
         "epoch_kwh": [1e-5, 1e-5, 1e-5], "wall_s": 10.0},
        {"dataset": "saf", "model": "tiny-llama", "bits": 16, "epochs": 1, "losses": [0.9],
         "epoch_kwh": [2e-5], "wall_s": 5.0},
    ]  # fmt: skip
    values = dict(
        rows=_rows(), training=training, config_yaml=f"w: 0.7\nnote: {SCRIPT}\nlink: {IMG}\n", w=0.7, top_k=2,
        provenance={"torch": "2.13.0", "run date": "2026-11-22", "hardware": IMG},
        energy_note="ENERGY-NOTE: CPU and RAM energy are CodeCarbon estimates here",
        ranking_note="RANKING-NOTE", training_note=f"TRAINING-NOTE 0.6 → 0.45 {IMG}",
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


def _text(element: ET.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def _ranked_tables(html: str) -> list[ET.Element]:
    tree = ET.fromstring(html)  # the template is XHTML-clean: autoescaped text, self-closed void tags
    return [t for t in tree.iter("table") if "ranked" in t.get("class", "").split()]


@pytest.fixture(scope="module")
def html() -> str:
    return render_html(inputs(), TEMPLATES)


def test_html_is_well_formed(html):
    checker = _Balance()
    checker.feed(html)
    checker.close()
    assert not checker.problems and not checker.stack, (checker.problems[:5], checker.stack[:5])
    ET.fromstring(html)
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "an id is defined twice (several inline SVGs)"


def test_ranked_tables_list_reference_first_then_rank_order(html):
    tables = _ranked_tables(html)
    assert len(tables) == 2
    orders = [[tr.get("data-rank") for tr in table.iter("tr") if tr.get("data-rank")] for table in tables]
    assert orders == [["base", "1", "2", "3"], ["base", "1", "2"]]
    for table in tables:
        first = next(tr for tr in table.iter("tr") if tr.get("data-rank"))
        assert _text(first).startswith("base (reference)")
        headers = [_text(th) for th in table.iter("th")]
        assert headers[:5] == ["rank", "bits", "epochs", "pruning", "R (score)"]
        assert "BERTScore F1" in headers and "model MB" in headers
    rca = html.split("Ranking: rca", 1)[1]
    assert rca.index("RANKING-NOTE") < rca.index("Failed cells") < rca.index("Ranking: saf")


def test_notes_charts_and_failed_cells_are_shown(html):
    assert "ENERGY-NOTE: CPU and RAM energy are CodeCarbon estimates here" in html
    assert html.count("RANKING-NOTE") == 2  # once under each ranked table
    assert "TRAINING-NOTE" in html
    assert html.count("<svg") == 3
    assert "b8 e1" in html.split("Failed cells", 1)[1]
    assert "2026-11-22" in html


def test_untrusted_text_is_escaped_never_raw(html):
    assert "<script" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2  # the error and the config
    assert "<img" not in html
    assert "&lt;img src=&#34;http://example.invalid/x&#34;&gt;" in html


def test_number_formatting():
    assert format_kwh("1.23e-05") == "1.23e-05"
    assert format_kwh("0.001234") == "0.00123"
    assert format_kwh("12.345") == "12.3"
    assert format_kwh("0.09996") == "0.100"
    assert format_kwh("0") == "0"
    assert format_kwh("") == format_metric("") == ""
    assert format_metric("0.12345") == "0.123"
    assert format_metric("n/a") == "n/a"


def test_charts_are_inline_self_contained_svg():
    rows, training = _rows(), inputs().training
    for svg in (charts.energy_breakdown_svg(rows), charts.loss_curves_svg(training),
                charts.energy_vs_quality_svg(rows), charts.energy_breakdown_svg([])):
        assert svg.startswith("<svg") and "<?xml" not in svg and "<!DOCTYPE" not in svg
        assert len(svg.encode()) < 150_000
        urls = set(re.findall(r"https?://[^\"' ]+", svg))
        assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
        assert not re.search(r'href="(?!#)', svg), "only same-document references"
    assert charts.energy_vs_quality_svg(rows) == charts.energy_vs_quality_svg(rows)
    assert charts.cell_label(rows[3]) == "b4 e1 2:4" and charts.cell_label(rows[0]) == "base"


def test_pdf_has_pages_with_content_and_fetches_nothing(tmp_path, monkeypatch):
    fetched = []
    original = report.NoFetchURLFetcher.fetch

    def record(self, url, headers=None):
        fetched.append(url)
        return original(self, url, headers)

    monkeypatch.setattr(report.NoFetchURLFetcher, "fetch", record)
    write_report(inputs(), TEMPLATES, tmp_path / "r.html", tmp_path / "r.pdf")
    assert fetched == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.pdf"], "a temp file was left behind"
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    assert IMG not in (tmp_path / "r.html").read_text()

    # The recorder does see a fetch when there is one, so the empty list above means something.
    with pytest.raises(report.ReportFetchError):
        report.html_to_pdf(f"<html><body>{IMG}</body></html>")
    assert fetched == ["http://example.invalid/x"]

    if shutil.which("pdfinfo") is None or shutil.which("pdftoppm") is None:
        pytest.skip("poppler-utils is not installed (envs/system-packages.sh installs it)")
    pdf = str(tmp_path / "r.pdf")
    info = subprocess.run(["pdfinfo", pdf], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Pages:\s+(\d+)", info).group(1)) >= 2
    assert "A4" in info
    subprocess.run(["pdftoppm", "-r", "30", "-png", pdf, str(tmp_path / "page")], check=True)
    from PIL import Image

    pages = sorted(tmp_path.glob("page-*.png"))
    assert pages and pages[0].name.endswith("-1.png")
    for png in pages:
        page = Image.open(png).convert("L")
        body = page.crop((0, 0, page.width, int(page.height * 0.9)))  # the footer is on every page
        assert body.getextrema()[0] < 200, f"{png.name} is blank"


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
