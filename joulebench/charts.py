"""Report figures as inline SVG strings, each a pure function of summary/training rows."""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib import rc_context  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from joulebench.backends.base import REFERENCE_BACKEND  # noqa: E402
from joulebench.summary import to_float  # noqa: E402

# Width fits the A4 portrait text block (210 mm - 2 x 14 mm margins ~ 7.17 in).
FIG_WIDTH_IN = 7.0
# Tallest figure that still leaves room for its caption on an A4 portrait page.
MAX_HEIGHT_IN = 9.0

BITS_COLOURS = {"4": "#1b9e77", "8": "#d95f02", "16": "#7570b3", "32": "#e7298a"}
OTHER_COLOUR = "#666666"
# Marker shapes of the bit widths where colour names the inference backend.
BITS_MARKERS = {"4": "v", "8": "D", "16": "s", "32": "o"}
OTHER_MARKER = "X"
# One colour per backend in order of appearance, the reference backend first (a palette apart from the bits').
BACKEND_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")
COMPONENT_COLOURS = {"cpu_kwh": "#4c72b0", "gpu_kwh": "#dd8452", "ram_kwh": "#55a868"}
COMPONENT_NAMES = {"cpu_kwh": "CPU", "gpu_kwh": "GPU", "ram_kwh": "RAM"}
LINESTYLES = ("-", "--", ":", "-.")
NO_PRUNING = {"", "none", "0", "0.0", "dense", "no"}

