"""The energy and speed comparisons the report draws, each with its verdict against the run's noise floor.

- Every tuned cell against the base model of its dataset and model: unpaired (the two were measured in different
  jobs), on the energy per generated token and the tokens/s of their pinned passes (the same work per pass, so the
  figures compare computation, not answer length).
- Every pruned or early-exit cell against its unpruned parent: paired, from the rounds of the cell's own evaluation,
  which serves the parent beside it (`joulebench.evaluate.evaluate_cell`); unpaired, like the above, for a record
  without those rounds.
- The finalists, re-measured side by side in interleaved rounds (`joulebench.jobs.measure_finalists`): paired, on the
  energy per query at the answers' real lengths and on tokens/s, each against the base model, and the report's
  optimised cell against its baseline.

Verdicts follow `joulebench.noise.verdict`: `lower` / `higher` only when the whole 95 % interval lies beyond the noise
floor, else `within noise`. The base model's own row is the reference of the comparisons, so its verdicts read
`reference`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import median
from typing import Any

from joulebench.noise import Measurement, NoiseFloor, Ratio, paired_ratio, unpaired_ratio, verdict
from joulebench.stats import joules_per_token

REFERENCE = "reference"
PARENT, BASE = "unpruned parent", "base model"
PAIRED = " (paired)"


def floor_key(dataset: str, model: str, bits: Any = None) -> str:
    """"<dataset>/<model>": the reference cell's floor; with `bits`, the base model's stored at those bits."""
    return f"{dataset}/{model}" if bits is None else f"{dataset}/{model}/b{int(bits)}"


def _probe_figures(probe: Mapping[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """A probe's pinned passes per bit width (a probe before per-bit probing measured the reference bits only)."""
    result = probe["result"]
    if "by_bits" in result:
        return {int(bits): figures["repeats"] for bits, figures in result["by_bits"].items()}
    return {int(probe["cell"]["bits"]): result["repeats"]}


def _measurement(source: str, started: str, passes: Sequence[Mapping[str, Any]]) -> Measurement:
    energy = [joules_per_token(p["energy"]["total_kwh"], p["tokens"]) for p in passes]
    return Measurement(source, started, median(energy), median([p["tokens"] / p["generation_s"] for p in passes]))


def noise_floors(rows: Sequence[Mapping[str, Any]], probes: Sequence[Mapping[str, Any]]) -> dict[str, NoiseFloor]:
    """Per (dataset, model): the reference cell's own evaluation and its probes (re-measurements spread over the
    run), each as the median energy per token and tokens/s of its pinned passes (the median: one slow pass of a
    measurement widens that measurement's own interval, not the floor, which is about drift between measurements).
    The probes also measure the base model at every bit width of the grid, since each width runs other kernels and
    drifts in its own way: those floors are keyed `floor_key(dataset, model, bits)`."""
    floors: dict[str, NoiseFloor] = {}
    references: dict[tuple[str, str], int] = {}
    for row in rows:
        if row["is_reference"] and row["status"] == "ok" and row.get("j_per_token_repeats"):
            dataset, model, bits = row["dataset"], row["model"], int(row["bits"])
            references[(dataset, model)] = bits
            own = Measurement("evaluation", str(row.get("started_utc", "")), median(row["j_per_token_repeats"]),
                              median(row["tokens_per_s_repeats"]))  # fmt: skip
            for key in (floor_key(dataset, model), floor_key(dataset, model, bits)):
                floors.setdefault(key, NoiseFloor(f"{model} b{bits} e0 (the base model)")).measurements.append(own)
    for probe in probes:
        if probe.get("status") != "ok":
            continue
        dataset, model = probe["cell"]["dataset"], probe["cell"]["model"]
        if (dataset, model) not in references:
            continue  # its reference failed: no floor to add to
        started = str(probe.get("provenance", {}).get("started_utc", ""))
        for bits, passes in _probe_figures(probe).items():
            found = _measurement(f"probe {probe['probe']}", started, passes)
            label = f"{model} b{bits} e0 (the base model stored at {bits} bits)"
            floors.setdefault(floor_key(dataset, model, bits), NoiseFloor(label)).measurements.append(found)
            if bits == references[(dataset, model)]:
                floors[floor_key(dataset, model)].measurements.append(found)
    return floors


def floors_json(floors: Mapping[str, NoiseFloor]) -> dict[str, Any]:
    """summary.json's `noise_floor`: per "<dataset>/<model>" the reference cell's floor, with `by_bits`."""
    out: dict[str, Any] = {}
    for key, floor in floors.items():
        if key.count("/") == 1:
            out[key] = {**floor.to_dict(), "by_bits": {}}
    for key, floor in floors.items():
        if key.count("/") == 2:
            parent, bits = key.rsplit("/b", 1)
            if parent in out:
                out[parent]["by_bits"][bits] = floor.to_dict()
    return out


