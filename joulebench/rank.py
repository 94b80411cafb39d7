"""The paper's ranking R = w·φ + (1−w)·ρ, with the normalisation written down.

For every evaluated cell i of one dataset (the base model excluded, it is the reference):
- E_i  = energy of the cell: fine-tuning + inference over the test set, kWh (the base: inference only).
- φ_i  = E_base / E_i — energy efficiency against the base model of the same dataset and model; 1 means as costly
         as running the base model on the test set, below 1 costlier.
- ρ_i  = mean of the quality metrics (BLEU, ROUGE-1, ROUGE-2, ROUGE-L, METEOR, BERTScore F1, cosine), each in [0, 1].
- R_i  = w·φ_i/max_j φ_j + (1−w)·ρ_i/max_j ρ_j over the ranked cells j of that dataset: both terms are divided by
         their best value, so each lies in (0, 1], 1 for the best cell, and ratios between cells are preserved.
Rank 1 is the highest R; ties share the better rank. The top k cells by R are the ones the paper sends to pruning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

QUALITY_FOR_RHO = ("bleu", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1", "cosine")

RANKING_NOTE = (
    "R = w·φ/max φ + (1−w)·ρ/max ρ over the ranked cells of a dataset. φ = E_base / E_cell, where E_cell is the "
    "cell's fine-tuning plus test-set inference energy and E_base the base model's test-set inference energy "
    "(φ = 1: as costly as the base model). ρ = mean of BLEU, ROUGE-1, ROUGE-2, ROUGE-L, METEOR, BERTScore F1 and "
    "cosine similarity, each in [0, 1]. Dividing by the best value keeps both terms in (0, 1] and preserves ratios."
)


@dataclass(frozen=True)
class Ranked:
    phi: float
    rho: float
    score: float
    rank: int


def rho(quality: dict[str, float]) -> float:
    return sum(quality[name] for name in QUALITY_FOR_RHO) / len(QUALITY_FOR_RHO)


def phi(cell_kwh: float, base_kwh: float) -> float:
    if cell_kwh <= 0:
        raise ValueError(f"a cell's energy must be positive to rank it, got {cell_kwh} kWh")
    return base_kwh / cell_kwh


def rank_cells(
    energies_kwh: Sequence[float], base_kwh: Sequence[float], rhos: Sequence[float], w: float
) -> list[Ranked]:
    """Rank cells from each one's energy E_i, its base model's energy and its quality ρ_i."""
    if not 0 <= w <= 1:
        raise ValueError(f"w must lie in [0, 1], got {w}")
    if not len(energies_kwh) == len(base_kwh) == len(rhos):
        raise ValueError(f"{len(energies_kwh)} energies, {len(base_kwh)} base energies, {len(rhos)} quality values")
    if not energies_kwh:
        return []
    phis = [phi(e, b) for e, b in zip(energies_kwh, base_kwh, strict=True)]
    best_phi, best_rho = max(phis), max(rhos)
    scores = [
        w * p / best_phi + (1 - w) * (r / best_rho if best_rho > 0 else 0.0) for p, r in zip(phis, rhos, strict=True)
    ]
    ordered = sorted(scores, reverse=True)
    return [Ranked(p, r, s, ordered.index(s) + 1) for p, r, s in zip(phis, rhos, scores, strict=True)]

