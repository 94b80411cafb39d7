"""Lifecycle carbon of a cell, and the paper's table of an optimised cell against a baseline.

Narsepalle's lifecycle carbon is Σ over stages of (energy of the stage × the emission factor of the stage): building
the base model, fine-tuning it, compressing it, and serving the expected volume of queries. A cell's inference energy
per query is tiny beside its fine-tuning energy, but it is paid once per query: at deployment volumes it can
dominate, so which cell is "greener" depends on the query volume, which is therefore a setting, not a constant.

Every energy here is what the meters measured (or estimated: the `<component>_source` columns say which), in kWh.
An emission factor left unset (None) is the one the cell's own run measured: its emissions over its energy
(grid intensity × PUE), so a stage without a configured factor is charged as the run itself was.

Rows may be the typed rows of `joulebench.summary` or the strings of `summary.json` as the report reads them: every
number is parsed, and a missing one stays None (shown blank) rather than failing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from joulebench.backends.base import REFERENCE_BACKEND
from joulebench.energy.core import COMPONENTS, is_estimate
from joulebench.summary import to_float

STAGES = ("build", "finetune", "compress", "inference")
STAGE_NAMES = {
    "build": "build (pre-training the base model)",
    "finetune": "fine-tuning",
    "compress": "compression (merge, prune, exit heads)",
    "inference": "inference",
}
# build is counted where it was recorded: a hub model's pre-training happened elsewhere, its energy is unknown.
REQUIRED_STAGES = ("finetune", "compress", "inference")
BASELINE_KEYS = ("model", "bits", "epochs", "precision", "sparse_training")
# An empty precision / sparse_training column is the default variant: summaries from before those axes existed.
DEFAULT_PRECISION = "32-true"
DEFAULT_SPARSE_TRAINING = "dense"
MEASURED = "measured for the cell"
CONFIGURED = "configured"


def _number(value: Any) -> float | None:
    """A summary value as a float; blank, boolean, non-numeric, NaN and infinite values are None."""
    number = None if isinstance(value, bool) else to_float(value)
    return number if number is not None and math.isfinite(number) else None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _is_ok(row: Mapping[str, Any]) -> bool:
    return _text(row.get("status")) == "ok"


@dataclass(frozen=True)
class LifecycleSettings:
    """`lifecycle` in the config: the query volume, per-stage emission factors and which cell is the baseline."""

    queries: int = 1_000_000
    emission_factors_g_per_kwh: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(STAGES))
    baseline: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, lifecycle: Mapping[str, Any] | None) -> LifecycleSettings:
        """Checked here as well as by the schema: a misspelt stage would otherwise silently fall back to the
        measured factor."""
        lifecycle = dict(lifecycle or {})
        if extra := sorted(set(lifecycle) - {"queries", "emission_factors_g_per_kwh", "baseline"}):
            raise ValueError(f"lifecycle: unknown key {', '.join(extra)}")
        queries = lifecycle.get("queries", 1_000_000)
        if isinstance(queries, bool) or not isinstance(queries, int) or queries < 0:
            raise ValueError(f"lifecycle.queries must be a whole number >= 0, got {queries!r}")
        given = dict(lifecycle.get("emission_factors_g_per_kwh") or {})
        if extra := sorted(set(given) - set(STAGES)):
            raise ValueError(f"lifecycle.emission_factors_g_per_kwh: unknown stage {', '.join(extra)}")
        factors: dict[str, float | None] = {}
        for stage in STAGES:
            value = given.get(stage)
            if value is not None and (_number(value) is None or float(value) < 0):
                raise ValueError(f"lifecycle.emission_factors_g_per_kwh.{stage} must be a number >= 0 or null")
            factors[stage] = None if value is None else float(value)
        baseline = dict(lifecycle.get("baseline") or {})
        if extra := sorted(set(baseline) - set(BASELINE_KEYS)):
            raise ValueError(f"lifecycle.baseline: unknown key {', '.join(extra)}; allowed: {', '.join(BASELINE_KEYS)}")
        return cls(queries=queries, emission_factors_g_per_kwh=factors, baseline=baseline)


@dataclass(frozen=True)
class StageCarbon:
    """One stage of one cell: its energy, the factor applied and where that factor came from, and the product."""

    stage: str
    kwh: float | None
    g_per_kwh: float | None
    factor_source: str
    kg: float | None


@dataclass(frozen=True)
class Lifecycle:
    """A cell's stages and their sums; None where a required stage's energy or any counted stage's factor is
    missing (never a partial sum shown as the whole)."""

    stages: tuple[StageCarbon, ...]
    kwh: float | None
    kg: float | None
    inference_share: float | None

    def stage(self, name: str) -> StageCarbon:
        return next(s for s in self.stages if s.stage == name)

    def columns(self) -> dict[str, float]:
        """The summary columns, those with a value only (a missing one is a blank cell of summary.csv)."""
        values: dict[str, float | None] = {f"lifecycle_{s.stage}_kwh": s.kwh for s in self.stages}
        values.update(lifecycle_kwh=self.kwh, lifecycle_kg=self.kg, lifecycle_inference_share=self.inference_share)
        return {key: value for key, value in values.items() if value is not None}


LIFECYCLE_COLUMNS = [
    *(f"lifecycle_{stage}_kwh" for stage in STAGES), "lifecycle_kwh", "lifecycle_kg", "lifecycle_inference_share",
]  # fmt: skip


def measured_factor_g_per_kwh(row: Mapping[str, Any]) -> float | None:
    """The factor the cell's run applied: its emissions over its energy (grid intensity × PUE), in g CO2e/kWh."""
    emissions, total = _number(row.get("emissions_kg")), _number(row.get("total_kwh"))
    if emissions is None or not total:
        return None
    return emissions / total * 1000


