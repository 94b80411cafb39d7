"""The ranking R = w·φ + (1−w)·ρ, with every term written down.

For every evaluated cell i of one dataset (the base model excluded, it is the reference):
- C_i  = the cell's cost. By default (`ranking.energy: deployment`) its energy per query over a deployment of Q
         queries: `deploy_wh_per_query` = (fine-tuning + prepare energy) / Q + its energy per query at the answers'
         real lengths (an answer pass, stopping at end-of-sequence). The base model is not fine-tuned: its cost is
         its prepare energy / Q + its energy per query. Q is `ranking.queries` (default: `lifecycle.queries`).
         `ranking.energy: paper-literal` is the paper's own reading: C_i = fine-tuning + prepare + one pass over the
         test prompts (tokens pinned), kWh, against the base model's prepare + one pass; it depends on the size of
         the test set and charges the one-off fine-tuning to every pass.
- φ_i  = C_base / C_i: energy efficiency against the base model of the same dataset and model (1: as costly as the
         base model; below 1: costlier).
- ρ_i  = the mean of the quality metrics (`RHO_COLUMNS`): by default (`ranking.rho: rescaled`) BLEU (sacrebleu),
         ROUGE-1, ROUGE-2, ROUGE-L, METEOR, and BERTScore F1 and cosine similarity rescaled against their
         random-pair floor of the test set; `ranking.rho: plain` is the paper's plain mean of the raw values.
         A metric without a value (joulebench.metrics: every answer empty, no floor, ...) is never replaced by 0 and
         ρ is never a mean of the others: the cell has no ρ and is not ranked, and `rho_note` says why. A metric
         whose mean covers fewer items than the test set (an empty answer has no embedding value) still counts; the
         row's `quality_note` says over how many.
- R_i  = w·φ_i/max_j φ_j + (1−w)·ρ_i/max_j ρ_j over the ranked cells j of that dataset: both terms are divided by
         their best value (1 for the best cell) and ratios between cells are preserved.
Rank 1 is the highest R; ties share the better rank. The top k cells by R are the ones the paper sends to pruning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from joulebench.backends.base import REFERENCE_BACKEND
from joulebench.metrics import QUALITY_COLUMNS, RAW_QUALITY_COLUMNS

DEPLOYMENT, PAPER_LITERAL = "deployment", "paper-literal"
ENERGY_MODES = (DEPLOYMENT, PAPER_LITERAL)
RESCALED, PLAIN = "rescaled", "plain"
RHO_COLUMNS = {RESCALED: tuple(QUALITY_COLUMNS), PLAIN: tuple(RAW_QUALITY_COLUMNS)}
SENSITIVITY_QUERIES = (1_000, 1_000_000, 1_000_000_000)
SENSITIVITY_W = (0.3, 0.5, 0.7, 0.9)
# The summary column that holds each mode's cost, and its unit.
COST_COLUMN = {DEPLOYMENT: "deploy_wh_per_query", PAPER_LITERAL: "total_kwh"}


@dataclass(frozen=True)
class RankingSettings:
    """`w` and the `ranking` section of the config; `queries` falls back to `lifecycle.queries`."""

    w: float = 0.7
    queries: int = 1_000_000
    energy: str = DEPLOYMENT
    rho: str = RESCALED

    def __post_init__(self) -> None:
        if not 0 <= self.w <= 1:
            raise ValueError(f"w must lie in [0, 1], got {self.w}")
        if self.queries < 1:
            raise ValueError(f"ranking.queries must be at least 1, got {self.queries}")
        if self.energy not in ENERGY_MODES:
            raise ValueError(f"ranking.energy must be one of {', '.join(ENERGY_MODES)}, got {self.energy!r}")
        if self.rho not in RHO_COLUMNS:
            raise ValueError(f"ranking.rho must be one of {', '.join(RHO_COLUMNS)}, got {self.rho!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RankingSettings:
        ranking = dict(config.get("ranking") or {})
        lifecycle = dict(config.get("lifecycle") or {})
        queries = ranking.get("queries")
        if queries is None:
            queries = lifecycle.get("queries", cls.queries)
        return cls(
            w=float(config.get("w", cls.w)),
            queries=int(queries),
            energy=str(ranking.get("energy", cls.energy)),
            rho=str(ranking.get("rho", cls.rho)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def cost_column(self) -> str:
        return COST_COLUMN[self.energy]


@dataclass(frozen=True)
class Ranked:
    phi: float
    rho: float
    score: float
    rank: int


def rho(quality: Mapping[str, Any], mode: str = RESCALED) -> float | None:
    """The mean of the mode's quality columns; None when one of them has no value (never a mean of fewer)."""
    values = [quality.get(name) for name in RHO_COLUMNS[mode]]
    if any(value is None for value in values):
        return None
    return sum(float(v) for v in values) / len(values)  # type: ignore[arg-type]