def _floor(floors: Mapping[str, NoiseFloor], dataset: str, model: str, figure: str, *bits: Any) -> float | None:
    """The largest floor of the bit widths compared (the reference's where a width has no floor of its own)."""
    found = []
    for width in bits:
        floor = floors.get(floor_key(dataset, model, width))
        figures = None if floor is None else (floor.energy_per_token if figure == "energy" else floor.tokens_per_s)
        if figures is None or figures.floor is None:
            floor = floors.get(floor_key(dataset, model))
            figures = None if floor is None else (floor.energy_per_token if figure == "energy" else floor.tokens_per_s)
        if figures is None or figures.floor is None:
            return None
        found.append(figures.floor)
    return max(found, default=None)


def energy_floor(floors: Mapping[str, NoiseFloor], row: Mapping[str, Any]) -> float | None:
    """The energy noise floor of the row's bit width (the reference's where that width has none)."""
    return _floor(floors, row["dataset"], row["model"], "energy", row["bits"])


def _columns(prefix: str, suffix: str, ratio: Ratio, judged: str) -> dict[str, Any]:
    return {f"{prefix}_ratio{suffix}": ratio.estimate, f"{prefix}_ratio{suffix}_lo": ratio.low,
            f"{prefix}_ratio{suffix}_hi": ratio.high, f"{prefix}_verdict{suffix}": judged}  # fmt: skip


def compare_rows(row: Mapping[str, Any], other: Mapping[str, Any], floors: Mapping[str, NoiseFloor]) -> dict[str, Any]:
    """Energy per token and tokens/s of `row` against `other`, unpaired, with verdicts."""
    energy = unpaired_ratio(row["j_per_token_repeats"], other["j_per_token_repeats"])
    speed = unpaired_ratio(row["tokens_per_s_repeats"], other["tokens_per_s_repeats"])
    where, widths = (row["dataset"], row["model"]), (row["bits"], other["bits"])
    energy_floor, speed_floor = (_floor(floors, *where, figure, *widths) for figure in ("energy", "speed"))
    return {
        "energy": energy, "energy_verdict": verdict(energy, energy_floor), "energy_floor": energy_floor,
        "speed": speed, "speed_verdict": verdict(speed, speed_floor), "speed_floor": speed_floor,
    }  # fmt: skip


def paired_with_parent(row: Mapping[str, Any], floors: Mapping[str, NoiseFloor]) -> dict[str, Any]:
    """The ratios against the unpruned parent that the cell's own evaluation measured in its rounds, with verdicts."""
    energy, speed = (Ratio(**row["parent_paired"][key]) for key in ("energy", "speed"))
    where = (row["dataset"], row["model"])
    return {
        "energy": energy, "energy_verdict": verdict(energy, _floor(floors, *where, "energy", row["bits"])),
        "speed": speed, "speed_verdict": verdict(speed, _floor(floors, *where, "speed", row["bits"])),
    }  # fmt: skip


