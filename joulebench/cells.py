"""The benchmark grid: which cells a config asks for and where each cell's outputs live.

A fine-tune cell is (dataset, model, training variant, bits, epochs); the training variant is the training precision
and the sparse training. An evaluated cell adds a post-training variant: none, a pruning setting or an early-exit
decoding. The reference cell of a (dataset, model) is the pre-trained model at `reference_bits`, epochs 0, the
reference training variant, no post-training variant. Paths are keyed by the cell alone, so adding a grid value adds
jobs without touching the paths (and so the outputs) of the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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
            return cls(method, ratio=_whole_percent(entry["ratio"], f"pruning {method}: ratio"), scope=scope)
        n, m = int(entry.get("n", 0)), int(entry.get("m", 0))
        if not 0 < n < m:
            raise ValueError(f"pruning {method}: N:M needs 0 < N < M, got {n}:{m}")
        if scope != "layer":
            raise ValueError(f"pruning {method} {n}:{m}: N:M groups are local, scope {scope!r} does not apply")
        return cls(method, n=n, m=m)


def _percent(value: float) -> str:
    return f"{round(value * 100):02d}"


def _whole_percent(value: float, what: str) -> float:
    value = float(value)
    if not (0 < value < 1) or abs(value * 100 - round(value * 100)) > 1e-9:
        raise ValueError(f"{what} {value} must be a whole percent between 0 and 1 (e.g. 0.3)")
    return round(value, 2)


@dataclass(frozen=True, order=True)
class SparseTraining:
    """Sparsity reached during fine-tuning (a name in `joulebench.sparse_training.SPARSE_TRAINERS`):
    `dense` (none); `gradual`, magnitude pruning on the cubic schedule of Zhu & Gupta (2017) from `start` to `end`
    (fractions of the training steps) up to `target`, masks updated every `every` steps; `lottery`, iterative
    magnitude pruning with rewinding (Frankle et al.): `rounds` times, train the cell's epochs, prune `rate` of the
    remaining weights, restore the trainable weights saved after epoch `rewind_epoch` of the first run (0: their
    initial values), then one last run with the final mask."""

    method: str = "dense"
    target: float = 0.0
    start: float = 0.0
    end: float = 0.75
    every: int = 1
    rounds: int = 0
    rate: float = 0.0
    rewind_epoch: int = 0

    @property
    def final_sparsity(self) -> float:
        if self.method == "gradual":
            return self.target
        if self.method == "lottery":
            return 1 - (1 - self.rate) ** self.rounds
        return 0.0

    @property
    def id(self) -> str:
        if self.method == "gradual":
            return f"gradual{_percent(self.target)}"
        if self.method == "lottery":
            return f"lottery{self.rounds}x{_percent(self.rate)}r{self.rewind_epoch}"
        return self.method

    @property
    def label(self) -> str:
        if self.method == "gradual":
            return f"gradual {round(self.target * 100)}%"
        if self.method == "lottery":
            return f"lottery {self.rounds}×{round(self.rate * 100)}% (rewind e{self.rewind_epoch})"
        return self.method

    @classmethod
    def from_config(cls, entry: str | dict[str, Any]) -> SparseTraining:
        entry = {"method": entry} if isinstance(entry, str) else dict(entry)
        method = str(entry.pop("method", "dense"))
        allowed = {"dense": set(), "gradual": {"target", "start", "end", "every"},
                   "lottery": {"rounds", "rate", "rewind_epoch"}}.get(method)  # fmt: skip
        if allowed is None:
            return cls(method)  # an unregistered name: the registry lookup names the known ones
        if extra := sorted(set(entry) - allowed):
            raise ValueError(f"sparse training {method}: {', '.join(extra)} does not apply; it takes "
                             f"{', '.join(sorted(allowed)) or 'nothing'}")  # fmt: skip
        if method == "gradual":
            setting = cls(method, target=_whole_percent(entry.get("target", 0.5), "target"),
                          start=float(entry.get("start", 0.0)), end=float(entry.get("end", 0.75)),
                          every=int(entry.get("every", 1)))  # fmt: skip
            if not 0 <= setting.start < setting.end <= 1 or setting.every < 1:
                raise ValueError(f"sparse training gradual: needs 0 <= start < end <= 1 and every >= 1, got {entry}")
            return setting
        if method == "lottery":
            setting = cls(method, rounds=int(entry.get("rounds", 2)), rate=_whole_percent(entry.get("rate", 0.2),
                          "rate"), rewind_epoch=int(entry.get("rewind_epoch", 0)))  # fmt: skip
            if setting.rounds < 1 or setting.rewind_epoch < 0:
                raise ValueError(f"sparse training lottery: needs rounds >= 1 and rewind_epoch >= 0, got {entry}")
            return setting
        return cls(method)


@dataclass(frozen=True, order=True)
class TrainVariant:
    """How a cell is fine-tuned beyond bits and epochs: the training precision (a name in
    `joulebench.mixed_precision.TRAINING_PRECISIONS`, e.g. `32-true` or `bf16-mixed`) and the sparse training."""

    precision: str = "32-true"
    sparsity: SparseTraining = SparseTraining()

    @property
    def id(self) -> str:
        return f"{self.precision}_{self.sparsity.id}"

    @property
    def label(self) -> str:
        return self.precision if self.sparsity.method == "dense" else f"{self.precision}, {self.sparsity.label}"

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> TrainVariant:
        if extra := sorted(set(entry) - {"precision", "sparsity"}):
            raise ValueError(f"unknown key {', '.join(extra)}; a training variant has precision and sparsity")
        precision = str(entry.get("precision", "32-true"))
        if not precision or not all(c.isalnum() or c == "-" for c in precision) or precision != precision.lower():
            raise ValueError(f"precision {precision!r} must be lower-case letters, digits and hyphens")
        return cls(precision, SparseTraining.from_config(entry.get("sparsity", "dense")))


REFERENCE_TRAINING = TrainVariant()


CONFIDENCE_IDS = {"softmax-gap": "", "saturation": "sat"}  # the default measure adds nothing to a cell's id


@dataclass(frozen=True, order=True)
class EarlyExit:
    """Early-exit decoding as in CALM (Schuster et al. 2022): a token leaves the decoder after the first layer (from
    `min_layer` on) whose confidence exceeds `threshold` (strictly, so 1.0 never exits). `measure` is a name in
    `joulebench.early_exit.CONFIDENCE_MEASURES`: `softmax-gap`, the top-1 minus top-2 next-token probability read
    through the exit head, or `saturation`, the cosine between the hidden states after this layer and the one
    before. `heads` is a name in `joulebench.early_exit.EXIT_HEADS`: `shared`, the model's own final norm and LM
    head, untrained for intermediate states; `trained`, a cheap per-exit map fitted before the LM head."""

    threshold: float
    heads: str = "shared"
    min_layer: int = 1
    measure: str = "softmax-gap"

    @property
    def id(self) -> str:
        heads = "" if self.heads == "shared" else self.heads
        measure = CONFIDENCE_IDS.get(self.measure, self.measure.replace("-", ""))
        return f"exit{round(self.threshold * 100):02d}{heads}{measure}"

    @property
    def label(self) -> str:
        heads = "shared (untrained) heads" if self.heads == "shared" else f"{self.heads} heads"
        return f"early exit {self.measure} > {self.threshold:.2f}, {heads}"

    @classmethod
    def expand(cls, entry: dict[str, Any]) -> list[EarlyExit]:
        """One setting per threshold of the entry: `threshold` (one) or `thresholds` (a list, the curve the report
        draws quality and energy along)."""
        if extra := sorted(set(entry) - {"threshold", "thresholds", "heads", "min_layer", "measure"}):
            raise ValueError(f"unknown key {', '.join(extra)}; early exit takes threshold or thresholds, heads, "
                             "measure, min_layer")  # fmt: skip
        if ("threshold" in entry) == ("thresholds" in entry):
            raise ValueError("give either threshold (one value) or thresholds (a list)")
        thresholds = entry["thresholds"] if "thresholds" in entry else [entry["threshold"]]
        if not isinstance(thresholds, list) or not thresholds:
            raise ValueError(f"thresholds must be a non-empty list, got {thresholds!r}")
        heads = str(entry.get("heads", "shared"))
        if not heads.isalnum() or heads != heads.lower():
            raise ValueError(f"early exit heads {heads!r} must be lower-case letters and digits")
        measure = str(entry.get("measure", "softmax-gap"))
        if not measure or not all(c.isalnum() or c == "-" for c in measure) or measure != measure.lower():
            raise ValueError(f"early exit measure {measure!r} must be lower-case letters, digits and hyphens")
        min_layer = int(entry.get("min_layer", 1))
        if min_layer < 1:
            raise ValueError(f"early exit min_layer {min_layer} must be at least 1")
        settings = []
        for value in thresholds:
            threshold = float(value)
            if not 0 < threshold <= 1 or abs(threshold * 100 - round(threshold * 100)) > 1e-9:
                raise ValueError(f"early exit threshold {threshold} must be a whole percent in (0, 1] (e.g. 0.9)")
            settings.append(cls(round(threshold, 2), heads, min_layer, measure))
        return settings


MERGE_FORMS = {"requantize": ("merge-requantize", "merged → re-quantized"),
               "16-bit": ("merge-16bit", "merged → 16-bit")}  # form: (id, label)


@dataclass(frozen=True, order=True)
class Merge:
    """A 4- or 8-bit cell deployed otherwise than as it was trained (its adapter unmerged on the quantized base):
    `requantize` merges the adapter into the dequantized base and quantizes the sum again at the cell's bits (the
    learned delta is about one quantization step, so the rounding partly erases it; QA-LoRA); `16-bit` merges it
    into a model stored in `training.dtype_16`."""

    form: str

    @property
    def id(self) -> str:
        return MERGE_FORMS[self.form][0]

    @property
    def label(self) -> str:
        return MERGE_FORMS[self.form][1]

    @classmethod
    def from_config(cls, entry: Any) -> Merge:
        if isinstance(entry, dict):
            if extra := sorted(set(entry) - {"form"}):
                raise ValueError(f"unknown key {', '.join(extra)}; a merge entry has form, bits and epochs")
            entry = entry.get("form")
        if entry not in MERGE_FORMS:
            raise ValueError(f"unknown merge form {entry!r}; known: {', '.join(MERGE_FORMS)}")
        return cls(str(entry))


@dataclass(frozen=True, order=True)
class FinetuneCell:
    dataset: str
    model: str
    bits: int
    epochs: int
    training: str = REFERENCE_TRAINING.id  # a TrainVariant id

    @property
    def dir(self) -> str:
        return f"{RESULTS}/finetune/{self.dataset}/{self.model}/{self.training}/b{self.bits}-e{self.epochs}"


@dataclass(frozen=True, order=True)
class EvalCell:
    """A fine-tuned cell (or the reference: epochs 0) with a post-training variant: `none`, a pruning setting's id
    or an early-exit setting's id."""

    dataset: str
    model: str
    bits: int
    epochs: int
    pruning: str
    training: str = REFERENCE_TRAINING.id

    @property
    def is_reference(self) -> bool:
        return self.epochs == 0

    @property
    def finetune(self) -> FinetuneCell | None:
        if self.is_reference:
            return None
        return FinetuneCell(self.dataset, self.model, self.bits, self.epochs, self.training)

    @property
    def dir(self) -> str:
        return f"{RESULTS}/eval/{self.dataset}/{self.model}/{self.training}/b{self.bits}-e{self.epochs}-{self.pruning}"


