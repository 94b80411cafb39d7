"""How much of a quality difference or a ranking survives resampling the test items.

Only the test items are resampled: each bootstrap resample draws item indices with replacement, and the same indices
are used for a cell and its base model (a paired bootstrap) and for every metric. The quality intervals hold energy
fixed. The rank shares also redraw each cell's energy within the run's noise floor where one is given (two default
runs showed that a rank share over items alone, 99 % for one cell, did not survive a second run whose energies moved
within the floor).

Intervals are percentile intervals of the paired bootstrap of the difference of means, cell − base. An interval that
contains zero is never called an improvement.

Per item, ρ is the mean of that item's seven sentence-level scores (the ranking's ρ columns, joulebench.rank), and a
cell's ρ here is the mean of those per-item values, which equals the mean of the seven metric means. This differs from
the ρ in the ranked tables, which use corpus-level BLEU (n-gram counts pooled over the test set) rather than the mean
of sentence BLEU: the intervals and rank shares here are about per-item differences, not about the tables' exact
values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from joulebench.metrics import QUALITY_COLUMNS, RAW_QUALITY_COLUMNS
from joulebench.rank import rank_cells


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "no clear difference"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


@dataclass(frozen=True)
class CellSample:
    energy_kwh: float
    base_kwh: float
    item_rho: Sequence[float]
    # The noise floor of the cell's energy (max / min − 1 of repeated measurements of one cell); 0: held fixed.
    energy_floor: float = 0.0


# Every metric column that gets an interval: the headline columns, then the raw values the rescaled ones come from.
INTERVAL_COLUMNS = list(dict.fromkeys([*QUALITY_COLUMNS, *RAW_QUALITY_COLUMNS]))


def item_rho(scores: Mapping[str, Sequence[float]], columns: Sequence[str] = QUALITY_COLUMNS) -> list[float]:
    """Per item, the mean of its scores in `columns` (the ranking's ρ columns)."""
    return _item_rho_array(_columns(scores, "scores", columns), columns).tolist()


def paired_bootstrap(
    cell: Mapping[str, Sequence[float]],
    base: Mapping[str, Sequence[float]],
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    rho_columns: Sequence[str] = QUALITY_COLUMNS,
) -> dict[str, Interval]:
    """Cell − base difference of means with a paired percentile bootstrap interval, per metric and for "rho".

    Covers every metric of INTERVAL_COLUMNS present in both; "rho" (the mean over `rho_columns` of each metric's
    mean, as a cell's ρ is) is added when all of them are present in both. Items are aligned by position. An item
    without a value in a metric (NaN: an empty answer's BERTScore, say) leaves that metric's mean to the items that
    have one, in the cell and the base alike, as the cell's own figure does; each resample draws the same items for
    both, so the pairing holds.
    """
    _check_resampling(resamples)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    metrics = [name for name in INTERVAL_COLUMNS if name in cell and name in base]
    if not metrics:
        raise ValueError(f"cell and base share none of the quality metrics {', '.join(INTERVAL_COLUMNS)}")
    cell_scores = {name: _as_array(cell[name], f"cell {name}") for name in metrics}
    base_scores = {name: _as_array(base[name], f"base {name}") for name in metrics}
    n = len(cell_scores[metrics[0]])
    for name in metrics:
        if not len(cell_scores[name]) == len(base_scores[name]) == n:
            raise ValueError(
                f"{name}: {len(cell_scores[name])} cell scores, {len(base_scores[name])} base scores, "
                f"expected {n} of each (items are aligned by position)"
            )
    indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    whole = np.arange(n)[None, :]

    def difference(drawn: np.ndarray, names: Sequence[str]) -> np.ndarray:
        return np.mean([_drawn_means(cell_scores[m], drawn) for m in names], axis=0) - np.mean(
            [_drawn_means(base_scores[m], drawn) for m in names], axis=0)  # fmt: skip

    tail = (1 - confidence) / 2
    groups = {name: [name] for name in metrics}
    if all(name in cell_scores for name in rho_columns):
        groups["rho"] = list(rho_columns)
    intervals = {}
    for name, names in groups.items():
        estimate = float(difference(whole, names)[0])
        means = difference(indices, names)
        if not np.isfinite(estimate) or np.isnan(means).mean() > tail:
            continue  # too few items with a value on one side to say anything
        low, high = np.nanquantile(means, [tail, 1 - tail])
        intervals[name] = Interval(estimate, float(low), float(high))
    return intervals


def rank_stability(cells: Sequence[CellSample], w: float, resamples: int = 1000, seed: int = 0) -> list[float]:
    """Share of resamples in which each cell ranks first (ties at rank 1 count for every tied cell). Each resample
    draws the test items with replacement and, for a cell with an `energy_floor` f, multiplies its energy by
    exp(u), u uniform in ±log(1 + f) / 2: two draws of one cell then differ by at most the floor, as two
    measurements of one cell did."""
    _check_resampling(resamples)
    for i, cell in enumerate(cells):
        if not cell.energy_floor >= 0:
            raise ValueError(f"cell {i} has energy_floor {cell.energy_floor}: it must be >= 0")
    if not cells:
        return []
    rhos = [_as_array(cell.item_rho, f"cell {i} item_rho") for i, cell in enumerate(cells)]
    n = len(rhos[0])
    for i, values in enumerate(rhos):
        if len(values) != n:
            raise ValueError(f"cell {i} has {len(values)} item ρ values, cell 0 has {n}: all must share the same items")
    indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    resampled = np.stack([_drawn_means(values, indices) for values in rhos], axis=1)
    half_widths = np.log1p([cell.energy_floor for cell in cells]) / 2
    drift = np.exp(np.random.default_rng(seed + 1).uniform(-half_widths, half_widths, size=(resamples, len(cells))))
    energies = drift * [cell.energy_kwh for cell in cells]
    base = [cell.base_kwh for cell in cells]
    firsts = np.zeros(len(cells))
    for row, cell_energies in zip(resampled, energies, strict=True):
        ranked = rank_cells(cell_energies.tolist(), base, row.tolist(), w)
        firsts += [r.rank == 1 for r in ranked]
    return (firsts / resamples).tolist()


def _columns(scores: Mapping[str, Sequence[float]], what: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    for name in names:
        if name not in scores:
            raise ValueError(f"{what} lack the quality metric {name}")
    columns = {name: _as_array(scores[name], f"{what} {name}") for name in names}
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        counts = ", ".join(f"{name} {len(values)}" for name, values in columns.items())
        raise ValueError(f"{what} have different numbers of items per metric: {counts}")
    return columns


def _drawn_means(scores: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """Per draw (a row of item indices), the mean over the drawn items that have a value (NaN: none has)."""
    values = scores[drawn]
    counts = np.sum(~np.isnan(values), axis=1)
    return np.where(counts > 0, np.nansum(values, axis=1) / np.maximum(counts, 1), np.nan)


def _item_rho_array(columns: Mapping[str, np.ndarray], names: Sequence[str] = QUALITY_COLUMNS) -> np.ndarray:
    """Per item, the mean of its scores over the metrics that have a value for it (NaN: none has)."""
    stacked = np.array([columns[name] for name in names])
    counts = np.sum(~np.isnan(stacked), axis=0)
    return np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what}: expected a non-empty list of per-item scores, got shape {array.shape}")
    if np.isinf(array).any() or np.isnan(array).all():
        raise ValueError(f"{what}: per-item scores must be finite (NaN: an item without a value), and not all NaN")
    return array


def _check_resampling(resamples: int) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
