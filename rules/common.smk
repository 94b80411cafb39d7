import sys

from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)

from joulebench import cells as grid


validate(config, schema="../schemas/config.schema.yaml")

PRUNING = grid.pruning_settings(config)
FINETUNE_CELLS = grid.finetune_cells(config)
EVAL_CELLS = grid.eval_cells(config)
CONTAINER = config.get("container", None)
# Jobs with energy windows claim the one `energy_window` slot (profiles set the limit to 1) unless overlap is allowed.
ENERGY_WINDOW = 0 if config["energy"].get("allow_overlap", False) else 1


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.]+",
    model=r"[A-Za-z0-9_.-]+",
    bits=r"4|8|16|32",
    epochs=r"\d+",
    pruning=r"[a-z0-9]+",


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def model_config(wildcards):
    return config["models"][wildcards.model]


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


def adapter_input(wildcards):
    """The fine-tuned adapter of an evaluated cell; none for the reference (epochs 0)."""
    if int(wildcards.epochs) == 0:
        return []
    return f"results/finetune/{wildcards.dataset}/{wildcards.model}/b{wildcards.bits}-e{wildcards.epochs}/adapter"


def cell_params(wildcards):
    return {
        "dataset": wildcards.dataset,
        "model": wildcards.model,
        "bits": int(wildcards.bits),
        "epochs": int(wildcards.epochs),
        "pruning": getattr(wildcards, "pruning", "none"),
    }


def eval_records():
    return [f"{cell.dir}/eval.json" for cell in EVAL_CELLS]


def train_records():
    return [f"{cell.dir}/train.json" for cell in FINETUNE_CELLS]