GRID_AXES = ("bits", "epochs")


@dataclass(frozen=True)
class CellSubset:
    """The (bits, epochs) cells a training variant, pruning setting, early exit or merge form applies to: the entry's
    own `bits` and `epochs` lists, each a subset of the grid's (a list not given: all of the grid's values). The same
    setting listed in several entries applies to the union of their cells; `cells` None means every cell."""

    cells: frozenset[tuple[int, int]] | None = None

    def covers(self, bits: int, epochs: int) -> bool:
        return self.cells is None or (bits, epochs) in self.cells

    def union(self, other: CellSubset) -> CellSubset:
        if self.cells is None or other.cells is None:
            return CellSubset()
        return CellSubset(self.cells | other.cells)

    @classmethod
    def split(cls, entry: Any, config: dict[str, Any]) -> tuple[CellSubset, Any]:
        """The cells an entry names, and the entry without `bits` and `epochs`."""
        if not isinstance(entry, dict) or not set(GRID_AXES) & set(entry):
            return cls(), entry
        chosen: dict[str, list[int]] = {}
        for axis in GRID_AXES:
            grid = [int(value) for value in config[axis]]
            values = entry.get(axis, grid)
            if not isinstance(values, list) or not values or not all(isinstance(v, int) for v in values):
                raise ValueError(f"{axis} must be a non-empty list of the grid's {axis} {sorted(grid)}, got {values!r}")
            if outside := sorted(set(values) - set(grid)):
                raise ValueError(f"{axis} {outside} not in the grid's {axis} {sorted(grid)}")
            chosen[axis] = values
        cells = frozenset((bits, epochs) for bits in chosen["bits"] for epochs in chosen["epochs"])
        return cls(cells), {key: value for key, value in entry.items() if key not in GRID_AXES}


