"""Report figures as inline SVG strings, each a pure function of summary/training rows."""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib import rc_context  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

# Width fits the A4 portrait text block (210 mm - 2 x 14 mm margins ~ 7.17 in).
FIG_WIDTH_IN = 7.0
BREAKDOWN_SIZE = (FIG_WIDTH_IN, 7.0)
LOSS_SIZE = (FIG_WIDTH_IN, 3.8)
SCATTER_SIZE = (FIG_WIDTH_IN, 5.2)

BITS_COLOURS = {"4": "#1b9e77", "8": "#d95f02", "16": "#7570b3", "32": "#e7298a"}
OTHER_COLOUR = "#666666"
COMPONENT_COLOURS = {"cpu_kwh": "#4c72b0", "gpu_kwh": "#dd8452", "ram_kwh": "#55a868"}
COMPONENT_NAMES = {"cpu_kwh": "CPU", "gpu_kwh": "GPU", "ram_kwh": "RAM"}
DATASET_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", ":", "-.")
NO_PRUNING = {"", "none", "0", "0.0", "dense", "no"}

_RC = {
    # Fixed salt: the same rows give byte-identical SVG (ids are hashes).
    "svg.hashsalt": "joulebench",
    # Glyphs as paths: the PDF renderer needs no font matching the chart.
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
}
# Dropping the Dublin Core block keeps URLs (rdf:resource) out of the SVG.
_NO_METADATA = {"Date": None, "Format": None, "Type": None, "Creator": None}


def to_float(value: Any) -> float | None:
    """Parse a CSV cell; empty or non-numeric values (and NaN) become None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def bits_key(value: Any) -> str:
    """'4', '4.0' and 4 all name the same bit width."""
    number = to_float(value)
    return str(int(number)) if number is not None and number.is_integer() else str(value or "")


def is_reference(row: Mapping[str, Any]) -> bool:
    return str(row.get("is_reference", "")).strip() in {"1", "true", "True"}


def is_ok(row: Mapping[str, Any]) -> bool:
    return str(row.get("status", "")).strip() == "ok"


def cell_label(row: Mapping[str, Any], with_model: bool = False) -> str:
    """A short cell name such as 'b4 e2 2:4'; the base model row is 'base'."""
    prefix = f"{short_model(row.get('model', ''))} " if with_model else ""
    if is_reference(row):
        return f"{prefix}base"
    parts = [f"b{bits_key(row.get('bits', ''))}", f"e{bits_key(row.get('epochs', ''))}"]
    pruning = str(row.get("pruning", "") or "").strip()
    if pruning.lower() not in NO_PRUNING:
        parts.append(pruning)
    return prefix + " ".join(parts)


def short_model(model: Any) -> str:
    return str(model or "").rstrip("/").rsplit("/", 1)[-1]


def rank_key(row: Mapping[str, Any]) -> tuple[int, float, str]:
    """Reference first, then by rank, then unranked cells by label."""
    if is_reference(row):
        return (0, 0.0, "")
    rank = to_float(row.get("rank", ""))
    if rank is not None:
        return (1, rank, "")
    return (2, 0.0, cell_label(row))


def datasets_in_order(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(row.get("dataset", "")) for row in rows))


def needs_model_prefix(rows: Iterable[Mapping[str, Any]]) -> bool:
    return len({str(row.get("model", "")) for row in rows}) > 1


def bits_colour(bits: Any) -> str:
    return BITS_COLOURS.get(bits_key(bits), OTHER_COLOUR)


def spans_decades(values: Sequence[float], ratio: float = 10.0) -> bool:
    positive = [v for v in values if v > 0]
    return bool(positive) and max(positive) / min(positive) > ratio


def figure_to_svg(fig: Figure) -> str:
    """Serialise to SVG text starting at '<svg' (no XML prolog, no DOCTYPE)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata=_NO_METADATA)
    text = buffer.getvalue()
    return unique_ids(compact_svg(text[text.index("<svg") :].strip()) + "\n")


_PATH_DATA = re.compile(r'\bd="([^"]*)"')
_LONG_DECIMAL = re.compile(r"-?\d+\.\d{3,}")
_GROUP_ID = re.compile(r'<g id="([^"]+)"')
_REFERENCED = re.compile(r'(?:href="#|url\(#)([^")]+)')
_BETWEEN_TAGS = re.compile(r">\s+<")


