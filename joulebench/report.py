"""Render results/summary.csv rows into an HTML and PDF report (Jinja2 + WeasyPrint, no network)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from weasyprint import HTML
from weasyprint.urls import FatalURLFetchingError, URLFetcher

from joulebench import charts
from joulebench.io import atomic_write_bytes, atomic_write_text
from joulebench.lifecycle import (
    DEFAULT_PRECISION,
    DEFAULT_SPARSE_TRAINING,
    MEASURED,
    STAGE_NAMES,
    Lifecycle,
    LifecycleSettings,
    StageCarbon,
    find_optimised,
    optimised_vs_baseline,
)
from joulebench.sparse_kernels import DENSE_LABEL
from joulebench.summary import COLUMNS, to_float

TEMPLATE_NAME = "report.html.j2"
STYLESHEET_NAME = "style.css"
MAX_ERROR_CHARS = 800

RUN_DATE_KEYS = ("run_date", "run date", "date", "run_started")
# Metrics with a paired-bootstrap difference against the base model, in table order, with their headings
# (U+2011, a non-breaking hyphen, keeps "ROUGE-1" on one line in narrow columns).
QUALITY_METRICS = {
    "bleu": "BLEU", "rouge1": "ROUGE\u20111", "rouge2": "ROUGE\u20112", "rougeL": "ROUGE\u2011L", "meteor": "METEOR",
    "bertscore_f1": "BERTScore F1", "cosine": "cosine", "rho": "ρ",
}  # fmt: skip
# run_info keys in display order, with their labels; other keys follow under their own names.
RUN_INFO_LABELS = {
    "started": "first measured job started", "finished": "report finished", "duration_s": "duration",
    "job_seconds": "measured jobs' time, summed",
    "container_image": "container image", "container_digest": "container digest",
    "meters": "energy meters (component: source)", "tracking_mode": "CodeCarbon tracking mode",
    "grid_intensity_g_per_kwh": "grid carbon intensity (g CO₂e/kWh)", "pue": "PUE", "region": "region",
}  # fmt: skip
# Shown beside the configuration itself, not in the run table.
RUN_INFO_ELSEWHERE = {"config_sha256"}
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
    # config_sha256, started, finished, duration_s, container_image, container_digest, meters ({component: source}),
    # grid_intensity_g_per_kwh, pue, region, tracking_mode; all optional, other keys are shown as given.
    run_info: dict[str, Any] = field(default_factory=dict)
    # Each: dataset, cell, id, target, prediction, base_prediction (model optional).
    examples: list[dict[str, Any]] = field(default_factory=list)
    # The config's `lifecycle` block (query volume, emission factors, baseline); empty: the defaults.
    lifecycle: dict[str, Any] = field(default_factory=dict)


# --- number formatting ------------------------------------------------------------------------


def format_sig(value: Any, digits: int = 3, tiny: float = 1e-3) -> str:
    """`digits` significant figures; scientific below `tiny` (1.23e-05); blanks stay blank."""
    number = to_float(value)
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
    number = to_float(value)
    if number is None:
        return _text(value)
    return f"{number:.{decimals}f}"


def format_metric(value: Any) -> str:
    return format_fixed(value, 3)


def format_int(value: Any) -> str:
    number = to_float(value)
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
    rank = to_float(row.get("rank"))
    return rank is not None and not charts.is_reference(row) and rank <= top_k


def _decorate(row: Mapping[str, str], with_model: bool, top_k: int) -> dict[str, Any]:
    return {
        **row,
        "label": charts.cell_label(row, with_model),
        "reference": charts.is_reference(row),
        "top": is_top(row, top_k),
        "error_short": truncate_error(row.get("error", "")),
    }


def finetune_ranking(rows: Sequence[Mapping[str, str]], prune_all: bool, with_model: bool) -> list[dict[str, Any]]:
    """One dataset's unpruned fine-tuned cells by `finetune_rank`, with the R that chose the top k (normalised over
    these cells only: `finetune_score`)."""
    unpruned = [
        row for row in rows
        if charts.is_ok(row) and not charts.is_reference(row) and not charts.is_pruned(row)
    ]  # fmt: skip
    view = [
        {
            **_decorate(row, with_model, 0),
            "ft_score": row.get("finetune_score", ""),
            "ft_phi": row.get("phi", ""),
            "ft_rho": row.get("rho", ""),
            "ft_p_first": format_share(row.get("finetune_p_first")),
            "pruned": prune_all or str(row.get("top_k", "")).strip() in {"1", "True", "true"},
        }
        for row in unpruned
    ]
    return sorted(view, key=lambda r: (to_float(r.get("finetune_rank")) or math.inf, r["label"]))


def format_share(value: Any) -> str:
    number = to_float(value)
    return "" if number is None else f"{100 * number:.0f} %"


def format_delta(value: Any) -> str:
    number = to_float(value)
    return "" if number is None else f"{number:+.3f}"


def quality_view(rows: Sequence[Mapping[str, str]], with_model: bool) -> list[dict[str, Any]]:
    """Per tuned cell: each metric's difference against the base with its interval and verdict, and p_first.

    A difference without both interval bounds is not shown (never an improvement without its interval).
    """
    view = []
    for row in rows:
        if charts.is_reference(row) or not charts.is_ok(row):
            continue
        cells = {}
        for metric in QUALITY_METRICS:
            if not charts.has_uncertainty(row, metric):
                cells[metric] = None
                continue
            delta, low, high = (to_float(row[f"delta_{metric}{s}"]) for s in ("", "_lo", "_hi"))
            verdict = charts.change_verdict(delta, low, high)  # type: ignore[arg-type]
            cells[metric] = {
                "delta": format_delta(delta), "interval": f"[{low:.3f}, {high:.3f}]", "verdict": verdict,
                "mark": charts.VERDICT_MARKS[verdict], "css": verdict.replace(" ", "-"),
            }  # fmt: skip
        view.append({
            "label": charts.cell_label(row, with_model), "rank": row.get("rank", ""), "metrics": cells,
            "p_first": format_share(row.get("p_first")),
        })  # fmt: skip
    return view


def dataset_sections(
    rows: Sequence[Mapping[str, str]], top_k: int, prune_all: bool = False
) -> list[dict[str, Any]]:
    """Per dataset: the fine-tune ranking, the final ranking (reference first, then by rank), the quality
    differences against the base model, and the cells that did not finish."""
    with_model = charts.needs_model_prefix(rows)
    sections = []
    for dataset in charts.datasets_in_order(rows):
        mine = [row for row in rows if row["dataset"] == dataset]
        ok = sorted((row for row in mine if charts.is_ok(row)), key=charts.rank_key)
        failed = sorted((row for row in mine if not charts.is_ok(row)), key=charts.cell_label)
        quality = quality_view(ok, with_model)
        sections.append({
            "name": dataset,
            "models": list(dict.fromkeys(row["model"] for row in mine)),
            "finetune": finetune_ranking(ok, prune_all, with_model),
            "ranked": [_decorate(row, with_model, top_k) for row in ok],
            "dense_pruned": any(row["sparse_kernel"] == DENSE_LABEL for row in ok),
            "sparse_pruned": any(row["speedup_vs_dense"] for row in ok),
            "quality": quality,
            "has_intervals": any(cell for q in quality for cell in q["metrics"].values()),
            "has_p_first": any(q["p_first"] for q in quality),
            "failed": [_decorate(row, with_model, top_k) for row in failed],
        })  # fmt: skip
    return sections


def format_change(value: float | None) -> str:
    return "" if value is None else f"{value:+.1f} %"


def _baseline_rule(settings: LifecycleSettings) -> str:
    """How the baseline was chosen, in words: what the reader needs to recognise it as the configured one."""
    unset = [key for key in ("bits", "epochs") if key not in settings.baseline]
    if not unset:
        return "as configured under lifecycle.baseline"
    return f"{' and '.join(unset)}: the largest evaluated; lifecycle.baseline sets them"


def _missing_comparison(rows: Sequence[Mapping[str, str]], settings: LifecycleSettings, dataset: str) -> str:
    if find_optimised(rows, dataset) is None:
        return "No cell of this dataset is ranked, so there is no optimised cell to compare."
    wanted = [f"training precision {settings.baseline.get('precision', DEFAULT_PRECISION)}",
              f"sparse training {settings.baseline.get('sparse_training', DEFAULT_SPARSE_TRAINING)}"]  # fmt: skip
    wanted += [f"{key} {settings.baseline[key]}" for key in ("model", "bits", "epochs") if key in settings.baseline]
    return (f"No evaluated, unpruned fine-tuned cell of this dataset matches the baseline ({', '.join(wanted)}), "
            "so there is nothing to compare against.")  # fmt: skip


def _cell_details(cell: Mapping[str, Any], label: str, show_model: bool) -> list[tuple[str, str]]:
    """(name, text) rows that tell the two cells apart: the axes of the grid, and how each ranked."""
    details = [("cell", label)] + ([("model", cell["model"])] if show_model else [])
    details += [
        ("bits", format_int(cell["bits"])), ("epochs", format_int(cell["epochs"])),
        ("training precision", cell["precision"]), ("sparse training", cell["sparse_training"]),
        ("pruning / exit", cell["pruning"]),
    ]  # fmt: skip
    if cell["early_exit"]:
        details.append(("early exit", cell["early_exit"]))
    if cell["mean_exit_layer"] is not None:
        details.append(("mean exit layer", format_sig(cell["mean_exit_layer"])))
    details += [("rank", format_int(cell["rank"])), ("R (score)", format_metric(cell["score"])),
                ("ρ", format_metric(cell["rho"]))]  # fmt: skip
    return details


def _change_css(change: float | None, improved: bool | None) -> str:
    """Coloured only where the change shown is not 0.0 %: a rounding-level difference is neither better nor worse."""
    if change is None or improved is None or round(change, 1) == 0:
        return ""
    return "verdict-better" if improved else "verdict-worse"


def _measure_text(key: str, value: float | None) -> str:
    if value is None:
        return ""
    return format_metric(value) if key in ("accuracy", "auc_roc") else format_sig(value)


def _stage_texts(stage: StageCarbon) -> dict[str, str]:
    """A stage of one cell as shown: a stage without energy says so (build, for a hub model) and adds nothing."""
    if stage.kwh is None:
        return {"kwh": "not recorded", "factor": "", "source": "", "kg": ""}
    return {
        "kwh": format_kwh(stage.kwh),
        "factor": "" if stage.g_per_kwh is None else format_sig(stage.g_per_kwh),
        "source": stage.factor_source,
        "kg": "" if stage.kg is None else format_sig(stage.kg),
    }


def lifecycle_view(rows: Sequence[Mapping[str, str]], settings: LifecycleSettings) -> list[dict[str, Any]]:
    """Per dataset: the paper's optimised-against-baseline table and both cells' lifecycle stages, formatted; or why
    there is no comparison."""
    show_model = charts.needs_model_prefix(rows)
    view = []
    for dataset in charts.datasets_in_order(rows):
        section: dict[str, Any] = {"name": dataset, "queries": f"{settings.queries:,}"}
        view.append(section)
        table = optimised_vs_baseline(rows, settings, dataset)
        if table is None:
            section["missing"] = _missing_comparison(rows, settings, dataset)
            continue
        section["missing"] = ""
        cells = {which: table[which] for which in ("baseline", "optimised")}
        labels = {which: charts.cell_label(table[f"{which}_row"], show_model) for which in cells}
        details = {which: dict(_cell_details(cell, labels[which], show_model)) for which, cell in cells.items()}
        names = list(dict.fromkeys(name for found in details.values() for name in found))
        cycles: dict[str, Lifecycle] = table["lifecycle"]
        stages = []
        for stage, stage_name in STAGE_NAMES.items():
            texts = {which: _stage_texts(cycle.stage(stage)) for which, cycle in cycles.items()}
            extra = f" at {settings.queries:,} queries" if stage == "inference" else ""
            stages.append({"name": stage_name + extra, **texts})
        estimated = sorted({component.upper() for cell in cells.values() for component in cell["estimated"]})
        section.update({
            "same_cell": table["same_cell"],
            "labels": labels,
            "cells": cells,
            "rule": _baseline_rule(settings),
            "details": [(name, *(details[which].get(name, "") for which in cells)) for name in names],
            "measures": [{
                "name": m["name"], "unit": m["unit"], "better": m["better"],
                "baseline": _measure_text(m["key"], m["baseline"]),
                "optimised": _measure_text(m["key"], m["optimised"]),
                "change": format_change(m["change_pct"]),
                "css": _change_css(m["change_pct"], m["improved"]),
            } for m in table["measures"]],
            "stages": stages,
            "totals": {which: {"kwh": format_kwh(cycle.kwh), "kg": format_sig(cycle.kg),
                               "share": "" if cycle.inference_share is None else f"{100 * cycle.inference_share:.1f} %"}
                       for which, cycle in cycles.items()},
            "build_missing": any(cycle.stage("build").kwh is None for cycle in cycles.values()),
            "measured_factor": any(stage.factor_source == MEASURED and stage.kwh is not None
                                   for cycle in cycles.values() for stage in cycle.stages),
            "estimated": " and ".join(estimated),
            "sources": {which: "; ".join(f"{c}={s}" for c, s in cell["sources"].items() if s)
                        for which, cell in cells.items()},
        })  # fmt: skip
    return view


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
    cells = [cell for cell in training if any(to_float(v) is not None for v in cell.get("losses") or [])]
    cells.sort(key=lambda c: (datasets.index(str(c.get("dataset", ""))), to_float(c.get("bits")) or 0.0,
                              to_float(c.get("epochs")) or 0.0))
    for cell in cells:
        losses = [x for x in (to_float(v) for v in cell.get("losses") or []) if x is not None]
        kwh = [x for x in (to_float(v) for v in cell.get("epoch_kwh") or []) if x is not None]
        table.append({
            "dataset": _text(cell.get("dataset")),
            "label": charts.cell_label({**cell, "is_reference": "0", "pruning": ""}, with_model),
            "loss_first": losses[0] if losses else "",
            "loss_last": losses[-1] if losses else "",
            "train_kwh": sum(kwh) if kwh else "",
            "wall_s": cell.get("wall_s", ""),
        })
    return table


def at_a_glance(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Per dataset, the tuned cells that win on R, on ρ and on energy (ties: the better rank)."""
    with_model = charts.needs_model_prefix(rows)
    fronts = charts.pareto_fronts(rows)
    summary = []
    for dataset in charts.datasets_in_order(rows):
        tuned = sorted(
            (r for r in rows if r["dataset"] == dataset and charts.is_ok(r) and not charts.is_reference(r)),
            key=charts.rank_key,
        )
        picks = []
        criteria = (("best R", "score", 1), ("highest ρ", "rho", 1), ("least energy", "total_kwh", -1))
        for criterion, key, sign in criteria:
            scored = [r for r in tuned if to_float(r.get(key)) is not None]
            if scored:
                best = max(scored, key=lambda r: sign * (to_float(r.get(key)) or 0.0))
                picks.append({**_decorate(best, with_model, 0), "criterion": criterion,
                              "p_first_share": format_share(best.get("p_first"))})  # fmt: skip
        evaluated = sum(1 for r in rows if r["dataset"] == dataset and charts.is_ok(r))
        summary.append({"name": dataset, "picks": picks, "front": len(fronts.get(dataset, [])),
                        "evaluated": evaluated})  # fmt: skip
    return summary