_RC = {
    # Fixed salt: the same rows give byte-identical SVG (ids are hashes).
    "svg.hashsalt": "joulebench",
    # Text stays <text> (DejaVu Sans, which the PDF renderer has): small SVG, and searchable in the PDF.
    "svg.fonttype": "none",
    # Names come from the config and may hold '$': never parse them as mathtext.
    "text.parse_math": False,
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


def bits_key(value: Any) -> str:
    """'4', '4.0' and 4 all name the same bit width."""
    number = to_float(value)
    return str(int(number)) if number is not None and number.is_integer() else str(value or "")


def is_reference(row: Mapping[str, Any]) -> bool:
    return str(row.get("is_reference", "")).strip() in {"1", "true", "True"}


def is_ok(row: Mapping[str, Any]) -> bool:
    return str(row.get("status", "")).strip() == "ok"


def is_base_model(row: Mapping[str, Any]) -> bool:
    """The base model as downloaded (epochs 0): the reference row, or the same model served by another backend."""
    return is_reference(row) or bits_key(row.get("epochs", "")) == "0"


def backend_of(row: Mapping[str, Any]) -> str:
    """The inference backend that served the row; a row from before the `backend` column: the reference backend."""
    return str(row.get("backend", "") or "").strip() or REFERENCE_BACKEND


def served_as(row: Mapping[str, Any]) -> str:
    """Backend and exact format: 'llama.cpp GGUF Q4_K_M', 'transformers bitsandbytes nf4'."""
    return " ".join(part for part in (backend_of(row), str(row.get("format", "") or "").strip()) if part)


def backend_tag(row: Mapping[str, Any]) -> str:
    """' · llama.cpp GGUF Q4_K_M' for a row another backend than the reference served; '' for the reference's."""
    return "" if backend_of(row) == REFERENCE_BACKEND else f" · {served_as(row)}"


def backends(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The backends of the rows, the reference backend first (when present), then in order of appearance."""
    seen = list(dict.fromkeys(backend_of(row) for row in rows))
    return sorted(seen, key=lambda backend: backend != REFERENCE_BACKEND)


def backend_colours(rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    return {b: BACKEND_PALETTE[i % len(BACKEND_PALETTE)] for i, b in enumerate(backends(rows))}


def cell_label(row: Mapping[str, Any], with_model: bool = False) -> str:
    """A short cell name such as 'b4 e2 2:4'; the base model row is 'base'. A row another backend served carries it
    and its format: 'b4 e2 2:4 · llama.cpp GGUF Q4_K_M', 'base · llama.cpp GGUF F16'."""
    prefix = f"{short_model(row.get('model', ''))} " if with_model else ""
    if is_base_model(row):
        return f"{prefix}base{backend_tag(row)}"
    parts = [f"b{bits_key(row.get('bits', ''))}", f"e{bits_key(row.get('epochs', ''))}", training_tag(row)]
    pruning = str(row.get("pruning", "") or "").strip()
    if pruning.lower() not in NO_PRUNING:
        parts.append(pruning)
    return prefix + " ".join(part for part in parts if part) + backend_tag(row)


def training_tag(row: Mapping[str, Any]) -> str:
    """The training variant, where it is not the default (float32, dense): 'bf16-mixed gradual 50%'."""
    tags = [str(row.get("precision", "") or "").strip(), str(row.get("sparse_training", "") or "").strip()]
    return " ".join(tag for tag in tags if tag not in ("", "32-true", "dense"))


def short_model(model: Any) -> str:
    return str(model or "").rstrip("/").rsplit("/", 1)[-1]


def rank_key(row: Mapping[str, Any]) -> tuple[int, float, str]:
    """Reference first (then the base model as other backends served it), then by rank, then unranked cells by
    label."""
    if is_reference(row):
        return (0, 0.0, "")
    if is_base_model(row):
        return (0, 1.0, cell_label(row))
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
        ax.barh(positions, widths, left=left, color=colour, label=COMPONENT_NAMES[key], height=0.72)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(positions, labels, fontsize=6.5 if len(rows) <= 24 else 5.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel("energy (kWh): fine-tuning + preparation + one inference pass")
    ax.grid(axis="x", linewidth=0.4, alpha=0.5)
    ax.set_axisbelow(True)


def _draw_breakdown(fig: Figure, rows: Sequence[Mapping[str, Any]]) -> None:
    counts = [sum(1 for row in rows if row.get("dataset", "") == d) for d in datasets_in_order(rows)]
    dataset_panels(fig, rows, _draw_breakdown_axis, height_ratios=counts)
    fig.legend(handles=[Patch(color=c, label=COMPONENT_NAMES[k]) for k, c in COMPONENT_COLOURS.items()],
               loc="outside lower center", ncols=3, frameon=False)


def energy_breakdown_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """Stacked horizontal bars of cpu/gpu/ram kWh per evaluated cell, one panel per dataset."""
    selected = breakdown_rows(rows)
    if not selected:
        return placeholder_svg("no evaluated cells with energy figures")
    height = 0.9 + 0.16 * len(selected) + 0.45 * len(datasets_in_order(selected))
    return _render((FIG_WIDTH_IN, min(max(height, 2.4), MAX_HEIGHT_IN)), _draw_breakdown, selected)


# --- training loss against training energy (paper, Fig. 3) ------------------------------------


def loss_energy_points(cell: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(cumulative training kWh at the end of the epoch, loss) per epoch, up to the first epoch missing either."""
    points = []
    total = 0.0
    for loss, kwh in zip(cell.get("losses") or [], cell.get("epoch_kwh") or [], strict=False):
        loss_value, kwh_value = to_float(loss), to_float(kwh)
        if loss_value is None or kwh_value is None:
            break
        total += kwh_value
        points.append((total, loss_value))
    return points


def loss_energy_cells(training: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    keep = [cell for cell in training if loss_energy_points(cell)]
    return sorted(keep, key=lambda c: (to_float(c.get("bits")) or 0.0, to_float(c.get("epochs")) or 0.0))


def _draw_loss_energy_axis(ax: Axes, cells: Sequence[Mapping[str, Any]], with_model: bool) -> None:
    seen_per_bits: dict[str, int] = {}
    ends = []
    for cell in cells:
        bits = bits_key(cell.get("bits"))
        index = seen_per_bits.get(bits, 0)
        seen_per_bits[bits] = index + 1
        xs, ys = zip(*loss_energy_points(cell), strict=True)
        ax.plot(xs, ys, color=bits_colour(bits), linestyle=LINESTYLES[index % len(LINESTYLES)],
                marker="o", markersize=3, linewidth=1.2, label=f"{bits}-bit" if index == 0 else None)
        # One-epoch cells all start at about the same point: naming each would only stack the labels.
        if len(xs) > 1:
            prefix = f"{short_model(cell.get('model'))} " if with_model else ""
            label = f"{prefix}b{bits} e{bits_key(cell.get('epochs'))} {training_tag(cell)}".strip()
            ends.append((xs[-1], ys[-1], label, bits_colour(bits)))
    # Neighbouring end points (by energy) get their labels on opposite sides, so close ones do not overlap.
    for index, (x, y, text, colour) in enumerate(sorted(ends)):
        ax.annotate(text, (x, y), xytext=(4, 5 if index % 2 == 0 else -5), textcoords="offset points",
                    fontsize=6, va="bottom" if index % 2 == 0 else "top", color=colour)
    ax.set_xlabel("cumulative training energy (kWh)")
    ax.set_ylabel("training loss")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    ax.margins(x=0.15, y=0.08)
    ax.grid(linewidth=0.4, alpha=0.5)


def dataset_panels(
    fig: Figure,
    rows: Sequence[Mapping[str, Any]],
    draw_axis: Callable[[Axes, list[Mapping[str, Any]], bool], None],
    height_ratios: Sequence[int] | None = None,
) -> list[Axes]:
    """One panel per dataset, stacked, each drawn by `draw_axis(ax, that dataset's rows, with_model)`."""
    datasets = datasets_in_order(rows)
    with_model = needs_model_prefix(rows)
    ratios = {"height_ratios": list(height_ratios)} if height_ratios else None
    axes = list(fig.subplots(len(datasets), 1, squeeze=False, gridspec_kw=ratios)[:, 0])
    for ax, dataset in zip(axes, datasets, strict=True):
        draw_axis(ax, [row for row in rows if row.get("dataset", "") == dataset], with_model)
        ax.set_title(dataset, loc="left")
    return axes


def _draw_loss_energy(fig: Figure, cells: Sequence[Mapping[str, Any]]) -> None:
    for ax in dataset_panels(fig, cells, _draw_loss_energy_axis):
        ax.legend(frameon=False, loc="upper right")


def loss_energy_svg(training: Sequence[Mapping[str, Any]]) -> str:
    """Training loss at the end of each epoch against the training energy spent so far; one line per fine-tune
    cell, coloured by bits, one panel per dataset."""
    cells = loss_energy_cells(training)
    if not cells:
        return placeholder_svg("no training losses with per-epoch energy recorded")
    height = 0.4 + 3.0 * len(datasets_in_order(cells))
    return _render((FIG_WIDTH_IN, min(height, MAX_HEIGHT_IN)), _draw_loss_energy, cells)


# --- inference energy and carbon by precision (paper, Fig. 4) ---------------------------------

INFER_EMISSIONS_KEY = "infer_emissions_kg"


def inference_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Evaluated unpruned cells (the base model included) with an inference energy figure."""
    keep = [row for row in rows if is_ok(row) and not is_pruned(row) and to_float(row.get("infer_kwh")) is not None]
    return sorted(keep, key=lambda r: (to_float(r.get("epochs")) or 0.0, to_float(r.get("bits")) or 0.0))


def inference_carbon_key(rows: Iterable[Mapping[str, Any]]) -> str:
    """The inference share of emissions when every row has one, else the whole cell's emissions."""
    selected = inference_rows(rows)
    if selected and all(to_float(row.get(INFER_EMISSIONS_KEY)) is not None for row in selected):
        return INFER_EMISSIONS_KEY
    return "emissions_kg"


def _epochs_group(row: Mapping[str, Any], with_model: bool) -> str:
    prefix = f"{short_model(row.get('model'))}\n" if with_model else ""
    backend = "" if backend_of(row) == REFERENCE_BACKEND else f"\n{backend_of(row)}"
    if is_base_model(row):
        return prefix + "base" + backend
    epochs = bits_key(row.get("epochs"))
    return f"{prefix}{epochs} epoch{'' if epochs == '1' else 's'}{backend}"


def _draw_grouped_bars(ax: Axes, rows: Sequence[Mapping[str, Any]], key: str, error_key: str | None,
                       with_model: bool) -> None:
    groups = list(dict.fromkeys(_epochs_group(row, with_model) for row in rows))
    width = 0.8 / max(max(sum(1 for r in rows if _epochs_group(r, with_model) == g) for g in groups), 1)
    for position, group in enumerate(groups):
        members = [row for row in rows if _epochs_group(row, with_model) == group]
        start = position - width * (len(members) - 1) / 2
        for offset, row in enumerate(members):
            value = to_float(row.get(key)) or 0.0
            error = to_float(row.get(error_key)) if error_key else None
            ax.bar(start + offset * width, value, width=width * 0.92, color=bits_colour(row.get("bits")),
                   yerr=error, error_kw={"elinewidth": 0.7, "capsize": 1.5, "ecolor": "#333333"})
    ax.set_xticks(range(len(groups)), groups)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    ax.grid(axis="y", linewidth=0.4, alpha=0.5)
    ax.set_axisbelow(True)


def _bits_handles(rows: Iterable[Mapping[str, Any]]) -> list[Any]:
    present = sorted({bits_key(r.get("bits")) for r in rows}, key=lambda b: to_float(b) or 0.0)
    return [Patch(color=bits_colour(bits), label=f"{bits}-bit") for bits in present]


def _draw_inference(fig: Figure, rows: Sequence[Mapping[str, Any]], carbon_key: str) -> None:
    datasets = datasets_in_order(rows)
    with_model = needs_model_prefix(rows)
    axes = fig.subplots(len(datasets), 2, squeeze=False)
    carbon_label = ("inference emissions per test pass (kg CO₂e)" if carbon_key == INFER_EMISSIONS_KEY
                    else "emissions of the whole cell (kg CO₂e)")
    for (energy_ax, carbon_ax), dataset in zip(axes, datasets, strict=True):
        mine = [row for row in rows if row.get("dataset", "") == dataset]
        _draw_grouped_bars(energy_ax, mine, "infer_kwh", "infer_kwh_ci95", with_model)
        energy_ax.set_ylabel("inference energy per test pass (kWh)")
        energy_ax.set_title(f"{dataset}: energy", loc="left")
        _draw_grouped_bars(carbon_ax, mine, carbon_key, None, with_model)
        carbon_ax.set_ylabel(carbon_label)
        carbon_ax.set_title(f"{dataset}: carbon", loc="left")
    fig.legend(handles=_bits_handles(rows), loc="outside lower center", ncols=4, frameon=False)


def inference_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """Inference energy per test pass (with its 95 % interval) and carbon of the unpruned cells, by bits, grouped
    by epochs; one row of two panels per dataset."""
    selected = inference_rows(rows)
    if not selected:
        return placeholder_svg("no unpruned cells with inference energy figures")
    height = 0.6 + 2.6 * len(datasets_in_order(selected))
    return _render((FIG_WIDTH_IN, min(height, MAX_HEIGHT_IN)), _draw_inference, selected,
                   inference_carbon_key(selected))


# --- pruning impact on quality (paper, Fig. 6) -----------------------------------------------

BETTER, WORSE, UNCLEAR, NO_INTERVAL = "better", "worse", "no clear difference", "no interval"
VERDICT_COLOURS = {BETTER: "#1a9850", WORSE: "#d73027", UNCLEAR: "#9e9e9e", NO_INTERVAL: "#cfcfcf"}
VERDICT_MARKS = {BETTER: "▲", WORSE: "▼", UNCLEAR: "○", NO_INTERVAL: "?"}


@dataclass(frozen=True)
class Change:
    """A difference in ρ and how it is judged; `low`/`high` bound its 95 % interval when there is one."""

    delta: float
    low: float | None = None
    high: float | None = None
    verdict: str = UNCLEAR

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


def change_verdict(delta: float, low: float | None = None, high: float | None = None,
                   require_interval: bool = False) -> str:
    """'better' / 'worse' only when the interval excludes zero; without an interval, the sign of the point
    estimate, or 'no interval' when the caller has intervals elsewhere and must not claim a difference here."""
    if low is not None and high is not None:
        if low > 0:
            return BETTER
        if high < 0:
            return WORSE
        return UNCLEAR
    if require_interval:
        return NO_INTERVAL
    if delta > 0:
        return BETTER
    if delta < 0:
        return WORSE
    return UNCLEAR


def has_uncertainty(row: Mapping[str, Any], metric: str = "rho") -> bool:
    return all(to_float(row.get(f"delta_{metric}{suffix}")) is not None for suffix in ("", "_lo", "_hi"))


def _change(delta: float, low: float | None, high: float | None, require_interval: bool) -> Change:
    return Change(delta, low, high, change_verdict(delta, low, high, require_interval))


def is_pruned(row: Mapping[str, Any]) -> bool:
    return not is_reference(row) and str(row.get("pruning", "") or "").strip().lower() not in NO_PRUNING


def finetune_key(row: Mapping[str, Any], with_backend: bool = True) -> tuple[str, ...]:
    """The fine-tuned cell of a row (dataset, model, bits, epochs, training) and, unless `with_backend` is False, the
    backend that served it, so that a variant pairs with its parent as the same backend served it."""
    key = (str(row.get("dataset", "")), str(row.get("model", "")), bits_key(row.get("bits")),
           bits_key(row.get("epochs")), str(row.get("training", "")))
    return (*key, backend_of(row)) if with_backend else key


def variant_key(row: Mapping[str, Any], with_backend: bool = True) -> tuple[str, ...]:
    """The evaluated cell (its fine-tuned cell and post-training variant); without the backend, the key a row shares
    with the same cell served by every other backend."""
    return (*finetune_key(row, with_backend), str(row.get("pruning", "") or "").strip())


def parents_by_cell(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, ...], Mapping[str, Any]]:
    """The ok fine-tuned rows without a post-training variant (the parents of the variant rows), by fine-tuned cell
    and backend."""
    return {finetune_key(r): r for r in rows if is_ok(r) and not is_base_model(r) and not is_pruned(r)}


def pruning_pattern(row: Mapping[str, Any]) -> str:
    """'magnitude 2:4' with method 'magnitude' -> '2:4'."""
    label = str(row.get("pruning", "") or "").strip()
    method = str(row.get("pruning_method", "") or "").strip()
    if method and label.startswith(method):
        return label[len(method):].strip() or label
    return label


def pruning_impact(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Δρ of every evaluated pruned cell against its unpruned parent and against the base model.

    Against the base, a row with uncertainty fields (`delta_rho`, `_lo`, `_hi`, cell − base on the per-item ρ)
    gives the difference and its paired interval; otherwise Δρ is the difference of the tables' ρ, with no
    interval. Against the parent, `delta_parent_rho`, `_lo`, `_hi` (the paired bootstrap of cell − parent) when
    present; else the difference of the two cells' `delta_rho` when both have one (same scale as against the
    base), else of the tables' ρ. A row with uncertainty fields is never called better or worse without an
    interval.
    """
    ok = [row for row in rows if is_ok(row)]
    parents = parents_by_cell(ok)
    bases = {finetune_key(r)[:2]: r for r in ok if is_reference(r)}
    entries = []
    for row in ok:
        rho = to_float(row.get("rho"))
        if not is_pruned(row) or rho is None:
            continue
        strict = has_uncertainty(row)
        parent, base = parents.get(finetune_key(row)), bases.get(finetune_key(row)[:2])
        vs_base = vs_parent = None
        if strict:
            vs_base = _change(to_float(row["delta_rho"]) or 0.0, to_float(row["delta_rho_lo"]),
                              to_float(row["delta_rho_hi"]), True)
        elif base is not None and to_float(base.get("rho")) is not None:
            vs_base = _change(rho - (to_float(base.get("rho")) or 0.0), None, None, False)
        if has_uncertainty(row, "parent_rho"):
            vs_parent = _change(to_float(row["delta_parent_rho"]) or 0.0, to_float(row["delta_parent_rho_lo"]),
                                to_float(row["delta_parent_rho_hi"]), True)
        elif parent is not None and strict and to_float(parent.get("delta_rho")) is not None:
            delta = (to_float(row["delta_rho"]) or 0.0) - (to_float(parent.get("delta_rho")) or 0.0)
            vs_parent = _change(delta, None, None, True)
        elif parent is not None and to_float(parent.get("rho")) is not None:
            vs_parent = _change(rho - (to_float(parent.get("rho")) or 0.0), None, None, strict)
        entries.append({
            "dataset": str(row.get("dataset", "")), "model": str(row.get("model", "")),
            "bits": bits_key(row.get("bits")), "epochs": bits_key(row.get("epochs")),
            "method": str(row.get("pruning_method", "") or ""), "pattern": pruning_pattern(row),
            "pruning": str(row.get("pruning", "")), "vs_parent": vs_parent, "vs_base": vs_base,
            "precision": row.get("precision", ""), "sparse_training": row.get("sparse_training", ""),
            "backend": backend_of(row), "served": backend_tag(row),
        })  # fmt: skip
    datasets = datasets_in_order(entries)
    return sorted(entries, key=lambda e: (datasets.index(e["dataset"]), e["method"], e["pattern"],
                                          to_float(e["bits"]) or 0.0, to_float(e["epochs"]) or 0.0, e["model"],
                                          e["backend"] != REFERENCE_BACKEND, e["served"]))  # fmt: skip


def _draw_impact_axis(ax: Axes, entries: Sequence[Mapping[str, Any]], which: str) -> None:
    positions = list(range(len(entries)))
    for y, entry in zip(positions, entries, strict=True):
        change: Change | None = entry[which]
        if change is None:
            ax.text(0, y, "no parent row", fontsize=5.5, va="center", ha="left", color="#777777")
            continue
        ax.barh(y, change.delta, height=0.66, color=VERDICT_COLOURS[change.verdict],
                hatch=None if change.has_interval or change.verdict == NO_INTERVAL else "//////",
                edgecolor="white", linewidth=0)
        if change.has_interval:
            ax.errorbar(change.delta, y, xerr=[[change.delta - (change.low or 0.0)],
                                                [(change.high or 0.0) - change.delta]],
                        fmt="none", ecolor="#222222", elinewidth=0.7, capsize=1.5)
        end = max(change.delta, change.high or change.delta) if change.delta >= 0 else \
            min(change.delta, change.low or change.delta)
        ax.annotate(VERDICT_MARKS[change.verdict], (end, y), xytext=(3 if change.delta >= 0 else -3, 0),
                    textcoords="offset points", ha="left" if change.delta >= 0 else "right", va="center",
                    fontsize=6, color=VERDICT_COLOURS[change.verdict] if change.verdict != NO_INTERVAL else "#777777")
    for y in range(1, len(entries)):
        if entries[y]["method"] != entries[y - 1]["method"]:
            ax.axhline(y - 0.5, color="#888888", linewidth=0.5, linestyle=":")
    ax.axvline(0, color="#333333", linewidth=0.6)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.set_ylim(len(entries) - 0.5, -0.5)
    ax.margins(x=0.18)
    ax.grid(axis="x", linewidth=0.4, alpha=0.5)
    ax.set_axisbelow(True)


def _impact_label(entry: Mapping[str, Any], with_model: bool) -> str:
    prefix = f"{short_model(entry['model'])} " if with_model else ""
    label = f"{entry['pruning']} · {prefix}b{entry['bits']} e{entry['epochs']} {training_tag(entry)}".strip()
    return label + entry.get("served", "")


def _draw_impact(fig: Figure, entries: Sequence[Mapping[str, Any]]) -> None:
    datasets = datasets_in_order(entries)
    with_model = len({e["model"] for e in entries}) > 1
    counts = [sum(1 for e in entries if e["dataset"] == d) for d in datasets]
    axes = fig.subplots(len(datasets), 2, squeeze=False, sharey="row", gridspec_kw={"height_ratios": counts})
    for (parent_ax, base_ax), dataset in zip(axes, datasets, strict=True):
        mine = [e for e in entries if e["dataset"] == dataset]
        _draw_impact_axis(parent_ax, mine, "vs_parent")
        _draw_impact_axis(base_ax, mine, "vs_base")
        parent_ax.set_yticks(range(len(mine)), [_impact_label(e, with_model) for e in mine],
                             fontsize=6.5 if len(mine) <= 24 else 5.5)
        parent_ax.set_title(f"{dataset}: Δρ against the unpruned parent", loc="left")
        base_ax.set_title(f"{dataset}: Δρ against the base model", loc="left")
        base_ax.tick_params(axis="y", labelleft=False)
        for ax in (parent_ax, base_ax):
            ax.set_xlabel("Δρ")
    verdicts = {c.verdict for e in entries for c in (e["vs_parent"], e["vs_base"]) if c is not None}
    sign_only = any(c is not None and not c.has_interval and c.verdict != NO_INTERVAL
                    for e in entries for c in (e["vs_parent"], e["vs_base"]))
    handles = [Patch(color=VERDICT_COLOURS[v], label=f"{VERDICT_MARKS[v]} {v}")
               for v in (BETTER, WORSE, UNCLEAR, NO_INTERVAL) if v in verdicts]
    if sign_only:
        handles.append(Patch(facecolor="#bbbbbb", hatch="//////", edgecolor="white",
                             label="hatched: sign of the point estimate, no interval"))
    if any(c is not None and c.has_interval for e in entries for c in (e["vs_parent"], e["vs_base"])):
        handles.append(Line2D([], [], color="#222222", linewidth=0.7, label="95 % interval"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False)


def pruning_impact_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """Horizontal bars of Δρ per pruned cell against its unpruned parent and against the base model, grouped by
    method and pattern, coloured by verdict; one row of two panels per dataset."""
    entries = pruning_impact(rows)
    if not entries:
        return placeholder_svg("no pruned cells were evaluated")
    height = 1.1 + 0.17 * len(entries) + 0.5 * len(datasets_in_order(entries))
    return _render((FIG_WIDTH_IN, min(max(height, 2.4), MAX_HEIGHT_IN)), _draw_impact, entries)


# --- early exit along its thresholds -----------------------------------------------------------


def early_exit_curves(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per fine-tuned cell and exit setting (confidence measure, heads), its early-exit cells by threshold: ρ and
    energy per query at each, with the parent's (full depth) beside them."""
    ok = [r for r in rows if is_ok(r)]
    parents = parents_by_cell(ok)
    curves: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in ok:
        threshold = to_float(row.get("exit_threshold"))
        if threshold is None:
            continue
        measure, heads = str(row.get("exit_measure", "")), str(row.get("exit_heads", ""))
        parent = parents.get(finetune_key(row), {})
        curve = curves.setdefault((*finetune_key(row), measure, heads), {
            "dataset": str(row.get("dataset", "")), "model": str(row.get("model", "")),
            "label": f"{cell_label(parent or row)} · {measure}, {heads} heads", "bits": bits_key(row.get("bits")),
            "points": [], "parent_rho": to_float(parent.get("rho")), "parent_wh": to_float(parent.get("wh_per_query")),
        })  # fmt: skip
        curve["points"].append((threshold, to_float(row.get("rho")), to_float(row.get("wh_per_query"))))
    for curve in curves.values():
        curve["points"].sort()
    return list(curves.values())


def _draw_early_exit(fig: Figure, curves: Sequence[Mapping[str, Any]]) -> None:
    datasets = datasets_in_order(curves)
    axes = fig.subplots(len(datasets), 2, squeeze=False)
    handles = []
    for (rho_ax, energy_ax), dataset in zip(axes, datasets, strict=True):
        for index, curve in enumerate(c for c in curves if c["dataset"] == dataset):
            colour, style = bits_colour(curve["bits"]), LINESTYLES[index % len(LINESTYLES)]
            for ax, column, parent in ((rho_ax, 1, curve["parent_rho"]), (energy_ax, 2, curve["parent_wh"])):
                points = [(p[0], p[column]) for p in curve["points"] if p[column] is not None]
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3.5, color=colour,
                        linestyle=style, linewidth=1)  # fmt: skip
                if parent is not None:
                    ax.axhline(parent, color=colour, linestyle=style, linewidth=0.6, alpha=0.5)
            handles.append(Line2D([], [], color=colour, linestyle=style, marker="o", markersize=3.5,
                                  label=curve["label"]))  # fmt: skip
        rho_ax.set_title(f"{dataset}: ρ", loc="left")
        energy_ax.set_title(f"{dataset}: energy per query (Wh, real lengths)", loc="left")
        for ax in (rho_ax, energy_ax):
            ax.set_xlabel("exit threshold (1.0: no token exits)")
            ax.grid(linewidth=0.4, alpha=0.5)
    handles.append(Line2D([], [], color="#777777", linewidth=0.6, alpha=0.5, label="thin line: the parent at full "
                          "depth"))  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)