def rho_note(quality: Mapping[str, Any], mode: str = RESCALED, skipped: Mapping[str, str] | None = None) -> str:
    """Why `rho` gives no value (the mode's columns without one, each with its reason); "" when it gives one."""
    missing = [name for name in RHO_COLUMNS[mode] if quality.get(name) is None]
    if not missing:
        return ""
    reasons: dict[str, list[str]] = {}
    for name in missing:
        reasons.setdefault((skipped or {}).get(name, "no value recorded"), []).append(name)
    return "no ρ, so not ranked: " + "; ".join(f"{', '.join(names)}: {why}" for why, names in reasons.items())


def deploy_wh_per_query(one_off_kwh: float, wh_per_query: float, queries: int) -> float:
    """Energy per query over a deployment of `queries` queries: the one-off energy (fine-tuning, preparing the
    model) spread over them, plus the energy of serving one query."""
    if queries < 1:
        raise ValueError(f"a deployment needs at least one query, got {queries}")
    return one_off_kwh * 1000 / queries + wh_per_query


def phi(cell_cost: float, base_cost: float) -> float:
    if cell_cost <= 0:
        raise ValueError(f"a cell's cost must be positive to rank it, got {cell_cost}")
    return base_cost / cell_cost


def rank_cells(costs: Sequence[float], base_costs: Sequence[float], rhos: Sequence[float], w: float) -> list[Ranked]:
    """Rank cells from each one's cost C_i, its base model's cost and its quality ρ_i."""
    if not 0 <= w <= 1:
        raise ValueError(f"w must lie in [0, 1], got {w}")
    if not len(costs) == len(base_costs) == len(rhos):
        raise ValueError(f"{len(costs)} costs, {len(base_costs)} base costs, {len(rhos)} quality values")
    if not costs:
        return []
    phis = [phi(c, b) for c, b in zip(costs, base_costs, strict=True)]
    best_phi, best_rho = max(phis), max(rhos)
    scores = [
        w * p / best_phi + (1 - w) * (r / best_rho if best_rho > 0 else 0.0) for p, r in zip(phis, rhos, strict=True)
    ]
    ordered = sorted(scores, reverse=True)
    return [Ranked(p, r, s, ordered.index(s) + 1) for p, r, s in zip(phis, rhos, scores, strict=True)]


def _queries(value: int) -> str:
    return f"{value:,}"


def rho_definition(mode: str) -> str:
    if mode == PLAIN:
        return ("ρ = the plain mean of BLEU, ROUGE-1, ROUGE-2, ROUGE-L, METEOR, BERTScore F1 and cosine similarity, "
                "each as scored, BERTScore and cosine not rescaled (ranking.rho: plain, the paper's reading)")
    return ("ρ = the mean of BLEU (sacrebleu, in [0, 1]), ROUGE-1, ROUGE-2, ROUGE-L, METEOR, BERTScore F1 and cosine "
            "similarity, the last two rescaled against their floor, the mean score of random (answer, reference) "
            "pairs of the same test set: (s − floor) / (1 − floor), 0 at chance, below 0 worse "
            "(ranking.rho: rescaled; plain: the paper's mean of the raw values)")  # fmt: skip