def stage_kwh(row: Mapping[str, Any], queries: int) -> dict[str, float | None]:
    """Energy per stage, kWh: inference scales the measured energy per query at the answers' real lengths
    (`wh_per_query`, answer passes that stop at end-of-sequence) to `queries`."""
    per_query_wh = _number(row.get("wh_per_query"))
    return {
        "build": _number(row.get("build_kwh")),
        "finetune": _number(row.get("train_kwh")),
        "compress": _number(row.get("prepare_kwh")),
        "inference": None if per_query_wh is None else per_query_wh * queries / 1000,
    }


def lifecycle_of(row: Mapping[str, Any], settings: LifecycleSettings) -> Lifecycle:
    """Σ over stages of energy × factor; a stage without recorded energy (build, for a hub model) is not counted."""
    measured = measured_factor_g_per_kwh(row)
    energies = stage_kwh(row, settings.queries)
    stages = []
    for stage in STAGES:
        configured = settings.emission_factors_g_per_kwh.get(stage)
        factor, source = (configured, CONFIGURED) if configured is not None else (measured, MEASURED)
        kwh = energies[stage]
        kg = None if kwh is None or factor is None else kwh * factor / 1000
        stages.append(StageCarbon(stage, kwh, factor, source, kg))
    total_kwh = total_kg = None
    if all(energies[stage] is not None for stage in REQUIRED_STAGES):
        counted = [s for s in stages if s.kwh is not None]
        total_kwh = sum(s.kwh for s in counted if s.kwh is not None)
        kgs = [s.kg for s in counted if s.kg is not None]
        total_kg = sum(kgs) if len(kgs) == len(counted) else None
    inference = energies["inference"]
    share = inference / total_kwh if total_kwh and inference is not None else None
    return Lifecycle(tuple(stages), total_kwh, total_kg, share)


def add_lifecycle(rows: Sequence[dict[str, Any]], settings: LifecycleSettings) -> None:
    """Adds `lifecycle_kwh`, `lifecycle_kg`, `lifecycle_inference_share` and `lifecycle_<stage>_kwh` to each ok row
    (failed rows have no energy to sum)."""
    for row in rows:
        if _is_ok(row):
            row.update(lifecycle_of(row, settings).columns())


# --- the paper's table: optimised against baseline ------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """One row of the comparison: which way is better, so a change can be read without knowing the metric."""

    key: str
    name: str
    unit: str
    better: str  # "lower" or "higher"


def measures(queries: int) -> tuple[Measure, ...]:
    return (
        Measure("train_wall_s", "training time", "s", "lower"),
        Measure("peak_mem_mb", "peak memory (evaluation)", "MB", "lower"),
        Measure("model_size_mb", "model size", "MB", "lower"),
        Measure("batch_latency_s", "inference time per batch (tokens pinned)", "s", "lower"),
        Measure("ttft_s", "time to first token (batch 1)", "s", "lower"),
        Measure("tpot_s", "time per output token (batch 1)", "s", "lower"),
        Measure("train_kwh", "energy: fine-tuning", "kWh", "lower"),
        Measure("wh_per_query", "energy: inference per query (real answer lengths)", "Wh", "lower"),
        Measure("lifecycle_kwh", f"energy: lifecycle at {queries:,} queries", "kWh", "lower"),
        Measure("lifecycle_kg", "carbon: lifecycle", "kg CO₂e", "lower"),
        Measure("accuracy", "accuracy", "", "higher"),
        Measure("auc_roc", "AUC-ROC", "", "higher"),
    )


def _value(row: Mapping[str, Any], key: str, lifecycle: Lifecycle) -> float | None:
    if key == "lifecycle_kwh":
        return lifecycle.kwh
    if key == "lifecycle_kg":
        return lifecycle.kg
    return _number(row.get(key))


def change_pct(baseline: float | None, optimised: float | None) -> float | None:
    """(optimised − baseline) / baseline in %; None when either is missing or the baseline is 0 (no finite %)."""
    if baseline is None or optimised is None or baseline == 0:
        return None
    return (optimised - baseline) / abs(baseline) * 100


