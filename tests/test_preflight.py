"""Checks before anything runs: each bad config, dataset or model stops the real `snakemake` with one line naming it."""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from joulebench import preflight
from joulebench.data import DATASET_KINDS
from joulebench.data.text_pairs import PAIR_FIELDS
from joulebench.data.tickets import TICKET_FIELDS
from joulebench.models import BITS, COMPUTE_DTYPES_4BIT, DTYPES_16, QUANT_TYPES_4BIT, Precision

from .conftest import ROOT

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PREFIX = preflight.PREFIX
SAF_COLUMNS = ("question", "reference_answer", "provided_answer", "answer_feedback", "verification_feedback")


def micro() -> dict:
    return yaml.safe_load((ROOT / "configs" / "micro.yaml").read_text())


def hf_env(workdir: Path) -> dict[str, str]:
    """An empty Hugging Face cache of the case's own, whatever the machine's is."""
    hf = workdir / "hf"
    return {"HF_HOME": str(hf), "HF_HUB_CACHE": str(hf / "hub"), "HF_DATASETS_CACHE": str(hf / "datasets")}


def model_folder(folder: Path, config: dict | None = None, files: tuple[str, ...] = ("model.safetensors",
                 "tokenizer.json")) -> Path:  # fmt: skip
    """A Hugging Face model folder as far as the checks look: config.json, weights, tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or {"hidden_size": 64, "intermediate_size": 128}))
    for name in files:
        (folder / name).write_text("{}")
    return folder


def cached_model(workdir: Path, repo_id: str, config: dict | None = None) -> Path:
    """`repo_id` laid out as huggingface_hub caches it: models--org--name/{refs/main, snapshots/<hash>/...}."""
    repo = workdir / "hf" / "hub" / f"models--{repo_id.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return model_folder(repo / "snapshots" / revision, config)


def saf_folder(folder: Path, rows: dict[str, list[dict]] | None = None) -> Path:
    """A SAF source folder with the default split files, each one good row unless `rows` says otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    good = {column: f"{column} text" for column in SAF_COLUMNS} | {"verification_feedback": "Correct"}
    for split in ("train", "validation", "test_unseen_answers"):
        lines = (rows or {}).get(split, [good, good])
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({**row, "id": f"{split}-{i}"}) + "\n"
                                                       for i, row in enumerate(lines)))  # fmt: skip
    return folder


def tickets(config: dict, path: str) -> dict:
    config["datasets"] = {"t": {"kind": "tickets", "task": "rca", "path": path}}
    return config


def _pairs_file(name: str, text: str, **extra: object) -> Callable[[dict, Path], dict]:
    def mutate(config: dict, workdir: Path) -> dict:
        config["datasets"] = {"p": {"kind": "text-pairs", "path": write(workdir / name, text), "prompt": "{input}:",
                                    "columns": {"input": "q", "target": "a"}, **extra}}  # fmt: skip
        return config

    return mutate


def saf(config: dict, source: str, **extra: object) -> dict:
    config["datasets"] = {"saf": {"kind": "saf", "task": "saf", "source": source, **extra}}
    return config


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path.name


GOOD_CSV = "cause,resolution,category\n" + "".join(f"cause {i},fix {i},c{i % 3}\n" for i in range(20))


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[dict, Path], dict | None]  # edits the micro config (and writes files into the workdir)
    culprit: str  # what the one line starts with after the prefix; {wd} is the working directory
    says: str = ""  # and also contains


def _set(path: str, value: object) -> Callable[[dict, Path], None]:
    """A mutation setting one dotted key (`pruning.methods.0.n`) of the config."""

    def mutate(config: dict, workdir: Path) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = config
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


def _drop(path: str) -> Callable[[dict, Path], None]:
    def mutate(config: dict, workdir: Path) -> None:
        *parents, last = path.split(".")
        target = config
        for part in parents:
            target = target[part]
        del target[last]

    return mutate


def _symlink_out(config: dict, workdir: Path) -> dict:
    outside = workdir.parent / f"{workdir.name}-outside"
    write(outside / "tickets.csv", GOOD_CSV)
    (workdir / "data").mkdir()
    (workdir / "data" / "tickets.csv").symlink_to(outside / "tickets.csv")
    return tickets(config, "data/tickets.csv")


