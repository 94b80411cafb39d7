"""Render results/summary.csv rows into an HTML and PDF report (Jinja2 + WeasyPrint, no network)."""

from __future__ import annotations

import collections
import contextlib
import datetime
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
from joulebench.comparisons import REFERENCE, floor_key
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
from joulebench.noise import HIGHER, LOWER, WITHIN_NOISE
from joulebench.rank import COST_COLUMN, DEPLOYMENT, PAPER_LITERAL, RankingSettings, ranking_note, rho_definition
from joulebench.sparse_kernels import DENSE_LABEL
from joulebench.summary import COLUMNS, cell_key, to_float

TEMPLATE_NAME = "report.html.j2"
STYLESHEET_NAME = "style.css"
MAX_ERROR_CHARS = 800

RUN_DATE_KEYS = ("run_date", "run date", "date", "run_started")
# Metrics with a paired-bootstrap difference against the base model, in table order, with their headings
# (U+2011, a non-breaking hyphen, keeps "ROUGE-1" on one line in narrow columns).
QUALITY_METRICS = {
    "bleu": "BLEU ×100", "rouge1": "ROUGE\u20111", "rouge2": "ROUGE\u20112", "rougeL": "ROUGE\u2011L",
    "meteor": "METEOR", "bertscore_f1": "BERTScore F1", "cosine": "cosine", "rho": "ρ",
}  # fmt: skip
# Stored in [0, 1] (sacrebleu's score / 100), printed on sacrebleu's own 0–100 scale.
PERCENT_SCALED = {"bleu"}
# Row keys the template reads beyond COLUMNS (summary.json only, or added by later versions): blank when absent.
EXTRA_ROW_KEYS = (
    "energy_reason", "speed_reason", "energy_ratio_base_lo", "energy_ratio_base_hi", "speed_ratio_base_lo",
    "speed_ratio_base_hi", "variant", "started_utc", "backend", "format", "format_detail",
)  # fmt: skip
# The way each figure is better: less energy, more tokens/s.
GOOD_WAY = {"energy": LOWER, "speed": HIGHER}
VERDICT_MARK = {LOWER: "↓", HIGHER: "↑", WITHIN_NOISE: "≈", REFERENCE: ""}  # arrows: not quality's ▲ ▼
COST_UNIT = {DEPLOYMENT: "Wh per query", PAPER_LITERAL: "kWh"}
VERDICT_RULE = (
    "An energy or speed ratio is called lower or higher only when its whole 95 % interval lies beyond the run's "
    "noise floor (below 1 / (1 + floor), or above 1 + floor); otherwise it reads within noise, and a ratio without "
    "an interval or without a floor is never called a difference."
)
NOT_TESTED = "one measurement each: not tested"
SENSITIVITY_WHY_ABSENT = "this summary has no sensitivity tables (it predates them)"
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
    # summary.json's sections as aggregate wrote them; None: the summary predates the section (the report says so).
    # ranking: per dataset, the terms of R (w, queries, energy, rho, cost_column, base_cost, max_phi, max_rho, ranked).
    ranking: dict[str, Any] | None = None
    # sensitivity: per dataset, the rank-1 cell at each Q ("queries") and each w ("w"), and depends_on_queries.
    sensitivity: dict[str, Any] | None = None
    # noise_floor: per "dataset/model", the base model measured several times over the run.
    noise_floor: dict[str, Any] | None = None
    # finalists: per dataset, the cells re-measured side by side, their paired figures, optimised_vs_baseline.
    finalists: list[dict[str, Any]] | None = None
    # metrics: {"signatures": {metric: signature}, "floor_method": ...}.
    metrics: dict[str, Any] | None = None


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
    text = f"{number:.{decimals}f}"
    # A value that rounds to zero is shown as 0, not "-0.000" (a rescaled score of -1e-19 is no loss).
    return text.lstrip("-") if float(text) == 0 else text


def format_metric(value: Any) -> str:
    return format_fixed(value, 3)


def format_int(value: Any) -> str:
    number = to_float(value)
    if number is None:
        return _text(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


def blank(value: Any) -> str:
    return _text(value)


def format_x100(value: Any, decimals: int = 2) -> str:
    """A score stored in [0, 1] on the 0–100 scale it is usually quoted on (BLEU)."""
    number = to_float(value)
    return _text(value) if number is None else f"{100 * number:.{decimals}f}"


def format_ratio(estimate: Any, low: Any = None, high: Any = None) -> str:
    """×0.947 [0.885, 1.014]; blank without an estimate; the missing interval said in words."""
    number = to_float(estimate)
    if number is None:
        return ""
    lo, hi = to_float(low), to_float(high)
    if lo is None or hi is None:
        return f"×{number:.3f} (no interval)"
    return f"×{number:.3f} [{lo:.3f}, {hi:.3f}]"


def format_percent(value: Any, decimals: int = 1) -> str:
    number = to_float(value)
    return "" if number is None else f"{100 * number:.{decimals}f} %"


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
    "x100": format_x100,
    "percent": format_percent,
}


# --- view model -------------------------------------------------------------------------------


def normalise_row(row: Mapping[str, Any]) -> dict[str, str]:
    """Every known column present, None as '', and the extra fields the template needs."""
    clean = {key: _text(row.get(key)) for key in (*COLUMNS, *EXTRA_ROW_KEYS)}
    clean.update({key: _text(value) for key, value in row.items() if key not in clean})
    return clean