def ranking_note(settings: RankingSettings) -> str:
    """Exactly what the code computes, with this run's values of w and Q."""
    if settings.energy == PAPER_LITERAL:
        cost = ("φ = E_base / E_cell, where E_cell = the cell's fine-tuning + prepare (load, merge, prune, quantize) "
                "+ one pass over the test prompts (tokens pinned), kWh, and E_base = the base model's prepare + one "
                "pass (ranking.energy: paper-literal, the paper's reading: it charges the one-off fine-tuning to "
                "every pass and changes with the size of the test set)")  # fmt: skip
    else:
        cost = (f"φ = C_base / C_cell, where C = deploy_wh_per_query = (fine-tuning + prepare energy) / Q + the "
                f"energy per query of an answer pass that stops at end-of-sequence, Q = {_queries(settings.queries)} "
                "queries (ranking.queries; lifecycle.queries unless set); the base model is not fine-tuned, so "
                "C_base = its prepare energy / Q + its energy per query (ranking.energy: deployment)")  # fmt: skip
    return (f"R = w·φ/max φ + (1−w)·ρ/max ρ over the ranked cells of a dataset, w = {settings.w:g}. {cost}. "
            f"{rho_definition(settings.rho)}. Dividing by the best value makes the best cell's term 1 and keeps the "
            "ratios between cells.")  # fmt: skip


# --- ranking summary rows -------------------------------------------------------------------------------------


def _base_key(row: Mapping[str, Any]) -> tuple[Any, Any]:
    return row["dataset"], row["model"]


def cost(row: Mapping[str, Any], settings: RankingSettings, queries: int | None = None) -> float | None:
    """The row's cost C in the settings' mode; `queries` replaces Q (the sensitivity table). None when a term is
    missing."""
    if settings.energy == PAPER_LITERAL:
        return row.get("total_kwh")
    one_off = [row.get("train_kwh", 0.0) or 0.0, row.get("prepare_kwh")]
    per_query = row.get("wh_per_query")
    if per_query is None or one_off[1] is None:
        return None
    return deploy_wh_per_query(sum(one_off), per_query, queries or settings.queries)


def _rankable(row: Mapping[str, Any]) -> bool:
    return row["status"] == "ok" and row.get("rho") is not None


def _tuned(row: Mapping[str, Any]) -> bool:
    """A fine-tuned cell, on any backend (the base model, on whichever backend, is not ranked)."""
    return int(row["epochs"]) > 0


def _base_costs(rows: Sequence[Mapping[str, Any]], settings: RankingSettings,
               queries: int | None = None) -> dict[tuple[Any, Any], float | None]:  # fmt: skip
    """Each base model's cost (the reference row of its dataset and model), the denominator of φ."""
    return {_base_key(r): cost(r, settings, queries) for r in rows if r["is_reference"] and _rankable(r)}


def rank_rows(
    rows: Sequence[Mapping[str, Any]], settings: RankingSettings, w: float | None = None, queries: int | None = None
) -> dict[int, Ranked]:
    """R of every ok tuned row, per dataset, keyed by the row's position in `rows`; `w` and `queries` replace the
    settings' values (the sensitivity tables)."""
    w = settings.w if w is None else w
    bases = _base_costs(rows, settings, queries)
    ranked: dict[int, Ranked] = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        chosen = [
            (index, r, c) for index, r in enumerate(rows)
            if r["dataset"] == dataset and _tuned(r) and _rankable(r)
            and bases.get(_base_key(r)) is not None and (c := cost(r, settings, queries)) is not None
        ]  # fmt: skip
        results = rank_cells([c for _, _, c in chosen], [bases[_base_key(r)] for _, r, _ in chosen],  # type: ignore[misc]
                             [r["rho"] for _, r, _ in chosen], w)  # fmt: skip
        ranked.update({index: result for (index, _, _), result in zip(chosen, results, strict=True)})
    return ranked


