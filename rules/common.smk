import json
import sys
from dataclasses import asdict
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)

from joulebench import cells as grid
from joulebench import preflight
from joulebench.codedeps import job_code
from joulebench.jobs import package_versions


# Checks before anything runs (joulebench/preflight.py): the config, its datasets, models and paths, from the working
# directory (--directory). Each problem is one line on stderr, then exit status 1 (a SystemExit: no traceback), before
# any job or output folder exists. Snakemake's validate then only fills in the schema's defaults.
preflight.exit_on_problems(config, Path.cwd(), Path(workflow.basedir) / "schemas" / "config.schema.yaml")
validate(config, schema="../schemas/config.schema.yaml")

TRAINING = grid.training_variants(config)
PRUNING = grid.pruning_settings(config)
EARLY_EXIT = grid.early_exit_settings(config)
POST_TRAINING = grid.post_training_variants(config)
FINETUNE_CELLS = grid.finetune_cells(config)
UNPRUNED_CELLS = grid.unpruned_cells(config)
CONTAINER = config.get("container", None)


def canonical(value):
    """Params as one canonical JSON string: the same settings always hash and compare the same (cache, re-runs)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def code(job):
    """The library files a job's code runs: editing one re-runs the jobs that use it (see joulebench.codedeps)."""
    return job_code(job, Path(workflow.basedir))


# Versions the cached cells' results depend on (a container or conda env adds its own hash on top).
SOFTWARE = canonical(package_versions(("torch", "transformers", "peft", "bitsandbytes", "accelerate", "tokenizers",
                                       "codecarbon", "nltk", "rouge-score", "bert-score", "sentence-transformers")))
ENERGY = canonical(config["energy"])
# Jobs with energy windows claim the one `energy_window` slot (profiles set the limit to 1) unless overlap is allowed.
ENERGY_WINDOW = 0 if config["energy"].get("allow_overlap", False) else 1
# GPUs each measured job asks for (`gpu` is the resource name Snakemake's SLURM plugin and the profiles use).
GPUS_PER_JOB = int(config.get("gpus_per_job", 0))


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.]+",
    model=r"[A-Za-z0-9_.-]+",
    bits=r"4|8|16|32",
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
    return canonical({
        "dataset": wildcards.dataset,
        "model": wildcards.model,
        "bits": int(wildcards.bits),
        "epochs": int(wildcards.epochs),
        "training": wildcards.training,
        "pruning": getattr(wildcards, "pruning", "none"),
    })


def variant_param(wildcards):
    return canonical(asdict(TRAINING.get(wildcards.training, grid.REFERENCE_TRAINING)))


def pruning_param(wildcards):
    return canonical(asdict(PRUNING.get(wildcards.pruning, grid.Pruning("none"))))


def early_exit_param(wildcards):
    setting = EARLY_EXIT.get(wildcards.pruning)
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


def eval_records(wildcards):
    pruned = [
        cell
        for dataset in config["datasets"]
        if POST_TRAINING
        for cell in grid.pruned_cells(config, selected_for_pruning(dataset))
    ]
    return [f"{cell.dir}/eval.json" for cell in UNPRUNED_CELLS + pruned]


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
