"""The benchmark grid: which cells a config asks for and where each cell's outputs live.

A fine-tune cell is (dataset, model, bits, epochs); an evaluated cell adds a pruning setting. The reference cell of a
(dataset, model) is the pre-trained model at `reference_bits`, epochs 0, no pruning. Paths are keyed by the cell
alone, so adding a grid value adds jobs without touching the paths (and so the outputs) of the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RESULTS = "results"


@dataclass(frozen=True, order=True)
class Pruning:
    method: str
    ratio: float = 0.0
    n: int = 0
    m: int = 0

    @property
    def id(self) -> str:
        if self.method == "none":
            return "none"
        if self.method == "magnitude":
            return f"magnitude{round(self.ratio * 100):02d}"
        if self.method == "nm":
            return f"nm{self.n}of{self.m}"
        raise ValueError(f"unknown pruning method {self.method!r}")

    @property
    def label(self) -> str:
        if self.method == "magnitude":
            return f"magnitude {round(self.ratio * 100)}%"
        if self.method == "nm":
            return f"{self.n}:{self.m}"
        return "none"

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> Pruning:
        method = entry["method"]
        if method == "none":
            return cls("none")
        if method == "magnitude":
            ratio = float(entry["ratio"])
            if abs(ratio * 100 - round(ratio * 100)) > 1e-9:
                raise ValueError(f"pruning ratio {ratio} must be a whole percent (e.g. 0.3)")
            return cls("magnitude", ratio=round(ratio, 2))
        if method == "nm":
            n, m = int(entry["n"]), int(entry["m"])
            if not 0 < n < m:
                raise ValueError(f"pruning N:M needs 0 < N < M, got {n}:{m}")
            return cls("nm", n=n, m=m)
        raise ValueError(f"unknown pruning method {method!r}")


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
    settings: dict[str, Pruning] = {}
    for entry in config["pruning"]:
        pruning = Pruning.from_config(entry)
        if pruning.id in settings:
            raise ValueError(f"pruning setting {pruning.label!r} is listed twice")
        settings[pruning.id] = pruning
    return settings


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


def eval_cells(config: dict[str, Any]) -> list[EvalCell]:
    pruning_ids = list(pruning_settings(config))
    tuned = [
        EvalCell(cell.dataset, cell.model, cell.bits, cell.epochs, pruning)
        for cell in finetune_cells(config)
        for pruning in pruning_ids
    ]
    return reference_cells(config) + tuned


def data_dir(dataset: str) -> str:
    return f"{RESULTS}/data/{dataset}"


def embedded_model_dir(dataset: str, model: str) -> str:
    return f"{RESULTS}/models/{dataset}/{model}/base"