def _outside(config: dict, workdir: Path) -> dict:
    outside = workdir.parent / f"{workdir.name}-outside"
    write(outside / "tickets.csv", GOOD_CSV)
    return tickets(config, str(outside / "tickets.csv"))


def _add_model(name: str, spec: dict) -> Callable[[dict, Path], None]:
    def mutate(config: dict, workdir: Path) -> None:
        config["models"][name] = spec

    return mutate


def _custom_code_model(config: dict, workdir: Path) -> None:
    cached_model(workdir, "org/custom", {"hidden_size": 64, "intermediate_size": 128,
                                         "auto_map": {"AutoModelForCausalLM": "modeling_custom.Custom"}})  # fmt: skip
    config["models"]["custom"] = {"source": "hub", "id": "org/custom"}


def _folder_without_config(config: dict, workdir: Path) -> None:
    (workdir / "local-model").mkdir()
    (workdir / "local-model" / "model.safetensors").write_text("{}")
    config["models"]["local"] = {"source": "path", "id": "local-model"}


def _folder_without_weights(config: dict, workdir: Path) -> None:
    model_folder(workdir / "local-model", files=("tokenizer.json",))
    config["models"]["local"] = {"source": "path", "id": "local-model"}


def _saf_rows(split: str, lines: list[dict] | str) -> Callable[[dict, Path], dict]:
    def mutate(config: dict, workdir: Path) -> dict:
        folder = saf_folder(workdir / "saf")
        if isinstance(lines, str):
            (folder / f"{split}.jsonl").write_text(lines)
        else:
            saf_folder(folder, {split: lines})
        return saf(config, "saf")

    return mutate


def _saf_without_test(config: dict, workdir: Path) -> dict:
    (saf_folder(workdir / "saf") / "test_unseen_answers.jsonl").unlink()
    return saf(config, "saf")


def _tickets_file(name: str, text: str, **extra: object) -> Callable[[dict, Path], dict]:
    def mutate(config: dict, workdir: Path) -> dict:
        config = tickets(config, write(workdir / name, text))
        config["datasets"]["t"].update(extra)
        return config

    return mutate


SAF_ROW = {column: "text" for column in SAF_COLUMNS}
NM = {"method": "magnitude", "n": 2, "m": 4}