def truncate_error(error: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Keep the tail: the last lines of a traceback say what went wrong."""
    error = error.strip()
    return error if len(error) <= limit else "…" + error[-limit:]


def is_top(row: Mapping[str, str], top_k: int) -> bool:
    rank = to_float(row.get("rank"))
    return rank is not None and not charts.is_reference(row) and rank <= top_k


def verdict_css(figure: str, verdict: str) -> str:
    """Green where the verdict goes the figure's better way, red the other way; grey within noise; none else."""
    if verdict in (LOWER, HIGHER):
        return "verdict-better" if verdict == GOOD_WAY[figure] else "verdict-worse"
    if verdict == WITHIN_NOISE:
        return "verdict-within-noise"
    return ""


def comparison(figure: str, verdict: Any, ratio: str = "", reason: Any = "") -> dict[str, str]:
    """One energy or speed comparison as shown: its verdict, ratio text, the verdict's reason, css and mark."""
    verdict = _text(verdict)
    ratio = ratio if verdict != REFERENCE else ""
    estimate, _, interval = ratio.partition(" ")
    return {"verdict": verdict, "ratio": ratio, "estimate": estimate, "interval": interval, "reason": _text(reason),
            "css": verdict_css(figure, verdict), "mark": VERDICT_MARK.get(verdict, "")}  # fmt: skip


def row_comparison(row: Mapping[str, str], figure: str, prefix: str = "", suffix: str = "") -> dict[str, str]:
    """A summary row's `<prefix><figure>_ratio<suffix>` (with `_lo`, `_hi`) and `<prefix><figure>_verdict<suffix>`."""
    ratio = f"{prefix}{figure}_ratio{suffix}"
    reason = row.get(f"{figure}_reason", "") if not prefix and not suffix else ""
    return comparison(figure, row.get(f"{prefix}{figure}_verdict{suffix}", ""),
                      format_ratio(row.get(ratio), row.get(f"{ratio}_lo"), row.get(f"{ratio}_hi")), reason)  # fmt: skip


def _figure_comparison(figure: str, figures: Mapping[str, Any]) -> dict[str, str]:
    """A comparison from a finalists entry (`energy`/`speed` ratio dicts with their `_verdict`)."""
    ratio = figures.get(figure) or {}
    judged = figures.get(f"{figure}_verdict") or {}
    return comparison(figure, judged.get("verdict", ""), format_ratio(ratio.get("estimate"), ratio.get("low"),
                      ratio.get("high")), judged.get("reason", ""))  # fmt: skip


def answer_notes(row: Mapping[str, str]) -> list[str]:
    """What the report says about one cell's answers and quality figures: every answer empty, one constant answer,
    the metrics without a value or over fewer items than the test set (`quality_note`), no ρ (`rho_note`)."""
    notes = []
    count, distinct, empty = (to_float(row.get(f"answers_{key}")) for key in ("count", "distinct", "empty"))
    if count and empty == count:
        notes.append(f"every one of its {count:.0f} answers is empty")
    elif count and count > 1 and distinct == 1:
        notes.append(f"all {count:.0f} answers are one and the same text (a constant answer, whatever the prompt): "
                     "its quality figures score that one text against every reference")  # fmt: skip
    notes += [row[key] for key in ("rho_note", "quality_note") if row.get(key)]
    return notes


def same_answers_warning(rows: Sequence[Mapping[str, str]]) -> str:
    """A warning when every tuned cell of one dataset's rows (two or more, each with an answers fingerprint) gave
    the same answer list, item for item: the ranking's quality term then tells them apart by nothing."""
    tuned = [row for row in rows if charts.is_ok(row) and not charts.is_base_model(row)]
    fingerprints = {row.get("answers_sha256", "") for row in tuned}
    if len(tuned) < 2 or "" in fingerprints or len(fingerprints) != 1:
        return ""
    base = [row for row in rows if charts.is_ok(row) and charts.is_reference(row)]
    also = " So did the base model." if base and all(row.get("answers_sha256") in fingerprints for row in base) else ""
    return (f"All {len(tuned)} ranked cells of this dataset gave the same answers, item for item (one answer list): "
            "the quality ranking carries no information. Their quality figures and ρ score that one list, so R "
            "orders them by energy alone, and any difference in ρ between them comes from nothing in the answers."
            + also)  # fmt: skip


def _decorate(row: Mapping[str, str], with_model: bool, top_k: int) -> dict[str, Any]:
    return {
        **row,
        "notes": answer_notes(row),
        "label": charts.cell_label(row, with_model),
        "reference": charts.is_reference(row),
        "base_model": charts.is_base_model(row),
        "served_as": charts.served_as(row),
        "top": is_top(row, top_k),
        "error_short": truncate_error(row.get("error", "")),
        "energy_cmp": row_comparison(row, "energy"),
        "speed_cmp": row_comparison(row, "speed"),
        "paired_energy": row_comparison(row, "energy", "paired_"),
        "paired_speed": row_comparison(row, "speed", "paired_"),
    }


def finetune_ranking(rows: Sequence[Mapping[str, str]], prune_all: bool, with_model: bool) -> list[dict[str, Any]]:
    """One dataset's unpruned fine-tuned cells by `finetune_rank`, with the R that chose the top k (normalised over
    these cells only: `finetune_score`). The top k is chosen on the reference backend: another backend's cell is
    listed only where it has a fine-tune rank."""
    unpruned = [
        row for row in rows
        if charts.is_ok(row) and not charts.is_base_model(row) and not charts.is_pruned(row)
        and (charts.backend_of(row) == charts.REFERENCE_BACKEND or to_float(row.get("finetune_rank")) is not None)
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


def delta_view(row: Mapping[str, Any], metric: str, scale: float = 1, digits: int = 3) -> dict[str, str] | None:
    """A row's `delta_<metric>` with its interval (`_lo`, `_hi`) and the verdict the interval supports, as shown;
    None without both bounds (never an improvement without its interval)."""
    if not charts.has_uncertainty(row, metric):
        return None
    delta, low, high = (to_float(row[f"delta_{metric}{s}"]) or 0.0 for s in ("", "_lo", "_hi"))
    verdict = charts.change_verdict(delta, low, high)
    return {
        "delta": f"{scale * delta:+.{digits}f}", "interval": f"[{scale * low:.{digits}f}, {scale * high:.{digits}f}]",
        "verdict": verdict, "mark": charts.VERDICT_MARKS[verdict], "css": verdict.replace(" ", "-"),
    }  # fmt: skip


def quality_view(rows: Sequence[Mapping[str, str]], with_model: bool) -> list[dict[str, Any]]:
    """Per tuned cell: each metric's difference against the base with its interval and verdict, and p_first.

    A difference without both interval bounds is not shown (never an improvement without its interval).
    """
    view = []
    for row in rows:
        if charts.is_reference(row) or not charts.is_ok(row):
            continue
        cells = {metric: delta_view(row, metric, *((100, 2) if metric in PERCENT_SCALED else (1, 3)))
                 for metric in QUALITY_METRICS}  # fmt: skip
        view.append({
            "label": charts.cell_label(row, with_model), "rank": row.get("rank", ""), "metrics": cells,
            "p_first": format_share(row.get("p_first")),
        })  # fmt: skip
    return view


def dataset_sections(
    rows: Sequence[Mapping[str, str]], top_k: int, prune_all: bool = False,
    ranking: Mapping[str, Any] | None = None, sensitivity: Mapping[str, Any] | None = None,
    fallback_note: str = "", w: float | None = None,
) -> list[dict[str, Any]]:
    """Per dataset: the fine-tune ranking, the final ranking (reference first, then by rank), the terms of R and the
    winner's sensitivity to Q and w, the quality differences against the base model, and the cells that did not
    finish."""
    with_model = charts.needs_model_prefix(rows)
    labels = label_map(rows)
    sections = []
    for dataset in charts.datasets_in_order(rows):
        mine = [row for row in rows if row["dataset"] == dataset]
        ok = sorted((row for row in mine if charts.is_ok(row)), key=charts.rank_key)
        failed = sorted((row for row in mine if not charts.is_ok(row)), key=charts.cell_label)
        quality = quality_view(ok, with_model)
        terms = None if ranking is None else ranking.get(dataset)
        ranked = [_decorate(row, with_model, top_k) for row in ok]
        cell_notes = [{"label": row["label"], "notes": row["notes"]} for row in ranked if row["notes"]]
        note_index = {entry["label"]: index for index, entry in enumerate(cell_notes, 1)}
        finetune = finetune_ranking(ok, prune_all, with_model)
        for row in (*ranked, *finetune):
            row["note_index"] = note_index.get(row["label"], "")
        sections.append({
            "name": dataset,
            "models": list(dict.fromkeys(row["model"] for row in mine)),
            "finetune": finetune,
            "ranked": ranked,
            "cell_notes": cell_notes,
            "same_answers": same_answers_warning(ok),
            "dense_pruned": any(row["sparse_kernel"] == DENSE_LABEL for row in ok),
            "sparse_pruned": any(row["speedup_vs_dense"] for row in ok),
            "quality": quality,
            "has_intervals": any(cell for q in quality for cell in q["metrics"].values()),
            "has_p_first": any(q["p_first"] for q in quality),
            "failed": [_decorate(row, with_model, top_k) for row in failed],
            "terms": terms_view(terms, ranking is not None, fallback_note, w),
            "finetune_terms": terms_view(terms, ranking is not None, fallback_note, w, finetune=True),
            "sensitivity": sensitivity_view(None if sensitivity is None else sensitivity.get(dataset),
                                            sensitivity is not None, terms, labels),  # fmt: skip
        })  # fmt: skip
    return sections


# --- the terms of R and how the winner moves with Q and w -------------------------------------------------------


def _settings(terms: Mapping[str, Any] | None) -> RankingSettings | None:
    if not terms:
        return None
    try:
        return RankingSettings(w=float(terms["w"]), queries=int(terms["queries"]), energy=str(terms["energy"]),
                               rho=str(terms["rho"]))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None


def format_queries(value: Any) -> str:
    """10⁶ (1,000,000) for a power of ten, else 12,345."""
    number = to_float(value)
    if number is None:
        return _text(value)
    whole = int(number)
    exponent = round(math.log10(whole)) if whole > 0 else 0
    if whole > 1 and 10**exponent == whole:
        digits = str(exponent).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
        return f"10{digits} ({whole:,})"
    return f"{whole:,}"


def terms_view(terms: Mapping[str, Any] | None, recorded: bool, fallback_note: str, w: float | None,
               finetune: bool = False) -> dict[str, Any]:  # fmt: skip
    """Every term of R for one dataset as (name, value) pairs, and the sentence of what the ranking computes,
    rendered from the terms the summary recorded; without them, the configuration's note and why. `finetune`: the
    fine-tune ranking's own maxima (over the unpruned cells)."""
    settings = _settings(terms)
    if terms is None or settings is None:
        why = ("this summary does not record the terms of R (it predates them); the note below is the configuration's"
               if not recorded else "no cell of this dataset was ranked, so R has no terms here")  # fmt: skip
        return {"items": [], "note": fallback_note, "why": why, "w": "" if w is None else f"{w:g}"}
    unit = COST_UNIT.get(settings.energy, "")
    costs = terms.get("base_cost") or {}
    base = "; ".join(f"{model}: {format_sig(cost) or 'not measured'} {unit}" for model, cost in costs.items())
    queries = f"{settings.queries:,} queries (ranking.queries; lifecycle.queries unless set)"
    if settings.energy != DEPLOYMENT:
        queries = f"{settings.queries:,} (not used: ranking.energy {settings.energy})"
    column = _text(terms.get("cost_column")) or COST_COLUMN[settings.energy]
    prefix = "finetune_" if finetune else ""
    items = [
        ("w", f"{settings.w:g}"),
        ("Q", queries),
        ("energy (ranking.energy)", f"{settings.energy}: C = {column}, {unit}"),
        ("ρ (ranking.rho)", settings.rho),
        ("C_base, the base model's cost", base or "none measured"),
        ("max φ", format_sig(terms.get(f"{prefix}max_phi"), 4)),
        ("max ρ", format_sig(terms.get(f"{prefix}max_rho"), 4)),
        ("cells ranked", format_int(terms.get(f"{prefix}ranked"))),
    ]  # fmt: skip
    items = [(name, value) for name, value in items if value != "" or not finetune]  # older summaries: no maxima
    return {"items": items, "note": ranking_note(settings), "why": "", "w": f"{settings.w:g}",
            "rho_definition": rho_definition(settings.rho)}  # fmt: skip


def _winner_entry(entry: Mapping[str, Any], key: str, held: Any, labels: Mapping[str, str]) -> dict[str, Any]:
    tied = int(to_float(entry.get("tied")) or 0)
    return {
        "value": _q_or_w(entry.get(key), key == "queries"),
        "held": _q_or_w(held, key == "w"),
        "cell": _named(labels, entry.get("cell")) or "no ranked cell",
        "phi": format_sig(entry.get("phi"), 4), "rho": format_sig(entry.get("rho"), 4),
        "score": format_metric(entry.get("score")),
        "tied": f"tied with {tied} other{'s' if tied > 1 else ''}" if tied else "",
        "current": False,
    }  # fmt: skip


def _q_or_w(value: Any, is_queries: bool) -> str:
    number = to_float(value)
    if is_queries or number is None:
        return format_queries(value)
    return f"{number:g}"


def sensitivity_view(table: Mapping[str, Any] | None, recorded: bool, terms: Mapping[str, Any] | None,
                     labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The rank-1 cell at Q = 10³, 10⁶, 10⁹ (w held) and at w = 0.3 … 0.9 (Q held), each row marked where it is the
    run's own setting, and whether the winner changes."""
    if table is None:
        why = SENSITIVITY_WHY_ABSENT if not recorded else "no sensitivity table for this dataset (no ranked cell)"
        return {"present": False, "why": why}
    settings = _settings(terms)
    labels = labels or {}
    by_q = [_winner_entry(e, "queries", e.get("w"), labels) for e in table.get("queries", [])]
    by_w = [_winner_entry(e, "w", e.get("queries"), labels) for e in table.get("w", [])]
    for view, entries, key in ((by_q, table.get("queries", []), "queries"), (by_w, table.get("w", []), "w")):
        current = None if settings is None else getattr(settings, key)
        for shown, entry in zip(view, entries, strict=True):
            shown["current"] = current is not None and to_float(entry.get(key)) == float(current)
    depends = bool(table.get("depends_on_queries", True))
    return {
        "present": True, "why": "", "queries": by_q, "w": by_w, "depends_on_queries": depends,
        "q_moves": moves_sentence(by_q, "Q", "queries", depends),
        "w_moves": moves_sentence(by_w, "w", "", True),
    }  # fmt: skip


def moves_sentence(entries: Sequence[Mapping[str, Any]], name: str, unit: str, depends: bool) -> str:
    values = ", ".join(e["value"].split(" (")[0] for e in entries)
    if not entries:
        return f"No winner was recorded for any {name}."
    if not depends:
        return (f"Q does not enter this ranking (ranking.energy: {PAPER_LITERAL}): the winner is the same at every Q, "
                f"{entries[0]['cell']}.")  # fmt: skip
    cells = {e["cell"] for e in entries}
    if len(cells) == 1:
        return f"The winner is the same at {name} = {values}{' ' + unit if unit else ''}: {entries[0]['cell']}."
    return f"The winner changes with {name}: " + "; ".join(f"{e['value'].split(' (')[0]}: {e['cell']}"
                                                           for e in entries) + "."  # fmt: skip


def signatures_view(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The metrics' signatures (how each was computed), and the column heads they give BERTScore and cosine."""
    signatures = dict((metrics or {}).get("signatures") or {})
    fields = {name: _signature_fields(text) for name, text in signatures.items()}
    bert, cosine = fields.get("bertscore", {}), fields.get("cosine", {})
    return {
        "items": [(name, _text(text)) for name, text in signatures.items()],
        "floor_method": _text((metrics or {}).get("floor_method")),
        "why": "" if signatures else "this summary records no metric signatures (it predates them)",
        "bertscore": ", ".join(p for p in (bert.get("model", ""), f"layer {bert['layer']}" if "layer" in bert else "")
                               if p),
        "cosine": cosine.get("model", ""),
    }  # fmt: skip


def _signature_fields(signature: Any) -> dict[str, str]:
    head = _text(signature).split(";", 1)[0]
    return dict(part.split(":", 1) for part in head.split("|")[1:] if ":" in part)


def metric_heads(rows: Sequence[Mapping[str, str]], signatures: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Column heads of the quality metrics: BLEU ×100; BERTScore F1 and cosine say they are rescaled against their
    random-pair floor, with the backbone (and layer) that scored them; a summary from before the rescaling (no raw
    columns, no signatures) keeps the plain heads."""
    rescaled = any(row.get("bertscore_f1_raw") or row.get("cosine_raw") for row in rows) or bool(signatures["items"])
    heads = {key: {"name": name, "sub": ""} for key, name in QUALITY_METRICS.items()}
    if rescaled:
        heads["bertscore_f1"] = {"name": "BERTScore F1 rescaled", "sub": signatures["bertscore"]}
        heads["cosine"] = {"name": "cosine rescaled", "sub": signatures["cosine"]}
    return heads


# --- the first page: noise floor, recommendation, finalists -----------------------------------------------------


def _utc(value: Any) -> tuple[str, datetime.datetime | None]:
    text = _text(value)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text, None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC"), moment


def _short_duration(seconds: float) -> str:
    return format_duration(seconds).split(" (")[0]


def _floor_figure(figure: Mapping[str, Any] | None, digits: int = 3) -> dict[str, str]:
    """A floor as shown, with the band of ratios that read within noise: [1 / (1 + floor), 1 + floor]."""
    figure = figure or {}
    floor = to_float(figure.get("floor"))
    band = "" if floor is None or floor < 0 else f"×{1 / (1 + floor):.3f} … ×{1 + floor:.3f}"
    return {"pct": format_percent(floor), "low": format_sig(figure.get("low"), digits),
            "high": format_sig(figure.get("high"), digits), "cv": format_percent(figure.get("cv")),
            "n": format_int(figure.get("measurements")), "band": band}  # fmt: skip


def noise_floor_view(floors: Mapping[str, Any] | None, rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Per dataset and model: how often the base model was measured over the run, when, and how far its energy per
    token and tokens/s moved; or why there is no floor."""
    if floors is None:
        return {"entries": [], "why": "This summary has no noise floor (it predates the base model's re-measurements "
                "over the run), so no energy or speed difference is judged against one."}  # fmt: skip
    pairs = list(dict.fromkeys((row["dataset"], row["model"]) for row in rows if charts.is_reference(row)))
    keys = [(floor_key(d, m), d, m) for d, m in pairs if floor_key(d, m) in floors]
    keys += [(k, *k.split("/", 1)) for k in floors if k not in {key for key, _, _ in keys} and "/" in k]
    entries = []
    for key, dataset, model in keys:
        floor = floors[key] or {}
        measurements = []
        for m in floor.get("measurements") or []:
            text, moment = _utc(m.get("started_utc"))
            measurements.append({"source": _text(m.get("source")), "started": text, "moment": moment,
                                 "j_per_token": format_sig(m.get("j_per_token")),
                                 "tokens_per_s": format_fixed(m.get("tokens_per_s"), 1)})  # fmt: skip
        moments = [m["moment"] for m in measurements if m["moment"] is not None]
        span = _short_duration((max(moments) - min(moments)).total_seconds()) if len(moments) > 1 else ""
        energy, speed = floor.get("energy_per_token") or {}, floor.get("tokens_per_s") or {}
        count = len(measurements) or int(to_float(energy.get("measurements")) or 0)
        entries.append({
            "dataset": dataset, "model": model, "reference": _text(floor.get("reference")), "count": count,
            "probes": sum(m["source"] != "evaluation" for m in measurements),
            "first": measurements[0]["started"] if measurements else "",
            "last": measurements[-1]["started"] if measurements else "", "span": span,
            "energy": _floor_figure(energy), "speed": _floor_figure(speed, 4),
            "measurements": [{k: v for k, v in m.items() if k != "moment"} for m in measurements],
            "method": _text(floor.get("method")),
            "by_bits": [{"bits": bits, "energy": _floor_figure(figures.get("energy_per_token")),
                         "speed": _floor_figure(figures.get("tokens_per_s"), 4)}
                        for bits, figures in sorted((floor.get("by_bits") or {}).items(), key=lambda b: int(b[0]))],
        })  # fmt: skip
    missing = [f"{d} / {m}" for d, m in pairs if floor_key(d, m) not in floors]
    why = (f"No noise floor for {', '.join(missing)}: its base model was not measured more than once, so no energy "
           "or speed difference there is called lower or higher." if missing else "")  # fmt: skip
    return {"entries": entries, "why": why}


def label_map(rows: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The labels summary.json's finalists and sensitivity sections use (joulebench.jobs.finalist_label: model, bits,
    epochs, variant) -> the report's own cell labels, so that one cell has one name throughout. A label not found
    is shown as given. Where several backends served the cell, the label names the reference backend's row (the
    finalists and the sensitivity tables are of ranked cells, measured on it)."""
    from joulebench.jobs import finalist_label

    with_model = charts.needs_model_prefix(rows)
    names: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: charts.backend_of(r) != charts.REFERENCE_BACKEND):
        if charts.is_ok(row):
            with contextlib.suppress(KeyError, TypeError):
                names.setdefault(finalist_label(dict(row)), charts.cell_label(row, with_model))
    return names


def _named(labels: Mapping[str, str], label: Any) -> str:
    text = _text(label)
    return labels.get(text, text)


def _row_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """The cell key of a summary row (joulebench.summary.cell_key), as text, so that typed and string rows match (a
    column an older summary lacks: blank)."""
    return tuple(_text(part) for part in cell_key(collections.defaultdict(str, row)))


def _finalist_key(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """A finalist's `cell_key` as text, in `_row_key`'s form; a key from before inference backends (six parts, no
    backend) is the reference backend's cell."""
    key = tuple(_text(part) for part in entry.get("cell_key") or [])
    return (*key[:5], charts.REFERENCE_BACKEND, key[5]) if len(key) == 6 else key


def _finalists_by_dataset(finalists: Sequence[Mapping[str, Any]] | None) -> dict[str, Mapping[str, Any]]:
    return {_text(section.get("dataset")): section for section in finalists or []}


def _finalists_missing(section: Mapping[str, Any] | None, recorded: bool) -> str:
    """Why a dataset has no paired figures, or '' when its finalists were measured."""
    if not recorded:
        return "this summary has no finalists section (it predates the side-by-side re-measurement)"
    if section is None:
        return "no finalists were re-measured for this dataset"
    if _text(section.get("status")) != "ok":
        error = truncate_error(_text(section.get("error")), 300)
        return f"the finalists job {_text(section.get('status')) or 'did not finish'}" + (f": {error}" if error else "")
    return ""


def finalists_view(finalists: Sequence[Mapping[str, Any]] | None, rows: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Per dataset: every finalist with its roles and its paired figures against its base model, and the
    optimised cell's paired figures against the baseline; or why there are none."""
    by_dataset = _finalists_by_dataset(finalists)
    labels = label_map(rows)
    by_key = {_row_key(row): charts.cell_label(row, charts.needs_model_prefix(rows)) for row in rows}
    names = list(dict.fromkeys([*charts.datasets_in_order(rows), *by_dataset]))
    view = []
    for dataset in names:
        section = by_dataset.get(dataset)
        missing = _finalists_missing(section, finalists is not None)
        entry: dict[str, Any] = {"name": dataset, "missing": missing, "entries": [], "ovb": None}
        view.append(entry)
        if missing or section is None:
            continue
        entry["rounds"] = format_int(section.get("rounds"))
        entry["order"] = [_named(labels, label) for label in section.get("order") or []]
        for finalist in section.get("finalists") or []:
            roles = [_text(role) for role in finalist.get("roles") or []]
            figures = finalist.get("vs_base")
            if "base" in roles:
                energy, speed = comparison("energy", REFERENCE), comparison("speed", REFERENCE)
            elif figures:
                energy, speed = _figure_comparison("energy", figures), _figure_comparison("speed", figures)
            else:
                energy = speed = comparison("energy", "", "", "no base model measured beside it")
            label = by_key.get(_finalist_key(finalist)) or _named(labels, finalist.get("label"))
            entry["entries"].append({"label": label, "roles": ", ".join(roles),
                                     "reference": "base" in roles, "energy": energy, "speed": speed})  # fmt: skip
        ovb = section.get("optimised_vs_baseline")
        if ovb:
            entry["ovb"] = {"cell": _named(labels, ovb.get("cell")), "against": _named(labels, ovb.get("against")),
                            "rounds": format_int(ovb.get("rounds")), "energy": _figure_comparison("energy", ovb),
                            "speed": _figure_comparison("speed", ovb)}  # fmt: skip
    return {"datasets": view, "any": any(d["entries"] for d in view)}


ENERGY_MEANING = {
    LOWER: "uses less energy per query than the base model, beyond the noise floor",
    HIGHER: "uses more energy per query than the base model, beyond the noise floor",
    WITHIN_NOISE: "its energy per query cannot be told from the base model's in this run",
}
SPEED_MEANING = {
    HIGHER: "it is faster (more tokens/s) than the base model, beyond the noise floor",
    LOWER: "it is slower (fewer tokens/s) than the base model, beyond the noise floor",
    WITHIN_NOISE: "its speed cannot be told from the base model's in this run",
}
QUALITY_MEANING = {
    charts.BETTER: "its quality ρ is higher than the base model's (the interval excludes 0)",
    charts.WORSE: "its quality ρ is lower than the base model's (the interval excludes 0)",
    charts.UNCLEAR: "its quality ρ cannot be told from the base model's (the interval includes 0)",
}


def recommendations(rows: Sequence[Mapping[str, str]], finalists: Sequence[Mapping[str, Any]] | None,
                    sensitivity: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset: the rank-1 cell, its paired figures against the base model with their verdicts (or why there are
    none), Δρ against the base with its interval and verdict, p(first), whether the winner moves with Q or w, and
    what the measurements support, in words."""
    with_model = charts.needs_model_prefix(rows)
    by_dataset = _finalists_by_dataset(finalists)
    moves = {section["name"]: section["sensitivity"] for section in sensitivity}
    view = []
    for dataset in charts.datasets_in_order(rows):
        ranked = [r for r in rows if r["dataset"] == dataset and charts.is_ok(r) and to_float(r.get("rank")) is not None
                  and not charts.is_reference(r)]  # fmt: skip
        firsts = [r for r in ranked if to_float(r["rank"]) == 1]
        entry: dict[str, Any] = {"name": dataset, "winner": None, "moves": moves.get(dataset, {"present": False,
                                 "why": SENSITIVITY_WHY_ABSENT})}  # fmt: skip
        view.append(entry)
        if not firsts:
            entry["why"] = "No cell of this dataset was ranked, so there is nothing to recommend."
            continue
        winner = firsts[0]
        section = by_dataset.get(dataset)
        missing = _finalists_missing(section, finalists is not None)
        paired = None
        if not missing and section is not None:
            found = next((f for f in section.get("finalists") or [] if _finalist_key(f) == _row_key(winner)), None)
            if found is None:
                missing = "the rank-1 cell was not among the finalists re-measured"
            elif not found.get("vs_base"):
                missing = "its base model was not re-measured beside it"
            else:
                figures = found["vs_base"]
                paired = {"energy": _figure_comparison("energy", figures),
                          "speed": _figure_comparison("speed", figures),
                          "rounds": format_int(figures.get("rounds")),
                          "against": _named(label_map(rows), figures.get("against"))}  # fmt: skip
        if paired is None and finalists is None and winner.get("paired_energy_verdict"):
            # The rows carry the paired columns though the finalists section was not handed over.
            missing = ""
            paired = {"energy": row_comparison(winner, "energy", "paired_"),
                      "speed": row_comparison(winner, "speed", "paired_"), "rounds": "", "against": ""}  # fmt: skip
        quality = None
        if charts.has_uncertainty(winner):
            delta, low, high = (to_float(winner[f"delta_rho{s}"]) for s in ("", "_lo", "_hi"))
            verdict = winner.get("verdict_rho") or charts.change_verdict(delta, low, high)  # type: ignore[arg-type]
            quality = {"delta": format_delta(delta), "interval": f"[{low:.3f}, {high:.3f}]", "verdict": verdict,
                       "css": "verdict-" + verdict.replace(" ", "-")}  # fmt: skip
        findings = []
        if paired is not None:
            findings += [ENERGY_MEANING.get(paired["energy"]["verdict"], ""),
                         SPEED_MEANING.get(paired["speed"]["verdict"], "")]  # fmt: skip
        if quality is not None:
            findings.append(QUALITY_MEANING.get(quality["verdict"], ""))
        entry.update({
            "winner": _decorate(winner, with_model, 0), "ranked": len(ranked),
            "tied": [charts.cell_label(r, with_model) for r in firsts[1:]],
            "p_first": format_share(winner.get("p_first")), "paired": paired, "paired_missing": missing,
            "quality": quality, "findings": "; ".join(f for f in findings if f),
        })  # fmt: skip
    return view


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


# The measures the finalists' paired rounds test: energy per query (answer passes) and the time of a pinned batch
# (its tokens/s, inverted: more tokens/s is less time for the same tokens).
PAIRED_MEASURES = {"wh_per_query": "energy", "batch_latency_s": "speed"}
TIME_VERDICT = {HIGHER: LOWER, LOWER: HIGHER, WITHIN_NOISE: WITHIN_NOISE}


def _paired_pair(table: Mapping[str, Any], section: Mapping[str, Any] | None, recorded: bool) -> tuple[Any, str]:
    """The finalists' paired optimised-vs-baseline figures when they are of the table's two cells; else why not."""
    missing = _finalists_missing(section, recorded)
    if missing or section is None:
        return None, missing
    figures = section.get("optimised_vs_baseline")
    found = {role: next((f for f in section.get("finalists") or [] if role in (f.get("roles") or [])), None)
             for role in ("rank 1", "baseline")}  # fmt: skip
    if not figures or found["rank 1"] is None or found["baseline"] is None:
        return None, "the optimised cell and the baseline were not both re-measured side by side"
    if (_finalist_key(found["rank 1"]) != _row_key(table["optimised_row"])
            or _finalist_key(found["baseline"]) != _row_key(table["baseline_row"])):
        return None, "the cells re-measured side by side are not this table's optimised cell and baseline"
    return figures, ""


def _measure_verdict(key: str, figures: Mapping[str, Any] | None, same_cell: bool) -> dict[str, str]:
    """The verdict column of one measure: the paired verdict where the finalists' rounds test it, else not tested."""
    if key not in PAIRED_MEASURES:
        return {"text": NOT_TESTED, "ratio": "", "css": "", "tested": ""}
    if same_cell:
        return {"text": "same cell", "ratio": "", "css": "", "tested": ""}
    if figures is None:
        return {"text": "no paired measurement: not tested", "ratio": "", "css": "", "tested": ""}
    figure = PAIRED_MEASURES[key]
    shown = _figure_comparison(figure, figures)
    if figure == "speed":
        verdict = TIME_VERDICT.get(shown["verdict"], shown["verdict"])
        return {"text": verdict, "ratio": f"paired tokens/s {shown['ratio']}", "css": verdict_css("energy", verdict),
                "tested": verdict}  # fmt: skip
    return {"text": shown["verdict"], "ratio": f"paired {shown['ratio']}", "css": shown["css"],
            "tested": shown["verdict"]}  # fmt: skip


def lifecycle_view(rows: Sequence[Mapping[str, str]], settings: LifecycleSettings,
                   finalists: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per dataset: the paper's optimised-against-baseline table, with the paired verdict of the measures the
    finalists' side-by-side rounds test, and both cells' lifecycle stages, formatted; or why there is no
    comparison."""
    show_model = charts.needs_model_prefix(rows)
    by_dataset = _finalists_by_dataset(finalists)
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
        paired, paired_missing = _paired_pair(table, by_dataset.get(dataset), finalists is not None)
        verdicts = {m["key"]: _measure_verdict(m["key"], paired, table["same_cell"])
                    for m in table["measures"]}  # fmt: skip
        section.update({
            "classification_skipped": _classification_skipped(table["baseline_row"], table["optimised_row"]),
            "paired_missing": "" if table["same_cell"] else paired_missing,
            "paired_rounds": format_int((paired or {}).get("rounds")),
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
                # Coloured only where the paired rounds found a difference beyond the noise floor.
                "css": verdicts[m["key"]]["css"]
                if verdicts[m["key"]]["tested"] in (LOWER, HIGHER) and m["change_pct"] is not None else "",
                "verdict": verdicts[m["key"]],
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


def _classification_skipped(*rows: Mapping[str, Any]) -> str:
    """Why the cells have no accuracy, macro-F1 or AUC-ROC (the dataset has no two classes); "" when they have."""
    return next((_text(row.get("classification_skipped")) for row in rows if row.get("classification_skipped")), "")


def energy_table(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    with_model = charts.needs_model_prefix(rows)
    datasets = charts.datasets_in_order(rows)
    ordered = sorted(
        (row for row in rows if charts.is_ok(row)),
        key=lambda row: (datasets.index(row["dataset"]), charts.rank_key(row)),
    )
    return [_decorate(row, with_model, 0) for row in ordered]


def _parent_delta_rho(row: Mapping[str, str]) -> dict[str, str]:
    """Δρ against the parent with its paired bootstrap interval and verdict; blank without the interval."""
    if not charts.has_uncertainty(row, "parent_rho"):
        return {"delta": "", "interval": "", "verdict": "", "css": ""}
    delta, low, high = (to_float(row[f"delta_parent_rho{s}"]) for s in ("", "_lo", "_hi"))
    verdict = charts.change_verdict(delta, low, high)  # type: ignore[arg-type]
    return {"delta": f"{delta:+.4f}", "interval": f"[{low:+.4f}, {high:+.4f}]", "verdict": verdict,
            "css": verdict.replace(" ", "-")}  # fmt: skip


def _variant_rows(rows: Sequence[Mapping[str, str]], keep: Callable[[Mapping[str, str]], bool]
                  ) -> list[dict[str, Any]]:  # fmt: skip
    """Evaluated variant rows `keep` picks, each beside its parent (the same fine-tuned cell, unpruned, as trained),
    with Δρ against it and the energy and speed comparison the cell's own rounds paired with it."""
    with_model = charts.needs_model_prefix(rows)
    parents = charts.parents_by_cell(rows)
    view = []
    for row in rows:
        if not charts.is_ok(row) or not keep(row):
            continue
        parent = parents.get(charts.finetune_key(row), {})
        view.append({
            **_decorate(row, with_model, 0),
            "parent_label": charts.cell_label(parent, with_model) if parent else "",
            "parent_form": parent.get("model_form", ""), "parent_rho": parent.get("rho", ""),
            "parent_size_mb": parent.get("model_size_mb", ""), "delta_parent": _parent_delta_rho(row),
        })  # fmt: skip
    return view


def deployment_forms(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """The `merge` variants of the 4/8-bit cells, each beside the cell as trained (its adapter unmerged)."""
    return _variant_rows(rows, lambda row: row.get("pruning_method") == "merge")


def early_exit_table(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """The early-exit cells with their setting, where tokens left, and what the decoding cost against full depth,
    the exit tests included."""
    view = _variant_rows(rows, lambda row: to_float(row.get("exit_threshold")) is not None)
    return sorted(view, key=lambda r: (r["parent_label"], r["exit_measure"], r["exit_heads"],
                                       -(to_float(r["exit_threshold"]) or 0.0)))  # fmt: skip


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


GLANCE_CRITERIA = (
    ("best R", "score", 1, "no cell was ranked"),
    ("highest ρ", "rho", 1, "no cell has a quality figure"),
    ("least energy", "deploy_wh_per_query", -1, "no cell has a deployment energy per query (deploy_wh_per_query: "
     "a summary from before it)"),
)  # fmt: skip


def at_a_glance(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Per dataset, the tuned cells that win on R, on ρ and on energy per query over the deployment (ties: the
    better rank), each with its paired figures against the base model (blank where it was not re-measured)."""
    with_model = charts.needs_model_prefix(rows)
    fronts = charts.pareto_fronts(rows)
    summary = []
    for dataset in charts.datasets_in_order(rows):
        tuned = sorted(
            (r for r in rows if r["dataset"] == dataset and charts.is_ok(r) and not charts.is_base_model(r)),
            key=charts.rank_key,
        )
        picks = []
        for criterion, key, sign, why in GLANCE_CRITERIA:
            scored = [r for r in tuned if to_float(r.get(key)) is not None]
            if scored:
                best = max(scored, key=lambda r: sign * (to_float(r.get(key)) or 0.0))
                picks.append({**_decorate(best, with_model, 0), "criterion": criterion, "missing": "",
                              "p_first_share": format_share(best.get("p_first"))})  # fmt: skip
            elif tuned:
                picks.append({"criterion": criterion, "missing": why})
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


# The width at which two backends serve the same weights in 16 bits (GGUF F16 against bfloat16): a gap there is the
# engine's, not a quantization format's.
CONTROL_BITS = "16"


def unserved_kinds(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Each backend of the rows (but the reference) with the post-training kinds it does not serve, and why."""
    from joulebench.backends import BACKENDS

    names = dict.fromkeys(charts.backend_of(row) for row in rows)
    return [{"name": name, "unserved": BACKENDS.get(name).unserved} for name in names
            if name != charts.REFERENCE_BACKEND and name in BACKENDS and BACKENDS.get(name).unserved]  # fmt: skip


def backend_quality(rows: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Per dataset and backend other than the reference: each evaluated cell it served, with its ρ beside the same
    cell on the reference backend and Δρ (`delta_backend_rho`: the paired bootstrap of cell − the same cell on the
    reference backend) with its interval and verdict; 16-bit cells first (the control: the same weights in 16 bits
    on both), then by bits. `by_bits` tallies the verdicts per bit width."""
    with_model = charts.needs_model_prefix(rows)
    twins = {charts.variant_key(r, with_backend=False): r for r in rows
             if charts.is_ok(r) and charts.backend_of(r) == charts.REFERENCE_BACKEND}  # fmt: skip
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        backend = charts.backend_of(row)
        if not charts.is_ok(row) or backend == charts.REFERENCE_BACKEND:
            continue
        twin = twins.get(charts.variant_key(row, with_backend=False), {})
        groups.setdefault((row["dataset"], backend), []).append({
            **_decorate(row, with_model, 0), "bits": charts.bits_key(row.get("bits")),
            "against": charts.served_as(twin) if twin else "", "twin_rho": twin.get("rho", ""),
            "delta_backend": delta_view(row, "backend_rho", 1, 4),
        })  # fmt: skip
    view = []
    for (dataset, backend), entries in groups.items():
        entries.sort(key=lambda e: (e["bits"] != CONTROL_BITS, to_float(e["bits"]) or 0.0, charts.rank_key(e)))
        tally: dict[str, dict[str, int]] = {}
        for entry in entries:
            verdict = entry["delta_backend"]["verdict"] if entry["delta_backend"] else "no interval"
            counts = tally.setdefault(entry["bits"], {})
            counts[verdict] = counts.get(verdict, 0) + 1
        by_bits = [f"{bits}-bit{' (control)' if bits == CONTROL_BITS else ''}: "
                   + ", ".join(f"{n} × {verdict}" for verdict, n in counts.items()) for bits, counts in tally.items()]
        view.append({"dataset": dataset, "backend": backend, "entries": entries, "by_bits": "; ".join(by_bits),
                     "control": CONTROL_BITS in tally})  # fmt: skip
    datasets = charts.datasets_in_order(rows)
    return sorted(view, key=lambda g: datasets.index(g["dataset"]))


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
    datasets = dataset_sections(rows, inputs.top_k, inputs.prune_all, inputs.ranking, inputs.sensitivity,
                                inputs.ranking_note, inputs.w)  # fmt: skip
    signatures = signatures_view(inputs.metrics)
    heads = metric_heads(rows, signatures)
    # Another backend than the reference in the grid: the rankings name each row's backend and format, and the
    # backends' section (figure and Δρ table) is shown; a grid on the reference backend alone reads as before.
    show_backend = any(charts.backend_of(row) != charts.REFERENCE_BACKEND for row in rows)
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
        "datasets": datasets,
        "quality_names": {key: head["name"] for key, head in heads.items()},
        "metric_head": heads,
        "signatures": signatures,
        "verdict_rule": VERDICT_RULE,
        "not_tested": NOT_TESTED,
        "noise": noise_floor_view(inputs.noise_floor, rows),
        "recommendations": recommendations(rows, inputs.finalists, datasets),
        "finalists": finalists_view(inputs.finalists, rows),
        "ranking_terms": {ds["name"]: ds["terms"] for ds in datasets},
        "energy_rows": energy_table(rows),
        "energy_sources": sorted({row["energy_source"] for row in rows if row["energy_source"]}),
        "training": training_table(inputs.training),
        "pareto": pareto_table(rows),
        "glance": (glance := at_a_glance(rows)),
        "glance_p_first": any(pick.get("p_first_share") for ds in glance for pick in ds["picks"]),
        "impact": impact_flags(rows),
        "deployment_forms": deployment_forms(rows),
        "early_exits": early_exit_table(rows),
        "carbon_is_cell_total": charts.inference_carbon_key(rows) != charts.INFER_EMISSIONS_KEY,
        "not_ok": [_decorate(row, charts.needs_model_prefix(rows), 0) for row in rows if not charts.is_ok(row)],
        "examples": examples_view(inputs.examples),
        "lifecycle": lifecycle_view(rows, LifecycleSettings.from_config(inputs.lifecycle), inputs.finalists),
        "show_model": charts.needs_model_prefix(rows),
        "show_backend": show_backend,
        "backend_quality": backend_quality(rows) if show_backend else [],
        "backend_unserved": unserved_kinds(rows) if show_backend else [],
        # Trusted: generated by joulebench.charts / read from our own template folder.
        "stylesheet": Markup(stylesheet),
        "chart_energy": Markup(charts.energy_breakdown_svg(rows)),
        "chart_loss_energy": Markup(charts.loss_energy_svg(inputs.training)),
        "chart_inference": Markup(charts.inference_svg(rows)),
        "chart_pruning": Markup(charts.pruning_impact_svg(rows)),
        "chart_pareto": Markup(charts.pareto_svg(rows)),
        "chart_early_exit": Markup(charts.early_exit_svg(rows)),
        "chart_backends": Markup(charts.backend_energy_quality_svg(rows)) if show_backend else "",
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