def training_variants(config: dict[str, Any]) -> dict[str, TrainVariant]:
    """The training variants the (bits, epochs) cells are fine-tuned in (each in its entry's `bits` and `epochs`,
    by default every cell); by default one, `32-true` and dense."""
    return _settings_by_id(_training_entries(config), "training_variants", _training_variant, config)


def early_exit_settings(config: dict[str, Any]) -> dict[str, EarlyExit]:
    """Early-exit decodings applied, like the pruning settings, to the cells selected for pruning: one per
    threshold of each entry."""
    return _settings_by_id(config.get("early_exit") or [], "early_exit", EarlyExit.expand, config)


def merge_settings(config: dict[str, Any]) -> dict[str, Merge]:
    """The deployment forms every dense-trained 4/8-bit cell is also evaluated in (`merge`), beside its adapter
    unmerged on the quantized base."""
    return _settings_by_id(config.get("merge") or [], "merge", _merge_form, config)


def pruning_settings(config: dict[str, Any]) -> dict[str, Pruning]:
    """The pruning settings applied to the selected fine-tuned cells (the unpruned cell is always evaluated)."""
    return _settings_by_id(config["pruning"]["methods"], "pruning.methods", _pruning, config)


def _subsets(config: dict[str, Any], kind: str) -> dict[str, CellSubset]:
    """Each setting's id → the cells it applies to, for `kind`: `training_variants`, `post_training` (the pruning
    settings and early exits) or `merge`."""
    if kind == "post_training":
        return {**_subsets_by_id(config["pruning"]["methods"], "pruning.methods", _pruning, config),
                **_subsets_by_id(config.get("early_exit") or [], "early_exit", EarlyExit.expand, config)}  # fmt: skip
    if kind == "merge":
        return _subsets_by_id(config.get("merge") or [], "merge", _merge_form, config)
    return _subsets_by_id(_training_entries(config), "training_variants", _training_variant, config)