def early_exit_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """ρ and energy per query of each early-exit setting along its thresholds, its parent at full depth as a thin
    line; one row of two panels per dataset."""
    curves = early_exit_curves(rows)
    if not curves:
        return placeholder_svg("no early-exit cells were evaluated")
    height = 1.6 + 1.9 * len(datasets_in_order(curves)) + 0.16 * len(curves)
    return _render((FIG_WIDTH_IN, min(height, MAX_HEIGHT_IN)), _draw_early_exit, curves)


# --- energy-quality Pareto front --------------------------------------------------------------


# The Pareto front's energy axis: the ranking's cost, energy per query over the deployment (fine-tuning and preparing
# the model spread over Q queries, plus serving one query at the answers' real lengths).
PARETO_ENERGY_KEY = "deploy_wh_per_query"
PARETO_ENERGY_LABEL = "energy per query over the deployment (Wh, deploy_wh_per_query)"


def _energy_quality(row: Mapping[str, Any], energy_key: str = PARETO_ENERGY_KEY) -> tuple[float, float] | None:
    """(energy per query in `energy_key`, ρ) of an evaluated row that has both."""
    wh, rho = to_float(row.get(energy_key)), to_float(row.get("rho"))
    if not is_ok(row) or wh is None or rho is None or not math.isfinite(wh) or not math.isfinite(rho):
        return None
    return wh, rho


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[0] and a[1] >= b[1] and (a[0] < b[0] or a[1] > b[1])