def pareto_table(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    with_model = charts.needs_model_prefix(rows)
    return [
        {**_decorate(row, with_model, 0), "dataset": dataset}
        for dataset, front in charts.pareto_fronts(rows).items()
        for row in front
    ]


def impact_flags(rows: Sequence[Mapping[str, str]]) -> dict[str, bool]:
    """Which kinds of verdict the pruning-impact figure shows, so its caption explains only those."""
    changes = [c for e in charts.pruning_impact(rows) for c in (e["vs_parent"], e["vs_base"]) if c is not None]
    return {
        "any": bool(changes),
        "interval": any(c.has_interval for c in changes),
        "sign_only": any(not c.has_interval and c.verdict != charts.NO_INTERVAL for c in changes),
        "no_interval": any(c.verdict == charts.NO_INTERVAL for c in changes),
    }


def format_duration(seconds: Any) -> str:
    number = to_float(seconds)
    if number is None:
        return _text(seconds)
    whole = int(round(number))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    parts += [f"{minutes} min"] if hours or minutes else []
    return " ".join([*parts, f"{secs} s"]) + f" ({number:g} s)"


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_describe(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return ", ".join(_describe(v) for v in value)
    return _text(value)


def run_info_items(run_info: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, text) per run_info entry that has a value (but the config hash); the container line is always
    there."""
    items = []
    present = {k: v for k, v in run_info.items() if _describe(v) != "" and k not in RUN_INFO_ELSEWHERE}
    for key in [*RUN_INFO_LABELS, *(k for k in present if k not in RUN_INFO_LABELS)]:
        if key == "container_image" and key not in present:
            items.append((RUN_INFO_LABELS[key], "not run in a container"))
        elif key in present:
            timed = key in ("duration_s", "job_seconds")
            value = format_duration(present[key]) if timed else _describe(present[key])
            items.append((RUN_INFO_LABELS.get(key, key.replace("_", " ")), value))
    return items


def examples_view(examples: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [
        {key: _text(example.get(key)) for key in ("dataset", "model", "cell", "id", "target", "prediction",
                                                   "base_prediction")}
        for example in examples
    ]


def run_date(provenance: Mapping[str, str], run_info: Mapping[str, Any] | None = None) -> str:
    for key in RUN_DATE_KEYS:
        if provenance.get(key):
            return str(provenance[key])
    return _text((run_info or {}).get("started"))


def energy_lead(energy_note: str) -> str:
    """The energy note's first sentence (estimates or counters), repeated under every figure."""
    head, dot, _ = energy_note.partition(". ")
    return head + dot.strip() if dot else energy_note


def build_context(inputs: ReportInputs, stylesheet: str) -> dict[str, Any]:
    rows = [normalise_row(row) for row in inputs.rows]
    config_hash = _text(inputs.run_info.get("config_sha256"))
    return {
        "title": inputs.title,
        "run_date": run_date(inputs.provenance, inputs.run_info),
        "w": inputs.w,
        "top_k": inputs.top_k,
        "prune_all": inputs.prune_all,
        "dense_kernel_label": DENSE_LABEL,
        "energy_note": inputs.energy_note,
        "energy_lead": energy_lead(inputs.energy_note),
        "ranking_note": inputs.ranking_note,
        "training_note": inputs.training_note,
        "config_yaml": inputs.config_yaml,
        "config_hash": config_hash,
        "config_text_hash": hashlib.sha256(inputs.config_yaml.encode("utf-8")).hexdigest(),
        "provenance": [(str(k), _text(v)) for k, v in inputs.provenance.items()],
        "run_info": run_info_items(inputs.run_info),
        "datasets": dataset_sections(rows, inputs.top_k, inputs.prune_all),
        "quality_names": QUALITY_METRICS,
        "energy_rows": energy_table(rows),
        "energy_sources": sorted({row["energy_source"] for row in rows if row["energy_source"]}),
        "training": training_table(inputs.training),
        "pareto": pareto_table(rows),
        "glance": (glance := at_a_glance(rows)),
        "glance_p_first": any(pick["p_first_share"] for ds in glance for pick in ds["picks"]),
        "impact": impact_flags(rows),
        "carbon_is_cell_total": charts.inference_carbon_key(rows) != charts.INFER_EMISSIONS_KEY,
        "not_ok": [_decorate(row, charts.needs_model_prefix(rows), 0) for row in rows if not charts.is_ok(row)],
        "examples": examples_view(inputs.examples),
        "lifecycle": lifecycle_view(rows, LifecycleSettings.from_config(inputs.lifecycle)),
        "show_model": charts.needs_model_prefix(rows),
        # Trusted: generated by joulebench.charts / read from our own template folder.
        "stylesheet": Markup(stylesheet),
        "chart_energy": Markup(charts.energy_breakdown_svg(rows)),
        "chart_loss_energy": Markup(charts.loss_energy_svg(inputs.training)),
        "chart_inference": Markup(charts.inference_svg(rows)),
        "chart_pruning": Markup(charts.pruning_impact_svg(rows)),
        "chart_pareto": Markup(charts.pareto_svg(rows)),
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
