"""Render results/summary.csv rows into an HTML and PDF report (Jinja2 + WeasyPrint, no network)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from weasyprint import HTML
from weasyprint.urls import FatalURLFetchingError, URLFetcher

from joulebench import charts
from joulebench.io import atomic_write_bytes, atomic_write_text
from joulebench.sparse_kernels import DENSE_LABEL
from joulebench.summary import COLUMNS

TEMPLATE_NAME = "report.html.j2"
STYLESHEET_NAME = "style.css"
MAX_ERROR_CHARS = 800

RUN_DATE_KEYS = ("run_date", "run date", "date", "run_started")
# C0 controls other than tab/newline/CR are invalid in XML and mean nothing in a report.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class ReportFetchError(RuntimeError):
    """The report tried to load an external resource; everything must be inline."""


@dataclass
class ReportInputs:
    rows: list[dict]
    training: list[dict]
    config_yaml: str
    w: float
    top_k: int
    provenance: dict[str, str]
    energy_note: str
    ranking_note: str
    training_note: str
    prune_all: bool = False
    title: str = "joulebench report"


# --- number formatting ------------------------------------------------------------------------


def format_sig(value: Any, digits: int = 3, tiny: float = 1e-3) -> str:
    """`digits` significant figures; scientific below `tiny` (1.23e-05); blanks stay blank."""
    number = charts.to_float(value)
    if number is None:
        return _text(value)
    if number == 0:
        return "0"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    if abs(number) < tiny:
        return f"{number:.{digits - 1}e}"
    decimals = digits - 1 - math.floor(math.log10(abs(number)))
    rounded = round(number, decimals)
    # Rounding can add a digit (9.996 -> 10.0); recompute so we still show `digits` figures.
    decimals = digits - 1 - math.floor(math.log10(abs(rounded)))
    return f"{round(number, decimals):.{max(decimals, 0)}f}"


def format_kwh(value: Any) -> str:
    return format_sig(value, 3)


def format_fixed(value: Any, decimals: int = 3) -> str:
    number = charts.to_float(value)
    if number is None:
        return _text(value)
    return f"{number:.{decimals}f}"


def format_metric(value: Any) -> str:
    return format_fixed(value, 3)


def format_int(value: Any) -> str:
    number = charts.to_float(value)
    if number is None:
        return _text(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


def blank(value: Any) -> str:
    return _text(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value).strip()


FILTERS: dict[str, Callable[..., str]] = {
    "kwh": format_kwh,
    "sig": format_sig,
    "metric": format_metric,
    "fixed": format_fixed,
    "whole": format_int,
    "blank": blank,
}


# --- view model -------------------------------------------------------------------------------


def normalise_row(row: Mapping[str, Any]) -> dict[str, str]:
    """Every known column present, None as '', and the extra fields the template needs."""
    clean = {key: _text(row.get(key)) for key in COLUMNS}
    clean.update({key: _text(value) for key, value in row.items() if key not in clean})
    return clean


def truncate_error(error: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Keep the tail: the last lines of a traceback say what went wrong."""
    error = error.strip()
    return error if len(error) <= limit else "…" + error[-limit:]


def is_top(row: Mapping[str, str], top_k: int) -> bool:
    rank = charts.to_float(row.get("rank"))
    return rank is not None and not charts.is_reference(row) and rank <= top_k


def dataset_sections(rows: Sequence[Mapping[str, str]], top_k: int) -> list[dict[str, Any]]:
    """Per dataset: evaluated rows (reference first, then by rank) and failed cells."""
    with_model = charts.needs_model_prefix(rows)
    sections = []
    for dataset in charts.datasets_in_order(rows):
        mine = [row for row in rows if row["dataset"] == dataset]
        ok = sorted((row for row in mine if charts.is_ok(row)), key=charts.rank_key)
        failed = sorted((row for row in mine if not charts.is_ok(row)), key=charts.cell_label)
        sections.append({
            "name": dataset,
            "models": list(dict.fromkeys(row["model"] for row in mine)),
            "ranked": [_decorate(row, with_model, top_k) for row in ok],
            "dense_pruned": any(row["sparse_kernel"] == DENSE_LABEL for row in ok),
            "sparse_pruned": any(row["speedup_vs_dense"] for row in ok),
            "failed": [_decorate(row, with_model, top_k) for row in failed],
        })
    return sections


def _decorate(row: Mapping[str, str], with_model: bool, top_k: int) -> dict[str, Any]:
    return {
        **row,
        "label": charts.cell_label(row, with_model),
        "reference": charts.is_reference(row),
        "top": is_top(row, top_k),
        "error_short": truncate_error(row.get("error", "")),
    }