def _parent_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The unpruned cell a row was pruned from, on the same backend."""
    return (*(row[key] for key in ("dataset", "model", "training", "bits", "epochs")), row.get("backend", ""))


def add_verdicts(rows: Sequence[dict[str, Any]], floors: Mapping[str, NoiseFloor]) -> None:
    """`energy_vs` and the `energy_*` / `speed_*` columns of every ok row: against its unpruned parent for a pruned or
    early-exit cell, against the base model for an unpruned one (the `_base` columns: against the base model for
    every tuned cell). Columns without a value stay missing (blank), never 0."""
    ok = [r for r in rows if r["status"] == "ok" and r.get("j_per_token_repeats")]
    bases = {(r["dataset"], r["model"]): r for r in ok if r["is_reference"]}
    parents = {_parent_key(r): r for r in ok if not r["is_reference"] and r["pruning"] == "none"}
    for row in ok:
        if row["is_reference"]:
            row.update(energy_vs=REFERENCE, energy_verdict=REFERENCE, speed_verdict=REFERENCE)
            continue
        base = bases.get((row["dataset"], row["model"]))
        parent = parents.get(_parent_key(row)) if row["pruning"] != "none" else None
        if base is not None:
            found = compare_rows(row, base, floors)
            row.update(_columns("energy", "_base", found["energy"], found["energy_verdict"].verdict))
            row.update(_columns("speed", "_base", found["speed"], found["speed_verdict"].verdict))
        primary = (PARENT, parent) if parent is not None else (BASE, base)
        if row.get("parent_paired") and row["pruning"] != "none":
            found = paired_with_parent(row, floors)
            primary = (PARENT + PAIRED, parent)
        elif primary[1] is None:
            continue
        else:
            found = compare_rows(row, primary[1], floors)
        row.update(_columns("energy", "", found["energy"], found["energy_verdict"].verdict))
        row.update(_columns("speed", "", found["speed"], found["speed_verdict"].verdict))
        row.update(energy_vs=primary[0], energy_reason=found["energy_verdict"].reason,
                   speed_reason=found["speed_verdict"].reason)  # fmt: skip


# --- the finalists, measured side by side -------------------------------------------------------------------


def finalist_figures(
    record: Mapping[str, Any], cell: Mapping[str, Any], other: Mapping[str, Any], floors: Mapping[str, NoiseFloor]
) -> dict[str, Any]:
    """Paired ratios cell / other from the rounds of one finalists record: energy per query (answer passes) and
    tokens/s (pinned passes), with verdicts against the cell's noise floor."""
    energy = paired_ratio(cell["rounds"]["wh_per_query"], other["rounds"]["wh_per_query"])
    speed = paired_ratio(cell["rounds"]["tokens_per_s"], other["rounds"]["tokens_per_s"])
    where = (record["dataset"], cell["cell"]["model"])
    widths = (cell["cell"]["bits"], other["cell"]["bits"])
    return {
        "cell": cell["label"], "against": other["label"], "rounds": len(cell["rounds"]["wh_per_query"]),
        "cell_key": cell.get("cell_key"), "against_key": other.get("cell_key"),
        "energy": energy.to_dict(),
        "energy_verdict": verdict(energy, _floor(floors, *where, "energy", *widths)).to_dict(),
        "speed": speed.to_dict(),
        "speed_verdict": verdict(speed, _floor(floors, *where, "speed", *widths)).to_dict(),
    }  # fmt: skip


def _finalist_base(record: Mapping[str, Any], finalist: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((f for f in record["finalists"] if "base" in f["roles"]
                 and f["cell"]["model"] == finalist["cell"]["model"]), None)  # fmt: skip


def add_paired(
    rows: Sequence[dict[str, Any]], records: Sequence[Mapping[str, Any]], floors: Mapping[str, NoiseFloor],
    key: Any,
) -> list[dict[str, Any]]:
    """The `finalist` and `paired_*` columns of the finalists' rows (against the base model of their model), and the
    finalists section of summary.json: per dataset its finalists, their roles and paired figures. `key` gives a
    row's cell key (joulebench.summary.cell_key), which each finalist records."""
    by_key = {tuple(key(r)): r for r in rows if r["status"] == "ok"}
    out = []
    for record in records:
        if record.get("status") != "ok":
            out.append({"dataset": record.get("dataset", ""), "status": record.get("status"),
                        "error": record.get("error", "")})  # fmt: skip
            continue
        section: dict[str, Any] = {"dataset": record["dataset"], "status": "ok", "rounds": record["rounds"],
                                   "order": record.get("order", []), "finalists": []}  # fmt: skip
        for finalist in record["finalists"]:
            row = by_key.get(tuple(finalist["cell_key"]))
            entry = {"label": finalist["label"], "roles": finalist["roles"], "cell_key": finalist["cell_key"]}
            base = _finalist_base(record, finalist)
            if row is not None:
                row["finalist"] = ", ".join(finalist["roles"])
            if "base" in finalist["roles"]:
                if row is not None:
                    row.update(paired_energy_verdict=REFERENCE, paired_speed_verdict=REFERENCE)
            elif base is not None:
                figures = finalist_figures(record, finalist, base, floors)
                entry["vs_base"] = figures
                if row is not None:
                    for prefix in ("energy", "speed"):
                        ratio = figures[prefix]
                        row.update({f"paired_{prefix}_ratio": ratio["estimate"], f"paired_{prefix}_ratio_lo":
                                    ratio["low"], f"paired_{prefix}_ratio_hi": ratio["high"],
                                    f"paired_{prefix}_verdict": figures[f"{prefix}_verdict"]["verdict"]})  # fmt: skip
            section["finalists"].append(entry)
        optimised = next((f for f in record["finalists"] if "rank 1" in f["roles"]), None)
        baseline = next((f for f in record["finalists"] if "baseline" in f["roles"]), None)
        if optimised is not None and baseline is not None and optimised is not baseline:
            section["optimised_vs_baseline"] = finalist_figures(record, optimised, baseline, floors)
        out.append(section)
    return out