CASES = [
    # --- the config: types, ranges, allowed values, unknown keys ---
    Case("bits-5", _set("bits", [4, 5]), "bits[1]: 5 is not allowed", "allowed: 4, 8, 16, 32"),
    Case("epochs-text", _set("epochs", ["one"]), "epochs[0]: 'one' is text", "expected an integer"),
    Case("lr-negative", _set("training.lr", -1), "training.lr: -1 must be > 0"),
    Case("lr-yaml-text", _set("training.lr", "3e-4"), "training.lr: '3e-4' is text", "decimal point"),
    Case("training-typo", _set("training.lrr", 0.1), "training.lrr: unknown key", "allowed: batch_size, lr,"),
    Case("top-level-typo", _set("epoch", [1]), "epoch: unknown key", "allowed: datasets, models,"),
    Case("lora-typo", _set("training.lora.rank", 4), "training.lora.rank: unknown key", "allowed: r, alpha"),
    Case("architecture-typo", _set("models.tiny-llama.architecture.hidden", 64),
         "models.tiny-llama.architecture.hidden: unknown key", "hidden_size"),
    Case("generation-typo", _set("generation.max_tokens", 8), "generation.max_tokens: unknown key"),
    Case("missing-section", _drop("generation"), "generation: missing; required"),
    Case("w-1.5", _set("w", 1.5), "w: 1.5 must be <= 1"),
    Case("top-k-0", _set("top_k", 0), "top_k: 0 must be >= 1"),
    Case("meter-unknown", _set("energy.meters", ["nvml", "joules"]), "energy.meters[1]: 'joules' is not allowed",
         "allowed: nvml, rapl, zeus, codecarbon"),
    Case("gpus-2", _set("gpus_per_job", 2), "gpus_per_job: 2 is not allowed", "allowed: 0, 1"),
    Case("container-unpinned", _set("container", "docker://joulebench:latest"), "container: 'docker://joulebench",
         "pinned by digest"),
    Case("dtype-in-cell", _set("training.cells", {"b4": {"dtype_16": "load"}}),
         "training.cells.b4.dtype_16: 'load' is not allowed", "allowed: bfloat16, float16"),
    # --- what the schema cannot say ---
    Case("n-equals-m", _set("pruning.methods.0", {"method": "magnitude", "n": 4, "m": 4}), "pruning.methods[0]:",
         "0 < N < M, got 4:4"),
    Case("n-without-m", _set("pruning.methods.0", {"method": "magnitude", "n": 2}), "pruning.methods[0].m: missing",
         "required with n"),
    Case("ratio-1.0", _set("pruning.methods.0", {"method": "magnitude", "ratio": 1.0}),
         "pruning.methods[0].ratio: 1.0 must be < 1"),
    Case("ratio-and-nm", _set("pruning.methods.0", {"method": "magnitude", "ratio": 0.5, "n": 2, "m": 4}),
         "pruning.methods[0]:", "either ratio"),
    Case("method-unknown", _set("pruning.methods.0", {"method": "random", "ratio": 0.5}), "pruning.methods[0]:",
         "unknown pruning method 'random'; known: magnitude"),
    Case("wanda-global", _set("pruning.methods.1", {"method": "wanda", "ratio": 0.5, "scope": "global"}),
         "pruning.methods[1]:", "no global scope"),
    Case("method-twice", _set("pruning.methods.1", NM), "pruning.methods[1]:", "listed twice"),
    Case("nm-does-not-fit", _set("pruning.methods.0", {"method": "magnitude", "n": 2, "m": 3}),
         "pruning.methods[0]: 2:3 needs each pruned layer's input size divisible by 3",
         "models.tiny-llama has hidden_size 64"),
    Case("cell-not-in-grid", _set("training.cells", {"b8": {"lr": 0.001}}), "training.cells.b8: bits 8 is not in",
         "bits: 4, 32"),
    Case("cell-epochs-not-in-grid", _set("training.cells", {"b4-e9": {"lr": 0.001}}),
         "training.cells.b4-e9: epochs 9 is not in the grid"),
    Case("cell-name", _set("training.cells", {"b5": {"lr": 0.001}}), "training.cells.b5: the name 'b5' is not"),
    Case("cell-unknown-setting", _set("training.cells", {"b4": {"learning_rate": 0.001}}),
         "training.cells.b4.learning_rate: unknown key", "allowed: batch_size, lr"),
    Case("heads-do-not-divide", _set("models.tiny-llama.architecture.num_attention_heads", 3),
         "models.tiny-llama.architecture.num_attention_heads: 3 does not divide hidden_size 64"),
    Case("lora-layer-typo", _set("training.lora.target_modules", ["q_proj", "v_porj"]),
         "training.lora.target_modules: v_porj is not a linear layer", "q_proj, k_proj"),
    Case("variant-bits-off-the-grid", _set("training_variants", [{"precision": "32-true", "bits": [12]}]),
         "training_variants[0]: bits [12] not in the grid's bits [4, 32]"),
    Case("pruning-twice-for-a-cell", _set("pruning.methods", [{"method": "wanda", "n": 2, "m": 4},
                                                              {"method": "wanda", "n": 2, "m": 4, "bits": [4]}]),
         "pruning.methods[1]: 'wanda 2:4' is listed twice for the same cells"),
    Case("precision-unknown", _set("training_variants", [{"precision": "fp8-mixed"}]),
         "training_variants[0].precision: unknown training precision 'fp8-mixed'", "known: 16-mixed, 16-true"),
    Case("sparsity-unknown", _set("training_variants", [{"sparsity": {"method": "random"}}]),
         "training_variants[0].sparsity: unknown sparse training method 'random'", "known: dense, gradual"),
    Case("lottery-rewind-past-epochs", _set("training_variants", [{"sparsity": {"method": "lottery", "rounds": 1,
         "rate": 0.2, "rewind_epoch": 3}}]), "training_variants[0].sparsity.rewind_epoch: 3 is past the shortest run",
         "epochs 1"),  # fmt: skip
    Case("exit-heads-unknown", _set("early_exit", [{"threshold": 0.9, "heads": "medusa"}]),
         "early_exit[0].heads: unknown early-exit heads 'medusa'", "known: shared, trained"),
    Case("exit-min-layer", _set("early_exit", [{"threshold": 0.9, "min_layer": 2}]),
         "early_exit[0].min_layer: 2 leaves no layer to exit at", "models.tiny-llama has 2 layers"),
    Case("split-sum", _set("datasets.rca.split", {"train": 0.8, "validation": 0.2, "test": 0.2}),
         "datasets.rca.split: the fractions must sum to 1", "= 1.2"),
    Case("task-for-kind", _set("datasets.rca.task", "saf"), "datasets.rca.task: 'saf' is not allowed for kind "
         "rca-synthetic", "allowed: rca"),
    Case("key-for-other-kind", _set("datasets.rca.source", "saf"), "datasets.rca.source: not a key for kind "
         "rca-synthetic"),
    Case("too-few-tickets", _set("datasets.rca.split", {"train": 0.9, "validation": 0.097, "test": 0.003}),
         "datasets.rca.n_tickets: 130 tickets are too few for the split", "test would get none"),
    Case("dataset-name", lambda c, w: c["datasets"].update({"../up": c["datasets"].pop("rca")}),
         "datasets.../up: the name '../up' is not"),
    Case("bertscore-layers", _set("metrics.bertscore_layers", 7),
         "metrics.bertscore_layers: 7 is more than the 6 layers"),
    # --- paths ---
    Case("path-outside", _outside, "datasets.t.path: /", "outside the working directory"),
    Case("symlink-outside", _symlink_out, "datasets.t.path: data/tickets.csv (that is /",
         "outside the working directory ({wd}) and data_folders; add its folder to data_folders"),
    Case("data-folder-missing", _set("data_folders", ["../no-such-folder"]), "data_folders[0]: ../no-such-folder"),
    Case("saf-split-traversal", lambda c, w: saf(c, str(saf_folder(w / "saf")), splits={
        "train": "train", "validation": "validation", "test": "../secret"}),
         "datasets.saf.splits.test: '../secret' is not a split name"),
    # --- datasets ---
    Case("tickets-missing-file", lambda c, w: tickets(c, "missing.csv"), "{wd}/missing.csv: file not found"),
    Case("tickets-missing-column", _tickets_file("t.csv", "resolution,fix\na,b\n"),
         "{wd}/t.csv, column 'cause': column missing", "the file's columns: resolution, fix"),
    Case("tickets-empty-value", _tickets_file("t.csv", GOOD_CSV.replace("cause 3,", ",")),
         "{wd}/t.csv, row 4, column 'cause': empty required value"),
    Case("tickets-malformed-json", _tickets_file("t.jsonl", '{"cause": "a", "resolution": "b"}\n{"cause": \n'),
         "{wd}/t.jsonl, line 2: malformed JSON"),
    Case("tickets-too-few-rows", _tickets_file("t.csv", "cause,resolution\na,b\nc,d\ne,f\n"),
         "{wd}/t.csv: 3 rows are too few for the split", "it needs at least 6"),
    Case("tickets-file-type", _tickets_file("t.txt", "cause,resolution\n"), "{wd}/t.txt: unknown file type"),
    Case("tickets-unknown-field", _tickets_file("t.csv", GOOD_CSV, columns={"severity": "sev"}),
         "datasets.t.columns.severity: not a key", "allowed: id, category"),
    Case("text-pairs-template-column", _pairs_file("p.jsonl", '{"q": "a", "a": "b"}\n', prompt="{q} {topic}"),
         "{wd}/p.jsonl: 'prompt' names column 'topic'", "its columns: q, a"),
    Case("text-pairs-empty-value", _pairs_file("p.csv", "q,a\nx,y\nz,\n"),
         "{wd}/p.csv, row 2, column 'a': empty required value"),
    Case("saf-split-file-missing", _saf_without_test, "{wd}/saf/test_unseen_answers.jsonl: no such split file",
         "splits in {wd}/saf: train, validation"),
    Case("saf-column-missing", _saf_rows("train", [SAF_ROW, {k: v for k, v in SAF_ROW.items() if k != "question"}]),
         "{wd}/saf/train.jsonl, row 2, column 'question': required column missing"),
    Case("saf-malformed-line", _saf_rows("validation", json.dumps(SAF_ROW) + "\n\n{oops\n"),
         "{wd}/saf/validation.jsonl, line 3: malformed JSON"),
    Case("saf-empty-test", _saf_rows("test_unseen_answers", ""),
         "{wd}/saf/test_unseen_answers.jsonl: no rows", "the test split of dataset saf needs at least one"),
    Case("saf-hub-not-cached", lambda c, w: saf(c, "org/saf-data"), "datasets.saf.source: org/saf-data is neither",
         "never contacted"),
    # --- models ---
    Case("model-path-missing", _add_model("local", {"source": "path", "id": "models/absent"}),
         "models.local.id: models/absent is not a folder"),
    Case("model-without-config", _folder_without_config, "models.local.id: local-model holds no config.json"),
    Case("model-without-weights", _folder_without_weights, "models.local.id: local-model holds no weights"),
    Case("hub-not-cached", _add_model("llama", {"source": "hub", "id": "meta-llama/Meta-Llama-3-8B"}),
         "models.llama.id: meta-llama/Meta-Llama-3-8B is not in the Hugging Face cache at {wd}/hf/hub",
         "hf download meta-llama/Meta-Llama-3-8B"),
    Case("hub-without-id", _add_model("llama", {"source": "hub"}), "models.llama.id: missing; required for source "
         "hub"),
    Case("custom-code", _custom_code_model, "models.custom.trust_remote_code: org/custom ships its own Python code"),
    Case("embedding-path-missing", _set("metrics.embedding_model", "./embedder"),
         "metrics.embedding_model: ./embedder is not a folder"),
    Case("embedding-hub-not-cached", _set("metrics.embedding_model", "sentence-transformers/all-mpnet-base-v2"),
         "metrics.embedding_model: sentence-transformers/all-mpnet-base-v2 is not in the Hugging Face cache"),
]  # fmt: skip