def compact_svg(svg: str) -> str:
    """Shrink matplotlib's SVG (~40%) so a chart with a hundred bars stays well under 150 KB.

    Path coordinates are in points, so two decimals are far below what print can show; only path data
    is rounded, never text (tick labels are numbers too). Group ids nothing refers to are dropped.
    """
    def round_path(match: re.Match[str]) -> str:
        data = _LONG_DECIMAL.sub(lambda m: f"{float(m.group()):.2f}", match.group(1))
        return 'd="' + " ".join(data.split()) + '"'

    referenced = set(_REFERENCED.findall(svg))
    svg = _PATH_DATA.sub(round_path, svg)
    svg = _GROUP_ID.sub(lambda m: m.group() if m.group(1) in referenced else "<g", svg)
    return _BETWEEN_TAGS.sub("><", svg)


_ID_REFERENCE = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')


def unique_ids(svg: str) -> str:
    """Prefix every id and reference with a digest of the chart.

    Matplotlib reuses ids such as glyph names, and several inline SVGs in one HTML page must not
    define the same id twice.
    """
    prefix = "c" + hashlib.sha1(svg.encode()).hexdigest()[:8] + "-"
    return _ID_REFERENCE.sub(lambda m: m.group(1) + prefix + m.group(2), svg)


def _render(size: tuple[float, float], draw: Any, *args: Any) -> str:
    with rc_context(_RC):
        fig = Figure(figsize=size, layout="constrained")
        draw(fig, *args)
        return figure_to_svg(fig)


def _draw_placeholder(fig: Figure, message: str) -> None:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="#555555")


def placeholder_svg(message: str, size: tuple[float, float] = (FIG_WIDTH_IN, 1.2)) -> str:
    return _render(size, _draw_placeholder, message)


# --- energy breakdown -------------------------------------------------------------------------


