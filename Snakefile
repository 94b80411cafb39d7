from snakemake.utils import min_version

min_version("9.0")


# A config given on the command line (--configfile) is the whole config: merged into config.yaml, it would keep
# config.yaml's models and datasets beside its own. `--config key=value` alone still edits config.yaml.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/finetune.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    input:
        "results/summary.csv",
        "results/report.html",
        "results/report.pdf",
        "results/run_status.json",