@dataclass
class Outcome:
    workdir: Path
    returncode: int
    output: str


def run_case(case: Case, workdir: Path) -> Outcome:
    config = micro()
    config = case.mutate(config, workdir) or config
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    command = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile",
               str(workdir / "config.yaml"), "--cores", "1"]  # fmt: skip
    env = {**os.environ, **hf_env(workdir)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    return Outcome(workdir, result.returncode, result.stdout + result.stderr)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    """Every case through the real `snakemake` (no dry run: a check that missed would start jobs), one per core."""
    workdirs = {case.id: tmp_path_factory.mktemp(case.id).resolve() for case in CASES}
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {case.id: pool.submit(run_case, case, workdirs[case.id]) for case in CASES}
        return {name: future.result() for name, future in futures.items()}


def test_the_table_is_large_and_spans_config_datasets_and_models():
    assert len(CASES) >= 30 and len({case.id for case in CASES}) == len(CASES)


@pytest.mark.integration
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_input_stops_snakemake_with_one_line_naming_it(case, outcomes):
    outcome = outcomes[case.id]
    wd = str(outcome.workdir)
    assert outcome.returncode == 1, outcome.output[-3000:]
    assert "Traceback" not in outcome.output, outcome.output[-3000:]
    lines = [line.removeprefix(PREFIX) for line in outcome.output.splitlines() if line.startswith(PREFIX)]
    assert len(lines) == 1, lines or outcome.output[-3000:]
    assert lines[0].startswith(case.culprit.format(wd=wd)), lines[0]
    assert case.says.format(wd=wd) in lines[0], lines[0]
    results = outcome.workdir / "results"
    assert not results.exists() or not any(results.iterdir())


# --- the library function, directly ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["config.yaml", "configs/micro.yaml", "configs/paper.yaml"])
def test_every_shipped_config_passes(name, tmp_path):
    config = yaml.safe_load((ROOT / name).read_text())
    problems = preflight.check(config, ROOT, environ=hf_env(tmp_path))
    if name == "configs/paper.yaml":  # its hub models and SAF copy are not cached here: only those may be missing
        assert [p.split(":")[0] for p in problems] == ["models.llama-3-8b.id", "models.gemma-7b.id",
                                                        "datasets.saf.source"], problems  # fmt: skip
        assert all("Hugging Face" in p and "never contacted" in p for p in problems)
    else:
        assert problems == []


def test_data_folders_admit_a_path_outside_the_working_directory(tmp_path):
    workdir, data = tmp_path / "work", tmp_path / "data"
    workdir.mkdir()
    write(data / "tickets.csv", GOOD_CSV)
    config = tickets(micro(), str(data / "tickets.csv"))
    assert preflight.check(config, workdir)[0].startswith("datasets.t.path:")
    assert preflight.check({**config, "data_folders": [str(data)]}, workdir) == []
    assert preflight.check({**config, "data_folders": ["../data"]}, workdir) == []  # relative to the workdir


def test_every_problem_is_reported_not_only_the_first(tmp_path):
    config = micro()
    config["bits"] = [4, 5]
    config["training"]["lrr"] = 0.1
    config["pruning"]["methods"][0] = {"method": "magnitude", "n": 4, "m": 2}
    config["models"]["local"] = {"source": "path", "id": "absent"}
    config["datasets"]["t"] = {"kind": "tickets", "task": "rca", "path": "absent.csv"}
    problems = preflight.check(config, tmp_path, environ=hf_env(tmp_path))
    assert [p.split(":")[0] for p in problems] == [
        "bits[1]", "training.lrr", "models.local.id", "pruning.methods[0]", f"{tmp_path.resolve()}/absent.csv",
    ], problems  # fmt: skip
    with pytest.raises(preflight.ConfigProblems) as raised:
        preflight.require_valid(config, tmp_path, environ=hf_env(tmp_path))
    assert raised.value.problems == problems


def test_a_cached_hub_model_and_a_local_folder_are_accepted(tmp_path):
    cached_model(tmp_path, "org/tiny")
    model_folder(tmp_path / "models" / "local")
    config = micro()
    config["models"] |= {"hub": {"source": "hub", "id": "org/tiny"}, "local": {"source": "path", "id": "models/local"}}
    config["metrics"]["embedding_model"] = "org/tiny"
    config["metrics"]["bertscore_layers"] = 2
    assert preflight.check(config, tmp_path, environ=hf_env(tmp_path)) == []
    # the same id with the cache elsewhere is missing, and the message says where it looked
    problems = preflight.check(config, tmp_path, environ={"HF_HOME": str(tmp_path / "elsewhere")})
    assert problems[0].startswith(f"models.hub.id: org/tiny is not in the Hugging Face cache at {tmp_path}/elsewhere")


def test_custom_code_runs_only_when_the_model_entry_trusts_it(tmp_path):
    cached_model(tmp_path, "org/custom", {"hidden_size": 64, "intermediate_size": 128, "auto_map": {}})
    config = micro()
    config["models"]["custom"] = {"source": "hub", "id": "org/custom"}
    assert preflight.check(config, tmp_path, environ=hf_env(tmp_path))[0].startswith(
        "models.custom.trust_remote_code:")
    config["models"]["custom"]["trust_remote_code"] = True
    assert preflight.check(config, tmp_path, environ=hf_env(tmp_path)) == []


def test_a_sharded_model_needs_every_shard_its_index_lists(tmp_path):
    folder = model_folder(tmp_path / "m", files=("tokenizer.json", "model-00001-of-00002.safetensors"))
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    config = micro()
    config["models"]["m"] = {"source": "path", "id": "m"}
    (problem,) = preflight.check(config, tmp_path, environ=hf_env(tmp_path))
    assert problem.startswith("models.m.id: m lacks 1 of the 2 weight files") and "00002-of-00002" in problem


def test_a_cached_saf_dataset_and_a_saf_folder_are_accepted(tmp_path):
    saf_folder(tmp_path / "saf")
    assert preflight.check(saf(micro(), "saf"), tmp_path, environ=hf_env(tmp_path)) == []
    prepared = tmp_path / "hf" / "datasets" / "Org___saf_data" / "default" / "0.0.0" / "abc"
    prepared.mkdir(parents=True)
    assert preflight.check(saf(micro(), "Org/SafData"), tmp_path, environ=hf_env(tmp_path)) == []


def test_the_checks_never_raise_whatever_a_value_is(tmp_path):
    """Each key of the micro config replaced by values of every type: a list of one-line problems, never a crash."""
    base = micro()

    def keys(value, key=()):
        yield key
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for name, child in children:
            yield from keys(child, (*key, name))

    for key in list(keys(base))[1:]:
        for value in (None, "x", -1, 0.5, True, [], {}, [1, "b"], {3: 1}):
            config = copy.deepcopy(base)
            target = config
            for part in key[:-1]:
                target = target[part]
            target[key[-1]] = value
            problems = preflight.check(config, tmp_path, environ=hf_env(tmp_path))
            assert all(isinstance(p, str) and "\n" not in p for p in problems), (key, value, problems)


def test_exit_on_problems_prints_prefixed_lines_and_exits_1(tmp_path):
    config = micro()
    config["w"], config["top_k"] = 2, 0
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        preflight.exit_on_problems(config, tmp_path, stream=out)
    assert exited.value.code == 1
    assert out.getvalue().splitlines() == [f"{PREFIX}w: 2 must be <= 1", f"{PREFIX}top_k: 0 must be >= 1"]
    preflight.exit_on_problems(micro(), tmp_path, stream=out)  # a good config: returns


def test_the_schema_lists_what_the_code_accepts():
    schema = yaml.safe_load(preflight.SCHEMA.read_text())
    props = schema["properties"]
    dataset = props["datasets"]["additionalProperties"]
    assert set(dataset["properties"]["kind"]["enum"]) == set(DATASET_KINDS.names())
    columns = {branch["if"]["properties"]["kind"]["const"]: branch["then"]["properties"]["columns"]
               for branch in dataset["allOf"] if "columns" in branch["then"].get("properties", {})}  # fmt: skip
    assert {kind: tuple(c["propertyNames"]["enum"]) for kind, c in columns.items()} == {
        "tickets": TICKET_FIELDS, "text-pairs": PAIR_FIELDS}
    assert dataset["properties"]["columns"]["propertyNames"]["enum"] == list(dict.fromkeys(TICKET_FIELDS + PAIR_FIELDS))
    assert tuple(props["bits"]["items"]["enum"]) == BITS
    training = props["training"]["properties"]
    assert tuple(training["dtype_16"]["enum"]) == DTYPES_16
    assert tuple(training["bnb_4bit_quant_type"]["enum"]) == QUANT_TYPES_4BIT
    assert tuple(training["bnb_4bit_compute_dtype"]["enum"]) == COMPUTE_DTYPES_4BIT
    # a training.cells entry may override exactly the training settings, nothing else
    cell = training["cells"]["additionalProperties"]
    assert cell["additionalProperties"] is False and set(cell["properties"]) == set(training) - {"cells"}


def test_precision_turns_only_known_dtype_names_into_torch_attributes():
    """Precision looks its dtypes up on torch by name: a name from the config is never any attribute it names."""
    assert str(Precision.from_config(16, {"dtype_16": "float16"}).torch_dtype) == "torch.float16"
    for key, value in (("dtype_16", "load"), ("bnb_4bit_compute_dtype", "save"), ("bnb_4bit_quant_type", "int3")):
        with pytest.raises(ValueError, match=f"training.{key}: '{value}' is not allowed"):
            Precision.from_config(4, {key: value})


@pytest.mark.integration
def test_a_good_config_still_plans_its_jobs(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(micro()))
    command = [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile",
               str(tmp_path / "config.yaml"), "--cores", "1", "-n"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert PREFIX not in result.stdout + result.stderr and "rule finetune:" in result.stdout + result.stderr


def test_a_clean_grid_verdict_is_remembered_and_a_changed_config_checked_again(tmp_path, monkeypatch):
    calls = []
    checked = preflight.grid_problems
    monkeypatch.setattr(preflight, "grid_problems", lambda *args: calls.append(1) or checked(*args))
    config = micro()
    assert preflight.check(config, tmp_path, environ=hf_env(tmp_path)) == []
    assert preflight.check(config, tmp_path, environ=hf_env(tmp_path)) == [] and len(calls) == 1  # remembered
    config["pruning"]["methods"].append({"method": "magnitude", "n": 3, "m": 4})
    assert preflight.check(config, tmp_path, environ=hf_env(tmp_path)) == [] and len(calls) == 2
    config["training_variants"] = [{"precision": "32-true", "sparsity": {"method": "lottery", "rewind_epoch": 99}}]
    for _ in range(2):  # a problem is never remembered
        assert any("rewind_epoch" in line for line in preflight.check(config, tmp_path, environ=hf_env(tmp_path)))
    assert len(calls) == 4
