"""When an energy or speed difference between two measurements is real: the run's noise floor, ratio intervals and
verdicts.

A shared machine drifts: the same cell measured minutes apart can move by more than the spread of its own repeats.
So every comparison of energy or speed between cells passes two tests before it is called a difference:

- its **interval**: a 95 % interval of the ratio cell / other. Two cells measured in different jobs (unpaired) get a
  Welch t-interval of the difference of their log means over their repeats; cells measured in the same job in
  interleaved rounds (paired: each round runs every cell once, so drift hits them alike) get a t-interval of the
  mean per-round log ratio.
- the run's **noise floor**: the reference cell (the base model) re-measured at several times spread over the run.
  The floor is how far those measurements of one and the same computation moved: max / min − 1.

The verdict is `lower` or `higher` only when the whole interval lies beyond the floor (below 1 / (1 + floor), or
above 1 + floor); otherwise `within noise`. A comparison without a floor (none was measured) or without an interval
(fewer than two values a side) is `within noise` with its reason: a difference is never claimed from nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

LOWER, HIGHER, WITHIN_NOISE = "lower", "higher", "within noise"
VERDICTS = (LOWER, HIGHER, WITHIN_NOISE)
CONFIDENCE = 0.95

FLOOR_METHOD = (
    "the reference cell (the base model, not fine-tuned) measured {count} times spread over the run (its own "
    "evaluation and {probes} re-measurements); each measurement is the median over its timed passes, tokens "
    "pinned; floor = max / min − 1 of those medians"
)


def _t(df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, df))


@dataclass(frozen=True)
class Ratio:
    """A ratio cell / other with its 95 % interval; `low`/`high` None when it cannot be computed (`reason`)."""

    estimate: float
    low: float | None
    high: float | None
    paired: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _logs(values: Sequence[float], what: str) -> list[float]:
    if any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"{what}: a ratio needs positive finite values, got {list(values)}")
    return [math.log(v) for v in values]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _variance(values: Sequence[float]) -> float:
    mean = _mean(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def unpaired_ratio(cell: Sequence[float], other: Sequence[float]) -> Ratio:
    """Geometric-mean ratio cell / other of two independent sets of repeats, with a Welch t-interval on the log
    scale."""
    if not cell or not other:
        raise ValueError("a ratio needs at least one value on each side")
    a, b = _logs(cell, "cell"), _logs(other, "other")
    estimate = math.exp(_mean(a) - _mean(b))
    if len(a) < 2 or len(b) < 2:
        return Ratio(estimate, None, None, False, "fewer than two repeats on a side: no interval")
    va, vb = _variance(a) / len(a), _variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Ratio(estimate, estimate, estimate, False)
    # Welch–Satterthwaite degrees of freedom.
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = _t(df) * se
    centre = _mean(a) - _mean(b)
    return Ratio(estimate, math.exp(centre - half), math.exp(centre + half), False)


def paired_ratio(cell: Sequence[float], other: Sequence[float]) -> Ratio:
    """Geometric-mean ratio of per-round values measured in the same rounds, with a t-interval of the mean per-round
    log ratio."""
    if len(cell) != len(other):
        raise ValueError(f"paired values need the same rounds: {len(cell)} against {len(other)}")
    if not cell:
        raise ValueError("a ratio needs at least one round")
    diffs = [x - y for x, y in zip(_logs(cell, "cell"), _logs(other, "other"), strict=True)]
    estimate = math.exp(_mean(diffs))
    if len(diffs) < 2:
        return Ratio(estimate, None, None, True, "one round: no interval")
    half = _t(len(diffs) - 1) * math.sqrt(_variance(diffs) / len(diffs))
    return Ratio(estimate, math.exp(_mean(diffs) - half), math.exp(_mean(diffs) + half), True)


@dataclass(frozen=True)
class Floor:
    """How far one figure (energy per token, tokens/s) of the same cell moved between measurements of this run."""

    floor: float | None  # max / min − 1; None with fewer than two measurements
    low: float | None
    high: float | None
    cv: float | None
    measurements: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def floor_of(values: Sequence[float]) -> Floor:
    finite = [v for v in values if math.isfinite(v) and v > 0]
    if len(finite) < 2:
        return Floor(None, None, None, None, len(finite))
    low, high = min(finite), max(finite)
    cv = math.sqrt(_variance(finite)) / _mean(finite)
    return Floor(high / low - 1, low, high, cv, len(finite))


@dataclass(frozen=True)
class Measurement:
    """One measurement of the reference cell: where it came from, when, and its mean figures."""

    source: str  # "evaluation" or "probe <i>"
    started_utc: str
    j_per_token: float
    tokens_per_s: float


@dataclass(frozen=True)
class NoiseFloor:
    """The noise floor of one (dataset, model): its reference cell measured several times over the run."""

    reference: str
    measurements: list[Measurement] = field(default_factory=list)

    @property
    def energy_per_token(self) -> Floor:
        return floor_of([m.j_per_token for m in self.measurements])

    @property
    def tokens_per_s(self) -> Floor:
        return floor_of([m.tokens_per_s for m in self.measurements])

    @property
    def method(self) -> str:
        probes = sum(m.source != "evaluation" for m in self.measurements)
        return FLOOR_METHOD.format(count=len(self.measurements), probes=probes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "energy_per_token": self.energy_per_token.to_dict(),
            "tokens_per_s": self.tokens_per_s.to_dict(),
            "measurements": [asdict(m) for m in sorted(self.measurements, key=lambda m: m.started_utc)],
            "method": self.method,
        }


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(ratio: Ratio, floor: float | None) -> Verdict:
    """`lower` / `higher` only when the ratio's whole interval lies beyond the floor on that side."""
    if ratio.low is None or ratio.high is None:
        return Verdict(WITHIN_NOISE, ratio.reason or "no interval")
    if floor is None:
        return Verdict(WITHIN_NOISE, "no noise floor was measured in this run")
    if ratio.high < 1 / (1 + floor):
        return Verdict(LOWER, "")
    if ratio.low > 1 + floor:
        return Verdict(HIGHER, "")
    if ratio.high < 1 or ratio.low > 1:
        return Verdict(WITHIN_NOISE, f"the interval excludes 1 but not the noise floor (±{100 * floor:.1f} %)")
    return Verdict(WITHIN_NOISE, "the interval includes 1")
