"""The benchmark grid: which cells a config asks for and where each cell's outputs live.

A fine-tune cell is (dataset, model, bits, epochs); an evaluated cell adds a pruning setting. The reference cell of a
(dataset, model) is the pre-trained model at `reference_bits`, epochs 0, no pruning. Paths are keyed by the cell
alone, so adding a grid value adds jobs without touching the paths (and so the outputs) of the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = "results"


SCOPES = ("layer", "global")


@dataclass(frozen=True, order=True)
class Pruning:
    """A pruning setting: a method (a name in `joulebench.prune.PRUNERS`) and its sparsity pattern, either an
    unstructured `ratio` of weights removed or N:M (keep `n` of every `m` consecutive input weights).
    `scope` says over what the unstructured ratio is taken: each layer, or all layers at once (global)."""

    method: str
    ratio: float = 0.0
    n: int = 0
    m: int = 0
    scope: str = "layer"

    @property
    def is_nm(self) -> bool:
        return self.m > 0

    @property
    def requested_sparsity(self) -> float:
        if self.method == "none":
            return 0.0
        return 1 - self.n / self.m if self.is_nm else self.ratio

    @property
    def id(self) -> str:
        if self.method == "none":
            return "none"
        scope = "-global" if self.scope == "global" else ""
        pattern = f"{self.n}of{self.m}" if self.is_nm else f"{round(self.ratio * 100):02d}"
        return f"{self.method}{scope}{pattern}"

    @property
    def label(self) -> str:
        if self.method == "none":
            return "none"
        pattern = f"{self.n}:{self.m}" if self.is_nm else f"{round(self.ratio * 100)}%"
        scope = " (global)" if self.scope == "global" else ""
        return f"{self.method} {pattern}{scope}"

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> Pruning:
        method = str(entry["method"])
        if not method.isalnum() or not method.islower():
            raise ValueError(f"pruning method {method!r} must be lower-case letters and digits")
        if method == "none":
            return cls("none")
        scope = entry.get("scope", "layer")
        if scope not in SCOPES:
            raise ValueError(f"pruning scope {scope!r} must be one of {', '.join(SCOPES)}")
        has_ratio, has_nm = "ratio" in entry, "n" in entry or "m" in entry
        if has_ratio == has_nm:
            raise ValueError(f"pruning {method}: give either ratio (unstructured) or n and m (N:M), not {entry}")
        if has_ratio:
            ratio = float(entry["ratio"])
            if not 0 < ratio < 1 or abs(ratio * 100 - round(ratio * 100)) > 1e-9:
                raise ValueError(f"pruning {method}: ratio {ratio} must be a whole percent between 0 and 1 (e.g. 0.3)")
            return cls(method, ratio=round(ratio, 2), scope=scope)
        n, m = int(entry.get("n", 0)), int(entry.get("m", 0))
        if not 0 < n < m:
            raise ValueError(f"pruning {method}: N:M needs 0 < N < M, got {n}:{m}")
        if scope != "layer":
            raise ValueError(f"pruning {method} {n}:{m}: N:M groups are local, scope {scope!r} does not apply")
        return cls(method, n=n, m=m)


@dataclass(frozen=True, order=True)
class FinetuneCell:
    dataset: str
    model: str
    bits: int
    epochs: int

    @property
    def dir(self) -> str:
        return f"{RESULTS}/finetune/{self.dataset}/{self.model}/b{self.bits}-e{self.epochs}"


@dataclass(frozen=True, order=True)
class EvalCell:
    dataset: str
    model: str
    bits: int
    epochs: int
    pruning: str

    @property
    def is_reference(self) -> bool:
        return self.epochs == 0

    @property
    def finetune(self) -> FinetuneCell | None:
        return None if self.is_reference else FinetuneCell(self.dataset, self.model, self.bits, self.epochs)

    @property
    def dir(self) -> str:
        return f"{RESULTS}/eval/{self.dataset}/{self.model}/b{self.bits}-e{self.epochs}-{self.pruning}"


def pruning_settings(config: dict[str, Any]) -> dict[str, Pruning]:
    """The pruning settings applied to the selected fine-tuned cells (the unpruned cell is always evaluated)."""
    settings: dict[str, Pruning] = {}
    for index, entry in enumerate(config["pruning"]["methods"]):
        pruning = pruning_setting(index, entry, settings)
        settings[pruning.id] = pruning
    return settings


def pruning_setting(index: int, entry: dict[str, Any], earlier: dict[str, Pruning]) -> Pruning:
    """Entry `index` of `pruning.methods`, given the settings of the entries before it; a ValueError names it."""
    try:
        pruning = Pruning.from_config(entry)
    except (KeyError, ValueError) as error:
        raise ValueError(f"pruning.methods[{index}]: {error}") from None
    if pruning.method == "none":
        raise ValueError(f"pruning.methods[{index}]: 'none' is implied, every fine-tuned cell is also run unpruned")
    if pruning.id in earlier:
        raise ValueError(f"pruning.methods[{index}]: {pruning.label!r} is listed twice")
    return pruning


def prunes_all(config: dict[str, Any]) -> bool:
    """`pruning.select: all` prunes every fine-tuned cell; `top_k` (the paper's flow) only the best k by R."""
    return config["pruning"].get("select", "top_k") == "all"


def training_for(config: dict[str, Any], bits: int, epochs: int) -> dict[str, Any]:
    """The training settings of one fine-tune cell: `training`, overridden by `training.cells["b<bits>"]` and then by
    `training.cells["b<bits>-e<epochs>"]`, so one cell's settings can change without touching the others."""
    training = {key: value for key, value in config["training"].items() if key != "cells"}
    overrides = config["training"].get("cells", {})
    for key in (f"b{bits}", f"b{bits}-e{epochs}"):
        training.update(overrides.get(key, {}))
    return training


def finetune_cells(config: dict[str, Any]) -> list[FinetuneCell]:
    return [
        FinetuneCell(dataset, model, int(bits), int(epochs))
        for dataset in config["datasets"]
        for model in config["models"]
        for bits in config["bits"]
        for epochs in config["epochs"]
    ]


def reference_cells(config: dict[str, Any]) -> list[EvalCell]:
    bits = int(config.get("reference_bits", 32))
    return [EvalCell(dataset, model, bits, 0, "none") for dataset in config["datasets"] for model in config["models"]]


def unpruned_cells(config: dict[str, Any]) -> list[EvalCell]:
    """The cells evaluated before any selection: every reference and every fine-tuned cell, unpruned."""
    return reference_cells(config) + [
        EvalCell(cell.dataset, cell.model, cell.bits, cell.epochs, "none") for cell in finetune_cells(config)
    ]


def pruned_cells(config: dict[str, Any], selected: list[FinetuneCell]) -> list[EvalCell]:
    """Every pruning setting applied to each selected fine-tuned cell."""
    return [
        EvalCell(cell.dataset, cell.model, cell.bits, cell.epochs, pruning)
        for cell in selected
        for pruning in pruning_settings(config)
    ]


def eval_cells(config: dict[str, Any]) -> list[EvalCell]:
    """The whole grid, as with `pruning.select: all`."""
    return unpruned_cells(config) + pruned_cells(config, finetune_cells(config))


def read_selection(path: str | Path, dataset: str) -> list[FinetuneCell]:
    """The fine-tuned cells a `select_for_pruning` checkpoint kept."""
    selection = json.loads(Path(path).read_text())
    return [FinetuneCell(dataset, e["model"], int(e["bits"]), int(e["epochs"])) for e in selection["selected"]]


def data_dir(dataset: str) -> str:
    return f"{RESULTS}/data/{dataset}"


def embedded_model_dir(dataset: str, model: str) -> str:
    return f"{RESULTS}/models/{dataset}/{model}/base"