def breakdown_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Evaluated cells with at least one energy component, in report order."""
    keep = [
        row for row in rows
        if is_ok(row) and any(to_float(row.get(key)) is not None for key in COMPONENT_COLOURS)
    ]
    return sorted(keep, key=rank_key)


def _draw_breakdown_axis(ax: Axes, rows: Sequence[Mapping[str, Any]], with_model: bool) -> None:
    labels = [cell_label(row, with_model) for row in rows]
    positions = list(range(len(rows)))
    left = [0.0] * len(rows)
    for key, colour in COMPONENT_COLOURS.items():
        widths = [to_float(row.get(key)) or 0.0 for row in rows]
        ax.barh(positions, widths, left=left, color=colour, label=COMPONENT_NAMES[key], height=0.7)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(positions, labels, fontsize=max(4.5, 7.5 - len(rows) / 12))
    ax.invert_yaxis()
    ax.set_xlabel("energy (kWh)")
    ax.grid(axis="x", linewidth=0.4, alpha=0.5)
    ax.set_axisbelow(True)


def _draw_breakdown(fig: Figure, rows: Sequence[Mapping[str, Any]]) -> None:
    datasets = datasets_in_order(rows)
    with_model = needs_model_prefix(rows)
    counts = [sum(1 for row in rows if row.get("dataset", "") == d) for d in datasets]
    axes = fig.subplots(len(datasets), 1, squeeze=False, gridspec_kw={"height_ratios": counts})[:, 0]
    for ax, dataset in zip(axes, datasets, strict=True):
        _draw_breakdown_axis(ax, [row for row in rows if row.get("dataset", "") == dataset], with_model)
        ax.set_title(f"{dataset}: CPU / GPU / RAM energy per cell", loc="left")
    axes[0].legend(loc="lower right", ncols=3, frameon=False)


def energy_breakdown_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """Stacked horizontal bars of cpu/gpu/ram kWh per evaluated cell, one panel per dataset."""
    selected = breakdown_rows(rows)
    if not selected:
        return placeholder_svg("no evaluated cells with energy figures")
    return _render(BREAKDOWN_SIZE, _draw_breakdown, selected)


# --- training loss ----------------------------------------------------------------------------


def loss_cells(training: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    keep = [cell for cell in training if any(to_float(v) is not None for v in cell.get("losses") or [])]
    return sorted(keep, key=lambda c: (to_float(c.get("bits")) or 0.0, to_float(c.get("epochs")) or 0.0))


def _draw_loss_axis(ax: Axes, cells: Sequence[Mapping[str, Any]], with_model: bool) -> None:
    seen_per_bits: dict[str, int] = {}
    for cell in cells:
        bits = bits_key(cell.get("bits"))
        index = seen_per_bits.get(bits, 0)
        seen_per_bits[bits] = index + 1
        points = [(i + 1, to_float(v)) for i, v in enumerate(cell.get("losses") or [])]
        xs = [x for x, y in points if y is not None]
        ys = [y for _, y in points if y is not None]
        prefix = f"{short_model(cell.get('model'))} " if with_model else ""
        ax.plot(xs, ys, color=bits_colour(bits), linestyle=LINESTYLES[index % len(LINESTYLES)],
                marker="o", markersize=3, linewidth=1.2,
                label=f"{bits}-bit" if index == 0 else None)
        ax.annotate(f"{prefix}e{bits_key(cell.get('epochs'))}", (xs[-1], ys[-1]), xytext=(3, 0),
                    textcoords="offset points", fontsize=6, va="center", color=bits_colour(bits))
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.margins(x=0.12)
    ax.grid(linewidth=0.4, alpha=0.5)


def _draw_losses(fig: Figure, cells: Sequence[Mapping[str, Any]]) -> None:
    datasets = datasets_in_order(cells)
    with_model = needs_model_prefix(cells)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets, strict=True):
        _draw_loss_axis(ax, [c for c in cells if c.get("dataset", "") == dataset], with_model)
        ax.set_title(f"{dataset}", loc="left")
        ax.legend(frameon=False, loc="upper right")


def loss_curves_svg(training: Sequence[Mapping[str, Any]]) -> str:
    """Training loss per epoch, one line per fine-tune cell, coloured by bits, one panel per dataset."""
    cells = loss_cells(training)
    if not cells:
        return placeholder_svg("no training losses recorded")
    return _render(LOSS_SIZE, _draw_losses, cells)


# --- energy vs quality ------------------------------------------------------------------------


def scatter_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    keep = []
    for row in rows:
        kwh, rho = to_float(row.get("total_kwh")), to_float(row.get("rho"))
        if is_ok(row) and kwh is not None and kwh > 0 and rho is not None:
            keep.append(row)
    return sorted(keep, key=rank_key)


def _draw_scatter(fig: Figure, rows: Sequence[Mapping[str, Any]]) -> None:
    ax = fig.add_subplot()
    datasets = datasets_in_order(rows)
    with_model = needs_model_prefix(rows)
    markers = {d: DATASET_MARKERS[i % len(DATASET_MARKERS)] for i, d in enumerate(datasets)}
    for row in rows:
        x, y = to_float(row["total_kwh"]), to_float(row["rho"])
        reference = is_reference(row)
        ax.scatter([x], [y], marker="*" if reference else markers[row.get("dataset", "")],
                   s=140 if reference else 28, zorder=3,
                   color="black" if reference else bits_colour(row.get("bits")),
                   edgecolors="white" if reference else "none", linewidths=0.5)
        ax.annotate(cell_label(row, with_model), (x, y), xytext=(4, 3), textcoords="offset points",
                    fontsize=5.5, fontweight="bold" if reference else "normal")
    if spans_decades([to_float(row["total_kwh"]) or 0.0 for row in rows]):
        ax.set_xscale("log")
        # Plain numbers (0.002) read better in a kWh table context than 10^-3 powers.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_log_label))
    ax.set_xlabel("total energy (kWh)")
    ax.set_ylabel("ρ (quality)")
    ax.grid(linewidth=0.4, alpha=0.5)
    ax.margins(x=0.08, y=0.08)
    ax.legend(handles=_scatter_legend(ax, rows, datasets, markers), frameon=False, fontsize=6,
              loc="best")


def _minor_log_label(value: float, _pos: int | None = None) -> str:
    """Label the 2x and 5x minor ticks of a log axis, leave the rest blank."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (2.0, 5.0) else ""


def _scatter_legend(ax: Axes, rows: Sequence[Mapping[str, Any]], datasets: Sequence[str],
                    markers: Mapping[str, str]) -> list[Any]:
    handles: list[Any] = []
    bits_present = sorted({bits_key(r.get("bits")) for r in rows if not is_reference(r)},
                          key=lambda b: to_float(b) or 0.0)
    for bits in bits_present:
        handles.append(Line2D([], [], linestyle="", marker="o", color=bits_colour(bits), label=f"{bits}-bit"))
    if len(datasets) > 1:
        for dataset in datasets:
            handles.append(Line2D([], [], linestyle="", marker=markers[dataset], color="#555555",
                                  label=dataset))
    if any(is_reference(r) for r in rows):
        handles.append(Line2D([], [], linestyle="", marker="*", markersize=9, color="black",
                              label="base (reference)"))
    return handles


def energy_vs_quality_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """Scatter of total kWh (log x when the range spans > 10x) against rho; the base row is a star."""
    selected = scatter_rows(rows)
    if not selected:
        return placeholder_svg("no evaluated cells with energy and quality figures")
    return _render(SCATTER_SIZE, _draw_scatter, selected)