def add_ranking(rows: Sequence[dict[str, Any]], settings: RankingSettings, k: int) -> dict[str, dict[str, Any]]:
    """`deploy_wh_per_query` of every ok row; the final rank over all tuned cells of a dataset; the fine-tune rank
    over its unpruned cells, which picks the top k. Returns, per dataset, the terms of R (w, Q, the modes, each
    model's base cost, max φ and max ρ), for the notes under the report's tables."""
    for r in rows:
        if r["status"] == "ok" and r.get("wh_per_query") is not None and r.get("prepare_kwh") is not None:
            r["deploy_wh_per_query"] = deploy_wh_per_query(
                (r.get("train_kwh") or 0.0) + r["prepare_kwh"], r["wh_per_query"], settings.queries
            )
        if r["is_reference"] and r["status"] == "ok":
            r["phi"] = 1.0
    for index, result in rank_rows(rows, settings).items():
        rows[index].update(phi=result.phi, score=result.score, rank=result.rank)
    bases = _base_costs(rows, settings)
    for r in rows:  # the base model served by another backend: not ranked, its energy efficiency still shown
        if not _tuned(r) and not r["is_reference"] and r["status"] == "ok":
            base, own = bases.get(_base_key(r)), cost(r, settings)
            if base is not None and own:
                r["phi"] = phi(own, base)
    unpruned = [r for r in rows if r["pruning"] == "none" and r.get("backend", REFERENCE_BACKEND) == REFERENCE_BACKEND]
    for index, result in rank_rows(unpruned, settings).items():
        unpruned[index].update(finetune_rank=result.rank, finetune_score=result.score, top_k=int(result.rank <= k))
    terms: dict[str, dict[str, Any]] = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        tuned = [r for r in rows if r["dataset"] == dataset and "rank" in r]
        terms[dataset] = {
            **settings.to_dict(),
            "cost_column": settings.cost_column,
            "base_cost": {r["model"]: cost(r, settings) for r in rows
                          if r["dataset"] == dataset and r["is_reference"] and _rankable(r)},
            "max_phi": max((r["phi"] for r in tuned), default=None),
            "max_rho": max((r["rho"] for r in tuned), default=None),
            "ranked": len(tuned),
            # The fine-tune ranking normalises over the unpruned cells only.
            "finetune_max_phi": max((r["phi"] for r in tuned if "finetune_rank" in r), default=None),
            "finetune_max_rho": max((r["rho"] for r in tuned if "finetune_rank" in r), default=None),
            "finetune_ranked": sum("finetune_rank" in r for r in tuned),
        }  # fmt: skip
    return terms


def _winner(rows: Sequence[Mapping[str, Any]], ranked: dict[int, Ranked], dataset: str) -> dict[str, Any] | None:
    firsts = [(index, r) for index, r in ranked.items() if rows[index]["dataset"] == dataset and r.rank == 1]
    if not firsts:
        return None
    index, result = min(firsts, key=lambda item: item[0])
    return {"row": index, "phi": result.phi, "rho": result.rho, "score": result.score, "tied": len(firsts) - 1}


def sensitivity(rows: Sequence[Mapping[str, Any]], settings: RankingSettings) -> dict[str, dict[str, Any]]:
    """Per dataset, the rank-1 cell as Q runs over 10³, 10⁶, 10⁹ queries (w held) and as w runs over 0.3 … 0.9
    (Q held). Each winner is given by its row index in `rows`."""
    by_queries = {q: rank_rows(rows, settings, queries=q) for q in SENSITIVITY_QUERIES}
    by_w = {w: rank_rows(rows, settings, w=w) for w in SENSITIVITY_W}
    out: dict[str, dict[str, Any]] = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        out[dataset] = {
            "queries": [{"queries": q, "w": settings.w, **(_winner(rows, ranked, dataset) or {})}
                        for q, ranked in by_queries.items()],
            "w": [{"w": w, "queries": settings.queries, **(_winner(rows, ranked, dataset) or {})}
                  for w, ranked in by_w.items()],
            "depends_on_queries": settings.energy == DEPLOYMENT,
        }  # fmt: skip
    return out
