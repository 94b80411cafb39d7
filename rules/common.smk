import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)

from joulebench import cells as grid
from joulebench.backends import BACKENDS, REFERENCE_BACKEND
from joulebench import images, preflight
from joulebench.codedeps import job_code
from joulebench.jobs import package_versions
from joulebench.rank import RankingSettings


# Checks before anything runs (joulebench/preflight.py): the config, its datasets, models and paths, from the working
# directory (--directory). Each problem is one line on stderr, then exit status 1 (a SystemExit: no traceback), before
# any job or output folder exists. Snakemake's validate then only fills in the schema's defaults. Under Apptainer
# (--use-singularity, --sdm apptainer) the config must name an image and the executable must exist, dry runs included.
APPTAINER = DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
preflight.exit_on_problems(config, Path.cwd(), Path(workflow.basedir) / "schemas" / "config.schema.yaml",
                           apptainer=APPTAINER)  # fmt: skip
validate(config, schema="../schemas/config.schema.yaml")

TRAINING = grid.training_variants(config)
PRUNING = grid.pruning_settings(config)
EARLY_EXIT = grid.early_exit_settings(config)
MERGE = grid.merge_settings(config)
POST_TRAINING = grid.post_training_variants(config)
FINETUNE_CELLS = grid.finetune_cells(config)
UNPRUNED_CELLS = grid.unpruned_cells(config)
MERGED_CELLS = grid.merged_cells(config)
VARIANT_KINDS = grid.variant_kinds(config)
CONTAINER = images.for_rules(config.get("container"), Path.cwd())
# The backends each evaluated cell is also served on, beside the reference (transformers): rule evaluate_on_backend.
OTHER_BACKENDS = [name for name in config.get("inference", {}).get("backends", [REFERENCE_BACKEND])
                  if name != REFERENCE_BACKEND]  # fmt: skip


def canonical(value):
    """Params as one canonical JSON string: the same settings always hash and compare the same (cache, re-runs)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def code(job):
    """The library files a job's code runs: editing one re-runs the jobs that use it (see joulebench.codedeps)."""
    return job_code(job, Path(workflow.basedir))


# The image as every job's provenance names it (a .sif's sha256 is computed here, once per start); null on the host.
IMAGE = canonical(images.identity(CONTAINER, Path.cwd()) if APPTAINER else None)
if APPTAINER:
    images.code_importable(workflow.basedir, os.environ)
# Versions the cached cells' results depend on (a container or conda env adds its own hash on top).
SOFTWARE = canonical(package_versions(("torch", "transformers", "peft", "bitsandbytes", "accelerate", "tokenizers",
                                       "codecarbon", "nltk", "rouge-score", "bert-score", "sentence-transformers")))
ENERGY = canonical(config["energy"])
RANKING = canonical(RankingSettings.from_config(config).to_dict())
# Measured jobs never overlap unless energy.allow_overlap: each claims the one `energy_window` slot, whose limit is 1
# unless the command line sets it (--resources energy_window=N), and, being alone, all the cores (nothing else then
# runs beside its windows). Each job also holds a machine-wide lock while it measures (joulebench/exclusive.py).
EXCLUSIVE = not config["energy"].get("allow_overlap", False)
ENERGY_WINDOW = 1 if EXCLUSIVE else 0
MEASURED_THREADS = workflow.cores if EXCLUSIVE else 1
if "energy_window" not in workflow.global_resources:
    workflow.register_resource("energy_window", 1)
NOISE_PROBES = int(config["energy"].get("noise_probes", 3))
# GPUs each measured job asks for (`gpu` is the resource name Snakemake's SLURM plugin and the profiles use).
GPUS_PER_JOB = int(config.get("gpus_per_job", 0))


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.]+",
    model=r"[A-Za-z0-9_.-]+",
    bits=r"4|8|16|32",
    backend=r"[a-z0-9.]+",
    epochs=r"\d+",
    training=r"[a-z0-9-]+_[a-z0-9]+",
    pruning=r"[a-z0-9-]+",


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def model_config(wildcards):
    return config["models"][wildcards.model]


def dataset_param(wildcards):
    return canonical(dataset_config(wildcards))


def model_param(wildcards):
    return canonical(model_config(wildcards))


def training_param(wildcards):
    return canonical(grid.training_for(config, int(wildcards.bits), int(wildcards.epochs)))


def is_embedded(wildcards):
    return config["models"][wildcards.model]["source"] == "embedded"


def base_model_input(wildcards):
    """The built folder of an embedded model; nothing for a hub id or local folder (read at run time)."""
    if is_embedded(wildcards):
        return grid.embedded_model_dir(wildcards.dataset, wildcards.model)
    return []


def generated_inputs(wildcards):
    """The synthetic ticket file for a generated dataset; user files and SAF are read at run time."""
    if dataset_config(wildcards)["kind"] == "rca-synthetic":
        return {"tickets": f"results/data/{wildcards.dataset}/tickets.jsonl"}
    return {}