def energy_table(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    with_model = charts.needs_model_prefix(rows)
    datasets = charts.datasets_in_order(rows)
    ordered = sorted(
        (row for row in rows if charts.is_ok(row)),
        key=lambda row: (datasets.index(row["dataset"]), charts.rank_key(row)),
    )
    return [_decorate(row, with_model, 0) for row in ordered]


def training_table(training: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    with_model = charts.needs_model_prefix(training)
    table = []
    datasets = charts.datasets_in_order(training)
    cells = sorted(charts.loss_cells(training), key=lambda cell: datasets.index(str(cell.get("dataset", ""))))
    for cell in cells:
        losses = [x for x in (charts.to_float(v) for v in cell.get("losses") or []) if x is not None]
        kwh = [x for x in (charts.to_float(v) for v in cell.get("epoch_kwh") or []) if x is not None]
        table.append({
            "dataset": _text(cell.get("dataset")),
            "label": charts.cell_label({**cell, "is_reference": "0", "pruning": ""}, with_model),
            "bits": charts.bits_key(cell.get("bits")),
            "epochs": charts.bits_key(cell.get("epochs")),
            "loss_first": losses[0] if losses else "",
            "loss_last": losses[-1] if losses else "",
            "train_kwh": sum(kwh) if kwh else "",
            "wall_s": cell.get("wall_s", ""),
        })
    return table


def run_date(provenance: Mapping[str, str]) -> str:
    for key in RUN_DATE_KEYS:
        if provenance.get(key):
            return str(provenance[key])
    return ""


def build_context(inputs: ReportInputs, stylesheet: str) -> dict[str, Any]:
    rows = [normalise_row(row) for row in inputs.rows]
    return {
        "title": inputs.title,
        "run_date": run_date(inputs.provenance),
        "w": inputs.w,
        "top_k": inputs.top_k,
        "prune_all": inputs.prune_all,
        "dense_kernel_label": DENSE_LABEL,
        "energy_note": inputs.energy_note,
        "ranking_note": inputs.ranking_note,
        "training_note": inputs.training_note,
        "config_yaml": inputs.config_yaml,
        "provenance": [(str(k), _text(v)) for k, v in inputs.provenance.items()],
        "datasets": dataset_sections(rows, inputs.top_k),
        "energy_rows": energy_table(rows),
        "energy_sources": sorted({row["energy_source"] for row in rows if row["energy_source"]}),
        "training": training_table(inputs.training),
        "show_model": charts.needs_model_prefix(rows),
        # Trusted: generated by joulebench.charts / read from our own template folder.
        "stylesheet": Markup(stylesheet),
        "chart_energy": Markup(charts.energy_breakdown_svg(rows)),
        "chart_loss": Markup(charts.loss_curves_svg(inputs.training)),
        "chart_scatter": Markup(charts.energy_vs_quality_svg(rows)),
    }


# --- rendering --------------------------------------------------------------------------------


def _strip_controls(value: Any) -> Any:
    # Markup is trusted output (charts, CSS); re-wrapping a plain str would get it escaped.
    if isinstance(value, str) and not isinstance(value, Markup):
        return _CONTROL_CHARS.sub("", value)
    return value


def make_environment(template_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_strip_controls,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


def render_html(inputs: ReportInputs, template_dir: Path) -> str:
    template_dir = Path(template_dir)
    stylesheet = (template_dir / STYLESHEET_NAME).read_text(encoding="utf-8")
    template = make_environment(template_dir).get_template(TEMPLATE_NAME)
    return template.render(**build_context(inputs, stylesheet))


class NoFetchURLFetcher(URLFetcher):
    """A WeasyPrint URL fetcher that refuses every URL, data: included."""

    def __init__(self) -> None:
        # fail_on_errors: WeasyPrint otherwise logs a failed fetch and carries on.
        super().__init__(allowed_protocols=(), fail_on_errors=True)

    def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        raise ReportFetchError(
            f"the report tried to fetch {url[:200]!r}; all CSS, images and charts must be inline"
        )


def html_to_pdf(html: str) -> bytes:
    try:
        return HTML(string=html, url_fetcher=NoFetchURLFetcher()).write_pdf()
    except FatalURLFetchingError as exc:
        cause = exc.__cause__
        if isinstance(cause, ReportFetchError):
            raise ReportFetchError(str(cause)) from exc
        raise ReportFetchError(f"the report tried to fetch an external resource: {exc}") from exc


def write_report(inputs: ReportInputs, template_dir: Path, out_html: Path, out_pdf: Path) -> None:
    html = render_html(inputs, template_dir)
    atomic_write_text(out_html, html)
    atomic_write_bytes(out_pdf, html_to_pdf(html))