def _improved(change: float | None, better: str) -> bool | None:
    if change is None or change == 0:
        return None
    return (change < 0) == (better == "lower")


def _matches(row: Mapping[str, Any], key: str, wanted: Any) -> bool:
    if key in ("bits", "epochs"):
        return _number(row.get(key)) == _number(wanted)
    defaults = {"precision": DEFAULT_PRECISION, "sparse_training": DEFAULT_SPARSE_TRAINING}
    return (_text(row.get(key)) or defaults.get(key, "")) == _text(wanted)


def find_baseline(
    rows: Sequence[Mapping[str, Any]], settings: LifecycleSettings, dataset: str, prefer_model: str = ""
) -> Mapping[str, Any] | None:
    """The ok, fine-tuned, unpruned cell matching `settings.baseline`. Filters apply in turn (model, precision,
    sparse training, bits, epochs), an unset bits or epochs taking the largest left, so that one failed cell of the
    grid narrows the choice instead of leaving no baseline. Several models: `prefer_model` (the optimised cell's),
    so that the comparison is within one model."""
    chosen = dict(settings.baseline)
    chosen.setdefault("precision", DEFAULT_PRECISION)
    chosen.setdefault("sparse_training", DEFAULT_SPARSE_TRAINING)
    left = [
        row for row in rows
        if _text(row.get("dataset")) == dataset and _is_ok(row) and _number(row.get("epochs"))
        and _text(row.get("pruning")) == "none" and _text(row.get("backend")) in ("", REFERENCE_BACKEND)
    ]  # fmt: skip
    if "model" not in chosen and any(_text(row.get("model")) == prefer_model for row in left):
        chosen["model"] = prefer_model
    for key in ("model", "precision", "sparse_training", "bits", "epochs"):
        if key in chosen:
            left = [row for row in left if _matches(row, key, chosen[key])]
        elif key in ("bits", "epochs"):
            present = [n for n in (_number(row.get(key)) for row in left) if n is not None]
            left = [row for row in left if present and _number(row.get(key)) == max(present)]
    return left[0] if left else None


def find_optimised(rows: Sequence[Mapping[str, Any]], dataset: str) -> Mapping[str, Any] | None:
    """The ok cell ranked first by R on the dataset."""
    return next((row for row in rows if _text(row.get("dataset")) == dataset and _is_ok(row)
                 and _number(row.get("rank")) == 1), None)  # fmt: skip


def describe_cell(row: Mapping[str, Any]) -> dict[str, Any]:
    """What distinguishes the cell, and which of its energy figures are estimates rather than counter readings."""
    pruning = _text(row.get("pruning"))
    early_exit = _text(row.get("early_exit"))
    sources = {c: _text(row.get(f"{c}_source")) for c in COMPONENTS}
    return {
        "model": _text(row.get("model")),
        "served_as": " ".join(filter(None, (_text(row.get("backend")), _text(row.get("format"))))),
        "bits": _text(row.get("bits")),
        "epochs": _text(row.get("epochs")),
        "precision": _text(row.get("precision")) or DEFAULT_PRECISION,
        "sparse_training": _text(row.get("sparse_training")) or DEFAULT_SPARSE_TRAINING,
        "pruning": pruning,
        "early_exit": early_exit if early_exit != pruning else "",
        "mean_exit_layer": _number(row.get("mean_exit_layer")),
        "rank": _number(row.get("rank")),
        "score": _number(row.get("score")),
        "rho": _number(row.get("rho")),
        "sources": sources,
        "estimated": [c for c, source in sources.items() if source and is_estimate(source)],
    }


def optimised_vs_baseline(
    rows: Sequence[Mapping[str, Any]], settings: LifecycleSettings, dataset: str
) -> dict[str, Any] | None:
    """The paper's table for one dataset: baseline and optimised values of each measure, the change in %, which way
    is better, and both cells' lifecycle stages. None when the dataset has no rank-1 cell or no matching baseline."""
    optimised = find_optimised(rows, dataset)
    if optimised is None:
        return None
    baseline = find_baseline(rows, settings, dataset, _text(optimised.get("model")))
    if baseline is None:
        return None
    cycles = {"baseline": lifecycle_of(baseline, settings), "optimised": lifecycle_of(optimised, settings)}
    table = []
    for measure in measures(settings.queries):
        before = _value(baseline, measure.key, cycles["baseline"])
        after = _value(optimised, measure.key, cycles["optimised"])
        change = change_pct(before, after)
        table.append({"key": measure.key, "name": measure.name, "unit": measure.unit, "better": measure.better,
                      "baseline": before, "optimised": after, "change_pct": change,
                      "improved": _improved(change, measure.better)})  # fmt: skip
    return {
        "dataset": dataset,
        "queries": settings.queries,
        "same_cell": baseline is optimised,
        "baseline": describe_cell(baseline),
        "optimised": describe_cell(optimised),
        "baseline_row": baseline,
        "optimised_row": optimised,
        "measures": table,
        "lifecycle": cycles,
    }