def finetune_output(name):
    """An evaluated cell's fine-tuning output `name` (the adapter; train.json, whose status says whether the
    fine-tuning failed); none for the reference (epochs 0)."""

    def path(wildcards):
        if int(wildcards.epochs) == 0:
            return []
        cell = grid.FinetuneCell(wildcards.dataset, wildcards.model, int(wildcards.bits), int(wildcards.epochs),
                                 wildcards.training)  # fmt: skip
        return f"{cell.dir}/{name}"

    return path


def cell_param(wildcards):
    cell = {
        "dataset": wildcards.dataset,
        "model": wildcards.model,
        "bits": int(wildcards.bits),
        "epochs": int(wildcards.epochs),
        "training": wildcards.training,
        "pruning": getattr(wildcards, "pruning", "none"),
    }
    if hasattr(wildcards, "backend"):
        cell["backend"] = wildcards.backend
    return canonical(cell)


def variant_param(wildcards):
    return canonical(asdict(TRAINING.get(wildcards.training, grid.REFERENCE_TRAINING)))


def pruning_param(wildcards):
    return canonical(asdict(PRUNING.get(wildcards.pruning, grid.Pruning("none"))))


def early_exit_param(wildcards):
    setting = EARLY_EXIT.get(wildcards.pruning)
    return canonical(asdict(setting) if setting else None)


def merge_param(wildcards):
    setting = MERGE.get(wildcards.pruning)
    return canonical(asdict(setting) if setting else None)


def selected_for_pruning(dataset):
    """Fine-tuned cells that get pruned: all of them, or the top k by R once the checkpoint has ranked them."""
    if grid.prunes_all(config):
        return [cell for cell in FINETUNE_CELLS if cell.dataset == dataset]
    selection = checkpoints.select_for_pruning.get(dataset=dataset).output.selection
    return grid.read_selection(selection, dataset)


def unpruned_records(wildcards):
    return [f"{cell.dir}/eval.json" for cell in UNPRUNED_CELLS if cell.dataset == wildcards.dataset]


def dataset_train_records(wildcards):
    return [f"{cell.dir}/train.json" for cell in FINETUNE_CELLS if cell.dataset == wildcards.dataset]


def evaluated_cells():
    pruned = [
        cell
        for dataset in config["datasets"]
        if POST_TRAINING
        for cell in grid.pruned_cells(config, selected_for_pruning(dataset))
    ]
    return UNPRUNED_CELLS + MERGED_CELLS + pruned


def reference_records(wildcards):
    """Every evaluated cell's record on the reference backend."""
    return [f"{cell.dir}/eval.json" for cell in evaluated_cells()]


def eval_records(wildcards):
    """The reference backend's records, then each cell's on the other backends that serve its kind."""
    cells = evaluated_cells()
    served = [
        f"{cell.dir}/{backend}/eval.json"
        for cell in cells
        for backend in OTHER_BACKENDS
        if BACKENDS.get(backend).serves_kind(VARIANT_KINDS[cell.pruning])
    ]
    return [f"{cell.dir}/eval.json" for cell in cells] + served


def selection_records(wildcards):
    if grid.prunes_all(config) or not POST_TRAINING:
        return []
    return [checkpoints.select_for_pruning.get(dataset=dataset).output.selection for dataset in config["datasets"]]


def build_records(wildcards):
    """The pre-training records of the embedded models (their energy is the lifecycle's build stage)."""
    return [
        grid.embedded_model_record(dataset, model)
        for dataset in config["datasets"]
        for model, spec in config["models"].items()
        if spec["source"] == "embedded"
    ]


def train_records(wildcards):
    return [f"{cell.dir}/train.json" for cell in FINETUNE_CELLS]


def noise_probe_records(wildcards):
    """The reference cells' re-measurements (rules/evaluate.smk: probe_reference), every (dataset, model)'s."""
    return [
        f"results/probes/{cell.dataset}/{cell.model}/{index}/probe.json"
        for cell in grid.reference_cells(config)
        for index in range(1, NOISE_PROBES + 1)
    ]


def probe_after(wildcards):
    """What probe `index` of NOISE_PROBES waits for, so the probes spread over the run: the first waits for nothing
    but the base model, the last for every evaluation, the ones between for a growing share of the unpruned
    evaluations."""
    index = int(wildcards.index)
    if index == 1:
        return []
    if index == NOISE_PROBES:
        return eval_records(wildcards)
    records = unpruned_records(wildcards)
    return records[: round(len(records) * (index - 1) / (NOISE_PROBES - 1))]


def finalist_records(wildcards):
    return [f"results/finalists/{dataset}/finalists.json" for dataset in config["datasets"]]


def dataset_adapters(wildcards):
    return [f"{cell.dir}/adapter" for cell in FINETUNE_CELLS if cell.dataset == wildcards.dataset]


def dataset_base_models(wildcards):
    return [
        grid.embedded_model_dir(wildcards.dataset, model)
        for model, spec in config["models"].items()
        if spec["source"] == "embedded"
    ]


def dataset_eval_records(wildcards):
    return [path for path in reference_records(wildcards) if path.startswith(f"results/eval/{wildcards.dataset}/")]