def _training_entries(config: dict[str, Any]) -> list[Any]:
    return config.get("training_variants") or [{}]


def _training_variant(entry: Any) -> list[TrainVariant]:
    return [TrainVariant.from_config(entry)]


def _merge_form(entry: Any) -> list[Merge]:
    return [Merge.from_config(entry)]


def _pruning(entry: Any) -> list[Pruning]:
    pruning = Pruning.from_config(entry)
    if pruning.method == "none":
        raise ValueError("'none' is implied, every fine-tuned cell is also run unpruned")
    return [pruning]


Setting = TypeVar("Setting", TrainVariant, EarlyExit, Merge, Pruning)


def _parsed(
    entries: list[Any], key: str, parse: Callable[[Any], list[Setting]], config: dict[str, Any]
) -> dict[str, tuple[Setting, CellSubset]]:
    """The config list `key` parsed entry by entry (an entry may give several settings), each setting's id → the
    setting and the cells its entries name; a ValueError names the entry at fault. A setting may be listed again only
    for other cells (`bits`, `epochs`)."""
    parsed: dict[str, tuple[Setting, CellSubset]] = {}
    for index, entry in enumerate(entries):
        try:
            subset, rest = CellSubset.split(entry, config)
            settings = parse(rest)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{key}[{index}]: {error}") from None
        for setting in settings:
            if setting.id in parsed:
                earlier = parsed[setting.id][1]
                if earlier.cells is None or subset.cells is None or earlier.cells & subset.cells:
                    raise ValueError(f"{key}[{index}]: {setting.label!r} is listed twice for the same cells")
                subset = earlier.union(subset)
            parsed[setting.id] = (setting, subset)
    return parsed


def _settings_by_id(
    entries: list[Any], key: str, parse: Callable[[Any], list[Setting]], config: dict[str, Any]
) -> dict[str, Setting]:
    return {name: setting for name, (setting, _) in _parsed(entries, key, parse, config).items()}


def _subsets_by_id(
    entries: list[Any], key: str, parse: Callable[[Any], list[Setting]], config: dict[str, Any]
) -> dict[str, CellSubset]:
    return {name: subset for name, (_, subset) in _parsed(entries, key, parse, config).items()}


