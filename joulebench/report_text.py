"""The report's sentences that are derived from the results: which figures are estimates, how training went."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from joulebench.energy.core import COMPONENTS, SHARED, is_estimate

RAPL_SCOPE = "machine-wide: the whole CPU package, every process on it"
RAPL_TAGS = frozenset({"rapl", "codecarbon-rapl", "zeus-rapl"})  # a package counter, whatever the tracking mode
SOURCE_MEANING = {
    "codecarbon-estimate": "a CodeCarbon estimate (a power model, not a reading of an energy counter)",
    "constant": "a constant power assumed by CodeCarbon (not a measurement)",
    "codecarbon-rapl": f"measured by CodeCarbon from the CPU's RAPL energy counter ({RAPL_SCOPE})",
    "codecarbon-nvml": "measured by CodeCarbon from the GPU's NVML power readings",
    "rapl": f"measured from the RAPL energy counters, package or DRAM ({RAPL_SCOPE})",
    "nvml-counter": "measured from the GPU's NVML total-energy counter",
    "zeus-nvml": "measured by Zeus from the GPU's NVML total-energy counter",
    "zeus-amdsmi": "measured by Zeus from the GPU's amdsmi energy counter",
    "zeus-rapl": f"measured by Zeus's daemon from the RAPL energy counters, package or DRAM ({RAPL_SCOPE})",
    "zeus-apple": "measured by Zeus from the Apple silicon SoC's energy counters (machine-wide: the whole SoC)",
    "none": "not present (no such device, so 0)",
}
MACHINE_WIDE_MEANING = {
    "cpu": "the whole CPU, every process on it",
    "gpu": "every GPU of the host, the job was given none of its own",
    "ram": "all of the machine's memory, every process using it",
}
"""What a machine-wide figure of each component covers, for the tags whose meaning does not say it already."""


def describe(source: str, component: str | None = None) -> str:
    """A source tag in words. "(shared)" (a machine-wide figure while other cells may have run) says what the figure
    covers, for the component where known; a RAPL tag always says it is machine-wide, shared or not."""
    tag = source.removesuffix(SHARED)
    meaning = SOURCE_MEANING.get(tag, tag)
    if not source.endswith(SHARED):
        return meaning
    if tag in RAPL_TAGS:
        return meaning + ", shared while other cells may have run"
    covers = f" ({MACHINE_WIDE_MEANING[component]})" if component in MACHINE_WIDE_MEANING else ""
    return meaning + f", machine-wide{covers} while other cells may have run"


def component_sources(rows: Sequence[dict[str, Any]]) -> dict[str, set[str]]:
    """The source tags seen per component, from the `<component>_source` columns of summary rows."""
    return {c: {str(row[f"{c}_source"]) for row in rows if row.get(f"{c}_source")} for c in COMPONENTS}


def energy_note(rows: Sequence[dict[str, Any]]) -> str:
    sources = component_sources(rows)
    parts = []
    for component in COMPONENTS:
        found = sorted(sources[component]) or ["unknown"]
        meaning = "; ".join(describe(source, component) for source in found)
        parts.append(f"{component.upper()} energy: {meaning}.")
    estimated = [c.upper() for c in COMPONENTS if any(is_estimate(source) for source in sources[c])]
    lead = (
        f"{' and '.join(estimated)} energy figures in this report are estimates, not measurements. "
        if estimated
        else "All energy figures come from hardware counters. "
    )
    return lead + " ".join(parts) + " Emissions = energy × the grid's carbon intensity (CodeCarbon's offline table)."


def training_note(training: Sequence[dict[str, Any]]) -> str:
    multi = [t for t in training if len(t["losses"]) >= 2]
    if not multi:
        return "No fine-tuning cell ran more than one epoch, so no trend over epochs can be shown."
    fell = [t for t in multi if t["losses"][-1] < t["losses"][0]]
    drops = [(t["losses"][0] - t["losses"][-1]) / t["losses"][0] * 100 for t in multi]
    example = max(multi, key=lambda t: len(t["losses"]))
    return (
        f"Training loss fell from the first to the last epoch in {len(fell)} of {len(multi)} multi-epoch "
        f"fine-tuning cells (relative decrease between {min(drops):.1f}% and {max(drops):.1f}%). "
        f"For example, {example['bits']}-bit over {len(example['losses'])} epochs on {example['dataset']}: "
        + " → ".join(f"{loss:.3f}" for loss in example["losses"])
        + "."
    )
