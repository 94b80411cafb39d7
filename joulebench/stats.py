"""Spread of repeated measurements: mean, 95 % confidence interval (Student's t) and coefficient of variation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from joulebench.energy import JOULES_PER_KWH


@dataclass(frozen=True)
class Spread:
    n: int
    mean: float
    ci95: float  # half-width: the interval is mean ± ci95
    cv: float  # sample standard deviation / mean

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spread(values: Sequence[float]) -> Spread:
    n = len(values)
    if n == 0:
        raise ValueError("no values to summarise")
    mean = sum(values) / n
    if n == 1:
        return Spread(1, mean, math.nan, math.nan)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    from scipy.stats import t

    return Spread(n, mean, float(t.ppf(0.975, n - 1)) * std / math.sqrt(n), std / mean if mean else math.nan)


NO_TOKENS = "no token was generated: a per-token figure would divide by 0 tokens"


def spread_or_blank(values: Sequence[float | None], why_blank: str) -> dict[str, Any]:
    """`spread(values).to_dict()`; when a value is missing, the same keys blank (None) with `reason`: a spread of
    the values that exist would pass for the figure of every pass."""
    if any(value is None for value in values):
        return {"n": len(values), "mean": None, "ci95": None, "cv": None, "reason": why_blank}
    return spread(values).to_dict()  # type: ignore[arg-type]


def joules_per_token(kwh: float, tokens: int) -> float:
    if tokens <= 0:
        raise ValueError(f"cannot divide energy by {tokens} generated tokens")
    return kwh * JOULES_PER_KWH / tokens