def pruning_setting(index: int, entry: dict[str, Any]) -> Pruning:
    """Entry `index` of `pruning.methods` on its own; a ValueError names it."""
    try:
        return _pruning({key: value for key, value in entry.items() if key not in GRID_AXES})[0]
    except (KeyError, ValueError) as error:
        raise ValueError(f"pruning.methods[{index}]: {error}") from None


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
    subsets = _subsets(config, "training_variants")
    return [
        FinetuneCell(dataset, model, int(bits), int(epochs), training)
        for dataset in config["datasets"]
        for model in config["models"]
        for training, subset in subsets.items()
        for bits in config["bits"]
        for epochs in config["epochs"]
        if subset.covers(int(bits), int(epochs))
    ]


def reference_cells(config: dict[str, Any]) -> list[EvalCell]:
    bits = int(config.get("reference_bits", 32))
    return [EvalCell(dataset, model, bits, 0, "none") for dataset in config["datasets"] for model in config["models"]]


def unpruned_cells(config: dict[str, Any]) -> list[EvalCell]:
    """The cells evaluated before any selection: every reference and every fine-tuned cell, unpruned, full depth."""
    return reference_cells(config) + [
        EvalCell(cell.dataset, cell.model, cell.bits, cell.epochs, "none", cell.training)
        for cell in finetune_cells(config)
    ]


def post_training_variants(config: dict[str, Any]) -> list[str]:
    """The ids of what is applied to each selected cell: the pruning settings, then the early-exit decodings."""
    pruning, exits = pruning_settings(config), early_exit_settings(config)
    if clash := sorted(set(pruning) & set(exits)):
        raise ValueError(f"early_exit: {clash[0]!r} is also a pruning setting's name")
    return [*pruning, *exits]


def variant_kinds(config: dict[str, Any]) -> dict[str, str]:
    """Each post-training variant id's kind, as an inference backend's `unserved` names it: "none", "early-exit",
    "merge", or the pruning method."""
    kinds = {"none": "none"}
    kinds.update({variant: setting.method for variant, setting in pruning_settings(config).items()})
    kinds.update(dict.fromkeys(early_exit_settings(config), "early-exit"))
    kinds.update(dict.fromkeys(merge_settings(config), "merge"))
    return kinds


def merged_cells(config: dict[str, Any]) -> list[EvalCell]:
    """Every dense-trained 4/8-bit fine-tuned cell in each `merge` form. A sparse-trained cell is served merged
    already (its masks hold for the merged weights), so it has no unmerged form to compare with."""
    variants, subsets = training_variants(config), _subsets(config, "merge")
    return [
        EvalCell(cell.dataset, cell.model, cell.bits, cell.epochs, merge, cell.training)
        for cell in finetune_cells(config)
        if cell.bits in (4, 8) and variants[cell.training].sparsity.method == "dense"
        for merge, subset in subsets.items()
        if subset.covers(cell.bits, cell.epochs)
    ]


def pruned_cells(config: dict[str, Any], selected: list[FinetuneCell]) -> list[EvalCell]:
    """Every pruning setting and early-exit decoding applied to each selected fine-tuned cell its entry covers."""
    variants, subsets = post_training_variants(config), _subsets(config, "post_training")
    return [
        EvalCell(cell.dataset, cell.model, cell.bits, cell.epochs, variant, cell.training)
        for cell in selected
        for variant in variants
        if subsets[variant].covers(cell.bits, cell.epochs)
    ]


def eval_cells(config: dict[str, Any]) -> list[EvalCell]:
    """The whole grid, as with `pruning.select: all`."""
    return unpruned_cells(config) + merged_cells(config) + pruned_cells(config, finetune_cells(config))


def read_selection(path: str | Path, dataset: str) -> list[FinetuneCell]:
    """The fine-tuned cells a `select_for_pruning` checkpoint kept."""
    selection = json.loads(Path(path).read_text())
    return [
        FinetuneCell(dataset, e["model"], int(e["bits"]), int(e["epochs"]), e["training"])
        for e in selection["selected"]
    ]


def data_dir(dataset: str) -> str:
    return f"{RESULTS}/data/{dataset}"


def embedded_model_dir(dataset: str, model: str) -> str:
    return f"{RESULTS}/models/{dataset}/{model}/base"


def embedded_model_record(dataset: str, model: str) -> str:
    return f"{RESULTS}/models/{dataset}/{model}/pretrain.json"