def pareto_front(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The non-dominated evaluated cells (less `deploy_wh_per_query` is better, more rho is better), by increasing
    energy.

    A cell is dominated when another uses no more energy and reaches no lower ρ, and is strictly better in one of
    the two. Cells with identical energy and ρ do not dominate each other, so all of them stay. Failed cells and
    cells without both numbers are left out. Pass the rows of one dataset: ρ is not comparable across datasets.
    """
    points = [(point, row) for row in rows if (point := _energy_quality(row)) is not None]
    front = [(p, row) for p, row in points if not any(_dominates(other, p) for other, _ in points)]
    return [row for _, row in sorted(front, key=lambda item: (item[0][0], -item[0][1]))]


def pareto_fronts(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    return {d: pareto_front(r for r in rows if r.get("dataset", "") == d) for d in datasets_in_order(rows)}


def _draw_pareto_axis(ax: Axes, rows: Sequence[Mapping[str, Any]], with_model: bool) -> None:
    front = pareto_front(rows)
    on_front = {id(row) for row in front}
    for row in rows:
        point = _energy_quality(row)
        if point is None:
            continue
        reference, best = is_reference(row), id(row) in on_front
        colour = "black" if reference else bits_colour(row.get("bits"))
        ax.scatter([point[0]], [point[1]], marker="*" if reference else "o",
                   s=(120 if reference else 30 if best else 16), zorder=3 if best else 2,
                   facecolors=colour if best or reference else "none", edgecolors=colour,
                   linewidths=0.8, alpha=1.0 if best or reference else 0.7)
    xs = [_energy_quality(row)[0] for row in front]  # type: ignore[index]
    ys = [_energy_quality(row)[1] for row in front]  # type: ignore[index]
    ax.step(xs, ys, where="post", color="#333333", linewidth=1.0, zorder=1)
    # Front points rise left to right: alternating the label side keeps neighbours apart.
    for index, row in enumerate(front):
        above = index % 2 == 0
        ax.annotate(cell_label(row, with_model), (xs[index], ys[index]),
                    xytext=(-4, 5) if above else (4, -7), textcoords="offset points",
                    ha="right" if above else "left", va="bottom" if above else "top", fontsize=6,
                    fontweight="bold", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                                             "alpha": 0.8})
    log_x_when_wide(ax, [p[0] for row in rows if (p := _energy_quality(row)) is not None])
    ax.set_xlabel(PARETO_ENERGY_LABEL)
    ax.set_ylabel("ρ (quality)")
    ax.grid(linewidth=0.4, alpha=0.5)
    ax.margins(x=0.12, y=0.12)


def _draw_pareto(fig: Figure, rows: Sequence[Mapping[str, Any]]) -> None:
    dataset_panels(fig, rows, _draw_pareto_axis)
    handles = [Line2D([], [], linestyle="", marker="o", color=patch.get_facecolor(), label=patch.get_label())
               for patch in _bits_handles(r for r in rows if not is_reference(r))]
    handles += [
        Line2D([], [], linestyle="", marker="o", markerfacecolor="none", markeredgecolor="#555555",
               label="dominated"),
        Line2D([], [], color="#333333", linewidth=1.0, label="Pareto front (named cells)"),
    ]
    if any(is_reference(r) for r in rows):
        handles.append(Line2D([], [], linestyle="", marker="*", markersize=8, color="black", label="base model"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 7), frameon=False)


def log_x_when_wide(ax: Axes, values: Sequence[float]) -> None:
    """A log x axis, with plain-number ticks, when the (all positive) values span more than a decade."""
    if values and min(values) > 0 and spans_decades(values):
        ax.set_xscale("log")
        # Plain numbers (0.002) read better next to the tables' figures than 10^-3 powers.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_log_label))


def _minor_log_label(value: float, _pos: int | None = None) -> str:
    """Label the 2x and 5x minor ticks of a log axis, leave the rest blank."""
    if value <= 0:
        return ""
    mantissa = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if mantissa in (2.0, 5.0) else ""


def pareto_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """All evaluated cells by energy per query over the deployment and ρ; the non-dominated ones filled, joined by a
    step line and named; one panel per dataset."""
    selected = sorted((row for row in rows if _energy_quality(row) is not None), key=rank_key)
    if not selected:
        return placeholder_svg("no evaluated cells with a deployment energy per query and a quality figure")
    height = 0.6 + 3.0 * len(datasets_in_order(selected))
    return _render((FIG_WIDTH_IN, min(height, MAX_HEIGHT_IN)), _draw_pareto, selected)


# --- energy per query against quality, by inference backend ----------------------------------------------------

BACKEND_ENERGY_KEY = "wh_per_query"
BACKEND_ENERGY_LABEL = "energy per query (Wh, answers' real length)"
BACKEND_QUALITY_LABEL = "ρ (mean quality)"


def _serving_point(row: Mapping[str, Any]) -> tuple[float, float] | None:
    """(Wh per query at the answers' real lengths, ρ) of an evaluated row that has both."""
    return _energy_quality(row, BACKEND_ENERGY_KEY)


def bits_marker(bits: Any) -> str:
    return BITS_MARKERS.get(bits_key(bits), OTHER_MARKER)


def _draw_backends_axis(ax: Axes, rows: Sequence[Mapping[str, Any]], colours: Mapping[str, str]) -> None:
    points = {id(row): p for row in rows if (p := _serving_point(row)) is not None}
    # The same cell on several backends: a thin line joins its points, so each cell's move reads at a glance.
    cells: dict[tuple[str, ...], list[tuple[float, float]]] = {}
    for row in rows:
        cells.setdefault(variant_key(row, with_backend=False), []).append(points[id(row)])
    for joined in (sorted(p) for p in cells.values() if len(p) > 1):
        ax.plot([p[0] for p in joined], [p[1] for p in joined], color="#999999", linewidth=0.5, zorder=1)
    for row in rows:
        colour = colours[backend_of(row)]
        ax.scatter([points[id(row)][0]], [points[id(row)][1]], marker=bits_marker(row.get("bits")), s=26,
                   facecolors="none" if is_pruned(row) else colour, edgecolors=colour, linewidths=0.9, zorder=2)
    log_x_when_wide(ax, [p[0] for p in points.values()])
    ax.set_xlabel(BACKEND_ENERGY_LABEL)
    ax.set_ylabel(BACKEND_QUALITY_LABEL)
    ax.grid(linewidth=0.4, alpha=0.5)
    ax.margins(x=0.08, y=0.1)


def _draw_backends(fig: Figure, rows: Sequence[Mapping[str, Any]]) -> None:
    colours = backend_colours(rows)
    dataset_panels(fig, rows, lambda ax, mine, _with_model: _draw_backends_axis(ax, mine, colours))
    handles: list[Any] = [Patch(color=colour, label=backend) for backend, colour in colours.items()]
    present = sorted({bits_key(r.get("bits")) for r in rows}, key=lambda b: to_float(b) or 0.0)
    handles += [Line2D([], [], linestyle="", marker=bits_marker(bits), color="#555555", label=f"{bits}-bit")
                for bits in present]  # fmt: skip
    if any(is_pruned(r) for r in rows):
        handles.append(Line2D([], [], linestyle="", marker="o", markerfacecolor="none", markeredgecolor="#555555",
                              label="hollow: pruned"))  # fmt: skip
    if len({variant_key(r, with_backend=False) for r in rows}) < len(rows):
        handles.append(Line2D([], [], color="#999999", linewidth=0.5, label="line: one cell on each backend"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)


def backend_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The evaluated rows with an energy per query and a ρ, each backend's together, in report order."""
    keep = [row for row in rows if _serving_point(row) is not None]
    order = backends(keep)
    return sorted(keep, key=lambda row: (order.index(backend_of(row)), rank_key(row)))


def backend_energy_quality_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every evaluated cell by its energy per query at the answers' real lengths and its ρ: one colour per inference
    backend, the bits as marker shapes, pruned cells hollow, one cell's points on several backends joined; one panel
    per dataset."""
    selected = backend_rows(rows)
    if not selected:
        return placeholder_svg("no evaluated cells with an energy per query and a quality figure")
    height = 0.7 + 2.8 * len(datasets_in_order(selected))
    return _render((FIG_WIDTH_IN, min(height, MAX_HEIGHT_IN)), _draw_backends, selected)
